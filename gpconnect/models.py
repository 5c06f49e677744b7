"""What the client hands back: small frozen dataclasses, never raw FHIR dicts.

Each result of a call carries the `trace_id` (the request's `Ssp-TraceID`) so the caller
can audit exactly which request produced what it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True)
class HumanName:
    family: str = ""
    given: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """Return the name as the NHS patient banner writes it: "FAMILY, Given (Title)"."""
        text = self.family.upper()
        if self.given:
            text = f"{text}, {' '.join(self.given)}" if text else " ".join(self.given)
        if self.prefix:
            text = f"{text} ({' '.join(self.prefix)})"
        return text

    @property
    def plain(self) -> str:
        """Return the name in reading order: "Dr Claire Jones"."""
        return " ".join([*self.prefix, *self.given, self.family]).strip()


@dataclass(frozen=True)
class Address:
    lines: tuple[str, ...] = ()
    city: str | None = None
    district: str | None = None
    postcode: str | None = None
    use: str | None = None

    @property
    def display(self) -> str:
        """Return the address on one line: "1 River Street, Leeds, LS1 4AP"."""
        parts = [*self.lines, self.city, self.district, self.postcode]
        return ", ".join(part for part in parts if part)


@dataclass(frozen=True)
class ContactPoint:
    """A phone number or email address: `system` is "phone" or "email" (or "other")."""

    system: str
    value: str
    use: str | None = None


@dataclass(frozen=True)
class Patient:
    """A patient as a GP Connect provider or PDS describes them.

    `registration_type` is the GP Connect registration type at the practice ("R" regular,
    "T" temporary...), when the provider says; PDS records have none.
    """

    id: str
    nhs_number: str
    name: HumanName
    birth_date: date | None = None
    gender: str | None = None
    deceased: bool = False
    deceased_at: datetime | date | None = None
    registered_practice_ods: str | None = None
    restricted: bool = False
    home_address: Address | None = None
    telecom: tuple[ContactPoint, ...] = ()
    registration_type: str | None = None


@dataclass(frozen=True)
class CodedConcept:
    """A coded or text-only CodeableConcept reduced to what a person reads."""

    display: str
    code: str | None = None
    system: str | None = None


@dataclass(frozen=True)
class DocumentSummary:
    """One DocumentReference, with its authors resolved from the bundle's included resources.

    `url` is `None` when the document cannot be retrieved (a placeholder); the provider's
    reason is then in `unavailable_reason`. `internal` is True when the authoring
    organisation is the custodian (the practice wrote it itself).
    """

    id: str
    identifier: str | None
    title: str
    type: CodedConcept | None
    created: datetime | date | None
    indexed: datetime | date | None
    author_organisation: str | None
    author_organisation_ods: str | None
    author_practitioner: str | None
    custodian: str | None
    custodian_ods: str | None
    internal: bool | None
    content_type: str
    size: int | None
    url: str | None
    unavailable_reason: str | None
    not_for_patient_disclosure: bool
    encounter_reference: str | None

    @property
    def retrievable(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class PatientSearch:
    """The result of a find-patient call: `patient` is None when the practice has no match."""

    patient: Patient | None
    trace_id: str


@dataclass(frozen=True)
class PatientRecord:
    """One patient read or registered at a practice, with the request's trace ID."""

    patient: Patient
    trace_id: str


@dataclass(frozen=True)
class DocumentSearch:
    """The result of a document search: the documents (duplicates removed) and the patient."""

    documents: tuple[DocumentSummary, ...]
    patient: Patient | None
    trace_id: str


@dataclass(frozen=True)
class Capabilities:
    """The parts of a provider's CapabilityStatement a consumer acts on."""

    name: str | None
    version: str | None
    fhir_version: str | None
    publisher: str | None
    formats: tuple[str, ...]
    trace_id: str


@dataclass(frozen=True)
class Consultation:
    id: str
    date: datetime | date | None
    title: str


@dataclass(frozen=True)
class Problem:
    id: str
    name: str


@dataclass(frozen=True)
class LinkedDocument:
    """A document found through the structured record, with what links to it."""

    document: DocumentSummary
    consultations: tuple[Consultation, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class StructuredDocuments:
    """The documents found in an Access Record Structured bundle.

    `warnings` holds the List warning codes the provider attached to the consultation,
    problem and document lists (`confidential-items`, `data-in-transit`,
    `data-awaiting-filing`): when present the list of documents may be incomplete.
    """

    documents: tuple[LinkedDocument, ...]
    patient: Patient | None
    trace_id: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SdsEndpoint:
    """What SDS says about one practice for one interaction."""

    ods_code: str
    interaction_id: str
    service_root: str
    party_key: str | None
    asid: str


@dataclass(frozen=True)
class Organisation:
    """An organisation as a slot search or an appointment names it.

    `type` is the GP Connect organisation type code (`gp-practice`, `urgent-care`) when given.
    """

    id: str
    name: str | None = None
    ods_code: str | None = None
    address: Address | None = None
    phone: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Location:
    """A place appointments happen. Only `id` is known when the provider did not include it."""

    id: str
    name: str | None = None
    address: Address | None = None
    phone: str | None = None
    organisation: Organisation | None = None


@dataclass(frozen=True)
class Practitioner:
    id: str
    name: HumanName = HumanName()
    gender: str | None = None


@dataclass(frozen=True)
class Schedule:
    """The rota a slot belongs to: who, where, and what kind of session.

    `schedule_type` is the session or rota name (`Schedule.serviceCategory.text`);
    `practitioner_role` is the practitioner's SDS job role (e.g. General Medical Practitioner).
    """

    id: str
    schedule_type: str | None = None
    practitioner_role: CodedConcept | None = None
    location: Location | None = None
    practitioner: Practitioner | None = None


@dataclass(frozen=True)
class Slot:
    """A free slot with everything the specification requires a consumer to show (SPEC §3.3).

    `slot_type` is `Slot.serviceType.text`; `delivery_channel` is `In-person`, `Telephone`
    or `Video`; `organisation` is the practice offering the slot.
    """

    id: str
    start: datetime
    end: datetime
    slot_type: str | None
    delivery_channel: str | None
    schedule: Schedule
    organisation: Organisation | None = None

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def location(self) -> Location | None:
        return self.schedule.location

    @property
    def practitioner(self) -> Practitioner | None:
        return self.schedule.practitioner

    def follows(self, previous: Slot) -> bool:
        """Return True if this slot may be booked together with `previous`, straight after it.

        The specification allows it only when this slot starts as the other ends, on the
        same schedule, with the same delivery channel and slot type (SPEC §3.3).
        """
        return (
            self.start == previous.end
            and self.schedule.id == previous.schedule.id
            and self.delivery_channel == previous.delivery_channel
            and self.slot_type == previous.slot_type
        )


def bookable_together(slots: Sequence[Slot]) -> bool:
    """Return True if the slots, in start order, may be booked as one appointment."""
    ordered = sorted(slots, key=lambda slot: slot.start)
    return bool(ordered) and all(
        following.follows(previous)
        for previous, following in zip(ordered, ordered[1:], strict=False)
    )


@dataclass(frozen=True)
class FreeSlots:
    """The free slots of one practice in the period searched, in start order."""

    slots: tuple[Slot, ...]
    practice_ods: str
    trace_id: str


@dataclass(frozen=True)
class Appointment:
    """An appointment as the practice holds it.

    `version` is the version the practice gave it (from the `ETag`, or `meta.versionId`):
    amending or cancelling needs the version that was read. Cancelled appointments are
    listed too, with `status` "cancelled" and the `cancellation_reason`.
    """

    id: str
    version: str | None
    status: str
    start: datetime | None
    end: datetime | None
    description: str | None
    comment: str | None
    created: datetime | date | None
    slot_ids: tuple[str, ...]
    patient_id: str | None
    location_id: str | None
    practitioner_id: str | None
    slot_type: str | None
    schedule_type: str | None
    delivery_channel: str | None
    practitioner_role: CodedConcept | None
    booking_organisation: Organisation | None
    cancellation_reason: str | None
    trace_id: str

    @property
    def etag(self) -> str | None:
        """Return the weak ETag the practice expects back in `If-Match`: `W/"{version}"`."""
        return f'W/"{self.version}"' if self.version else None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


@dataclass(frozen=True)
class PatientAppointments:
    """A patient's appointments at one practice in a date range, cancelled ones included."""

    appointments: tuple[Appointment, ...]
    trace_id: str
