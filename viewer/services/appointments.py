"""Appointments for receptionists: free slots across the federation, book, amend, cancel.

The federation is the `FederationPractice` table (the admin keeps it). Each practice is
reached through SDS, interaction by interaction (`GPConnectClient.for_practice`, SPEC
§3.6), and the chosen practices are searched at the same time, one thread per practice
and window of at most 14 days. Threads only talk HTTP: the user, the configuration and
the SDS cache are read before they start, and the audit is written after they finish.

Booking is the one write that must never happen twice (UX-SECURITY.md §4.4):
- each booking form carries an idempotency token; the `Booking` row is written (state
  pending) before anything is sent, so the same form submitted twice finds that row, and
  a second form for the same slot is refused while the first is in flight;
- `POST /Appointment` is sent once, never retried;
- after a timeout or a 5xx, and after a 409, the patient's appointments are read and the
  booking is matched by slot and start before the user is told anything: confirmed if it
  is there, failed if not, unknown if the practice still cannot be read;
- when a slot was taken by someone else, the practice is searched again and the nearest
  free slots offered instead.

Every slot search, booking, amendment and cancellation is audited with its outcome and
the trace IDs of the requests that decided it.
"""

from __future__ import annotations

import logging
import uuid
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import salted_hmac

from gpconnect import (
    Address,
    Appointment,
    Capability,
    ClientConfig,
    ConfigurationError,
    Conflict,
    ContactPoint,
    DuplicateRejected,
    GPConnectClient,
    GPConnectError,
    HumanName,
    Interactions,
    Patient,
    ProviderError,
    ProviderUnavailable,
    RequestingUser,
    SdsCache,
    Slot,
    SpineDirectory,
    SpineProxyError,
    nhs_number,
)
from gpconnect.client import appointment_booking
from viewer import audit, roles
from viewer.appointment_presenters import (
    AppointmentRow,
    DayGroup,
    PatientHeader,
    PracticeSlots,
    SlotRow,
    booking_summary_lines,
    long_day,
)
from viewer.models import BOOKING_IN_FLIGHT, Booking, BookingState, FederationPractice
from viewer.presenters import ErrorPanel
from viewer.services import (
    RESTRICTED_MESSAGE,
    SDS_SESSION_KEY,
    PatientLookupError,
    UserLike,
    _spine,
    gpconnect_client_config,
    http_client,
)

logger = logging.getLogger(__name__)

UK = ZoneInfo("Europe/London")
SESSION_KEY = "viewer_appointment_patients"
MAX_PATIENTS = 20
MAX_WINDOW_DAYS = 14  # SPEC §3.3: a free-slot search covers at most two weeks
PERIOD_DAYS = (7, 14)  # what the search form offers; it pages a week at a time
LIST_DAYS = 183  # how far ahead a patient's appointments are listed
MAX_TOGETHER = 4  # adjacent slots booked as one appointment, at most
ALTERNATIVES = 5  # nearest free slots offered when the chosen one was taken
ALTERNATIVES_DAYS = 7
LEASE_MARGIN_SECONDS = 30  # on top of a step's timeouts, retries and back-off
RECHECK_SECONDS = 15  # between two checks of a booking whose outcome is not known yet
CLOCK_SKEW_SECONDS = 60  # between our clock and the practice's, when matching `created`

TIMES_OF_DAY = {"morning": (0, 12), "afternoon": (12, 17), "evening": (17, 24)}
CHANNELS = ("In-person", "Telephone", "Video")

DECEASED_MESSAGE = (
    "The Personal Demographics Service (PDS) records that this patient has died, so no "
    "appointment can be booked for them."
)
SLOT_TAKEN_MESSAGE = (
    "Someone else has just booked this slot, so it was not booked for this patient. "
    "Choose another slot: the nearest free ones at the same practice are below."
)
SLOT_IN_FLIGHT_MESSAGE = (
    "A colleague is booking this slot through this service right now, so it was not booked "
    "for this patient. Choose another slot: the nearest free ones at the same practice are "
    "below."
)
UNKNOWN_MESSAGE = (
    "The practice's system did not confirm the booking, and its list of the patient's "
    "appointments could not be read to check. The appointment may or may not have been "
    "booked, so the slot stays held. Do not book again: this page checks again every few "
    "seconds."
)
NOT_YET_MESSAGE = (
    "The practice's system did not confirm the booking, and it is not in the patient's "
    "appointments yet. The practice may still be making it, so the slot stays held. Do not "
    "book again: this page checks again every few seconds."
)
NOT_BOOKED_MESSAGE = (
    "The practice's system did not confirm the booking, and its list of the patient's "
    "appointments shows that nothing was booked, so you can choose a slot again."
)
NOT_SENT_MESSAGE = (
    "The booking stopped before it was sent to the practice, so nothing was booked. You "
    "can choose a slot again."
)
TOO_SLOW_MESSAGE = (
    "Getting the booking ready took too long, so it was not sent and nothing was booked. "
    "Choose the slot again."
)
FAULT_MESSAGE = (
    "A fault in this service stopped the booking before it was sent, so nothing was "
    "booked. Please report it to your system administrator."
)
CHANGED_MESSAGE = (
    "Someone changed this appointment after you opened it, so your change was not made. "
    "The appointment as it is now is shown: check it, then try again."
)

T = TypeVar("T")


class AppointmentError(Exception):
    """A booking, amendment or cancellation that stopped for a reason the user must hear.

    It has the attributes of `gpconnect.GPConnectError` that the error panel shows.
    """

    title = "The appointment could not be booked"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        trace_id: str | None = None,
        retryable: bool = False,
        title: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.trace_id = trace_id
        self.retryable = retryable
        if title:
            self.title = title


class SlotTaken(AppointmentError):
    """The slot went to someone else; `alternatives` are the nearest free ones there."""

    title = "This slot has just been taken"

    def __init__(
        self,
        message: str,
        *,
        practice: FederationPractice,
        alternatives: Sequence[SlotRow],
        trace_id: str | None = None,
        failure: GPConnectError | None = None,
    ) -> None:
        super().__init__(message, reason="slot_taken", trace_id=trace_id)
        self.practice = practice
        self.alternatives = list(alternatives)
        self.failure = failure  # the search for alternatives failed too


class RegistrationNeeded(AppointmentError):
    """The practice has no record of the patient: confirm PDS's details to register them."""

    title = "Confirm the patient's details"


_TITLES: tuple[tuple[type[Exception], str], ...] = (
    (ProviderUnavailable, "The GP practice's system is not responding"),
    (DuplicateRejected, "The GP practice refused a duplicate"),
    (Conflict, "The appointment has changed"),
    (GPConnectError, "The GP practice's system refused the request"),
)


def error_panel(error: Exception) -> ErrorPanel:
    """Return the error panel for an appointment page: what happened, retry or not, trace ID."""
    title = getattr(error, "title", "") if isinstance(error, AppointmentError) else ""
    if isinstance(error, PatientLookupError):
        title = {
            "restricted": "This patient's appointments cannot be managed here",
            "deceased": "This patient has died",
        }.get(error.reason, "")
    if not title:
        title = next((t for kind, t in _TITLES if isinstance(error, kind)), "There was a problem")
    return ErrorPanel(
        title=title,
        message=getattr(error, "message", "") or str(error),
        retryable=bool(getattr(error, "retryable", False)),
        trace_id=getattr(error, "trace_id", None) or "",
    )


# The patient: traced on PDS, kept in the session behind an opaque id -----------------------


@dataclass(frozen=True)
class BookingPatient:
    """A patient a receptionist is booking for, as PDS describes them.

    `practice_ids` is the patient's logical id at each practice found so far (from find
    patient or a temporary registration); the patient need not be known at any practice.
    """

    id: str
    user_id: int
    pds: Patient
    trace_id: str
    practice_ids: Mapping[str, str] = field(default_factory=dict)

    @property
    def nhs_number(self) -> str:
        return self.pds.nhs_number

    def header(self) -> PatientHeader:
        return PatientHeader.of(self.pds, today=timezone.localdate())


def _patient_to_dict(patient: Patient) -> dict[str, Any]:
    address = patient.home_address
    return {
        "nhs_number": patient.nhs_number,
        "family": patient.name.family,
        "given": list(patient.name.given),
        "prefix": list(patient.name.prefix),
        "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
        "gender": patient.gender,
        "registered_practice_ods": patient.registered_practice_ods,
        "address": None
        if address is None
        else {
            "lines": list(address.lines),
            "city": address.city,
            "district": address.district,
            "postcode": address.postcode,
            "use": address.use,
        },
        "telecom": [[t.system, t.value, t.use] for t in patient.telecom],
    }


def _patient_from_dict(data: Mapping[str, Any]) -> Patient:
    address = data.get("address")
    return Patient(
        id=data["nhs_number"],
        nhs_number=data["nhs_number"],
        name=HumanName(
            family=data["family"], given=tuple(data["given"]), prefix=tuple(data["prefix"])
        ),
        birth_date=date.fromisoformat(data["birth_date"]) if data["birth_date"] else None,
        gender=data["gender"],
        registered_practice_ods=data["registered_practice_ods"],
        home_address=None
        if address is None
        else Address(
            lines=tuple(address["lines"]),
            city=address["city"],
            district=address["district"],
            postcode=address["postcode"],
            use=address["use"],
        ),
        telecom=tuple(ContactPoint(system, value, use) for system, value, use in data["telecom"]),
    )


def _store_patient(session: SessionBase, patient: BookingPatient) -> None:
    stored: dict[str, Any] = dict(session.get(SESSION_KEY, {}))
    for key, value in list(stored.items()):
        if value["user_id"] == patient.user_id and value["pds"]["nhs_number"] == patient.nhs_number:
            del stored[key]
    stored[patient.id] = {
        "user_id": patient.user_id,
        "pds": _patient_to_dict(patient.pds),
        "trace_id": patient.trace_id,
        "practice_ids": dict(patient.practice_ids),
    }
    for key in list(stored)[:-MAX_PATIENTS]:
        del stored[key]
    session[SESSION_KEY] = stored


def _remember_practice_id(
    session: SessionBase, patient: BookingPatient, ods_code: str, logical_id: str
) -> BookingPatient:
    updated = replace(patient, practice_ids={**patient.practice_ids, ods_code: logical_id})
    stored: dict[str, Any] = dict(session.get(SESSION_KEY, {}))
    if patient.id in stored:
        stored[patient.id] = {**stored[patient.id], "practice_ids": dict(updated.practice_ids)}
        session[SESSION_KEY] = stored
    return updated


def _user_id(user: UserLike) -> int:
    if user.pk is None:
        raise PermissionDenied("appointments need a signed-in user")
    return int(user.pk)


def appointment_patient_open(
    *, user: UserLike, nhs_number: str, session: SessionBase
) -> BookingPatient:
    """Trace the patient on PDS and keep them in the session for booking; audits "search".

    Raises `PatientLookupError` for a restricted (S-flagged) patient, about whom no GP
    Connect request may be made, and for a patient PDS records as dead; `GPConnectError`
    when PDS fails. The patient need not be registered at any practice of the federation.
    """
    if not roles.can(user, "appointments"):
        raise PermissionDenied
    number = "".join(ch for ch in nhs_number if ch.isdigit())
    trace_id = ""
    try:
        pds, _ = _spine(session, http_client())
        patient, trace_id = pds.trace(number)
        if patient.restricted:
            raise PatientLookupError(RESTRICTED_MESSAGE, reason="restricted", trace_id=trace_id)
        if patient.deceased:
            raise PatientLookupError(DECEASED_MESSAGE, reason="deceased", trace_id=trace_id)
    except (PatientLookupError, GPConnectError) as error:
        reason = error.reason if isinstance(error, PatientLookupError) else type(error).__name__
        audit.record(
            user=user,
            action="search",
            outcome="denied" if reason == "restricted" else "failure",
            nhs_number=number,
            trace_id=error.trace_id or "",
            detail=f"appointments: {reason}: {error.message}",
        )
        raise
    booking_patient = BookingPatient(
        id=uuid.uuid4().hex, user_id=_user_id(user), pds=patient, trace_id=trace_id
    )
    _store_patient(session, booking_patient)
    audit.record(
        user=user,
        action="search",
        outcome="success",
        nhs_number=number,
        context_id=booking_patient.id,
        trace_id=trace_id,
        detail="appointments: PDS trace",
    )
    return booking_patient


def appointment_patient_get(
    *, user: UserLike, patient_id: str, session: SessionBase
) -> BookingPatient:
    """Return the patient only if this user traced them in this session; otherwise 404."""
    if not roles.can(user, "appointments"):
        raise PermissionDenied
    data = session.get(SESSION_KEY, {}).get(patient_id)
    if data is None or data.get("user_id") != _user_id(user):
        audit.record(
            user=user,
            action="access_denied",
            outcome="denied",
            context_id=patient_id[:64],
            detail="appointment patient not in this user's session",
        )
        raise Http404("No such patient in this session")
    return BookingPatient(
        id=patient_id,
        user_id=data["user_id"],
        pds=_patient_from_dict(data["pds"]),
        trace_id=data["trace_id"],
        practice_ids=dict(data["practice_ids"]),
    )


def appointment_patients_recent(*, user: UserLike, session: SessionBase) -> list[BookingPatient]:
    """Return the patients this user traced for appointments in this session, newest first."""
    user_id = _user_id(user)
    return [
        BookingPatient(
            id=key,
            user_id=user_id,
            pds=_patient_from_dict(value["pds"]),
            trace_id=value["trace_id"],
            practice_ids=dict(value["practice_ids"]),
        )
        for key, value in reversed(list(session.get(SESSION_KEY, {}).items()))
        if value.get("user_id") == user_id
    ]


# The federation and its clients -----------------------------------------------------------


def federation_practices() -> list[FederationPractice]:
    """Return the practices receptionists may book at, by name."""
    return list(FederationPractice.objects.filter(enabled=True).order_by("display_name"))


def _practice(ods_code: str) -> FederationPractice:
    practice = FederationPractice.objects.filter(
        ods_code=ods_code.strip().upper(), enabled=True
    ).first()
    if practice is None:
        raise Http404("That practice is not part of the federation")
    return practice


def _directory(config: ClientConfig, cache: Mapping[str, Any]) -> SpineDirectory:
    return SpineDirectory(
        settings.GPCONNECT_SDS_URL,
        http=http_client(),
        api_key=settings.GPCONNECT_SDS_API_KEY,
        retry=config.retry,
        cache=SdsCache.from_dict(dict(cache)),
    )


@dataclass(frozen=True)
class _Caller:
    """What a worker thread needs to call a practice: no database, no session."""

    config: ClientConfig
    who: RequestingUser
    sds_cache: Mapping[str, Any]

    def client(self, ods_code: str, sds: SpineDirectory) -> GPConnectClient:
        return GPConnectClient.for_practice(
            self.config, user=self.who, ods_code=ods_code, directory=sds, http=http_client()
        )


def _caller(user: UserLike, session: SessionBase | None) -> _Caller:
    return _Caller(
        config=gpconnect_client_config(),
        who=roles.requesting_user(user),
        sds_cache=dict(session.get(SDS_SESSION_KEY, {})) if session is not None else {},
    )


@dataclass(frozen=True)
class _Outcome:
    ods_code: str
    result: Any  # what the job returned, or the GPConnectError it raised
    trace_ids: tuple[str, ...]


def _in_parallel(
    user: UserLike,
    session: SessionBase,
    jobs: Sequence[tuple[str, Callable[[GPConnectClient], Any]]],
) -> list[_Outcome]:
    """Run each (practice, job) in its own thread; return outcomes in the jobs' order.

    A job's `GPConnectError` becomes its outcome, so one practice failing never hides the
    others. SDS answers learnt by any thread are kept in the user's session.
    """
    caller = _caller(user, session)

    def run(ods_code: str, job: Callable[[GPConnectClient], Any]) -> tuple[_Outcome, Any]:
        sds = _directory(caller.config, caller.sds_cache)
        try:
            result = job(caller.client(ods_code, sds))
        except GPConnectError as error:
            result = error
        return _Outcome(ods_code, result, _trace_ids(result)), sds.cache.to_dict()

    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        finished = [f.result() for f in [pool.submit(run, ods, job) for ods, job in jobs]]
    cache = dict(session.get(SDS_SESSION_KEY, {}))
    for _, learnt in finished:
        cache.update(learnt)
    session[SDS_SESSION_KEY] = cache
    return [outcome for outcome, _ in finished]


def _trace_ids(result: Any) -> tuple[str, ...]:
    if isinstance(result, tuple):
        return tuple(t for item in result for t in _trace_ids(item))
    trace_id = getattr(result, "trace_id", None)
    return (trace_id,) if trace_id else ()


def _one_client(user: UserLike, session: SessionBase | None, ods_code: str) -> GPConnectClient:
    """A client for one practice in this thread, whose SDS answers the session keeps.

    Without a session (a scheduled check) SDS answers are kept for this client only.
    """
    caller = _caller(user, session)
    sds = _directory(caller.config, caller.sds_cache)

    def resolve(interaction: Any) -> Any:
        try:
            return sds.provider_endpoint(ods_code, interaction)
        finally:
            if session is not None:
                session[SDS_SESSION_KEY] = {
                    **session.get(SDS_SESSION_KEY, {}),
                    **sds.cache.to_dict(),
                }

    return GPConnectClient(
        caller.config, user=caller.who, resolve_endpoint=resolve, http=http_client()
    )


# Free slots ---------------------------------------------------------------------------------


def slot_windows(start: date, end: date) -> list[tuple[date, date]]:
    """Split the days from `start` to `end` (both included) into searches of at most 14 days."""
    windows = []
    while start <= end:
        last = min(end, start + timedelta(days=MAX_WINDOW_DAYS - 1))
        windows.append((start, last))
        start = last + timedelta(days=1)
    return windows


@dataclass(frozen=True)
class SlotFilters:
    """What the receptionist narrowed the slots to; empty strings mean "any"."""

    channel: str = ""
    role: str = ""
    gender: str = ""
    time_of_day: str = ""

    def matches(self, slot: Slot) -> bool:
        if self.channel and slot.delivery_channel != self.channel:
            return False
        role = slot.schedule.practitioner_role
        if self.role and (role.display if role else "") != self.role:
            return False
        practitioner = slot.practitioner
        if self.gender and (practitioner.gender if practitioner else None) != self.gender:
            return False
        if self.time_of_day:
            low, high = TIMES_OF_DAY[self.time_of_day]
            if not low <= slot.start.astimezone(UK).hour < high:
                return False
        return True


@dataclass(frozen=True)
class PracticeFailure:
    practice: FederationPractice
    error: ErrorPanel


@dataclass(frozen=True)
class SlotSearch:
    """Free slots of the chosen practices for a period, grouped by day and then practice."""

    start: date
    end: date
    days: list[DayGroup]
    shown: int
    found: int
    failures: list[PracticeFailure]
    role_options: list[str]
    period_label: str


def _followers(slot: Slot, ordered: Sequence[Slot]) -> list[Slot]:
    """Return the free slots that may be booked straight after `slot`, in order (SPEC §3.3).

    `ordered` is sorted by start, as `_future` returns it: each next slot is found by
    bisecting to the slots that start as the last one ends, not by reading the whole list
    (it is asked for every slot shown, so that would grow with the square of the slots).
    """
    chain: list[Slot] = []
    last = slot
    while len(chain) < MAX_TOGETHER - 1:
        start = bisect_left(ordered, last.end, key=lambda s: s.start)
        following = None
        for candidate in islice(ordered, start, None):
            if candidate.start != last.end:
                break
            if candidate.follows(last):
                following = candidate
                break
        if following is None:
            break
        chain.append(following)
        last = following
    return chain


def _future(slots: Sequence[Slot]) -> list[Slot]:
    now = timezone.now()
    return sorted((s for s in slots if s.start > now), key=lambda s: (s.start, s.schedule.id))


def slots_search(
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice_codes: Sequence[str],
    start: date,
    days: int,
    filters: SlotFilters,
) -> SlotSearch:
    """Search every chosen practice at once for free slots from `start`, for `days` days.

    Each practice is searched in windows of at most 14 days; each practice's search is
    audited as "search_slots". A practice that fails is listed with its error beside the
    others' slots. Slots already started are left out.
    """
    if not roles.can(user, "book"):
        raise PermissionDenied
    chosen = [p for p in federation_practices() if p.ods_code in set(practice_codes)]
    end = start + timedelta(days=days - 1)

    def search(window: tuple[date, date]) -> Callable[[GPConnectClient], Any]:
        return lambda client: client.search_free_slots(*window)

    jobs = [(p.ods_code, search(w)) for p in chosen for w in slot_windows(start, end)]
    outcomes = _in_parallel(user, session, jobs)
    by_practice, failures = _slots_by_practice(chosen, outcomes)
    for practice in chosen:
        _audit_slot_search(
            user, patient, practice.ods_code, (start, end), outcomes, by_practice, failures
        )

    future = {ods: _future(slots) for ods, slots in by_practice.items() if ods not in failures}
    day_groups, shown = _day_groups(chosen, future, filters)
    return SlotSearch(
        start=start,
        end=end,
        days=day_groups,
        shown=shown,
        found=sum(len(s) for s in future.values()),
        failures=[
            PracticeFailure(p, error_panel(failures[p.ods_code]))
            for p in chosen
            if p.ods_code in failures
        ],
        role_options=sorted(
            {
                s.schedule.practitioner_role.display
                for slots in future.values()
                for s in slots
                if s.schedule.practitioner_role
            }
        ),
        period_label=f"{long_day(start)} to {long_day(end)}",
    )


def _slots_by_practice(
    chosen: Sequence[FederationPractice], outcomes: Sequence[_Outcome]
) -> tuple[dict[str, list[Slot]], dict[str, GPConnectError]]:
    """Each practice's free slots over all its windows, and the first error of any that failed."""
    by_practice: dict[str, list[Slot]] = {p.ods_code: [] for p in chosen}
    failures: dict[str, GPConnectError] = {}
    for outcome in outcomes:
        if isinstance(outcome.result, GPConnectError):
            failures.setdefault(outcome.ods_code, outcome.result)
        else:
            by_practice[outcome.ods_code] += outcome.result.slots
    return by_practice, failures


def _audit_slot_search(
    user: UserLike,
    patient: BookingPatient,
    ods: str,
    period: tuple[date, date],
    outcomes: Sequence[_Outcome],
    by_practice: Mapping[str, list[Slot]],
    failures: Mapping[str, GPConnectError],
) -> None:
    traces = [t for o in outcomes if o.ods_code == ods for t in o.trace_ids]
    error = failures.get(ods)
    result = audit.described(error) if error else f"{len(by_practice[ods])} free slots"
    audit.record(
        user=user,
        action="search_slots",
        outcome="failure" if error else "success",
        nhs_number=patient.nhs_number,
        context_id=patient.id,
        trace_id=(error.trace_id or "") if error else (traces[-1] if traces else ""),
        detail=f"{ods} {period[0].isoformat()} to {period[1].isoformat()}: {result}"
        + (f"; trace IDs: {', '.join(traces)}" if len(traces) > 1 else ""),
    )


def _day_groups(
    chosen: Sequence[FederationPractice],
    future: Mapping[str, list[Slot]],
    filters: SlotFilters,
) -> tuple[list[DayGroup], int]:
    """The slots that pass the filters, by day and then practice; and how many there are."""
    groups: dict[date, dict[str, list[SlotRow]]] = {}
    shown = 0
    for practice in chosen:
        slots = future.get(practice.ods_code, [])
        for slot in slots:
            if not filters.matches(slot):
                continue
            row = SlotRow.of(
                slot,
                practice_ods=practice.ods_code,
                practice_name=practice.display_name,
                followers=len(_followers(slot, slots)),
            )
            groups.setdefault(row.day, {}).setdefault(practice.ods_code, []).append(row)
            shown += 1
    names = {p.ods_code: p.display_name for p in chosen}
    day_groups = [
        DayGroup(
            day=day,
            label=long_day(day),
            practices=[
                PracticeSlots(ods_code=ods, name=names[ods], rows=rows)
                for ods, rows in sorted(groups[day].items(), key=lambda item: names[item[0]])
            ],
        )
        for day in sorted(groups)
    ]
    return day_groups, shown


def _alternatives(
    user: UserLike,
    patient: BookingPatient,
    client: GPConnectClient,
    practice: FederationPractice,
    wanted: datetime,
    exclude: set[str],
) -> tuple[list[SlotRow], GPConnectError | None]:
    """Search the practice again and return the free slots nearest to `wanted`, in time order."""
    first = max(wanted.astimezone(UK).date(), timezone.localdate())
    last = first + timedelta(days=ALTERNATIVES_DAYS - 1)
    try:
        free = client.search_free_slots(first, last)
    except GPConnectError as error:
        audit.record(
            user=user,
            action="search_slots",
            outcome="failure",
            nhs_number=patient.nhs_number,
            context_id=patient.id,
            trace_id=error.trace_id or "",
            detail=f"{practice.ods_code} alternatives: {audit.described(error)}",
        )
        return [], error
    slots = [s for s in _future(free.slots) if s.id not in exclude]
    nearest = sorted(slots, key=lambda s: abs((s.start - wanted).total_seconds()))[:ALTERNATIVES]
    audit.record(
        user=user,
        action="search_slots",
        outcome="success",
        nhs_number=patient.nhs_number,
        context_id=patient.id,
        trace_id=free.trace_id,
        detail=f"{practice.ods_code} alternatives after a taken slot: {len(nearest)} offered",
    )
    return [
        SlotRow.of(
            s,
            practice_ods=practice.ods_code,
            practice_name=practice.display_name,
            followers=len(_followers(s, slots)),
        )
        for s in sorted(nearest, key=lambda s: s.start)
    ], None


def _slot_taken(
    user: UserLike,
    patient: BookingPatient,
    client: GPConnectClient,
    practice: FederationPractice,
    wanted: datetime,
    slot_ids: set[str],
    *,
    message: str = SLOT_TAKEN_MESSAGE,
    trace_id: str | None = None,
) -> SlotTaken:
    alternatives, failure = _alternatives(user, patient, client, practice, wanted, slot_ids)
    return SlotTaken(
        message,
        practice=practice,
        alternatives=alternatives,
        trace_id=trace_id,
        failure=failure,
    )


# The booking form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BookingOption:
    """What the booking form offers: the slot, how many adjacent slots may join it, and
    whether the practice knows the patient (if not, they are registered temporarily)."""

    practice: FederationPractice
    slot: SlotRow
    lengths: list[tuple[int, str]]
    registered: bool
    token: str


def _length_choices(chain: Sequence[Slot]) -> list[tuple[int, str]]:
    from viewer.appointment_presenters import clock_time, duration_label

    first = chain[0]
    return [
        (
            count,
            f"{count} slot{'s' if count > 1 else ''}: {clock_time(first.start)} to "
            f"{clock_time(chain[count - 1].end)} "
            f"({duration_label(chain[count - 1].end - first.start)})",
        )
        for count in range(1, len(chain) + 1)
    ]


def _chain(client: GPConnectClient, slot_id: str, wanted: datetime) -> tuple[list[Slot], str]:
    """Return the slot (first) and the free slots that may follow it, and the search's trace ID.

    An empty list means the slot is no longer free.
    """
    day = wanted.astimezone(UK).date()
    free = client.search_free_slots(day, day)
    slots = _future(free.slots)
    slot = next((s for s in slots if s.id == slot_id), None)
    if slot is None:
        return [], free.trace_id
    return [slot, *_followers(slot, slots)], free.trace_id


def booking_option(
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice_ods: str,
    slot_id: str,
    start: datetime,
) -> BookingOption:
    """Return the booking form for a slot if it is still free; otherwise raise `SlotTaken`.

    Asks the practice for the slot's day again (a slot list may be minutes old) and
    whether it knows the patient. Both requests are audited as "search_slots".
    """
    if not roles.can(user, "book"):
        raise PermissionDenied
    practice = _practice(practice_ods)
    client = _one_client(user, session, practice.ods_code)
    try:
        chain, trace_id = _chain(client, slot_id, start)
        known = patient.practice_ids.get(practice.ods_code)
        if known is None and chain:
            found = client.find_patient(patient.nhs_number, capability=Capability.APPOINTMENTS)
            if found.patient is not None:
                known = found.patient.id
                _remember_practice_id(session, patient, practice.ods_code, known)
    except GPConnectError as error:
        audit.record(
            user=user,
            action="search_slots",
            outcome="failure",
            nhs_number=patient.nhs_number,
            context_id=patient.id,
            trace_id=error.trace_id or "",
            detail=f"{practice.ods_code} booking form: {audit.described(error)}",
        )
        raise
    audit.record(
        user=user,
        action="search_slots",
        outcome="success",
        nhs_number=patient.nhs_number,
        context_id=patient.id,
        trace_id=trace_id,
        detail=f"{practice.ods_code} booking form for {slot_id}: "
        + ("still free" if chain else "no longer free"),
    )
    if not chain:
        raise _slot_taken(user, patient, client, practice, start, {slot_id})
    return BookingOption(
        practice=practice,
        slot=SlotRow.of(
            chain[0],
            practice_ods=practice.ods_code,
            practice_name=practice.display_name,
            followers=len(chain) - 1,
        ),
        lengths=_length_choices(chain),
        registered=known is not None,
        token=str(uuid.uuid4()),
    )


# Booking ------------------------------------------------------------------------------------


def _summary(practice: FederationPractice, slots: Sequence[Slot]) -> dict[str, Any]:
    row = SlotRow.of(slots[0], practice_ods=practice.ods_code, practice_name=practice.display_name)
    with_whom = ", ".join(
        part
        for part in (row.practitioner, row.practitioner_role, row.practitioner_gender)
        if part and part != "Not given"
    )
    return {
        "practice_name": practice.display_name,
        "practice_ods": practice.ods_code,
        "location": row.location,
        "location_address": row.location_address,
        "channel": row.channel,
        "slot_type": row.slot_type,
        "schedule_type": row.schedule_type,
        "practitioner_line": with_whom,
    }


def _record_booking(
    user: UserLike, booking: Booking, outcome: str, detail: str, trace_ids: Sequence[str] = ()
) -> None:
    traces = list(dict.fromkeys(t for t in trace_ids if t))
    audit.record(
        user=user,
        action="book",
        outcome=outcome,
        nhs_number=booking.nhs_number,
        context_id=booking.patient_key,
        document_id=booking.appointment_id,
        trace_id=traces[-1] if traces else booking.trace_id,
        detail=f"{booking.practice_ods} {', '.join(booking.slot_ids) or booking.first_slot_id}: "
        f"{detail}" + (f"; trace IDs: {', '.join(traces)}" if traces else ""),
    )


# Every change to a booking's state after it is written is a conditional UPDATE (`WHERE
# state IN …`: `_move`, and the cancellation), so the request booking a slot and a check of
# the same booking (a polling page, a colleague's form, the scheduled check) never overwrite
# each other. Taking the lease (`_recheck`) changes no state.


def _lease() -> timedelta:
    """How long one step of a booking (a read with its retries, or the POST) may take."""
    config = gpconnect_client_config()
    timeouts, retry = config.timeouts, config.retry
    per_try = timeouts.connect + max(timeouts.read, timeouts.write) + retry.max_backoff
    return timedelta(seconds=retry.attempts * per_try + LEASE_MARGIN_SECONDS)


def _settle() -> timedelta:
    return timedelta(seconds=int(settings.GPCONNECT_BOOKING_SETTLE_SECONDS))


def _move(
    booking: Booking,
    from_states: Sequence[str],
    *,
    where: dict[str, Any] | None = None,
    **changes: Any,
) -> bool:
    """Change the booking only if its state is one of `from_states` (and `where` holds).

    Returns whether it changed. The booking is read again either way, so it says what is
    true now.
    """
    changes["updated_at"] = timezone.now()
    rows = Booking.objects.filter(pk=booking.pk, state__in=from_states, **(where or {}))
    moved = rows.update(**changes) == 1
    booking.refresh_from_db()
    return moved


def _confirm(booking: Booking, appointment: Appointment, trace_id: str | None = None) -> bool:
    # Even from failed: the practice holds the appointment, whatever we thought before.
    return _move(
        booking,
        (BookingState.PENDING, BookingState.UNKNOWN, BookingState.FAILED),
        state=BookingState.CONFIRMED,
        appointment_id=appointment.id,
        appointment_version=appointment.version or "",
        summary={**booking.summary, "appointment_id": appointment.id},
        failure="",
        lease_until=None,
        trace_id=booking.trace_id if trace_id is None else trace_id,
    )


def _fail(booking: Booking, message: str) -> bool:
    return _move(
        booking,
        BOOKING_IN_FLIGHT,
        state=BookingState.FAILED,
        failure=message[:500],
        lease_until=None,
    )


def _unsure(booking: Booking, message: str, settle_until: datetime) -> bool:
    """Keep the booking (and its slot) in flight, to be checked again a little later."""
    now = timezone.now()
    return _move(
        booking,
        BOOKING_IN_FLIGHT,
        state=BookingState.UNKNOWN,
        failure=message[:500],
        settle_until=settle_until,
        lease_until=now + timedelta(seconds=RECHECK_SECONDS),
    )


def _hold(booking: Booking, **changes: Any) -> None:
    """Extend the booking request's lease before its next step (and save `changes`).

    Raises `AppointmentError` when the lease ran out and a check has since decided the
    booking was never sent: nothing may be sent for it any more.
    """
    # Only while the lease is still the one this request set: if it ran out and a check
    # took it over (a new lease_until), this request has lost the booking and sends nothing.
    if not _move(
        booking,
        (BookingState.PENDING,),
        where={"lease_until": booking.lease_until, "lease_until__gt": timezone.now()},
        lease_until=timezone.now() + _lease(),
        **changes,
    ):
        raise AppointmentError(TOO_SLOW_MESSAGE, reason="lease_lost")


def _matching(appointments: Sequence[Appointment], booking: Booking) -> Appointment | None:
    """Return the appointment that is this booking, or None.

    It must be at the booking's start, for its slots (when listed), with its description,
    made by our organisation (when the practice names it), and created no earlier than the
    booking (when the practice says; give or take a little clock difference).
    """
    ours = settings.GPCONNECT_CONSUMER_ODS_CODE.strip().upper()
    since = booking.created_at.replace(microsecond=0) - timedelta(seconds=CLOCK_SKEW_SECONDS)
    for appointment in appointments:
        if appointment.cancelled or appointment.start != booking.start:
            continue
        if appointment.slot_ids and set(appointment.slot_ids) != set(booking.slot_ids):
            continue
        if (appointment.description or "").strip() != booking.description.strip():
            continue
        organisation = appointment.booking_organisation
        if organisation and organisation.ods_code and organisation.ods_code.upper() != ours:
            continue
        created = appointment.created
        if isinstance(created, datetime) and created < since:
            continue
        if type(created) is date and created < since.astimezone(UK).date():
            continue
        return appointment
    return None


def _reconcile(client: GPConnectClient, booking: Booking) -> tuple[Appointment | None, str]:
    """Read the patient's appointments on the booking's day; return the match and the trace ID.

    Raises `GPConnectError` if the practice cannot be read.
    """
    assert booking.start is not None
    day = booking.start.astimezone(UK).date()
    listed = client.search_appointments(booking.patient_logical_id, day, day)
    return _matching(listed.appointments, booking), listed.trace_id


def _register(
    user: UserLike,
    patient: BookingPatient,
    client: GPConnectClient,
    practice: FederationPractice,
    trace_ids: list[str],
) -> tuple[str, bool]:
    """Register the patient temporarily at the practice; audited as "register_patient"."""

    def note(outcome: str, detail: str, trace_id: str) -> None:
        audit.record(
            user=user,
            action="register_patient",
            outcome=outcome,
            nhs_number=patient.nhs_number,
            context_id=patient.id,
            trace_id=trace_id,
            detail=f"{practice.ods_code}: {detail}",
        )

    try:
        record = client.register_patient(patient.pds)
    except DuplicateRejected as error:
        # Registered by someone else meanwhile: find them again.
        trace_ids.append(error.trace_id or "")
        again = client.find_patient(patient.nhs_number, capability=Capability.APPOINTMENTS)
        trace_ids.append(again.trace_id)
        note(
            "success" if again.patient else "failure",
            "already registered by someone else meanwhile"
            + ("" if again.patient else ", yet not found"),
            again.trace_id,
        )
        if again.patient is None:
            raise
        return again.patient.id, False
    except ValueError as error:
        note("failure", f"not sent: {error}", "")
        raise AppointmentError(
            f"The patient cannot be registered at {practice.display_name}: {error}.",
            reason="registration_refused",
        ) from error
    except GPConnectError as error:
        trace_ids.append(error.trace_id or "")
        note("failure", audit.described(error), error.trace_id or "")
        raise
    trace_ids.append(record.trace_id)
    note("success", f"registered temporarily as {record.patient.id}", record.trace_id)
    return record.patient.id, True


def _patient_at_practice(
    user: UserLike,
    session: SessionBase,
    patient: BookingPatient,
    client: GPConnectClient,
    practice: FederationPractice,
    *,
    registration_confirmed: bool,
    trace_ids: list[str],
) -> tuple[str, bool]:
    """Return the patient's logical id at the practice, registering them if confirmed.

    The second value is True when they were registered temporarily just now.
    """
    known = patient.practice_ids.get(practice.ods_code)
    if known:
        return known, False
    found = client.find_patient(patient.nhs_number, capability=Capability.APPOINTMENTS)
    trace_ids.append(found.trace_id)
    if found.patient is not None:
        logical_id, registered = found.patient.id, False
    elif not registration_confirmed:
        raise RegistrationNeeded(
            f"{practice.display_name} has no record of this patient. Check the details "
            "from the Personal Demographics Service (PDS) with the patient, then confirm "
            "them to register the patient there temporarily.",
            reason="registration_needed",
            trace_id=found.trace_id,
        )
    else:
        logical_id, registered = _register(user, patient, client, practice, trace_ids)
    _remember_practice_id(session, patient, practice.ods_code, logical_id)
    return logical_id, registered


def _claim(
    *,
    user: UserLike,
    patient: BookingPatient,
    practice: FederationPractice,
    slot_id: str,
    token: uuid.UUID,
    description: str,
    comment: str,
    check_holder: bool = True,
) -> tuple[Booking, bool]:
    """Write the pending booking, or return the one this form (token) already made.

    The second value is True when the row is new. Raises `_InFlight` with the booking
    that holds the slot when another form is booking it right now. A holder whose lease
    ran out (its request stopped, or its outcome is still unknown) is checked first, and
    the slot is claimed if that check decides it.
    """
    existing = Booking.objects.filter(token=token).first()
    if existing is not None:
        if existing.user_id != _user_id(user):
            raise PermissionDenied
        return existing, False
    try:
        with transaction.atomic():
            return (
                Booking.objects.create(
                    token=token,
                    user_id=_user_id(user),
                    nhs_number=patient.nhs_number,
                    patient_key=patient.id,
                    practice_ods=practice.ods_code,
                    first_slot_id=slot_id,
                    slot_ids=[slot_id],
                    description=description,
                    comment=comment,
                    lease_until=timezone.now() + _lease(),
                ),
                True,
            )
    except IntegrityError:
        existing = Booking.objects.filter(token=token).first()
        if existing is not None:  # the same form, submitted twice at once
            if existing.user_id != _user_id(user):
                raise PermissionDenied from None
            return existing, False
        holder = Booking.objects.filter(
            practice_ods=practice.ods_code, first_slot_id=slot_id, state__in=BOOKING_IN_FLIGHT
        ).first()
        if holder is not None and check_holder and _lease_over(holder):
            holder = _recheck(holder, why="checked when another booking of the slot was tried")
            if holder.state not in BOOKING_IN_FLIGHT:
                return _claim(
                    user=user,
                    patient=patient,
                    practice=practice,
                    slot_id=slot_id,
                    token=token,
                    description=description,
                    comment=comment,
                    check_holder=False,
                )
        raise _InFlight(holder) from None


class _InFlight(Exception):
    def __init__(self, holder: Booking | None) -> None:
        self.holder = holder


def appointment_book(
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice_ods: str,
    slot_id: str,
    start: datetime,
    length: int,
    description: str,
    comment: str,
    token: uuid.UUID,
    registration_confirmed: bool,
) -> Booking:
    """Book the slot (and `length - 1` slots straight after it) for the patient, once.

    Returns the `Booking`, whose state says what happened: confirmed; failed (nothing
    booked, `failure` says why); unknown (the practice did not confirm it and it is not,
    or not yet, in the patient's list: it is checked again until it settles). The same
    `token` returns the same booking without calling the practice again. Raises
    `SlotTaken` (with the nearest alternatives) when someone else has the slot,
    `RegistrationNeeded` when the practice has no record of the patient and the
    receptionist has not confirmed their PDS details, `AppointmentError` for anything
    else the user must read, and `GPConnectError` when the slot could not be checked.
    """
    if not roles.can(user, "book"):
        raise PermissionDenied
    practice = _practice(practice_ods)
    try:
        booking, new = _claim(
            user=user,
            patient=patient,
            practice=practice,
            slot_id=slot_id,
            token=token,
            description=description,
            comment=comment,
        )
    except _InFlight as busy:
        return _in_flight(user, patient, session, practice, slot_id, start, busy.holder)
    if not new:
        return booking  # a second submission of the same form: nothing is sent again
    return _book(
        user=user,
        patient=patient,
        session=session,
        practice=practice,
        booking=booking,
        start=start,
        length=length,
        registration_confirmed=registration_confirmed,
    )


def _in_flight(
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice: FederationPractice,
    slot_id: str,
    start: datetime,
    holder: Booking | None,
) -> Booking:
    """The slot is being booked by another form: this patient's from another tab, or not."""
    mine = holder is not None and holder.user_id == _user_id(user)
    if holder is not None and mine and holder.nhs_number == patient.nhs_number:
        return holder  # this patient's booking of this slot, from another tab
    audit.record(
        user=user,
        action="book",
        outcome="failure",
        nhs_number=patient.nhs_number,
        context_id=patient.id,
        detail=f"{practice.ods_code} {slot_id}: not sent, another booking of the slot "
        "through this service is in flight",
    )
    client = _one_client(user, session, practice.ods_code)
    raise _slot_taken(
        user, patient, client, practice, start, {slot_id}, message=SLOT_IN_FLIGHT_MESSAGE
    )


def _book(
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice: FederationPractice,
    booking: Booking,
    start: datetime,
    length: int,
    registration_confirmed: bool,
) -> Booking:
    client = _one_client(user, session, practice.ods_code)
    traces: list[str] = []
    try:
        slots = _prepare(
            user,
            patient,
            session,
            client,
            practice,
            booking,
            start,
            length,
            traces,
            registration_confirmed=registration_confirmed,
        )
    except SlotTaken:
        raise
    except (AppointmentError, GPConnectError) as error:
        reason = error.reason if isinstance(error, AppointmentError) else type(error).__name__
        if isinstance(error, GPConnectError):
            traces.append(error.trace_id or "")
        if _fail(booking, error.message):
            _record_booking(user, booking, "failure", f"not sent: {reason}", traces)
        raise
    except Exception as error:
        # A fault of ours before anything was sent: the slot must not stay locked.
        logger.exception("Booking %s stopped before it was sent", booking.token)
        _fail(booking, FAULT_MESSAGE)
        _record_booking(user, booking, "failure", f"not sent: {type(error).__name__}", traces)
        raise AppointmentError(FAULT_MESSAGE, reason="fault") from error

    registered = "; registered temporarily first" if booking.registered else ""
    try:
        appointment = client.book_appointment(
            patient_id=booking.patient_logical_id,
            slots=slots,
            description=booking.description,
            comment=booking.comment or None,
        )
    except Exception as error:
        return _after_post(user, patient, client, practice, booking, error, traces, registered)
    if not _confirm(booking, appointment, appointment.trace_id):
        logger.error("Booking %s made as %s, yet not pending", booking.token, appointment.id)
    _record_booking(
        user,
        booking,
        "success",
        f"booked as {appointment.id}{registered}",
        [*traces, appointment.trace_id],
    )
    return booking


def _prepare(
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    client: GPConnectClient,
    practice: FederationPractice,
    booking: Booking,
    start: datetime,
    length: int,
    traces: list[str],
    *,
    registration_confirmed: bool,
) -> list[Slot]:
    """Everything before `POST /Appointment`: the slots are still free, the patient is
    known (or registered), the request would be accepted by us; then mark it sent.

    Raises what the user must hear; nothing has been sent to book when it does.
    """
    chain, trace_id = _chain(client, booking.first_slot_id, start)
    traces.append(trace_id)
    if not chain:
        _fail(booking, "The slot was no longer free.")
        _record_booking(user, booking, "failure", "not sent: the slot is no longer free", traces)
        raise _slot_taken(user, patient, client, practice, start, {booking.first_slot_id})
    if length > len(chain):
        raise AppointmentError(
            _too_long_message(length, len(chain)), reason="slots_taken", title="Not booked"
        )
    slots = chain[: max(1, length)]
    summary = {
        **_summary(practice, slots),
        "description": booking.description,
        "comment": booking.comment,
    }
    _hold(
        booking,
        slot_ids=[s.id for s in slots],
        start=slots[0].start,
        end=slots[-1].end,
        summary=summary,
    )
    logical_id, registered = _patient_at_practice(
        user,
        session,
        patient,
        client,
        practice,
        registration_confirmed=registration_confirmed,
        trace_ids=traces,
    )
    _hold(booking, patient_logical_id=logical_id, registered=registered)
    # What would stop the booking before it is sent stops it here instead, so that any
    # failure from the POST on means it was sent: an SDS lookup, a body we would not send.
    client.endpoint_for(Interactions.APPOINTMENT_CREATE)
    try:
        appointment_booking(
            consumer=client.config.consumer,
            patient_id=logical_id,
            slots=slots,
            description=booking.description,
            comment=booking.comment or None,
            created=timezone.now(),
        )
    except (ConfigurationError, ValueError) as error:
        logger.error("Booking %s not sent: %s", booking.token, error)
        raise AppointmentError(_not_sendable_message(error), reason="not_sent") from error
    now = timezone.now()
    _hold(booking, sent_at=now, settle_until=now + _lease() + _settle())
    return slots


def _too_long_message(wanted: int, free: int) -> str:
    return (
        f"Only {free} of the {wanted} slots you chose {'is' if free == 1 else 'are'} still "
        "free, so nothing was booked. Choose how long the appointment should be again."
    )


def _not_sendable_message(error: Exception) -> str:
    if isinstance(error, ConfigurationError):
        return (
            "This service is not set up to book appointments: it has no phone number for "
            "the practice to contact us on (GPCONNECT_ORGANISATION_PHONE). Tell your system "
            "administrator."
        )
    return f"The booking could not be sent: {error}."


def _refused(error: Exception) -> bool:
    """Whether the booking was refused outright, so nothing can have been booked: a 4xx.

    From the practice; or from the Spine Secure Proxy, which forwards nothing it refuses
    (the practice's own refusals come back through it as the practice's errors).
    """
    status = getattr(error, "http_status", None)
    return (
        isinstance(error, (ProviderError, SpineProxyError))
        and status is not None
        and 400 <= status < 500
    )


def _after_post(
    user: UserLike,
    patient: BookingPatient,
    client: GPConnectClient,
    practice: FederationPractice,
    booking: Booking,
    error: Exception,
    traces: list[str],
    note: str,
) -> Booking:
    """Decide what the POST's failure means before saying anything.

    A 409 means someone (maybe us) holds the slot; any other 4xx is a refusal. Anything
    else (a 5xx, even one the practice sent itself: a server that failed part way may
    still have saved the appointment; a timeout, a gateway's error, a reply we could not
    read, a fault of ours) may still become a booking: it is checked now and stays
    unknown, with its slot locked, until a check finds it or it settles.
    """
    trace_id = getattr(error, "trace_id", None) or ""
    _move(booking, BOOKING_IN_FLIGHT, trace_id=trace_id)
    traces = [*traces, trace_id]
    if isinstance(error, DuplicateRejected):
        return _after_taken(user, patient, client, practice, booking, error, traces, note)
    what = f"{type(error).__name__} ({getattr(error, 'message', '') or error})"
    if _refused(error):
        assert isinstance(error, GPConnectError)
        _fail(booking, error.message)
        _record_booking(user, booking, "failure", f"refused: {what}{note}", traces)
        raise AppointmentError(
            error.message, reason=type(error).__name__, trace_id=error.trace_id
        ) from error
    if not isinstance(error, GPConnectError):
        logger.exception("Booking %s: the POST failed unexpectedly", booking.token)
    logger.warning("Booking %s: %s; trace ID %s; reconciling", booking.token, what, trace_id)
    settle_until = timezone.now() + _settle()
    _check(user, client, booking, traces, what=f"{what}{note}", settle_until=settle_until)
    return booking


def _after_taken(
    user: UserLike,
    patient: BookingPatient,
    client: GPConnectClient,
    practice: FederationPractice,
    booking: Booking,
    error: DuplicateRejected,
    traces: list[str],
    note: str,
) -> Booking:
    """After a 409: our own booking (another form made it), or the slot went to someone else."""
    what = f"409 DUPLICATE_REJECTED{note}"
    try:
        match, list_trace = _reconcile(client, booking)
    except GPConnectError as unreadable:
        _unsure(booking, UNKNOWN_MESSAGE, timezone.now())
        _record_booking(
            user,
            booking,
            "unknown",
            f"{what}; the patient's appointments could not be read ({type(unreadable).__name__})",
            [*traces, unreadable.trace_id or ""],
        )
        return booking
    if match is not None:
        _confirm(booking, match)
        _record_booking(
            user,
            booking,
            "success",
            f"{what}, then found in the patient's appointments as {match.id}",
            [*traces, list_trace],
        )
        return booking
    _fail(booking, SLOT_TAKEN_MESSAGE)
    _record_booking(
        user,
        booking,
        "failure",
        f"{what}: slot taken by someone else, not in the patient's appointments",
        [*traces, list_trace],
    )
    assert booking.start is not None
    raise _slot_taken(
        user,
        patient,
        client,
        practice,
        booking.start,
        set(booking.slot_ids),
        trace_id=booking.trace_id,
    ) from error


def _check(
    user: UserLike,
    client: GPConnectClient,
    booking: Booking,
    traces: Sequence[str],
    *,
    what: str,
    settle_until: datetime,
) -> None:
    """Look for the booking in the patient's list: confirmed if there; failed if not and it
    has settled; otherwise unknown, to be checked again. Audited as "book"."""
    try:
        match, list_trace = _reconcile(client, booking)
    except GPConnectError as unreadable:
        _unsure(booking, UNKNOWN_MESSAGE, settle_until)
        _record_booking(
            user,
            booking,
            "unknown",
            f"{what}; the patient's appointments could not be read ({type(unreadable).__name__})",
            [*traces, unreadable.trace_id or ""],
        )
        return
    traces = [*traces, list_trace]
    if match is not None:
        _confirm(booking, match)
        _record_booking(
            user,
            booking,
            "success",
            f"{what}, then found in the patient's appointments as {match.id}",
            traces,
        )
    elif timezone.now() >= settle_until:
        _fail(booking, NOT_BOOKED_MESSAGE)
        _record_booking(
            user,
            booking,
            "failure",
            f"{what}: not in the patient's appointments, so not booked",
            traces,
        )
    else:
        _unsure(booking, NOT_YET_MESSAGE, settle_until)
        _record_booking(
            user,
            booking,
            "unknown",
            f"{what}: not in the patient's appointments yet; "
            f"checked again until {settle_until.isoformat(timespec='seconds')}",
            traces,
        )


def _lease_over(booking: Booking) -> bool:
    return booking.lease_until is None or booking.lease_until <= timezone.now()


def _recheck(booking: Booking, *, why: str, session: SessionBase | None = None) -> Booking:
    """Check an in-flight booking whose lease ran out, as the user who made it.

    Nothing happens if someone else holds its lease: the request still booking it, or
    another check. One never sent is failed without asking the practice.
    """
    now = timezone.now()
    took = (
        Booking.objects.filter(pk=booking.pk, state__in=BOOKING_IN_FLIGHT)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .update(lease_until=now + _lease())
    )
    booking.refresh_from_db()
    if not took:
        return booking
    user = booking.user
    if booking.sent_at is None or not booking.patient_logical_id or booking.start is None:
        # Conditional on "never sent", as read in the same statement: a request that
        # recorded sending a moment ago keeps its booking in flight.
        if _move(
            booking,
            BOOKING_IN_FLIGHT,
            where={"sent_at__isnull": True},
            state=BookingState.FAILED,
            failure=NOT_SENT_MESSAGE[:500],
            lease_until=None,
        ):
            _record_booking(
                user, booking, "failure", f"{why}: the request stopped before sending it"
            )
            return booking
        if booking.state not in BOOKING_IN_FLIGHT or booking.sent_at is None:
            return booking
    settle_until = booking.settle_until or booking.sent_at + _lease() + _settle()
    try:
        client = _one_client(user, session, booking.practice_ods)
        _check(user, client, booking, [], what=why, settle_until=settle_until)
    except Exception:
        # Never leave it held: the next check tries again.
        logger.exception("Booking %s could not be checked", booking.token)
        _move(booking, BOOKING_IN_FLIGHT, lease_until=now + timedelta(seconds=RECHECK_SECONDS))
    return booking


def booking_get(*, user: UserLike, token: uuid.UUID, session: SessionBase) -> Booking:
    """Return this user's booking; one still in flight is checked again once its lease is over.

    Another user's booking, or none, is a 404 audited as "access_denied".
    """
    if not roles.can(user, "book"):
        raise PermissionDenied
    booking = Booking.objects.filter(token=token, user_id=_user_id(user)).first()
    if booking is None:
        audit.record(
            user=user,
            action="access_denied",
            outcome="denied",
            detail=f"booking {token} is not this user's",
        )
        raise Http404("No such booking")
    if booking.state in BOOKING_IN_FLIGHT and _lease_over(booking):
        booking = _recheck(booking, why="checked again", session=session)
    return booking


GIVE_UP_AFTER = timedelta(days=1)


def bookings_recheck(*, limit: int = 50) -> int:
    """Check again the in-flight bookings whose lease is over; return how many were checked.

    The scheduled check (Celery beat): a booking whose request died, or whose outcome is
    unknown and nobody is looking at, is settled all the same, and its slot freed if it
    was not booked.
    """
    now = timezone.now()
    due = list(
        Booking.objects.filter(state__in=BOOKING_IN_FLIGHT)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        # A day past settling and still unreadable: the practice must be asked by a person
        # (the booking page says so and can still check); the minute-by-minute check, and
        # its audit row each time, stop.
        .exclude(state=BookingState.UNKNOWN, settle_until__lt=now - GIVE_UP_AFTER)
        .select_related("user")
        .order_by("lease_until")[:limit]
    )
    for booking in due:
        _recheck(booking, why="checked again by the scheduled check")
    return len(due)


# The patient's appointments: list, amend, cancel ---------------------------------------------


def appointment_key(patient_id: str, ods_code: str, appointment_id: str) -> str:
    """Return the opaque id an appointment has in URLs for one booking patient."""
    return salted_hmac(
        "viewer.appointment", f"{patient_id}:{ods_code}:{appointment_id}"
    ).hexdigest()[:32]


@dataclass(frozen=True)
class PracticeAppointments:
    """The patient's appointments at one practice, from today on; cancelled ones too."""

    practice: FederationPractice
    rows: list[AppointmentRow]
    registered: bool
    error: ErrorPanel | None = None


def _list_at(
    client: GPConnectClient, nhs: str, known: str | None, start: date
) -> tuple[str, Any] | None:
    """Return (logical id, appointments) at the client's practice, or None if unknown there."""
    logical_id = known
    if logical_id is None:
        found = client.find_patient(nhs, capability=Capability.APPOINTMENTS)
        if found.patient is None:
            return None
        logical_id = found.patient.id
    return logical_id, client.search_appointments(
        logical_id, start, start + timedelta(days=LIST_DAYS)
    )


def appointments_list(
    *, user: UserLike, patient: BookingPatient, session: SessionBase
) -> list[PracticeAppointments]:
    """Return the patient's appointments at every practice of the federation, read at once.

    A practice with no record of the patient is listed as such. Audited as one "search".
    """
    if not roles.can(user, "appointments"):
        raise PermissionDenied
    practices = federation_practices()
    today = timezone.localdate()

    def listing(ods: str) -> Callable[[GPConnectClient], Any]:
        known = patient.practice_ids.get(ods)
        return lambda client: _list_at(client, patient.nhs_number, known, today)

    outcomes = _in_parallel(user, session, [(p.ods_code, listing(p.ods_code)) for p in practices])
    results: list[PracticeAppointments] = []
    notes: list[str] = []
    traces: list[str] = []
    for practice, outcome in zip(practices, outcomes, strict=True):
        result = outcome.result
        if isinstance(result, GPConnectError):
            results.append(PracticeAppointments(practice, [], False, error_panel(result)))
            notes.append(f"{practice.ods_code} {type(result).__name__}")
            traces.append(result.trace_id or "")
            continue
        if result is None:
            results.append(PracticeAppointments(practice, [], False))
            notes.append(f"{practice.ods_code} not registered")
            continue
        logical_id, listed = result
        patient = _remember_practice_id(session, patient, practice.ods_code, logical_id)
        rows = [
            AppointmentRow.of(a, key=appointment_key(patient.id, practice.ods_code, a.id))
            for a in sorted(listed.appointments, key=lambda a: (a.start is None, a.start))
        ]
        results.append(PracticeAppointments(practice, rows, True))
        notes.append(f"{practice.ods_code} {len(rows)}")
        traces.append(listed.trace_id)
    failed = any(r.error for r in results)
    audit.record(
        user=user,
        action="search",
        outcome="failure" if failed else "success",
        nhs_number=patient.nhs_number,
        context_id=patient.id,
        trace_id=next((t for t in reversed(traces) if t), ""),
        detail="appointments listed: "
        + ", ".join(notes)
        + (f"; trace IDs: {', '.join(t for t in traces if t)}" if traces else ""),
    )
    return results


@dataclass(frozen=True)
class AppointmentView:
    """One appointment to amend or cancel, read just now with its version."""

    practice: FederationPractice
    row: AppointmentRow
    appointment: Appointment


def _read_note(
    user: UserLike,
    patient: BookingPatient,
    practice: FederationPractice,
    outcome: str,
    detail: str,
    trace_id: str,
    appointment_id: str = "",
) -> None:
    audit.record(
        user=user,
        action="read_appointment",
        outcome=outcome,
        nhs_number=patient.nhs_number,
        context_id=patient.id,
        document_id=appointment_id,
        trace_id=trace_id,
        detail=f"{practice.ods_code}: {detail}",
    )


def _appointment_of(
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice: FederationPractice,
    key: str,
    client: GPConnectClient,
) -> Appointment:
    """Return the patient's appointment with this opaque key at the practice; otherwise 404.

    The read is audited as "read_appointment".
    """
    try:
        listed = _list_at(
            client,
            patient.nhs_number,
            patient.practice_ids.get(practice.ods_code),
            timezone.localdate(),
        )
    except GPConnectError as error:
        _read_note(
            user,
            patient,
            practice,
            "failure",
            f"the patient's appointments could not be read: {type(error).__name__}",
            error.trace_id or "",
        )
        raise
    appointment: Appointment | None = None
    if listed is not None:
        logical_id, appointments = listed
        _remember_practice_id(session, patient, practice.ods_code, logical_id)
        appointment = next(
            (
                a
                for a in appointments.appointments
                if appointment_key(patient.id, practice.ods_code, a.id) == key
            ),
            None,
        )
    if appointment is None:
        audit.record(
            user=user,
            action="access_denied",
            outcome="denied",
            nhs_number=patient.nhs_number,
            context_id=patient.id,
            document_id=key[:200],
            detail=f"appointment not in this patient's list at {practice.ods_code}",
        )
        raise Http404("No such appointment for this patient")
    _read_note(
        user,
        patient,
        practice,
        "success",
        f"read (version {appointment.version}) from the patient's appointments",
        appointment.trace_id,
        appointment.id,
    )
    return appointment


def appointment_get(
    *, user: UserLike, patient: BookingPatient, session: SessionBase, practice_ods: str, key: str
) -> AppointmentView:
    """Return one of the patient's appointments, read afresh with its version (to change it)."""
    if not roles.can(user, "book"):
        raise PermissionDenied
    practice = _practice(practice_ods)
    client = _one_client(user, session, practice.ods_code)
    listed = _appointment_of(user, patient, session, practice, key, client)
    try:
        fresh = client.read_appointment(listed.id)
    except GPConnectError as error:
        _read_note(
            user,
            patient,
            practice,
            "failure",
            type(error).__name__,
            error.trace_id or "",
            listed.id,
        )
        raise
    _read_note(
        user,
        patient,
        practice,
        "success",
        f"read (version {fresh.version})",
        fresh.trace_id,
        fresh.id,
    )
    return AppointmentView(practice, AppointmentRow.of(fresh, key=key), fresh)


def _change(
    action: str,
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice_ods: str,
    key: str,
    change: Callable[[GPConnectClient, Appointment], Appointment],
    made: Callable[[Appointment], bool],
    what: str,
) -> Appointment:
    if not roles.can(user, "book"):
        raise PermissionDenied
    practice = _practice(practice_ods)
    client = _one_client(user, session, practice.ods_code)
    appointment = _appointment_of(user, patient, session, practice, key, client)

    def note(outcome: str, detail: str, *trace_ids: str) -> None:
        traces = [t for t in trace_ids if t]
        audit.record(
            user=user,
            action=action,
            outcome=outcome,
            nhs_number=patient.nhs_number,
            context_id=patient.id,
            document_id=appointment.id,
            trace_id=traces[0] if traces else "",
            detail=f"{practice.ods_code}: {detail}"
            + (f"; trace IDs: {', '.join(traces)}" if len(traces) > 1 else ""),
        )

    try:
        changed = change(client, appointment)
    except Conflict as error:
        note(
            "failure",
            f"not {what}: changed by someone else since it was read",
            error.trace_id or "",
        )
        raise AppointmentError(
            CHANGED_MESSAGE,
            reason="changed",
            trace_id=error.trace_id,
            title="The appointment has changed",
        ) from error
    except ValueError as error:
        note("failure", f"not {what}: {error}")
        raise AppointmentError(
            f"The appointment was not {what}: {error}.", reason="refused", title=f"Not {what}"
        ) from error
    except GPConnectError as error:
        if _refused(error):
            note(
                "failure",
                f"not {what}: {audit.described(error)}",
                error.trace_id or "",
            )
            raise
        # No answer we can trust: the change may have been made all the same. Read it back.
        return _read_back(client, appointment, error, made, note, what)
    note("success", f"{what} (now version {changed.version})", changed.trace_id)
    return changed


def _read_back(
    client: GPConnectClient,
    appointment: Appointment,
    error: GPConnectError,
    made: Callable[[Appointment], bool],
    note: Callable[..., None],
    what: str,
) -> Appointment:
    """After an amendment or cancellation without a usable answer: return the appointment
    if reading it back shows the change made; otherwise raise `AppointmentError` (unknown)."""
    failed = f"{type(error).__name__} ({error.message})"
    try:
        now = client.read_appointment(appointment.id)
    except GPConnectError as unreadable:
        note(
            "unknown",
            f"{failed}; could not be read back ({type(unreadable).__name__})",
            error.trace_id or "",
            unreadable.trace_id or "",
        )
    else:
        if made(now):
            note("success", f"{failed}, then read back: {what}", error.trace_id or "", now.trace_id)
            return now
        note(
            "unknown",
            f"{failed}, then read back: not {what} yet",
            error.trace_id or "",
            now.trace_id,
        )
    raise AppointmentError(
        f"The practice's system did not confirm that the appointment was {what}. It may "
        "still be: the appointment as the practice holds it now is shown. Check it before "
        "trying again.",
        reason="unknown",
        trace_id=error.trace_id,
        title=f"The appointment may not have been {what}",
    ) from error


def appointment_amend(
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice_ods: str,
    key: str,
    version: str,
    description: str,
    comment: str,
) -> Appointment:
    """Change the description and comment of the appointment as it was at `version`.

    A change made by someone else since raises `AppointmentError` (reason "changed").
    """
    return _change(
        "amend",
        user=user,
        patient=patient,
        session=session,
        practice_ods=practice_ods,
        key=key,
        change=lambda client, a: client.amend_appointment(
            a.id, version=version, description=description, comment=comment or None
        ),
        made=lambda a: (a.description or "", a.comment or "") == (description, comment or ""),
        what="amended",
    )


def appointment_cancel(
    *,
    user: UserLike,
    patient: BookingPatient,
    session: SessionBase,
    practice_ods: str,
    key: str,
    version: str,
    reason: str,
) -> Appointment:
    """Cancel the appointment as it was at `version`, with the reason; audits "cancel"."""
    cancelled = _change(
        "cancel",
        user=user,
        patient=patient,
        session=session,
        practice_ods=practice_ods,
        key=key,
        change=lambda client, a: client.cancel_appointment(a.id, version=version, reason=reason),
        made=lambda a: a.cancelled,
        what="cancelled",
    )
    # Conditional, like `_move`: only a confirmed booking becomes cancelled.
    Booking.objects.filter(
        practice_ods=practice_ods.strip().upper(),
        appointment_id=cancelled.id,
        state=BookingState.CONFIRMED,
    ).update(state=BookingState.CANCELLED, updated_at=timezone.now())
    return cancelled


def booking_patient_header(
    *, user: UserLike, booking: Booking, session: SessionBase
) -> PatientHeader | None:
    """Return the banner of the booking's patient if this session still has them."""
    data = session.get(SESSION_KEY, {}).get(booking.patient_key)
    if data is None or data.get("user_id") != _user_id(user):
        return None
    return PatientHeader.of(_patient_from_dict(data["pds"]), today=timezone.localdate())


def nhs_number_display(number: str) -> str:
    return nhs_number.format(number) if nhs_number.is_valid(number) else number


def booking_summary(booking: Booking, header: PatientHeader | None) -> list[tuple[str, str]]:
    """Return the booking's summary, label by label, once the slots are known."""
    if booking.start is None or booking.end is None:
        return []
    return booking_summary_lines(
        patient=header,
        summary={
            **booking.summary,
            "description": booking.description,
            "comment": booking.comment,
            "appointment_id": booking.appointment_id,
        },
        start=booking.start,
        end=booking.end,
    )
