"""Foundations and Appointment Management: patients, free slots and bookings (SPEC §3).

Every federated practice publishes a deterministic appointment book, four weeks ahead of
`sandbox.today()`: two or three schedules (one per practitioner and surgery), morning and
afternoon sessions of 10- or 15-minute slots, a mix of delivery channels and slot types,
and a few slots kept for urgent-care consumers or for the federation's own practices.

What consumers change is persisted in `data_dir/appointments.sqlite3` (the `AppointmentStore`,
kept on `sandbox.extensions["appointments"]`): temporary registrations and bookings. A
slot can be held by one live booking only (a primary key on practice and slot id), so two
consumers racing for the same slot get one 201 and one 409 DUPLICATE_REJECTED, even across
processes sharing the data directory.

Where the specification and the provider test pack disagree, the sandbox answers as the
test pack asserts providers do (PEERS §9), because that is what real providers return:
- a reference to a slot that does not exist is 422 INVALID_RESOURCE (the error guide's
  example says REFERENCE_NOT_FOUND, but `AppointmentBook.feature` books `Slot/hello`
  and expects INVALID_RESOURCE); the same code is used for unknown patients and locations;
- a stale or unparseable `If-Match` is 409 FHIR_CONSTRAINT_VIOLATION;
- a cancellation extension with an empty reason is 422 INVALID_PARAMETER;
- a cancellation that also changes the description is refused (the spec's own example
  does that, but its rule says only status and the reason may change).

Where neither names a code, the sandbox chooses: reading, amending or cancelling a past
appointment is 422 INVALID_RESOURCE; an amend or cancel without `If-Match` is 400
BAD_REQUEST (the spec makes the header a SHALL; the test pack only sends it sometimes).
Slot searches may return slots that have already started today (the spec allows searching
the past); booking one is 422 INVALID_RESOURCE.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpconnect.interactions import Interactions
from gpconnect.nhs_number import is_valid as nhs_number_is_valid

from .catalogue import (
    PATIENTS,
    PATIENTS_BY_NHS_NUMBER,
    PRACTICES,
    PRACTICES_BY_ODS,
    Practice,
    SandboxPatient,
)
from .checks import date_bounds
from .documents import parse_nhs_identifier
from .outcomes import ProviderFault
from .provider import NO_STORE, ProviderCall, Sandbox, provider_route, read_json_body, searchset
from .records import Practitioner
from .resources import (
    NHS_NUMBER_SYSTEM,
    ODS_SYSTEM,
    PROFILE,
    patient_resource,
    practice_organisation,
    practitioner_resource,
)

ROOT = "/{ods}/STU3/1/gpconnect"
LONDON = ZoneInfo("Europe/London")
BOOKING_WINDOW_DAYS = 28  # slots are published four weeks ahead
MAX_SEARCH_DAYS = 14
MAX_DESCRIPTION = 100
MAX_COMMENT = 500

ORG_TYPE_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-OrganisationType-1"
SDS_ROLE_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-SDSJobRoleName-1"
EXT_DELIVERY_CHANNEL = PROFILE + "Extension-GPConnect-DeliveryChannel-2"
EXT_PRACTITIONER_ROLE = PROFILE + "Extension-GPConnect-PractitionerRole-1"
EXT_BOOKING_ORGANISATION = PROFILE + "Extension-GPConnect-BookingOrganisation-1"
EXT_CANCELLATION_REASON = PROFILE + "Extension-GPConnect-AppointmentCancellationReason-1"
EXT_NHS_COMMUNICATION = PROFILE + "Extension-CareConnect-GPC-NHSCommunication-1"
EXT_REGISTRATION_DETAILS = PROFILE + "Extension-CareConnect-GPC-RegistrationDetails-1"
APPOINTMENT_PROFILE = PROFILE + "GPConnect-Appointment-1"
PATIENT_PROFILE = PROFILE + "CareConnect-GPC-Patient-1"

IN_PERSON, TELEPHONE, VIDEO = "In-person", "Telephone", "Video"
ROUTINE = "Routine appointment"
URGENT = "Urgent on the day"
TELEPHONE_CONSULTATION = "Telephone consultation"
VIDEO_CONSULTATION = "Video consultation"

_ID = r"[A-Za-z0-9\-.]{1,64}"
_SLOT_REFERENCE = re.compile(rf"^Slot/(?P<id>{_ID})$")
_ACTOR_REFERENCE = re.compile(rf"^(?P<type>Patient|Location|Practitioner)/(?P<id>{_ID})$")
_SEARCH_DATE = re.compile(
    r"^(?P<prefix>[A-Za-z]*)(?P<value>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:[+-]\d{2}:\d{2}))?)$"
)
_ETAG = re.compile(r'^(?:W/)?"(?P<version>[^"]+)"$')


# --- The appointment book: where, who, and when --------------------------------------------


@dataclass(frozen=True)
class Site:
    """A surgery: a `Location`."""

    id: str
    ods: str
    name: str
    lines: tuple[str, ...]
    city: str
    postcode: str
    phone: str


@dataclass(frozen=True)
class Restriction:
    """Who may see and book a slot: booking organisations of these types or ODS codes."""

    kind: str  # "org-type" | "ods"
    codes: frozenset[str]

    def allows(self, ods_codes: Iterable[str], org_types: Iterable[str]) -> bool:
        offered = set(ods_codes) if self.kind == "ods" else set(org_types)
        return bool(self.codes & offered)


URGENT_CARE_ONLY = Restriction("org-type", frozenset({"urgent-care"}))
FEDERATION_ONLY = Restriction("ods", frozenset(p.ods for p in PRACTICES if p.federated))


@dataclass(frozen=True)
class Block:
    """A run of same-type slots inside a session: adjacent ones can be booked together."""

    start: time
    end: time
    service_type: str
    channel: str
    restriction: Restriction | None = None


@dataclass(frozen=True)
class Template:
    minutes: int
    sessions: tuple[tuple[Block, ...], ...]  # morning, afternoon
    days_off: frozenset[tuple[int, int]] = frozenset()  # (weekday, session index)


def _t(hour: int, minute: int = 0) -> time:
    return time(hour, minute)


# One template per schedule, in the order of the practice's practitioners.
TEMPLATES: tuple[Template, ...] = (
    Template(
        minutes=10,
        sessions=(
            (
                Block(_t(9), _t(10), ROUTINE, IN_PERSON),
                Block(_t(10), _t(10, 40), TELEPHONE_CONSULTATION, TELEPHONE),
                Block(_t(10, 40), _t(11), URGENT, IN_PERSON, URGENT_CARE_ONLY),
            ),
            (
                Block(_t(14), _t(15), ROUTINE, IN_PERSON),
                Block(_t(15), _t(15, 30), VIDEO_CONSULTATION, VIDEO),
                Block(_t(15, 30), _t(16), ROUTINE, IN_PERSON, FEDERATION_ONLY),
            ),
        ),
    ),
    Template(
        minutes=15,
        sessions=(
            (
                Block(_t(9, 30), _t(11), ROUTINE, IN_PERSON),
                Block(_t(11), _t(11, 30), TELEPHONE_CONSULTATION, TELEPHONE),
            ),
            (
                Block(_t(13, 30), _t(14, 30), URGENT, IN_PERSON, URGENT_CARE_ONLY),
                Block(_t(14, 30), _t(15, 30), ROUTINE, IN_PERSON),
            ),
        ),
        days_off=frozenset({(4, 1)}),  # no Friday afternoons
    ),
    Template(
        minutes=10,
        sessions=(
            (
                Block(_t(8, 30), _t(10), ROUTINE, IN_PERSON),
                Block(_t(10), _t(10, 30), VIDEO_CONSULTATION, VIDEO),
            ),
            (Block(_t(16), _t(17), TELEPHONE_CONSULTATION, TELEPHONE, FEDERATION_ONLY),),
        ),
        days_off=frozenset({(2, 0), (2, 1)}),  # part time: never on Wednesdays
    ),
)

BRANCHES: dict[str, tuple[str, tuple[str, ...], str, str, str]] = {
    "A20047": ("Kirkstall Branch Surgery", ("14 Abbey Road",), "Leeds", "LS5 3HS", "0113 496 0101"),
    "C81016": ("Ossett Branch Surgery", ("2 Station Road",), "Ossett", "WF5 8AD", "01924 496 103"),
}


def practice_sites(practice: Practice) -> tuple[Site, ...]:
    """The practice's main surgery (the patients' preferred branch) and any branch surgery."""
    main = Site(
        id=f"loc-{practice.ods.lower()}-main",
        ods=practice.ods,
        name=practice.name,
        lines=practice.address[:-1],
        city=practice.address[-1],
        postcode=practice.postcode,
        phone=practice.phone,
    )
    branch = BRANCHES.get(practice.ods)
    if branch is None:
        return (main,)
    name, lines, city, postcode, phone = branch
    return (
        main,
        Site(
            f"loc-{practice.ods.lower()}-branch", practice.ods, name, lines, city, postcode, phone
        ),
    )


@dataclass(frozen=True)
class ScheduleDef:
    id: str
    number: int  # 1-based, the `p{n}` in slot ids
    practitioner: Practitioner
    site: Site
    session_name: str
    horizon: tuple[datetime, datetime]


@dataclass(frozen=True)
class SlotDef:
    id: str
    schedule: ScheduleDef
    start: datetime  # aware, Europe/London
    end: datetime
    service_type: str
    channel: str
    busy: bool  # booked by the practice itself: never offered, and refused with 409
    restriction: Restriction | None

    def visible_to(self, ods_codes: Iterable[str], org_types: Iterable[str]) -> bool:
        return self.restriction is None or self.restriction.allows(ods_codes, org_types)


@dataclass(frozen=True)
class PracticeBook:
    practice: Practice
    sites: Mapping[str, Site]
    schedules: Mapping[str, ScheduleDef]
    slots: tuple[SlotDef, ...]  # in start order
    slots_by_id: Mapping[str, SlotDef]


def session_name(practitioner: Practitioner) -> str:
    """`Schedule.serviceCategory.text`: the rota name, from the practitioner's SDS role."""
    display = practitioner.role_display.lower()
    if practitioner.role_code in ("R0260", "R0270") or "general" in display:
        return "General GP appointments"
    if "nurse" in display:
        return "Practice nurse clinic"
    return f"{practitioner.role_display} clinic"


def _is_busy(slot_id: str) -> bool:
    # About one slot in four is already taken by the practice's own patients.
    return hashlib.sha256(slot_id.encode()).digest()[0] % 4 == 0


def build_practice_book(
    practice: Practice, practitioners: Sequence[Practitioner], today: date
) -> PracticeBook:
    """Return the practice's appointment book for the four weeks from `today` (deterministic)."""
    sites = practice_sites(practice)
    staff = [p for p in practitioners if p.organisation_ods == practice.ods]
    staff = staff[: len(TEMPLATES)] if practice.federated else []
    horizon = (
        datetime.combine(today, time(), tzinfo=LONDON),
        datetime.combine(today + timedelta(days=BOOKING_WINDOW_DAYS), time(), tzinfo=LONDON),
    )
    schedules = [
        ScheduleDef(
            id=f"sched-{practice.ods}-p{index + 1}",
            number=index + 1,
            practitioner=practitioner,
            site=sites[1] if index == 1 and len(sites) > 1 else sites[0],
            session_name=session_name(practitioner),
            horizon=horizon,
        )
        for index, practitioner in enumerate(staff)
    ]
    slots: list[SlotDef] = []
    for offset in range(BOOKING_WINDOW_DAYS):
        day = today + timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        for schedule in schedules:
            template = TEMPLATES[schedule.number - 1]
            length = timedelta(minutes=template.minutes)
            for session_index, blocks in enumerate(template.sessions):
                if (day.weekday(), session_index) in template.days_off:
                    continue
                for block in blocks:
                    start = datetime.combine(day, block.start, tzinfo=LONDON)
                    block_end = datetime.combine(day, block.end, tzinfo=LONDON)
                    while start + length <= block_end:
                        slot_id = f"slot-{practice.ods}-{start:%Y%m%d-%H%M}-p{schedule.number}"
                        slots.append(
                            SlotDef(
                                id=slot_id,
                                schedule=schedule,
                                start=start,
                                end=start + length,
                                service_type=block.service_type,
                                channel=block.channel,
                                busy=_is_busy(slot_id),
                                restriction=block.restriction,
                            )
                        )
                        start += length
    slots.sort(key=lambda s: (s.start, s.schedule.number))
    return PracticeBook(
        practice=practice,
        sites={site.id: site for site in sites},
        schedules={schedule.id: schedule for schedule in schedules},
        slots=tuple(slots),
        slots_by_id={slot.id: slot for slot in slots},
    )


# --- FHIR resources --------------------------------------------------------------------------


def fhir_instant(value: datetime) -> str:
    """UK local time with its offset: +00:00 in GMT, +01:00 in BST."""
    return value.astimezone(LONDON).isoformat(timespec="seconds")


def _meta(profile: str, version: str = "1") -> dict[str, Any]:
    return {"versionId": version, "profile": [PROFILE + profile]}


def _role_extension(practitioner: Practitioner) -> dict[str, Any]:
    return {
        "url": EXT_PRACTITIONER_ROLE,
        "valueCodeableConcept": {
            "coding": [
                {
                    "system": SDS_ROLE_SYSTEM,
                    "code": practitioner.role_code,
                    "display": practitioner.role_display,
                }
            ]
        },
    }


def slot_resource(slot: SlotDef) -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "id": slot.id,
        "meta": _meta("GPConnect-Slot-1"),
        "extension": [{"url": EXT_DELIVERY_CHANNEL, "valueCode": slot.channel}],
        "serviceType": [{"text": slot.service_type}],
        "schedule": {"reference": f"Schedule/{slot.schedule.id}"},
        "status": "free",
        "start": fhir_instant(slot.start),
        "end": fhir_instant(slot.end),
    }


def schedule_resource(schedule: ScheduleDef) -> dict[str, Any]:
    practitioner = schedule.practitioner
    return {
        "resourceType": "Schedule",
        "id": schedule.id,
        "meta": _meta("GPConnect-Schedule-1"),
        "extension": [_role_extension(practitioner)],
        "serviceCategory": {"text": schedule.session_name},
        "actor": [
            {"reference": f"Location/{schedule.site.id}"},
            {"reference": f"Practitioner/{practitioner.id}"},
        ],
        "planningHorizon": {
            "start": fhir_instant(schedule.horizon[0]),
            "end": fhir_instant(schedule.horizon[1]),
        },
        "comment": (
            f"{schedule.session_name} with {practitioner.prefix} {practitioner.given} "
            f"{practitioner.family} at {schedule.site.name}"
        ),
    }


def location_resource(site: Site) -> dict[str, Any]:
    practice = PRACTICES_BY_ODS[site.ods]
    return {
        "resourceType": "Location",
        "id": site.id,
        "meta": _meta("CareConnect-GPC-Location-1"),
        "name": site.name,
        # STU3 Location.address is a single Address (the spec's read example has an array).
        "address": {
            "use": "work",
            "line": list(site.lines),
            "city": site.city,
            "postalCode": site.postcode,
        },
        "telecom": [{"system": "phone", "value": site.phone, "use": "work"}],
        "managingOrganization": {"reference": f"Organization/{practice.organisation_id}"},
    }


def capability_statement() -> dict[str, Any]:
    """The Foundations and Appointment Management CapabilityStatement (1.2.9)."""
    return {
        "resourceType": "CapabilityStatement",
        "version": "1.2.9",
        "name": "GP Connect",
        "status": "active",
        "date": "2024-01-03",
        "publisher": "GP Connect sandbox",
        "contact": [{"name": "GP Connect document viewer project"}],
        "description": "This server implements the GP Connect API version 1.2.9",
        "copyright": "Copyright NHS Digital 2016-24",
        "kind": "capability",
        "software": {"name": "gpconnect-sandbox", "version": "1.0.0"},
        "fhirVersion": "3.0.1",
        "acceptUnknown": "both",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "profile": [
            {"reference": PROFILE + name}
            for name in (
                "CareConnect-GPC-Patient-1",
                "CareConnect-GPC-Organization-1",
                "CareConnect-GPC-Practitioner-1",
                "CareConnect-GPC-PractitionerRole-1",
                "CareConnect-GPC-Location-1",
                "GPConnect-OperationOutcome-1",
                "GPConnect-Appointment-1",
                "GPConnect-Schedule-1",
                "GPConnect-Slot-1",
                "GPConnect-Searchset-Bundle-1",
            )
        ],
        "rest": [
            {
                "mode": "server",
                "security": {"cors": True},
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            {
                                "name": "identifier",
                                "type": "token",
                                "documentation": "NHS Number (i.e. https://fhir.nhs.uk/Id/nhs-number|123456789)",
                            }
                        ],
                    },
                    {"type": "Location", "interaction": [{"code": "read"}]},
                    {
                        "type": "Appointment",
                        "interaction": [
                            {"code": "read"},
                            {"code": "create"},
                            {"code": "update"},
                            {"code": "search-type"},
                        ],
                        "updateCreate": False,
                        "searchParam": [
                            {
                                "name": "start",
                                "type": "date",
                                "documentation": "Twice: start=ge{yyyy-mm-dd}&start=le{yyyy-mm-dd}",
                            }
                        ],
                    },
                    {
                        "type": "Slot",
                        "interaction": [{"code": "search-type"}],
                        "searchInclude": [
                            "Schedule:actor:Location",
                            "Schedule:actor:Practitioner",
                            "Slot:schedule",
                            "Location:managingOrganization",
                        ],
                        "searchParam": [
                            {"name": "start", "type": "date"},
                            {"name": "end", "type": "date"},
                            {"name": "status", "type": "token"},
                            {"name": "searchFilter", "type": "token"},
                        ],
                    },
                ],
                "operation": [
                    {
                        "name": "gpc.registerpatient",
                        "definition": {
                            "reference": "https://fhir.nhs.uk/STU3/OperationDefinition/GPConnect-RegisterPatient-Operation-1"
                        },
                    }
                ],
            }
        ],
    }


def stu3_problem(resource: Mapping[str, Any]) -> str | None:
    """Why a resource is not valid FHIR STU3 (parsed with fhir.resources), or None."""
    from fhir.resources.STU3 import get_fhir_model_class
    from pydantic import ValidationError

    try:
        model = get_fhir_model_class(str(resource.get("resourceType")))
    except KeyError:
        return f"unknown resourceType {resource.get('resourceType')!r}"
    try:
        model.model_validate(dict(resource))
    except ValidationError as error:
        return "; ".join(
            f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"
            for detail in error.errors(include_input=False, include_url=False)[:3]
        )
    except ValueError as error:
        return str(error)
    return None


# --- The store ---------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    practice TEXT NOT NULL,
    nhs_number TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    telecom TEXT NOT NULL,
    PRIMARY KEY (practice, nhs_number)
);
CREATE TABLE IF NOT EXISTS appointments (
    id TEXT PRIMARY KEY,
    practice TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    start_utc TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    resource TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS appointments_by_patient ON appointments (practice, patient_id);
-- A slot is held by at most one live (not cancelled) booking: cancelling deletes the rows.
CREATE TABLE IF NOT EXISTS booked_slots (
    practice TEXT NOT NULL,
    slot_id TEXT NOT NULL,
    appointment_id TEXT NOT NULL,
    PRIMARY KEY (practice, slot_id)
);
"""


@dataclass(frozen=True)
class Registration:
    """A temporary registration made through `$gpc.registerpatient`."""

    practice_ods: str
    nhs_number: str
    registered_at: str
    telecom: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class StoredAppointment:
    id: str
    practice_ods: str
    patient_id: str
    start: datetime
    status: str
    version: int
    resource: Mapping[str, Any]


class AppointmentStore:
    """Registrations and bookings in SQLite (WAL), one short connection per operation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._books: dict[tuple[str, date], PracticeBook] = {}
        self._books_lock = threading.Lock()
        with closing(self._connect()) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def practice_book(
        self, practice: Practice, practitioners: Sequence[Practitioner], today: date
    ) -> PracticeBook:
        key = (practice.ods, today)
        with self._books_lock:
            book = self._books.get(key)
            if book is None:
                for old in [k for k in self._books if k[0] == practice.ods]:
                    del self._books[old]
                book = self._books[key] = build_practice_book(practice, practitioners, today)
            return book

    # Registrations

    def registration(self, practice_ods: str, nhs_number: str) -> Registration | None:
        with closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT * FROM registrations WHERE practice = ? AND nhs_number = ?",
                (practice_ods, nhs_number),
            ).fetchone()
        if row is None:
            return None
        return Registration(
            practice_ods=row["practice"],
            nhs_number=row["nhs_number"],
            registered_at=row["registered_at"],
            telecom=tuple(json.loads(row["telecom"])),
        )

    def register(self, registration: Registration) -> None:
        """Record a temporary registration; DUPLICATE_REJECTED if there already is one."""
        try:
            with self._transaction() as connection:
                connection.execute(
                    "INSERT INTO registrations VALUES (?, ?, ?, ?)",
                    (
                        registration.practice_ods,
                        registration.nhs_number,
                        registration.registered_at,
                        json.dumps(list(registration.telecom)),
                    ),
                )
        except sqlite3.IntegrityError:
            raise ProviderFault(
                "DUPLICATE_REJECTED", "The patient already has a registration at this practice"
            ) from None

    # Bookings

    def booked_slot_ids(self, practice_ods: str) -> frozenset[str]:
        with closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT slot_id FROM booked_slots WHERE practice = ?", (practice_ods,)
            ).fetchall()
        return frozenset(row["slot_id"] for row in rows)

    def book(self, appointment: StoredAppointment, slot_ids: Sequence[str]) -> None:
        """Store a booking and hold its slots; DUPLICATE_REJECTED if one is already held."""
        try:
            with self._transaction() as connection:
                connection.executemany(
                    "INSERT INTO booked_slots VALUES (?, ?, ?)",
                    [(appointment.practice_ods, slot_id, appointment.id) for slot_id in slot_ids],
                )
                connection.execute(
                    "INSERT INTO appointments VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        appointment.id,
                        appointment.practice_ods,
                        appointment.patient_id,
                        appointment.start.astimezone(UTC).isoformat(),
                        appointment.status,
                        appointment.version,
                        json.dumps(appointment.resource),
                    ),
                )
        except sqlite3.IntegrityError:
            raise ProviderFault(
                "DUPLICATE_REJECTED", "The slot is no longer free: it has just been booked"
            ) from None

    def appointment(self, practice_ods: str, appointment_id: str) -> StoredAppointment | None:
        with closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT * FROM appointments WHERE practice = ? AND id = ?",
                (practice_ods, appointment_id),
            ).fetchone()
        return None if row is None else _stored(row)

    def patient_appointments(self, practice_ods: str, patient_id: str) -> list[StoredAppointment]:
        with closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT * FROM appointments WHERE practice = ? AND patient_id = ? ORDER BY start_utc",
                (practice_ods, patient_id),
            ).fetchall()
        return [_stored(row) for row in rows]

    def update(
        self, current: StoredAppointment, resource: Mapping[str, Any], status: str
    ) -> StoredAppointment:
        """Save the next version if nobody else did first; cancelling frees the slots."""
        updated = StoredAppointment(
            id=current.id,
            practice_ods=current.practice_ods,
            patient_id=current.patient_id,
            start=current.start,
            status=status,
            version=current.version + 1,
            resource=resource,
        )
        with self._transaction() as connection:
            changed = connection.execute(
                "UPDATE appointments SET status = ?, version = ?, resource = ? "
                "WHERE practice = ? AND id = ? AND version = ?",
                (
                    status,
                    updated.version,
                    json.dumps(resource),
                    current.practice_ods,
                    current.id,
                    current.version,
                ),
            ).rowcount
            if changed != 1:
                raise ProviderFault(
                    "FHIR_CONSTRAINT_VIOLATION",
                    "The appointment was changed by someone else: read it again",
                )
            if status == "cancelled":
                connection.execute(
                    "DELETE FROM booked_slots WHERE practice = ? AND appointment_id = ?",
                    (current.practice_ods, current.id),
                )
        return updated


def _stored(row: sqlite3.Row) -> StoredAppointment:
    return StoredAppointment(
        id=row["id"],
        practice_ods=row["practice"],
        patient_id=row["patient_id"],
        start=datetime.fromisoformat(row["start_utc"]),
        status=row["status"],
        version=row["version"],
        resource=json.loads(row["resource"]),
    )


def appointment_store(sandbox: Sandbox) -> AppointmentStore:
    """The sandbox's store, created on first use in `data_dir/appointments.sqlite3`."""
    store = sandbox.extensions.get("appointments")
    if store is None:
        with sandbox.lock:
            store = sandbox.extensions.get("appointments")
            if store is None:
                store = AppointmentStore(sandbox.data_dir / "appointments.sqlite3")
                sandbox.extensions["appointments"] = store
    assert isinstance(store, AppointmentStore)
    return store


# --- Helpers shared by the handlers ----------------------------------------------------------


def _store(call: ProviderCall) -> AppointmentStore:
    return appointment_store(call.sandbox)


def _book(call: ProviderCall) -> PracticeBook:
    return _store(call).practice_book(
        call.practice, call.sandbox.record.practitioners, call.sandbox.today()
    )


def _now(call: ProviderCall) -> datetime:
    return datetime.fromtimestamp(call.sandbox.clock(), tz=UTC)


@dataclass(frozen=True)
class Registered:
    temporary: Registration | None  # None: a regular (GMS) registration


async def _registration_here(call: ProviderCall, patient: SandboxPatient) -> Registered | None:
    """How the patient is registered at this practice, if they are active and not sensitive."""
    if patient.restricted or patient.deceased_days_ago is not None:
        return None
    if patient.practice_ods == call.practice.ods and patient.registered_at_practice:
        return Registered(None) if patient.active else None
    registration = await run_in_threadpool(
        _store(call).registration, call.practice.ods, patient.nhs_number
    )
    return None if registration is None else Registered(registration)


def _patient_here(
    call: ProviderCall, patient: SandboxPatient, registered: Registered
) -> dict[str, Any]:
    today = call.sandbox.today()
    registration = registered.temporary
    if registration is None:
        return patient_resource(patient, call.practice, today=today, usual_gp_id=call.usual_gp_id())
    # PDS's demographics (home address near the patient's own practice), registered here.
    home = PRACTICES_BY_ODS.get(patient.practice_ods, call.practice)
    resource = patient_resource(patient, home, today=today, registration_type="T")
    resource["managingOrganization"] = {
        "reference": f"Organization/{call.practice.organisation_id}"
    }
    for extension in resource["extension"]:
        if extension["url"] != EXT_REGISTRATION_DETAILS:
            continue
        for detail in extension["extension"]:
            if detail["url"] == "registrationPeriod":
                detail["valuePeriod"] = {"start": registration.registered_at}
            elif detail["url"] == "preferredBranchSurgery":
                detail["valueReference"] = {
                    "reference": f"Location/{practice_sites(call.practice)[0].id}"
                }
    if registration.telecom:
        resource["telecom"] = [dict(t) for t in registration.telecom]
    return resource


def _patient_by_logical_id(logical_id: str) -> SandboxPatient | None:
    return next((p for p in PATIENTS if p.logical_id == logical_id), None)


def _invalid(diagnostics: str) -> ProviderFault:
    return ProviderFault("INVALID_RESOURCE", diagnostics)


def _parse_instant(value: Any, element: str) -> datetime:
    if not isinstance(value, str):
        raise _invalid(f"Appointment.{element} is required")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"Appointment.{element} {value!r} is not a FHIR instant") from None
    if parsed.tzinfo is None:
        raise _invalid(f"Appointment.{element} {value!r} has no UTC offset")
    return parsed


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _wants_minimal(request: Request) -> bool:
    return "return=minimal" in request.headers.get("Prefer", "").replace(" ", "").lower()


def _appointment_response(
    call: ProviderCall, stored: StoredAppointment, status: int, *, location: bool = False
) -> Response:
    headers = {"ETag": _etag(stored.version)}
    if location:
        headers["Location"] = (
            f"{call.service_root}/Appointment/{stored.id}/_history/{stored.version}"
        )
    if _wants_minimal(call.request):
        return Response(status_code=status, headers={**NO_STORE, **headers})
    return call.fhir(stored.resource, status, **headers)


# --- Foundations: metadata, patients, locations -------------------------------------------


async def metadata(call: ProviderCall) -> Response:
    return call.fhir(capability_statement())


async def find_patient(call: ProviderCall) -> Response:
    nhs_number = parse_nhs_identifier(call.request.query_params.multi_items())
    resources: list[Mapping[str, Any]] = []
    patient = PATIENTS_BY_NHS_NUMBER.get(nhs_number)
    if patient is not None:
        registered = await _registration_here(call, patient)
        if registered is not None:
            resources.append(_patient_here(call, patient, registered))
    return call.fhir(searchset(call, resources))


async def read_patient(call: ProviderCall) -> Response:
    logical_id = call.request.path_params["patient_id"]
    patient = _patient_by_logical_id(logical_id)
    registered = None if patient is None else await _registration_here(call, patient)
    if patient is None or registered is None:
        raise ProviderFault("PATIENT_NOT_FOUND", f"No patient with logical id {logical_id}")
    return call.fhir(_patient_here(call, patient, registered))


async def read_location(call: ProviderCall) -> Response:
    location_id = call.request.path_params["location_id"]
    site = {s.id: s for s in practice_sites(call.practice)}.get(location_id)
    if site is None:
        raise ProviderFault("NO_RECORD_FOUND", f"No location with id {location_id}")
    return call.fhir(location_resource(site))


REGISTER_FIELDS = frozenset(
    {
        "resourceType",
        "meta",
        "identifier",
        "name",
        "gender",
        "birthDate",
        "address",
        "telecom",
        "extension",
    }
)
PHONE_USES = frozenset({"home", "work", "mobile", "temp"})


def _patient_to_register(body: Any) -> dict[str, Any]:
    """Return the Patient inside a registerPatient Parameters, checked as SPEC §3.2 requires."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise _invalid("The body must be a Parameters resource")
    parameters = body.get("parameter")
    if (
        not isinstance(parameters, list)
        or len(parameters) != 1
        or not isinstance(parameters[0], dict)
        or parameters[0].get("name") != "registerPatient"
    ):
        raise _invalid("Parameters must hold exactly one parameter, named registerPatient")
    if set(parameters[0]) - {"name", "resource"}:
        raise _invalid("The registerPatient parameter must carry only a resource")
    patient = parameters[0].get("resource")
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise _invalid("The registerPatient parameter must carry a Patient resource")
    unexpected = sorted(set(patient) - REGISTER_FIELDS)
    if unexpected:
        raise _invalid(f"Patient.{unexpected[0]} must not be sent when registering a patient")
    problem = stu3_problem(patient)
    if problem:
        raise _invalid(f"The Patient is not valid STU3: {problem}")
    if PATIENT_PROFILE not in patient.get("meta", {}).get("profile", []):
        raise _invalid(f"Patient.meta.profile must include {PATIENT_PROFILE}")

    names = patient.get("name", [])
    official = [n for n in names if n.get("use") == "official"]
    if not official:
        raise ProviderFault("BAD_REQUEST", "The Patient must have an official name")
    if len(names) != 1:
        raise _invalid("The Patient must have a single name, the official one")
    if not str(official[0].get("family", "")).strip():
        raise ProviderFault("BAD_REQUEST", "The official name must have a family name")
    if not official[0].get("given"):
        raise ProviderFault("BAD_REQUEST", "The official name must have a given name")
    if not patient.get("birthDate"):
        raise ProviderFault("BAD_REQUEST", "The Patient must have a birthDate")

    address_uses = [a.get("use") for a in patient.get("address", [])]
    if any(use not in ("home", "temp") for use in address_uses):
        raise _invalid("Only a home and a temp address may be sent")
    if len(address_uses) != len(set(address_uses)):
        raise _invalid("At most one address of each use (home, temp) may be sent")
    telecom_kinds: list[tuple[str, str]] = []
    for telecom in patient.get("telecom", []):
        system, use = telecom.get("system"), telecom.get("use")
        if system == "phone" and use in PHONE_USES:
            telecom_kinds.append(("phone", use))
        elif system == "email":
            telecom_kinds.append(("email", ""))
        else:
            raise _invalid(f"A telecom of system {system!r} and use {use!r} may not be sent")
    if len(telecom_kinds) != len(set(telecom_kinds)):
        raise _invalid("At most one telecom of each use (and one email) may be sent")
    extensions = patient.get("extension", [])
    if any(e.get("url") != EXT_NHS_COMMUNICATION for e in extensions):
        raise _invalid("The only extension allowed is NHSCommunication")
    if len(extensions) > 1:
        raise _invalid("At most one nhsCommunication may be sent")
    return patient


def _nhs_number_of(patient: Mapping[str, Any]) -> str:
    identifiers = patient.get("identifier", [])
    if any(i.get("system") != NHS_NUMBER_SYSTEM for i in identifiers):
        raise _invalid(f"The only identifier allowed is the NHS number ({NHS_NUMBER_SYSTEM})")
    if not identifiers:
        raise ProviderFault("BAD_REQUEST", "The Patient must have an NHS number identifier")
    if len(identifiers) > 1:
        raise _invalid("The Patient must have a single NHS number identifier")
    value = str(identifiers[0].get("value", ""))
    if not (value.isascii() and value.isdigit() and nhs_number_is_valid(value)):
        raise ProviderFault("INVALID_NHS_NUMBER", f"{value!r} is not a valid NHS number")
    return value


def _pds_check(nhs_number: str, submitted: Mapping[str, Any]) -> SandboxPatient:
    """The PDS trace and verification a provider does before registering (SPEC §3.2)."""
    patient = PATIENTS_BY_NHS_NUMBER.get(nhs_number)
    if patient is None:
        raise ProviderFault("INVALID_PATIENT_DEMOGRAPHICS", "The NHS number is not on PDS")
    if patient.restricted:
        raise ProviderFault(
            "INVALID_PATIENT_DEMOGRAPHICS", "The patient is sensitive on PDS: not registered"
        )
    if patient.deceased_days_ago is not None:
        raise ProviderFault("INVALID_PATIENT_DEMOGRAPHICS", "PDS records the patient as deceased")
    family = str(submitted["name"][0]["family"]).strip().casefold()
    if family != patient.family.casefold():
        raise ProviderFault(
            "INVALID_PATIENT_DEMOGRAPHICS", "The family name does not match the one on PDS"
        )
    if submitted["birthDate"] != patient.birth_date.isoformat():
        raise ProviderFault(
            "INVALID_PATIENT_DEMOGRAPHICS", "The birth date does not match the one on PDS"
        )
    return patient


async def register_patient(call: ProviderCall) -> Response:
    submitted = _patient_to_register(await read_json_body(call.request))
    patient = _pds_check(_nhs_number_of(submitted), submitted)
    if patient.practice_ods == call.practice.ods and patient.registered_at_practice:
        raise ProviderFault(
            "DUPLICATE_REJECTED", "The patient already has a regular registration at this practice"
        )
    registration = Registration(
        practice_ods=call.practice.ods,
        nhs_number=patient.nhs_number,
        registered_at=fhir_instant(_now(call)),
        telecom=tuple(submitted.get("telecom", [])),
    )
    await run_in_threadpool(_store(call).register, registration)
    return call.fhir(searchset(call, [_patient_here(call, patient, Registered(registration))]))


# --- Search for free slots -------------------------------------------------------------------

RECURSE_INCLUDES = frozenset(
    {
        "Schedule:actor:Practitioner",
        "Schedule:actor:Location",
        "Location:managingOrganization",
    }
)


@dataclass(frozen=True)
class SlotQuery:
    start: datetime  # slots must start at or after this
    end: datetime  # and end at or before this
    includes: frozenset[str]
    ods_codes: frozenset[str]
    org_types: frozenset[str]


def _search_bound(name: str, raw: str, prefix: str) -> tuple[datetime, bool]:
    """Return the instant a `start`/`end` parameter names and whether it was a date only."""
    if " " in raw:
        raise ProviderFault(
            "INVALID_PARAMETER", f"{name}={raw}: percent-encode the '+' of the offset as %2B"
        )
    match = _SEARCH_DATE.match(raw)
    if not match:
        raise ProviderFault(
            "INVALID_PARAMETER",
            f"{name}={raw}: use {prefix}yyyy-mm-dd or {prefix}yyyy-mm-ddThh:mm:ss+hh:mm",
        )
    if match["prefix"] != prefix:
        raise ProviderFault(
            "INVALID_PARAMETER", f"{name} must have the {prefix} prefix, not {match['prefix']!r}"
        )
    value = match["value"]
    try:
        if "T" not in value:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=LONDON), True
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ProviderFault("INVALID_PARAMETER", f"{name}={raw} is not a real date") from None
    local = parsed.replace(tzinfo=None)
    uk_offsets = {local.replace(tzinfo=LONDON, fold=fold).utcoffset() for fold in (0, 1)}
    if parsed.utcoffset() not in uk_offsets:
        raise ProviderFault(
            "INVALID_PARAMETER",
            f"{name}={raw} must be UK local time (+00:00 in GMT, +01:00 in BST)",
        )
    return parsed, False


def parse_slot_query(pairs: Sequence[tuple[str, str]]) -> SlotQuery:
    """Check the Slot search parameters as SPEC §3.3 and the provider test pack require."""
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)
    for name in ("start", "end", "status"):
        if name not in values:
            raise ProviderFault("BAD_REQUEST", f"The {name} parameter is required")
        if len(values[name]) > 1:
            raise ProviderFault("BAD_REQUEST", f"The {name} parameter must be sent only once")
    includes = values.get("_include", [])
    if "Slot:schedule" not in includes:
        raise ProviderFault("BAD_REQUEST", "The _include=Slot:schedule parameter is required")
    if values["status"][0] != "free":
        raise ProviderFault("INVALID_PARAMETER", "status must be free: no other value is allowed")
    unknown = [v for v in includes if v != "Slot:schedule"] + [
        v for v in values.get("_include:recurse", []) if v not in RECURSE_INCLUDES
    ]
    if unknown:
        raise ProviderFault("INVALID_PARAMETER", f"Unsupported include {unknown[0]!r}")

    start, _ = _search_bound("start", values["start"][0], "ge")
    end, end_is_date = _search_bound("end", values["end"][0], "le")
    # `le` a date covers the whole of that day.
    inclusive_end = end + timedelta(days=1) if end_is_date else end
    if inclusive_end <= start if end_is_date else end < start:
        raise ProviderFault("INVALID_PARAMETER", "end must not be before start")
    if end - start > timedelta(days=MAX_SEARCH_DAYS):
        raise ProviderFault(
            "INVALID_PARAMETER", f"The search range must not exceed {MAX_SEARCH_DAYS} days"
        )

    ods_codes: set[str] = set()
    org_types: set[str] = set()
    for token in values.get("searchFilter", []):
        system, separator, code = token.partition("|")
        if not separator or not system or not code:
            raise ProviderFault("INVALID_PARAMETER", f"searchFilter={token}: use system|code")
        if system == ODS_SYSTEM:
            ods_codes.add(code)
        elif system == ORG_TYPE_SYSTEM:
            org_types.add(code)
        # Filters from other systems are ignored, never an error (SPEC §3.3).
    return SlotQuery(
        start=start,
        end=inclusive_end,
        includes=frozenset(values.get("_include:recurse", [])),
        ods_codes=frozenset(ods_codes),
        org_types=frozenset(org_types),
    )


async def search_slots(call: ProviderCall) -> Response:
    query = parse_slot_query(call.request.query_params.multi_items())
    book = _book(call)
    booked = await run_in_threadpool(_store(call).booked_slot_ids, call.practice.ods)
    slots = [
        slot
        for slot in book.slots
        if not slot.busy
        and slot.id not in booked
        and slot.start >= query.start
        and slot.end <= query.end
        and slot.visible_to(query.ods_codes, query.org_types)
    ]
    resources: list[Mapping[str, Any]] = [slot_resource(slot) for slot in slots]
    schedules = list({slot.schedule.id: slot.schedule for slot in slots}.values())
    resources += [schedule_resource(schedule) for schedule in schedules]
    if "Schedule:actor:Practitioner" in query.includes:
        practitioners = {s.practitioner.id: s.practitioner for s in schedules}
        resources += [practitioner_resource(p) for p in practitioners.values()]
    if "Schedule:actor:Location" in query.includes:
        sites = {s.site.id: s.site for s in schedules}
        resources += [location_resource(site) for site in sites.values()]
    if slots:  # the Organization is returned whenever slots are, included or not
        resources.append(practice_organisation(call.practice))
    return call.fhir(searchset(call, resources))


# --- Book an appointment ------------------------------------------------------------------------

CREATE_FIELDS = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "contained",
        "extension",
        "identifier",
        "status",
        "serviceCategory",  # accepted and ignored: the provider sets them from the slot
        "serviceType",
        "description",
        "start",
        "end",
        "slot",
        "created",
        "comment",
        "participant",
    }
)
PARTICIPANT_FIELDS = frozenset({"actor", "status", "type", "required"})
PARTICIPANT_STATUSES = frozenset({"accepted", "declined", "tentative", "needs-action"})
BOOKING_EXTENSIONS = frozenset(
    {EXT_BOOKING_ORGANISATION, EXT_PRACTITIONER_ROLE, EXT_DELIVERY_CHANNEL}
)


@dataclass(frozen=True)
class BookingOrganisation:
    ods: str
    org_types: frozenset[str]


@dataclass(frozen=True)
class BookingRequest:
    body: Mapping[str, Any]
    start: datetime
    end: datetime
    slot_ids: tuple[str, ...]
    patient_id: str
    location_id: str
    practitioner_id: str | None
    organisation: BookingOrganisation


def _check_texts(body: Mapping[str, Any], *, description_required: bool) -> None:
    description = body.get("description")
    if description_required and not (isinstance(description, str) and description.strip()):
        raise _invalid("Appointment.description is required")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION:
        raise _invalid(f"Appointment.description must be at most {MAX_DESCRIPTION} characters")
    comment = body.get("comment")
    if isinstance(comment, str) and len(comment) > MAX_COMMENT:
        raise _invalid(f"Appointment.comment must be at most {MAX_COMMENT} characters")


def _check_common(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("resourceType") != "Appointment":
        raise _invalid("The body must be an Appointment resource")
    problem = stu3_problem(body)
    if problem:
        raise _invalid(f"The Appointment is not valid STU3: {problem}")
    if APPOINTMENT_PROFILE not in body.get("meta", {}).get("profile", []):
        raise _invalid(f"Appointment.meta.profile must include {APPOINTMENT_PROFILE}")
    return body


def _booking_organisation(body: Mapping[str, Any]) -> BookingOrganisation:
    references = [
        e.get("valueReference", {}).get("reference")
        for e in body.get("extension", [])
        if e.get("url") == EXT_BOOKING_ORGANISATION
    ]
    if len(references) != 1:
        raise _invalid("The BookingOrganisation extension is required, once")
    reference = references[0]
    if not isinstance(reference, str) or not reference.startswith("#"):
        raise _invalid("The BookingOrganisation must reference a contained Organization (#id)")
    organisation = next(
        (
            c
            for c in body.get("contained", [])
            if c.get("resourceType") == "Organization" and c.get("id") == reference[1:]
        ),
        None,
    )
    if organisation is None:
        raise _invalid(f"No contained Organization with id {reference[1:]!r}")
    ods = [
        i.get("value")
        for i in organisation.get("identifier", [])
        if i.get("system") == ODS_SYSTEM and i.get("value")
    ]
    if not ods:
        raise _invalid("The booking organisation must have an ODS code identifier with a value")
    if not str(organisation.get("name", "")).strip():
        raise _invalid("The booking organisation must have a name")
    if not any(t.get("value") for t in organisation.get("telecom", [])):
        raise _invalid("The booking organisation must have a telecom")
    org_types = {
        coding.get("code")
        for concept in organisation.get("type", [])
        for coding in concept.get("coding", [])
        if coding.get("system") == ORG_TYPE_SYSTEM and coding.get("code")
    }
    return BookingOrganisation(ods=str(ods[0]), org_types=frozenset(org_types))


def _participants(body: Mapping[str, Any]) -> dict[str, list[str]]:
    participants = body.get("participant")
    if not participants:
        raise _invalid("Appointment.participant is required (the Patient and the Location)")
    actors: dict[str, list[str]] = {"Patient": [], "Location": [], "Practitioner": []}
    for participant in participants:
        extra = sorted(set(participant) - PARTICIPANT_FIELDS)
        if extra:
            raise _invalid(f"Appointment.participant.{extra[0]} must not be sent")
        reference = participant.get("actor", {}).get("reference")
        match = _ACTOR_REFERENCE.match(reference) if isinstance(reference, str) else None
        if match is None:
            raise _invalid(
                f"Participant actor {reference!r} must be a relative Patient/, Location/ or "
                "Practitioner/ reference"
            )
        if participant.get("status") not in PARTICIPANT_STATUSES:
            raise _invalid(f"Participant {reference} must have a status")
        actors[match["type"]].append(match["id"])
    if len(actors["Patient"]) != 1 or len(actors["Location"]) != 1:
        raise _invalid("The Appointment needs exactly one Patient and one Location participant")
    if len(actors["Practitioner"]) > 1:
        raise _invalid("The Appointment may have at most one Practitioner participant")
    return actors


def parse_booking(body: Any) -> BookingRequest:
    """Check a booking's shape (SPEC §3.4); references are checked against the book later."""
    appointment = _check_common(body)
    unexpected = sorted(set(appointment) - CREATE_FIELDS)
    if unexpected:
        raise _invalid(f"Appointment.{unexpected[0]} must not be sent when booking")
    if appointment.get("status") != "booked":
        raise _invalid("Appointment.status must be booked")
    start = _parse_instant(appointment.get("start"), "start")
    end = _parse_instant(appointment.get("end"), "end")
    _parse_instant(appointment.get("created"), "created")
    _check_texts(appointment, description_required=True)
    for identifier in appointment.get("identifier", []):
        if not identifier.get("value"):
            raise _invalid("Every Appointment.identifier must have a value")
    for extension in appointment.get("extension", []):
        if extension.get("url") == EXT_CANCELLATION_REASON:
            raise _invalid("The cancellation reason must not be sent when booking")
        if extension.get("url") not in BOOKING_EXTENSIONS:
            raise _invalid(f"Extension {extension.get('url')!r} is not allowed on an Appointment")
    organisation = _booking_organisation(appointment)

    slots = appointment.get("slot")
    if not slots:
        raise _invalid("Appointment.slot is required")
    slot_ids: list[str] = []
    for slot in slots:
        reference = slot.get("reference")
        match = _SLOT_REFERENCE.match(reference) if isinstance(reference, str) else None
        if match is None:
            raise _invalid(f"{reference!r} is not a relative reference to a Slot")
        slot_ids.append(match["id"])
    if len(set(slot_ids)) != len(slot_ids):
        raise _invalid("A slot is referenced twice")
    actors = _participants(appointment)
    return BookingRequest(
        body=appointment,
        start=start,
        end=end,
        slot_ids=tuple(slot_ids),
        patient_id=actors["Patient"][0],
        location_id=actors["Location"][0],
        practitioner_id=actors["Practitioner"][0] if actors["Practitioner"] else None,
        organisation=organisation,
    )


def _slots_to_book(call: ProviderCall, request: BookingRequest) -> list[SlotDef]:
    book = _book(call)
    slots: list[SlotDef] = []
    for slot_id in request.slot_ids:
        slot = book.slots_by_id.get(slot_id)
        if slot is None:
            # The test pack books Slot/hello and expects INVALID_RESOURCE (not REFERENCE_NOT_FOUND).
            raise _invalid(f"Reference to Slot/{slot_id} - no such slot exists at the server")
        slots.append(slot)
    slots.sort(key=lambda s: s.start)
    first = slots[0]
    for previous, following in zip(slots, slots[1:], strict=False):
        if (
            following.start != previous.end
            or following.schedule.id != first.schedule.id
            or following.channel != first.channel
            or following.service_type != first.service_type
        ):
            raise _invalid(
                "The slots are not adjacent: they must follow each other on the same schedule, "
                "with the same delivery channel and slot type"
            )
    if request.start != first.start or request.end != slots[-1].end:
        raise _invalid(
            "Appointment start and end must be the first slot's start and the last slot's end "
            f"({fhir_instant(first.start)} to {fhir_instant(slots[-1].end)})"
        )
    if first.start <= _now(call):
        raise _invalid("The appointment starts in the past")
    organisation = request.organisation
    for slot in slots:
        if not slot.visible_to({organisation.ods}, organisation.org_types):
            raise _invalid(
                f"Slot/{slot.id} is not available to booking organisation {organisation.ods}"
            )
    schedule = first.schedule
    if request.location_id != schedule.site.id:
        raise _invalid(f"The Location participant must be the slots' Location/{schedule.site.id}")
    if request.practitioner_id not in (None, schedule.practitioner.id):
        raise _invalid(
            f"The Practitioner participant must be the slots' Practitioner/{schedule.practitioner.id}"
        )
    return slots


def _new_appointment(
    call: ProviderCall, request: BookingRequest, slots: Sequence[SlotDef], appointment_id: str
) -> dict[str, Any]:
    body = request.body
    schedule = slots[0].schedule
    participants = [dict(p) for p in body["participant"]]
    if request.practitioner_id is None:
        participants.append(
            {
                "actor": {"reference": f"Practitioner/{schedule.practitioner.id}"},
                "status": "accepted",
            }
        )
    booking_extension = next(
        e for e in body["extension"] if e.get("url") == EXT_BOOKING_ORGANISATION
    )
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": appointment_id,
        "meta": {
            "versionId": "1",
            "lastUpdated": fhir_instant(_now(call)),
            "profile": [APPOINTMENT_PROFILE],
        },
        "contained": body["contained"],
        "extension": [
            booking_extension,
            _role_extension(schedule.practitioner),
            {"url": EXT_DELIVERY_CHANNEL, "valueCode": slots[0].channel},
        ],
    }
    if body.get("identifier"):
        resource["identifier"] = body["identifier"]
    resource |= {
        "status": "booked",
        "serviceCategory": {"text": schedule.session_name},
        "serviceType": [{"text": slots[0].service_type}],
        "description": body["description"],
        "start": fhir_instant(slots[0].start),
        "end": fhir_instant(slots[-1].end),
        "slot": [{"reference": f"Slot/{slot.id}"} for slot in slots],
        "created": body["created"],
    }
    if body.get("comment"):
        resource["comment"] = body["comment"]
    resource["participant"] = participants
    return resource


async def book_appointment(call: ProviderCall) -> Response:
    request = parse_booking(await read_json_body(call.request))
    slots = _slots_to_book(call, request)
    patient = _patient_by_logical_id(request.patient_id)
    if patient is None or await _registration_here(call, patient) is None:
        raise _invalid(
            f"Patient/{request.patient_id} is not registered at this practice: "
            "find the patient, or register them first"
        )
    taken = [slot.id for slot in slots if slot.busy]
    if taken:
        raise ProviderFault("DUPLICATE_REJECTED", f"Slot/{taken[0]} is no longer free")
    appointment_id = f"appt-{uuid.uuid4().hex[:20]}"
    stored = StoredAppointment(
        id=appointment_id,
        practice_ods=call.practice.ods,
        patient_id=request.patient_id,
        start=slots[0].start,
        status="booked",
        version=1,
        resource=_new_appointment(call, request, slots, appointment_id),
    )
    await run_in_threadpool(_store(call).book, stored, [slot.id for slot in slots])
    return _appointment_response(call, stored, 201, location=True)


# --- Read, retrieve, amend and cancel ------------------------------------------------------------


async def _future_appointment(call: ProviderCall) -> StoredAppointment:
    appointment_id = call.request.path_params["appointment_id"]
    stored = await run_in_threadpool(_store(call).appointment, call.practice.ods, appointment_id)
    if stored is None:
        raise ProviderFault("NO_RECORD_FOUND", f"No appointment with id {appointment_id}")
    if stored.start <= _now(call):
        raise _invalid(
            f"Appointment {appointment_id} is in the past: only future ones are available"
        )
    return stored


async def read_appointment(call: ProviderCall) -> Response:
    stored = await _future_appointment(call)
    return call.fhir(stored.resource, ETag=_etag(stored.version))


def _appointment_range(pairs: Sequence[tuple[str, str]], today: date) -> tuple[date, date]:
    starts = [value for key, value in pairs if key == "start"]
    if len(starts) != 2:
        raise ProviderFault(
            "INVALID_PARAMETER", "Send start twice: start=ge{yyyy-mm-dd}&start=le{yyyy-mm-dd}"
        )
    bounds = date_bounds("start", starts, allow_time=False)
    if bounds["ge"] < today or bounds["le"] < today:
        raise ProviderFault("INVALID_PARAMETER", "The date range must not be in the past")
    if bounds["le"] < bounds["ge"]:
        raise ProviderFault("INVALID_PARAMETER", "start=le… must not be before start=ge…")
    return bounds["ge"], bounds["le"]


async def patient_appointments(call: ProviderCall) -> Response:
    logical_id = call.request.path_params["patient_id"]
    first, last = _appointment_range(
        call.request.query_params.multi_items(), _now(call).astimezone(LONDON).date()
    )
    patient = _patient_by_logical_id(logical_id)
    if patient is None or await _registration_here(call, patient) is None:
        raise ProviderFault("PATIENT_NOT_FOUND", f"No patient with logical id {logical_id}")
    stored = await run_in_threadpool(
        _store(call).patient_appointments, call.practice.ods, logical_id
    )
    low = datetime.combine(first, time(), tzinfo=LONDON)
    high = datetime.combine(last + timedelta(days=1), time(), tzinfo=LONDON)
    # Cancelled appointments are returned too (SPEC §3.5).
    resources = [a.resource for a in stored if low <= a.start < high]
    return call.fhir(searchset(call, resources))


def _check_if_match(call: ProviderCall, stored: StoredAppointment) -> None:
    header = call.request.headers.get("If-Match")
    if header is None:
        raise ProviderFault(
            "BAD_REQUEST", f'The If-Match header is required, e.g. W/"{stored.version}"'
        )
    match = _ETAG.match(header.strip())
    if match is None or match["version"] != str(stored.version):
        raise ProviderFault(
            "FHIR_CONSTRAINT_VIOLATION",
            f"If-Match {header} is not the appointment's current version, {_etag(stored.version)}",
        )


def _references(items: Any, key: str | None = None) -> list[str]:
    references = []
    for item in items or []:
        holder = item.get(key, {}) if key else item
        references.append(str(holder.get("reference")))
    return sorted(references)


def _same(element: str, stored: Any, sent: Any) -> bool:
    if element in ("start", "end", "created"):
        try:
            return datetime.fromisoformat(stored) == datetime.fromisoformat(sent)
        except (TypeError, ValueError):
            return False
    if element == "slot":
        return bool(_references(stored) == _references(sent))
    if element == "participant":

        def actors(items: Any) -> list[tuple[str, str]]:
            return sorted(
                (str(p.get("actor", {}).get("reference")), str(p.get("status")))
                for p in items or []
            )

        return actors(stored) == actors(sent)
    return bool(stored == sent)


PROVIDER_SET = frozenset({"serviceCategory", "serviceType"})  # may be left out of an update
PROVIDER_EXTENSIONS = frozenset({EXT_PRACTITIONER_ROLE, EXT_DELIVERY_CHANNEL})


def changed_elements(
    stored: Mapping[str, Any], sent: Mapping[str, Any], *, may_change: frozenset[str]
) -> list[str]:
    """The elements of `sent` that differ from `stored`, apart from `may_change`."""
    changed: list[str] = []
    for element in sorted((set(stored) | set(sent)) - {"resourceType", "id", "meta", "extension"}):
        if element in may_change or (element in PROVIDER_SET and element not in sent):
            continue
        if not _same(element, stored.get(element), sent.get(element)):
            changed.append(element)
    stored_extensions = {e["url"]: e for e in stored.get("extension", [])}
    sent_urls = set()
    for extension in sent.get("extension", []):
        url = extension.get("url")
        sent_urls.add(url)
        if url in may_change:
            continue
        if stored_extensions.get(url) != extension:
            changed.append(f"extension {url}")
    for url in stored_extensions:
        if url not in sent_urls and url not in PROVIDER_EXTENSIONS and url not in may_change:
            changed.append(f"extension {url} (removed)")
    return changed


def _check_update_body(call: ProviderCall, body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and body.get("resourceType") == "Appointment":
        appointment_id = call.request.path_params["appointment_id"]
        if body.get("id") != appointment_id:
            raise ProviderFault(
                "BAD_REQUEST", f"The Appointment's id must be {appointment_id}, as in the URL"
            )
    return _check_common(body)


async def amend_appointment(call: ProviderCall) -> Response:
    body = await read_json_body(call.request)
    stored = await _future_appointment(call)
    _check_if_match(call, stored)
    appointment = _check_update_body(call, body)
    if stored.status == "cancelled":
        raise _invalid("A cancelled appointment cannot be amended")
    _check_texts(appointment, description_required=True)
    changed = changed_elements(
        stored.resource, appointment, may_change=frozenset({"description", "comment"})
    )
    if changed:
        raise _invalid(
            "Only the description and comment may be amended; changed: " + ", ".join(changed)
        )
    resource = dict(stored.resource)
    for element in ("description", "comment"):
        if appointment.get(element):
            resource[element] = appointment[element]
        else:
            resource.pop(element, None)
    return await _save(call, stored, resource, "booked")


async def cancel_appointment(call: ProviderCall) -> Response:
    body = await read_json_body(call.request)
    stored = await _future_appointment(call)
    _check_if_match(call, stored)
    reasons = [
        e
        for e in (body.get("extension", []) if isinstance(body, dict) else [])
        if isinstance(e, dict) and e.get("url") == EXT_CANCELLATION_REASON
    ]
    if reasons and not str(reasons[0].get("valueString") or "").strip():
        # As the test pack asserts: an empty reason is a parameter error.
        raise ProviderFault("INVALID_PARAMETER", "The cancellation reason must not be empty")
    appointment = _check_update_body(call, body)
    if stored.status == "cancelled":
        raise _invalid("The appointment is already cancelled")
    if len(reasons) != 1:
        raise _invalid("Send the AppointmentCancellationReason extension, once")
    if appointment.get("status") != "cancelled":
        raise _invalid("Appointment.status must be cancelled")
    changed = changed_elements(
        stored.resource, appointment, may_change=frozenset({"status", EXT_CANCELLATION_REASON})
    )
    if changed:
        raise _invalid(
            "Only the status and the cancellation reason may change; changed: " + ", ".join(changed)
        )
    resource = dict(stored.resource)
    extensions = list(resource["extension"])
    extensions.insert(1, {"url": EXT_CANCELLATION_REASON, "valueString": reasons[0]["valueString"]})
    resource["extension"] = extensions
    resource["status"] = "cancelled"
    return await _save(call, stored, resource, "cancelled")


async def _save(
    call: ProviderCall, stored: StoredAppointment, resource: dict[str, Any], status: str
) -> Response:
    resource["meta"] = {
        **resource["meta"],
        "versionId": str(stored.version + 1),
        "lastUpdated": fhir_instant(_now(call)),
    }
    updated = await run_in_threadpool(_store(call).update, stored, resource, status)
    return _appointment_response(call, updated, 200)


_amend_endpoint = provider_route(Interactions.APPOINTMENT_AMEND, amend_appointment)
_cancel_endpoint = provider_route(Interactions.APPOINTMENT_CANCEL, cancel_appointment)


async def put_appointment(request: Request) -> Response:
    """Amend and cancel share `PUT /Appointment/{id}`: the Ssp-InteractionID tells them apart."""
    if request.headers.get("Ssp-InteractionID", "").strip() == Interactions.APPOINTMENT_CANCEL.id:
        return await _cancel_endpoint(request)
    # Anything else is checked (and refused if wrong) as an amendment.
    return await _amend_endpoint(request)


def routes() -> list[Route]:
    """The Foundations and Appointment Management routes, under each practice's service root."""
    return [
        Route(f"{ROOT}/metadata", provider_route(Interactions.FOUNDATIONS_METADATA, metadata)),
        Route(
            f"{ROOT}/Patient/$gpc.registerpatient",
            provider_route(Interactions.PATIENT_REGISTER, register_patient),
            methods=["POST"],
        ),
        Route(f"{ROOT}/Patient", provider_route(Interactions.PATIENT_SEARCH, find_patient)),
        Route(
            f"{ROOT}/Patient/{{patient_id}}/Appointment",
            provider_route(Interactions.PATIENT_APPOINTMENTS, patient_appointments),
        ),
        Route(
            f"{ROOT}/Patient/{{patient_id}}",
            provider_route(Interactions.PATIENT_READ, read_patient),
        ),
        Route(f"{ROOT}/Slot", provider_route(Interactions.SLOT_SEARCH, search_slots)),
        Route(
            f"{ROOT}/Appointment",
            provider_route(Interactions.APPOINTMENT_CREATE, book_appointment),
            methods=["POST"],
        ),
        Route(
            f"{ROOT}/Appointment/{{appointment_id}}",
            provider_route(Interactions.APPOINTMENT_READ, read_appointment),
        ),
        Route(f"{ROOT}/Appointment/{{appointment_id}}", put_appointment, methods=["PUT"]),
        Route(
            f"{ROOT}/Location/{{location_id}}",
            provider_route(Interactions.LOCATION_READ, read_location),
        ),
    ]
