from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpconnect import nhs_number

# SPEC §4.9, every number in the table, with the validity the table gives it.
SPEC_VALID = [
    "9476719931",  # spec Patient examples (Jane Jackson)
    "9999999999",  # structured and documents examples; patientNotInSystem
    "9000000084",  # SDS worked example
    "9000000009",  # PDS FHIR sandbox, normal
    "9000000025",  # PDS FHIR sandbox, restricted
    # Provider test pack NHSNoMap.csv, patients 1 to 21
    "9690937278",
    "9690937286",
    "9690937294",
    "9690937308",
    "9690937375",
    "9690937383",
    "9690937391",
    "9690937405",
    "9690938533",
    "9690938541",
    "9690938622",
    "9690938614",
    "9690938096",
    "9476718943",
    "9690938576",
    "9690938118",
    "9690938126",
    "9690938681",
    "9690938134",
    "9690938142",
]
SPEC_INVALID = [
    "9900002831",  # old XML example
    "1234567891",  # provider test pack, deliberately invalid
]

digits = st.text(alphabet="0123456789", min_size=9, max_size=9)


def independent_is_valid(number: str) -> bool:
    """Weights 10..1 over all ten digits: the total is a multiple of 11.

    The same as the SPEC §4.8 algorithm (d[9] == -sum(first nine) mod 11), and a check
    of 10 can never match a single digit, so it needs no special case.
    """
    if len(number) != 10 or not all(c in "0123456789" for c in number):
        return False
    return sum(int(d) * w for d, w in zip(number, range(10, 0, -1), strict=True)) % 11 == 0


def with_check_digit(first_nine: str) -> str | None:
    valid = [first_nine + str(d) for d in range(10) if nhs_number.is_valid(first_nine + str(d))]
    return valid[0] if valid else None


@pytest.mark.parametrize("number", SPEC_VALID)
def test_every_number_the_spec_lists_as_valid_is_valid(number: str) -> None:
    assert nhs_number.is_valid(number)


@pytest.mark.parametrize("number", SPEC_INVALID)
def test_every_number_the_spec_lists_as_invalid_is_invalid(number: str) -> None:
    assert not nhs_number.is_valid(number)


@pytest.mark.parametrize("number", SPEC_VALID)
def test_a_valid_number_with_its_last_digit_changed_is_invalid(number: str) -> None:
    for digit in "0123456789":
        if digit != number[9]:
            assert not nhs_number.is_valid(number[:9] + digit)


@pytest.mark.parametrize(
    "typed",
    [
        "969 093 7286",
        "969-093-7286",
        "  9690937286\n",
        "969 - 093 - 7286",
        "\t969\u00a0093\u00a07286 ",  # non-breaking spaces
        "969\u2009093\u202f7286",  # thin and narrow no-break spaces
        "969\u2013093\u20147286",  # en and em dashes
        "969\u2011093\u22127286",  # non-breaking hyphen, minus sign
        "\ufeff969\u200b093\u200b7286",  # byte order mark, zero-width spaces
        "9 6 9 0 9 3 7 2 8 6",
    ],
)
def test_spaces_and_dashes_of_any_kind_are_accepted(typed: str) -> None:
    assert nhs_number.normalise(typed) == "9690937286"
    assert nhs_number.is_valid(typed)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("   ", "only spaces"),
        ("969093728", "nine digits"),
        ("96909372860", "eleven digits"),
        ("096909372860", "a leading zero added"),
        ("969093728X", "a letter"),
        ("A690937286", "a letter"),
        ("969.093.7286", "dots are not separators"),
        ("969/093/7286", "slashes are not separators"),
        ("+9690937286", "a sign"),
        ("９６９０９３７２８６", "fullwidth digits"),
        ("\u0669\u0666\u0669\u0660\u0669\u0663\u0667\u0662\u0668\u0666", "Arabic-Indic digits"),
        ("969093728\u0666", "one Arabic-Indic digit"),
        ("969093728\u00b2", "a superscript two"),
        ("0000000001", "wrong check digit"),
    ],
)
def test_malformed_numbers_are_invalid(value: str, why: str) -> None:
    assert not nhs_number.is_valid(value), why


def test_unicode_digits_are_rejected_even_where_the_modulus_would_pass() -> None:
    arabic = "".join(chr(0x0660 + int(d)) for d in "9690937286")
    assert arabic.isdigit()  # what a naive str.isdigit check would accept
    assert not nhs_number.is_valid(arabic)


@pytest.mark.parametrize("first_nine", ["000000006", "011524493", "784005756", "577598773"])
def test_nine_digits_whose_check_digit_would_be_10_have_no_valid_number(first_nine: str) -> None:
    total = sum(int(d) * (10 - i) for i, d in enumerate(first_nine))
    assert 11 - total % 11 == 10
    assert with_check_digit(first_nine) is None


def test_nine_digits_whose_check_digit_would_be_11_take_0() -> None:
    for first_nine in ("000000000", "828836075", "942080939"):
        assert sum(int(d) * (10 - i) for i, d in enumerate(first_nine)) % 11 == 0
        assert with_check_digit(first_nine) == first_nine + "0"


@given(digits)
def test_nine_digits_have_at_most_one_valid_check_digit(first_nine: str) -> None:
    valid = [d for d in "0123456789" if nhs_number.is_valid(first_nine + d)]
    assert len(valid) <= 1
    total = sum(int(d) * (10 - i) for i, d in enumerate(first_nine))
    assert (len(valid) == 0) == (11 - total % 11 == 10)


@given(st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_is_valid_agrees_with_an_independent_formulation(number: str) -> None:
    assert nhs_number.is_valid(number) == independent_is_valid(number)


@given(st.text(max_size=14))
def test_is_valid_agrees_with_the_independent_formulation_on_any_text(text: str) -> None:
    assert nhs_number.is_valid(text) == independent_is_valid(nhs_number.normalise(text))


@given(digits, st.lists(st.sampled_from([" ", "-", "\u00a0", "\u2013"]), max_size=10))
def test_format_and_normalise_round_trip(first_nine: str, separators: list[str]) -> None:
    number = with_check_digit(first_nine)
    if number is None:
        with pytest.raises(ValueError):
            nhs_number.format(first_nine + "0")
        return
    formatted = nhs_number.format(number)
    assert formatted == f"{number[:3]} {number[3:6]} {number[6:]}"
    assert nhs_number.normalise(formatted) == number
    assert nhs_number.is_valid(formatted)
    assert nhs_number.format(formatted) == formatted
    # Separators anywhere are dropped again.
    scattered = "".join(
        digit + (separators[i] if i < len(separators) else "") for i, digit in enumerate(number)
    )
    assert nhs_number.normalise(scattered) == number
    assert nhs_number.format(scattered) == formatted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9690937286", "969 093 7286"),
        (" 969-093-7286 ", "969 093 7286"),
        ("9000000009", "900 000 0009"),
    ],
)
def test_format_writes_3_3_4(value: str, expected: str) -> None:
    assert nhs_number.format(value) == expected


@pytest.mark.parametrize("value", [*SPEC_INVALID, "", "969093728", "969093728X", "٩٦٩٠٩٣٧٢٨٦"])
def test_format_raises_value_error_for_an_invalid_number(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        nhs_number.format(value)
    assert value.strip() not in str(raised.value) or not value.strip()  # no PII in messages


def test_normalise_keeps_what_is_not_a_separator() -> None:
    assert nhs_number.normalise(" 969 093 728X ") == "969093728X"
    assert nhs_number.normalise("969.093.7286") == "969.093.7286"
    assert nhs_number.normalise("") == ""
