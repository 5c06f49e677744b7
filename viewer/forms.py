"""Forms that turn what a user typed (or a query string) into clean, typed values."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from django import forms
from django.utils import timezone

from gpconnect import nhs_number
from viewer.services import DATE_PRESETS, DEFAULT_SORT, SORT_COLUMNS, DocumentFilters

_ODS_CODE = re.compile(r"^[A-Z0-9]{3,12}$")


class NhsNumberForm(forms.Form):
    """One question: the patient's NHS number. Accepts spaces and dashes; Modulus 11 checked."""

    nhs_number = forms.CharField(
        label="What is the patient's NHS number?",
        help_text="For example, 485 777 3456",
        # Room for a pasted number with spaces or dashes (UX-SECURITY.md §1.3).
        max_length=20,
        error_messages={
            "required": "Enter the patient's NHS number",
            "max_length": "NHS number must be 10 digits",
        },
        widget=forms.TextInput(
            attrs={
                "class": "nhsuk-input nhsuk-input--width-10",
                "inputmode": "numeric",
                "spellcheck": "false",
                "autocomplete": "off",
                "autofocus": True,
            }
        ),
    )

    def clean_nhs_number(self) -> str:
        number = nhs_number.normalise(self.cleaned_data["nhs_number"])
        if len(number) != 10 or not number.isascii() or not number.isdigit():
            raise forms.ValidationError("NHS number must be 10 digits", code="length")
        if not nhs_number.is_valid(number):
            raise forms.ValidationError("Enter a valid NHS number", code="checksum")
        return number


class DocumentFiltersForm(forms.Form):
    """The document list's query string: date range, keyword, author, sort and page.

    Nothing is required: an empty query string is every document, newest first.
    """

    date = forms.ChoiceField(
        label="Document date", choices=list(DATE_PRESETS.items()), required=False
    )
    # `from` is a Python keyword, so the field is added below under that name.
    to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    keyword = forms.CharField(label="Title or type contains", max_length=100, required=False)
    author = forms.CharField(label="Author organisation", max_length=12, required=False)
    sort = forms.ChoiceField(choices=[(key, key) for key in SORT_COLUMNS], required=False)
    dir = forms.ChoiceField(choices=[("asc", "asc"), ("desc", "desc")], required=False)
    page = forms.IntegerField(min_value=1, max_value=100_000, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["from"] = forms.DateField(
            label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
        )
        self.order_fields(["date", "from", "to", "keyword", "author", "sort", "dir", "page"])

    def clean_author(self) -> str:
        author: str = self.cleaned_data["author"].strip().upper()
        if author and not _ODS_CODE.match(author):
            raise forms.ValidationError("Enter an ODS code, like A20047", code="ods")
        return author

    def clean_keyword(self) -> str:
        return " ".join(self.cleaned_data["keyword"].split())

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        today = timezone.localdate()
        start: date | None = cleaned.get("from")
        end: date | None = cleaned.get("to")
        if start and start > today:
            self.add_error("from", "The start date must be today or in the past")
        if end and end > today:
            self.add_error("to", "The end date must be today or in the past")
        if start and end and start > end:
            self.add_error("to", "The end date must be the same as or after the start date")
        if cleaned.get("date") == "custom" and not (start or end) and not self.errors:
            self.add_error("from", "Enter a start date, an end date or both")
        return cleaned

    def filters(self) -> DocumentFilters:
        """Return the typed filters; call only after `is_valid()`."""
        data = self.cleaned_data
        preset = data.get("date") or "all"
        if not data.get("date") and (data.get("from") or data.get("to")):
            preset = "custom"  # dates typed into a form without the preset radios
        custom = preset == "custom"
        return DocumentFilters(
            preset=preset,
            created_from=data.get("from") if custom else None,
            created_to=data.get("to") if custom else None,
            keyword=data.get("keyword") or "",
            author=data.get("author") or "",
            sort=data.get("sort") or DEFAULT_SORT[0],
            direction=data.get("dir") or DEFAULT_SORT[1],
            page=data.get("page") or 1,
        )
