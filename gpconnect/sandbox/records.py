"""What the sandbox stores about its synthetic record: plain frozen dataclasses.

`data.py` generates these (and the document files) into the data directory at first
start and writes them to `manifest.json`; the app reads them back. Dates are FHIR
strings, as they go on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organisation:
    id: str  # logical id in bundles
    ods: str
    name: str


@dataclass(frozen=True)
class Practitioner:
    id: str
    family: str
    given: str
    prefix: str
    gender: str  # male | female | other | unknown
    sds_user_id: str
    role_code: str  # SDS job role, e.g. R0260
    role_display: str  # e.g. "General Medical Practitioner"
    organisation_ods: str


@dataclass(frozen=True)
class DocumentRecord:
    id: str  # Binary id and DocumentReference id share it
    patient_nhs: str
    practice_ods: str  # the custodian: the practice holding the record
    identifier: str  # persistent provider-namespaced identifier value
    title: str | None  # DocumentReference.description
    type_code: str | None  # SNOMED code, None for text-only types
    type_display: str | None
    type_text: str | None
    created: str | None  # None: the provider did not record it
    indexed: str
    author_org_ods: str | None
    author_practitioner_id: str | None
    content_type: str
    size: int  # attachment.size, in bytes
    file: str | None  # path relative to the data dir; None for a placeholder
    sha256: str | None  # of the file's bytes
    unavailable_reason: str | None  # attachment.title for a placeholder
    nopat: str | None  # "meta" (meta.security) or "label" (securityLabel) or None
    listed_twice: bool = False  # a duplicated bundle entry, as EMIS sends
    encounter_id: str | None = None
    fault: str | None = None  # stops-half-way | invalid-base64 | non-json | slow-drip
    over_limit: bool = False  # beyond the 5 MB retrieval limit but retrievable (stress only)


@dataclass(frozen=True)
class ConsultationRecord:
    id: str  # the Encounter id
    patient_nhs: str
    date: str
    title: str  # consultation type, e.g. "Surgery consultation"
    practitioner_id: str
    topics: tuple[tuple[str, tuple[str, ...]], ...]  # (topic title, DocumentRecord ids)


@dataclass(frozen=True)
class ProblemRecord:
    id: str  # the Condition id
    patient_nhs: str
    name: str
    snomed_code: str
    onset: str
    active: bool
    related_document_ids: tuple[str, ...]  # RelatedClinicalContent
    actual_problem_document_id: str | None = None  # ActualProblem, when a document is the problem


@dataclass(frozen=True)
class SandboxRecord:
    """Everything generated: the manifest."""

    organisations: tuple[Organisation, ...]
    practitioners: tuple[Practitioner, ...]
    documents: tuple[DocumentRecord, ...]
    consultations: tuple[ConsultationRecord, ...]
    problems: tuple[ProblemRecord, ...]
