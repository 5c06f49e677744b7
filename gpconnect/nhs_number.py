"""NHS numbers: tidy up what a user typed or pasted, check it, and format it for display.

The check is the Modulus 11 algorithm in SPEC §4.8: with the digits d[0]..d[9],
`check = 11 - sum(d[i] * (10 - i) for i in 0..8) % 11`, where 11 becomes 0 and 10 means
no number with those first nine digits is valid. The number is valid when `check == d[9]`.
"""

from __future__ import annotations

import unicodedata

_ASCII_DIGITS = frozenset("0123456789")

# Characters that are not whitespace to `str.isspace()` but that a copy from a web page,
# a PDF or a word processor can bring along: zero-width spaces and joiners, the byte
# order mark, and the minus sign (a "dash" to the person who typed it).
_INVISIBLE_OR_DASH_LIKE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u2212")


def _is_separator(char: str) -> bool:
    return (
        char.isspace()
        or unicodedata.category(char) in ("Zs", "Pd")  # any space; any dash or hyphen
        or char in _INVISIBLE_OR_DASH_LIKE
    )


def normalise(value: str) -> str:
    """Return `value` without spaces or dashes of any kind (Unicode ones included).

    It does not validate: whatever else was typed is kept, so `is_valid` can reject it.
    """
    return "".join(char for char in value if not _is_separator(char))


def _check_digit(first_nine: str) -> int | None:
    """The check digit for nine ASCII digits, or None when the Modulus 11 result is 10."""
    total = sum(int(digit) * (10 - position) for position, digit in enumerate(first_nine))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def is_valid(value: str) -> bool:
    """True if `value`, once normalised, is 10 ASCII digits with a correct check digit.

    Spaces and dashes are accepted (`943 476 5919`, `943-476-5919`). Digits from other
    scripts (`١`, `９`) are rejected, although Python's `str.isdigit` accepts them.
    """
    number = normalise(value)
    if len(number) != 10 or not _ASCII_DIGITS.issuperset(number):
        return False
    return _check_digit(number[:9]) == int(number[9])


# Shadows the builtin inside this module only; callers write `nhs_number.format(...)`.
def format(value: str) -> str:
    """Return a valid NHS number in the `999 123 4567` (3-3-4) display style.

    Raises ValueError if `value` is not a valid NHS number.
    """
    if not is_valid(value):
        raise ValueError("Not a valid NHS number")
    number = normalise(value)
    return f"{number[:3]} {number[3:6]} {number[6:]}"
