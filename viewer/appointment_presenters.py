"""Display-ready values for the appointment pages: slots, appointments, bookings.

Times are UK local time, 24-hour (`09:30`); day headings use the NHS.UK long form
(`Tuesday 23 March 2027`), tables the CUI short date (`23-Mar-2027`), as the rest of the
viewer does (UX-SECURITY.md §1.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from gpconnect import Appointment, Patient, Slot, nhs_number
from viewer.presenters import age_in_years, gender_label, short_date

UK = ZoneInfo("Europe/London")


def local(value: datetime) -> datetime:
    return value.astimezone(UK)


def clock_time(value: datetime | None) -> str:
    """Return `09:30` in UK local time, or "" for no time."""
    return local(value).strftime("%H:%M") if value else ""


def long_day(value: date) -> str:
    """Return `Tuesday 23 March 2027` (NHS.UK style: no leading zero, month in full)."""
    return f"{value:%A} {value.day} {value:%B %Y}"


def duration_label(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} minutes" if minutes != 1 else "1 minute"
    hours, rest = divmod(minutes, 60)
    text = f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{text} {rest} minutes" if rest else text


@dataclass(frozen=True)
class SlotRow:
    """One free slot, with everything the specification says a consumer shows (SPEC §3.3)."""

    id: str
    practice_ods: str
    practice_name: str
    day: date
    start_iso: str
    start: str
    end: str
    duration: str
    channel: str
    slot_type: str
    schedule_type: str
    practitioner: str
    practitioner_role: str
    practitioner_gender: str
    location: str
    location_address: str
    followers: int  # free slots straight after it that may be booked with it

    @classmethod
    def of(
        cls, slot: Slot, *, practice_ods: str, practice_name: str, followers: int = 0
    ) -> SlotRow:
        practitioner = slot.practitioner
        location = slot.location
        role = slot.schedule.practitioner_role
        return cls(
            id=slot.id,
            practice_ods=practice_ods,
            practice_name=practice_name,
            day=local(slot.start).date(),
            start_iso=slot.start.isoformat(),
            start=clock_time(slot.start),
            end=clock_time(slot.end),
            duration=duration_label(slot.duration),
            channel=slot.delivery_channel or "Not given",
            slot_type=slot.slot_type or "Not given",
            schedule_type=slot.schedule.schedule_type or "Not given",
            practitioner=practitioner.name.plain if practitioner and practitioner.name else "",
            practitioner_role=role.display if role else "Not given",
            practitioner_gender=gender_label(practitioner.gender if practitioner else None),
            location=(location.name if location and location.name else "") or "Not given",
            location_address=(location.address.display if location and location.address else "")
            or "No address given",
            followers=followers,
        )

    @property
    def book_query(self) -> str:
        """The booking form's query string: which practice, which slot, and when it starts."""
        return "?" + urlencode(
            {"practice": self.practice_ods, "slot": self.id, "start": self.start_iso}
        )


@dataclass(frozen=True)
class PracticeSlots:
    ods_code: str
    name: str
    rows: list[SlotRow]


@dataclass(frozen=True)
class DayGroup:
    day: date
    label: str
    practices: list[PracticeSlots]


@dataclass(frozen=True)
class AppointmentRow:
    """One of the patient's appointments at one practice."""

    key: str  # the opaque id in amend and cancel URLs
    day: str
    day_iso: str
    start: str
    end: str
    duration: str
    description: str
    comment: str
    status: str
    cancelled: bool
    cancellation_reason: str
    slot_type: str
    schedule_type: str
    channel: str
    practitioner_role: str
    booked_by: str
    version: str

    @classmethod
    def of(cls, appointment: Appointment, *, key: str) -> AppointmentRow:
        start, end = appointment.start, appointment.end
        return cls(
            key=key,
            day=long_day(local(start).date()) if start else "Not given",
            day_iso=local(start).date().isoformat() if start else "",
            start=clock_time(start),
            end=clock_time(end),
            duration=duration_label(end - start) if start and end else "",
            description=appointment.description or "",
            comment=appointment.comment or "",
            status="Cancelled" if appointment.cancelled else appointment.status.capitalize(),
            cancelled=appointment.cancelled,
            cancellation_reason=appointment.cancellation_reason or "",
            slot_type=appointment.slot_type or "",
            schedule_type=appointment.schedule_type or "",
            channel=appointment.delivery_channel or "",
            practitioner_role=appointment.practitioner_role.display
            if appointment.practitioner_role
            else "",
            booked_by=appointment.booking_organisation.name
            if appointment.booking_organisation and appointment.booking_organisation.name
            else "",
            version=appointment.version or "",
        )


@dataclass(frozen=True)
class PatientHeader:
    """The patient banner of the appointment pages, from the PDS trace."""

    name: str
    born: str
    age: str
    gender: str
    nhs_number: str
    practice_ods: str
    address: str

    @classmethod
    def of(cls, patient: Patient, *, today: date) -> PatientHeader:
        born = patient.birth_date
        return cls(
            name=patient.name.display or "Not known",
            born=short_date(born) or "Not known",
            age=f"{age_in_years(born, today)}y" if born else "",
            gender=gender_label(patient.gender),
            nhs_number=nhs_number.format(patient.nhs_number),
            practice_ods=patient.registered_practice_ods or "Not known",
            address=patient.home_address.display if patient.home_address else "Not known",
        )


def booking_summary_lines(
    *, patient: PatientHeader | None, summary: dict[str, Any], start: datetime, end: datetime
) -> list[tuple[str, str]]:
    """The booking summary, label by label: shown, printed and copied as the same text."""
    lines: list[tuple[str, str]] = []
    if patient is not None:
        lines += [("Patient", patient.name), ("NHS number", patient.nhs_number)]
    lines += [
        ("Date", long_day(local(start).date())),
        ("Time", f"{clock_time(start)} to {clock_time(end)} ({duration_label(end - start)})"),
        ("Practice", summary.get("practice_name", "")),
        ("Where", summary.get("location", "")),
        ("Address", summary.get("location_address", "")),
        ("How", summary.get("channel", "")),
        ("Appointment type", summary.get("slot_type", "")),
        ("Session", summary.get("schedule_type", "")),
        ("With", summary.get("practitioner_line", "")),
        ("Description", summary.get("description", "")),
    ]
    if summary.get("comment"):
        lines.append(("Comment", summary["comment"]))
    lines.append(("Booking reference", summary.get("appointment_id", "")))
    return [(label, value) for label, value in lines if value]
