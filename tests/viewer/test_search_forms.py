"""NhsNumberForm and DocumentFiltersForm: what users type becomes clean, typed values."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from viewer.forms import DocumentFiltersForm, NhsNumberForm
from viewer.services import DocumentFilters


@pytest.mark.parametrize(
    "typed",
    ["9434765919", "943 476 5919", "943-476-5919", " 943 476-5919 ", "999\u2009000\u20130018"],
)
def test_a_valid_nhs_number_with_spaces_or_dashes_is_cleaned_to_ten_digits(typed: str) -> None:
    form = NhsNumberForm({"nhs_number": typed})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["nhs_number"] in {"9434765919", "9990000018"}


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Enter the patient's NHS number"),
        ("   ", "Enter the patient's NHS number"),
        ("943476591", "NHS number must be 10 digits"),
        ("94347659190", "NHS number must be 10 digits"),
        ("943476591x", "NHS number must be 10 digits"),
        ("９４３４７６５９１９", "NHS number must be 10 digits"),
        ("4857773456", "Enter a valid NHS number"),
        ("9876544321", "Enter a valid NHS number"),
    ],
)
def test_an_invalid_nhs_number_gets_the_nhs_style_message(typed: str, message: str) -> None:
    form = NhsNumberForm({"nhs_number": typed})
    assert not form.is_valid()
    assert form.errors["nhs_number"] == [message]


def test_an_empty_filter_query_is_every_document_newest_first() -> None:
    form = DocumentFiltersForm({})
    assert form.is_valid(), form.errors
    assert form.filters() == DocumentFilters()
    assert form.filters().filtered is False


def test_filters_become_typed_values() -> None:
    form = DocumentFiltersForm(
        {
            "date": "custom",
            "from": "2020-01-01",
            "to": "2021-06-30",
            "keyword": "  clinic   letter ",
            "author": "rr8",
            "sort": "title",
            "dir": "asc",
            "page": "2",
        }
    )
    assert form.is_valid(), form.errors
    assert form.filters() == DocumentFilters(
        preset="custom",
        created_from=date(2020, 1, 1),
        created_to=date(2021, 6, 30),
        keyword="clinic letter",
        author="RR8",
        sort="title",
        direction="asc",
        page=2,
    )


def test_a_date_preset_ignores_custom_dates() -> None:
    form = DocumentFiltersForm({"date": "1y", "from": "2020-01-01"})
    assert form.is_valid()
    filters = form.filters()
    assert (filters.preset, filters.created_from) == ("1y", None)
    today = date(2024, 3, 31)
    assert filters.created_range(today) == (date(2023, 3, 31), None)
    assert DocumentFilters(preset="3m").created_range(today) == (date(2023, 12, 31), None)
    assert DocumentFilters(preset="3m").created_range(date(2024, 5, 31)) == (
        date(2024, 2, 29),
        None,
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"date": "custom", "from": "2022-01-02", "to": "2022-01-01"}, "to"),
        ({"date": "custom", "from": "not a date"}, "from"),
        ({"date": "custom"}, "from"),
        ({"date": "10y"}, "date"),
        ({"sort": "nhs_number"}, "sort"),
        ({"dir": "sideways"}, "dir"),
        ({"page": "0"}, "page"),
        ({"page": "-3"}, "page"),
        ({"author": "A2004; DROP"}, "author"),
    ],
)
def test_invalid_filters_are_rejected_on_the_right_field(data: dict[str, str], field: str) -> None:
    form = DocumentFiltersForm(data)
    assert not form.is_valid()
    assert field in form.errors


def test_dates_in_the_future_are_rejected() -> None:
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    form = DocumentFiltersForm({"date": "custom", "from": tomorrow, "to": tomorrow})
    assert not form.is_valid()
    assert set(form.errors) == {"from", "to"}


def test_the_filter_query_string_leaves_defaults_out() -> None:
    assert DocumentFilters().query() == "?"
    assert DocumentFilters(keyword="x y", page=3).query() == "?keyword=x+y&page=3"
    assert DocumentFilters(sort="title", direction="asc").query(page=2) == (
        "?sort=title&dir=asc&page=2"
    )
