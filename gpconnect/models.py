"""What the client hands back: small frozen dataclasses, never raw FHIR dicts.

Each result of a call carries the `trace_id` (the request's `Ssp-TraceID`) so the caller
can audit exactly which request produced what it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


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
class Patient:
    """A patient as a GP Connect provider or PDS describes them."""

    id: str
    nhs_number: str
    name: HumanName
    birth_date: date | None = None
    gender: str | None = None
    deceased: bool = False
    deceased_at: datetime | date | None = None
    registered_practice_ods: str | None = None
    restricted: bool = False


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
