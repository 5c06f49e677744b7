"""Forms of the appointment pages: every query string and every post, typed and checked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.utils import timezone

from gpconnect.client import MAX_COMMENT, MAX_DESCRIPTION
from viewer.models import FederationPractice
from viewer.services.appointments import (
    CHANNELS,
    MAX_TOGETHER,
    PERIOD_DAYS,
    TIMES_OF_DAY,
    SlotFilters,
)

# How far ahead a receptionist may look; practices publish a few weeks at most.
MAX_DAYS_AHEAD = 365
_SLOT_ID_MAX = 64
CANCEL_REASON_MAX = 200


def _aware_instant(value: str) -> datetime:
    """Return an ISO 8601 instant with its UTC offset, or raise ValidationError."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise forms.ValidationError("That slot's time is not valid", code="start") from None
    if parsed.tzinfo is None:
        raise forms.ValidationError("That slot's time has no time zone", code="start")
    # Only a slot from today to a year ahead can be booked; anything else was not offered
    # (and the far ends of the calendar cannot even be converted to UK time).
    now = timezone.now()
    if not now - timedelta(days=1) <= parsed <= now + timedelta(days=MAX_DAYS_AHEAD):
        raise forms.ValidationError("That slot's time is not within the next year", code="start")
    return parsed


class SlotSearchForm(forms.Form):
    """The free-slot search: which practices, from when, for how long, and the filters."""

    practice = forms.MultipleChoiceField(
        label="Which practices?",
        error_messages={"required": "Choose at least one practice"},
        widget=forms.CheckboxSelectMultiple,
    )
    start = forms.DateField(
        label="From",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a real date, like 23/03/2027"},
    )
    days = forms.TypedChoiceField(
        label="For",
        choices=[(str(n), f"{n // 7} week{'s' if n > 7 else ''}") for n in PERIOD_DAYS],
        coerce=int,
        required=False,
    )
    channel = forms.ChoiceField(
        label="How", choices=[("", "Any"), *((c, c) for c in CHANNELS)], required=False
    )
    role = forms.CharField(label="Practitioner role", max_length=100, required=False)
    gender = forms.ChoiceField(
        label="Practitioner gender",
        choices=[("", "Any"), ("female", "Female"), ("male", "Male")],
        required=False,
    )
    time = forms.ChoiceField(
        label="Time of day",
        choices=[
            ("", "Any time"),
            ("morning", "Morning (before 12pm)"),
            ("afternoon", "Afternoon (12pm to 5pm)"),
            ("evening", "Evening (after 5pm)"),
        ],
        required=False,
    )

    def __init__(
        self, *args: Any, practices: Sequence[FederationPractice] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["practice"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(p.ods_code, p.display_name) for p in practices]

    def clean_start(self) -> date:
        today = timezone.localdate()
        start: date | None = self.cleaned_data.get("start")
        if start is None:
            return today
        if start < today:
            raise forms.ValidationError("The date must be today or in the future", code="past")
        if start > today + timedelta(days=MAX_DAYS_AHEAD):
            raise forms.ValidationError("The date must be within the next year", code="far")
        return start

    def clean_days(self) -> int:
        days: int | None = self.cleaned_data.get("days")
        return days or PERIOD_DAYS[0]

    def filters(self) -> SlotFilters:
        data = self.cleaned_data
        time_of_day = data.get("time") or ""
        return SlotFilters(
            channel=data.get("channel") or "",
            role=(data.get("role") or "").strip(),
            gender=data.get("gender") or "",
            time_of_day=time_of_day if time_of_day in TIMES_OF_DAY else "",
        )

    def query(self, **changes: Any) -> str:
        """Return this search's query string with `changes` (e.g. another start date)."""
        data = {**self.cleaned_data, **changes}
        params: list[tuple[str, str]] = [("practice", code) for code in data["practice"]]
        params += [("start", data["start"].isoformat()), ("days", str(data["days"]))]
        for name in ("channel", "role", "gender", "time"):
            if data.get(name):
                params.append((name, str(data[name])))
        return "?" + urlencode(params)

    def week_links(self) -> tuple[str | None, str]:
        """Return the queries of the week before (None if that is in the past) and after."""
        start: date = self.cleaned_data["start"]
        earlier = max(start - timedelta(days=7), timezone.localdate())
        previous = self.query(start=earlier) if earlier < start else None
        return previous, self.query(start=start + timedelta(days=7))


class SlotChoiceForm(forms.Form):
    """Which slot the booking form is for: the practice, the slot id and when it starts."""

    practice = forms.CharField(max_length=10)
    slot = forms.CharField(max_length=_SLOT_ID_MAX)
    start = forms.CharField(max_length=40)

    def clean_practice(self) -> str:
        return str(self.cleaned_data["practice"]).strip().upper()

    def clean_start(self) -> datetime:
        return _aware_instant(self.cleaned_data["start"])


class BookingForm(SlotChoiceForm):
    """The booking itself: how many slots, the description and comment, and the token."""

    token = forms.UUIDField(widget=forms.HiddenInput)
    length = forms.TypedChoiceField(
        label="How long?",
        choices=[(str(n), str(n)) for n in range(1, MAX_TOGETHER + 1)],
        coerce=int,
        required=False,
    )
    description = forms.CharField(
        label="Description",
        max_length=MAX_DESCRIPTION,
        error_messages={
            "required": "Enter a description of the appointment",
            "max_length": f"Description must be {MAX_DESCRIPTION} characters or fewer",
        },
    )
    comment = forms.CharField(
        label="Comment (optional)",
        max_length=MAX_COMMENT,
        required=False,
        error_messages={"max_length": f"Comment must be {MAX_COMMENT} characters or fewer"},
    )
    confirm_registration = forms.BooleanField(required=False)

    def clean_description(self) -> str:
        return " ".join(str(self.cleaned_data["description"]).split())

    def clean_comment(self) -> str:
        return str(self.cleaned_data.get("comment") or "").strip()

    def clean_length(self) -> int:
        length: int | None = self.cleaned_data.get("length")
        return length or 1


class AmendForm(forms.Form):
    version = forms.CharField(max_length=20, widget=forms.HiddenInput)
    description = BookingForm.base_fields["description"]
    comment = BookingForm.base_fields["comment"]

    def clean_description(self) -> str:
        return " ".join(str(self.cleaned_data["description"]).split())

    def clean_comment(self) -> str:
        return str(self.cleaned_data.get("comment") or "").strip()


class CancelForm(forms.Form):
    version = forms.CharField(max_length=20, widget=forms.HiddenInput)
    reason = forms.CharField(
        label="Why is the appointment being cancelled?",
        max_length=CANCEL_REASON_MAX,
        error_messages={
            "required": "Enter the reason for cancelling",
            "max_length": f"Reason must be {CANCEL_REASON_MAX} characters or fewer",
        },
    )

    def clean_reason(self) -> str:
        reason = " ".join(str(self.cleaned_data["reason"]).split())
        if not reason:
            raise forms.ValidationError("Enter the reason for cancelling", code="required")
        return reason
