"""Read GP Connect (STU3), PDS (R4) and SDS (R4) FHIR JSON into the library's models.

Pure functions over JSON already parsed into Python values: no I/O, no Django.

Two rules run through the module:

- **Tolerant** of what real providers send: text-only codes, missing optional elements,
  partial or malformed dates (→ `None`), a single object where STU3 wants an array,
  duplicated entries, relative or absolute references, `http://` or `https://` extension
  URLs.
- **Strict** about what would make the result wrong: a body that is not the resource the
  call expects, several different patients where one was asked for, documents belonging
  to another patient, or a patient whose NHS number is not the one asked for all raise
  `InvalidResponse` (carrying the request's trace ID), because showing them would mislead.

Document URLs are kept verbatim (never rebuilt), and titles are kept as the provider wrote
them (trimmed only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from .errors import InvalidResponse
from .models import (
    Address,
    Appointment,
    Capabilities,
    CodedConcept,
    Consultation,
    ContactPoint,
    DocumentSearch,
    DocumentSummary,
    FreeSlots,
    HumanName,
    LinkedDocument,
    Location,
    Organisation,
    Patient,
    PatientAppointments,
    PatientRecord,
    PatientSearch,
    Practitioner,
    Problem,
    Schedule,
    Slot,
    StructuredDocuments,
)

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "UNAVAILABLE_REASON",
    "UNTITLED_DOCUMENT",
    "appointment_id_from_location",
    "parse_appointment",
    "parse_capabilities",
    "parse_document_search",
    "parse_etag",
    "parse_fhir_datetime",
    "parse_free_slots",
    "parse_location",
    "parse_patient",
    "parse_patient_appointments",
    "parse_patient_record",
    "parse_patient_search",
    "parse_pds_patient",
    "parse_registered_patient",
    "parse_sds_asids",
    "parse_sds_endpoints",
    "parse_structured_documents",
]

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
# The DSTU2-era system: never sent, but still seen in old payloads, so accepted on reading.
_OLD_NHS_NUMBER_SYSTEM = "http://fhir.nhs.net/Id/nhs-number"
ODS_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
_ODS_SYSTEMS = (
    ODS_CODE_SYSTEM,
    "http://fhir.nhs.net/Id/ods-organization-code",
    "https://digital.nhs.uk/services/organisation-data-service",  # old PDS examples
    "https://fhir.nhs.uk/Id/ods-site-code",
)
SDS_PARTY_KEY_SYSTEM = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"
SDS_ASID_SYSTEM = "https://fhir.nhs.uk/Id/nhsSpineASID"

DEFAULT_CONTENT_TYPE = "application/octet-stream"
UNTITLED_DOCUMENT = "Untitled document"
UNAVAILABLE_REASON = "The practice's system did not make this document available."

_NOPAT = "NOPAT"
_RESTRICTED_CODES = frozenset({"R", "V"})  # v3-Confidentiality: restricted, very restricted

# SNOMED codes of the Access Record Structured consultation List tree (SPEC §2).
_CONSULTATION_LIST = "325851000000107"
_LIST_OF_CONSULTATIONS = "1149501000000101"
_PROBLEMS_LIST = "717711000000103"
_TOPIC_LIST = "25851000000105"
_CATEGORY_LIST = "24781000000107"
_DOCUMENT_SECONDARY_LISTS = frozenset(
    {
        "consultations - documents contained in consultations",
        "consultations-documents-contained-in-consultations",
        "problems - documents related to problems",
        "problems-documents-related-to-problems",
    }
)
# Extensions are matched on the end of their URL: the scheme (and host) vary in the wild.
_DELIVERY_CHANNEL = "/extension-gpconnect-deliverychannel-2"
_PRACTITIONER_ROLE = "/extension-gpconnect-practitionerrole-1"
_BOOKING_ORGANISATION = "/extension-gpconnect-bookingorganisation-1"
_CANCELLATION_REASON = "/extension-gpconnect-appointmentcancellationreason-1"
_REGISTRATION_DETAILS = "/extension-careconnect-gpc-registrationdetails-1"
_RELATED_CLINICAL_CONTENT = "/extension-careconnect-relatedclinicalcontent-1"
_ACTUAL_PROBLEM = "/extension-careconnect-actualproblem-1"
_RELATED_PROBLEM_HEADER = "/extension-careconnect-relatedproblemheader-1"
_LIST_WARNING_CODE = "/extension-careconnect-gpc-listwarningcode-1"
_SCT_DESCRIPTION_ID = "/extension-coding-sctdescid"

# Endpoint/Device statuses that mean "do not use this".
_UNUSABLE_STATUSES = frozenset({"off", "suspended", "error", "entered-in-error", "inactive"})

_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)
_ETAG = re.compile(r'(?:W/)?"([^"]*)"')
_LONDON = ZoneInfo("Europe/London")
ORGANISATION_TYPE_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-OrganisationType-1"
_RELATIVE_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([^/]+)$")
_HISTORY = re.compile(r"/_history/[^/]*$")


# Dates ------------------------------------------------------------------------------------


def parse_fhir_datetime(value: Any) -> datetime | date | None:
    """Return a FHIR date, dateTime or instant as a `datetime` or `date`, or None.

    A value with a time is a `datetime`, timezone-aware when it carries an offset (or
    `Z`). A date-only value is a `date`; a partial date (`YYYY`, `YYYY-MM`) is the first
    day of that year or month. Anything malformed or impossible is None, never an error.
    """
    text = _str(value)
    if text is None:
        return None
    partial = _PARTIAL_DATE.fullmatch(text)
    if partial:
        year, month, day = partial.groups()
        try:
            return date(int(year), int(month or 1), int(day or 1))
        except ValueError:
            return None
    if not _DATE_TIME.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None


# Patients ---------------------------------------------------------------------------------


def parse_patient(resource: Mapping[str, Any]) -> Patient:
    """Return a GP Connect (STU3) Patient.

    The official name is preferred. The registered practice's ODS code is filled in only
    when a `generalPractitioner` reference carries it as an identifier; the bundle-level
    parsers also resolve it through the bundle's Organization and PractitionerRole entries.
    """
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
        raise InvalidResponse(diagnostics=f"expected a Patient, got {_describe(resource)}")
    return _gp_connect_patient(resource, None)


def parse_patient_search(
    bundle: Any, *, trace_id: str, nhs_number: str | None = None
) -> PatientSearch:
    """Return the result of an Access Document find-a-patient search.

    An empty searchset is `patient=None`, not an error. The same patient repeated is one
    patient. Several *different* patients raise `InvalidResponse`: GP Connect returns at
    most one, and choosing between them could show the wrong person's record. When
    `nhs_number` is given, a patient with a different NHS number also raises.
    """
    entries = _bundle_entries(bundle, trace_id=trace_id, what="patient search")
    index = _Index(entries)
    patients = _unique_by_id(r for r in _resources(entries) if r.get("resourceType") == "Patient")
    if not patients:
        return PatientSearch(patient=None, trace_id=trace_id)
    if len(patients) > 1:
        raise InvalidResponse(
            "The GP practice's system returned more than one patient for this NHS number, "
            "so none is shown. Contact the practice to check their record.",
            diagnostics=f"{len(patients)} distinct Patient resources in the searchset",
            trace_id=trace_id,
        )
    patient = _gp_connect_patient(patients[0], index)
    if not patient.id:
        raise InvalidResponse(
            diagnostics="the Patient in the searchset has no logical id", trace_id=trace_id
        )
    _check_nhs_number(patient, nhs_number, trace_id)
    return PatientSearch(patient=patient, trace_id=trace_id)


def parse_pds_patient(resource: Any, *, trace_id: str | None = None) -> Patient:
    """Return a PDS FHIR (R4) Patient: `id` is the NHS number.

    The `usual` name is preferred. The registered practice is the value of
    `generalPractitioner[0].identifier` (whatever its system says). `restricted` is True
    for confidentiality `R` (restricted, an S-flagged patient) or `V` (very restricted).
    """
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
        raise InvalidResponse(
            "The Personal Demographics Service (PDS) sent a reply this application could "
            "not understand. Please report it with the trace ID.",
            diagnostics=f"expected a Patient, got {_describe(resource)}",
            trace_id=trace_id,
        )
    nhs_number = _nhs_number(resource) or _str(resource.get("id")) or ""
    if not nhs_number:
        raise InvalidResponse(
            diagnostics="the PDS Patient has neither an NHS number nor an id",
            trace_id=trace_id,
        )
    practice = None
    for reference in _list(resource.get("generalPractitioner"))[:1]:
        practice = _str(_dict(reference.get("identifier")).get("value"))
    birth_date = parse_fhir_datetime(resource.get("birthDate"))
    deceased, deceased_at = _deceased(resource)
    return Patient(
        id=nhs_number,
        nhs_number=nhs_number,
        name=_human_name(_pick_name(resource.get("name"), ("usual", "official"))),
        birth_date=_as_date(birth_date),
        gender=_str(resource.get("gender")),
        deceased=deceased,
        deceased_at=deceased_at,
        registered_practice_ods=practice,
        restricted=_restricted(resource),
        home_address=_home_address(resource),
        telecom=_telecom(resource),
    )


# Foundations --------------------------------------------------------------------------------


def parse_patient_record(
    resource: Any, *, trace_id: str, patient_id: str | None = None
) -> PatientRecord:
    """Return the Patient of a Foundations read; a different patient than asked for raises."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
        raise InvalidResponse(
            diagnostics=f"expected a Patient, got {_describe(resource)}", trace_id=trace_id
        )
    patient = _gp_connect_patient(resource, None)
    if patient_id is not None and patient.id != patient_id:
        raise InvalidResponse(
            diagnostics=f"asked for Patient/{patient_id}, got Patient/{patient.id or 'no id'}",
            trace_id=trace_id,
        )
    return PatientRecord(patient=patient, trace_id=trace_id)


def parse_registered_patient(bundle: Any, *, trace_id: str, nhs_number: str) -> PatientRecord:
    """Return the patient a `$gpc.registerpatient` searchset holds: the one registered."""
    patient = parse_patient_search(bundle, trace_id=trace_id, nhs_number=nhs_number).patient
    if patient is None:
        raise InvalidResponse(
            diagnostics="the registration answer holds no Patient", trace_id=trace_id
        )
    return PatientRecord(patient=patient, trace_id=trace_id)


def parse_location(resource: Any, *, trace_id: str) -> Location:
    """Return a Location (a Foundations read)."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Location":
        raise InvalidResponse(
            diagnostics=f"expected a Location, got {_describe(resource)}", trace_id=trace_id
        )
    return _location_of(resource, _Index([]))


# Appointment Management -----------------------------------------------------------------------


def parse_free_slots(bundle: Any, *, trace_id: str, practice_ods: str = "") -> FreeSlots:
    """Return the free slots of a Slot search, each with its schedule resolved.

    The schedule's Location and Practitioner come from the bundle's included resources
    (a bare id when the provider did not include them). The organisation is the
    Location's managing organisation, else the bundle's one Organization, which providers
    return whenever slots are returned. Slots without an id, a start and an end (with
    the end after the start) cannot be shown or booked, so they are left out; the rest
    are in start order.
    """
    entries = _bundle_entries(bundle, trace_id=trace_id, what="free slot search")
    index = _Index(entries)
    resources = list(_resources(entries))
    organisations = _unique_by_id(r for r in resources if r.get("resourceType") == "Organization")
    practice = _organisation_of(organisations[0]) if len(organisations) == 1 else None
    schedules: dict[str, Schedule] = {}
    slots: list[Slot] = []
    for resource in resources:
        if resource.get("resourceType") != "Slot" or _status(resource) not in (None, "free"):
            continue
        slot_id = _str(resource.get("id"))
        start, end = _instant(resource.get("start")), _instant(resource.get("end"))
        if slot_id is None or start is None or end is None or end <= start:
            continue
        reference = _dict(resource.get("schedule"))
        key = _normalise_reference(_str(reference.get("reference")) or "")
        schedule = schedules.get(key)
        if schedule is None:
            schedule = schedules[key] = _schedule_of(reference, resource, index)
        location = schedule.location
        slots.append(
            Slot(
                id=slot_id,
                start=start,
                end=end,
                slot_type=_concept_text(resource.get("serviceType")),
                delivery_channel=_extension_code(resource, _DELIVERY_CHANNEL),
                schedule=schedule,
                organisation=(location.organisation if location else None) or practice,
            )
        )
    slots.sort(key=lambda slot: (slot.start, slot.schedule.id, slot.id))
    if not practice_ods and practice is not None:
        practice_ods = practice.ods_code or ""
    return FreeSlots(slots=tuple(slots), practice_ods=practice_ods, trace_id=trace_id)


def appointment_id_from_location(location: str) -> str | None:
    """Return the id in a `Location: [base]/Appointment/{id}/_history/{vid}` header."""
    match = _RELATIVE_TAIL.search(_HISTORY.sub("", location.strip()))
    return match.group(2) if match and match.group(1) == "Appointment" else None


def parse_etag(value: str | None) -> str | None:
    """Return the version a weak or strong ETag names: `W/"3"` → "3"."""
    match = _ETAG.fullmatch(value.strip()) if value else None
    return match.group(1) or None if match else None


def parse_appointment(resource: Any, *, trace_id: str, etag: str | None = None) -> Appointment:
    """Return an Appointment; its version comes from the response's `ETag` when given."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Appointment":
        raise InvalidResponse(
            diagnostics=f"expected an Appointment, got {_describe(resource)}", trace_id=trace_id
        )
    appointment_id = _str(resource.get("id"))
    if appointment_id is None:
        raise InvalidResponse(diagnostics="the Appointment has no logical id", trace_id=trace_id)
    actors: dict[str, str] = {}
    for participant in _list(resource.get("participant")):
        written = _str(_dict(participant.get("actor")).get("reference"))
        match = _RELATIVE_TAIL.search(_HISTORY.sub("", written)) if written else None
        if match:
            actors.setdefault(match.group(1), match.group(2))
    booking = None
    for extension in _extensions(resource, _BOOKING_ORGANISATION):
        contained = _Index([]).resolve(extension.get("valueReference"), resource)
        if contained is not None and contained.get("resourceType") == "Organization":
            booking = _organisation_of(contained)
    role = next(iter(_extensions(resource, _PRACTITIONER_ROLE)), None)
    reason = next(iter(_extensions(resource, _CANCELLATION_REASON)), None)
    return Appointment(
        id=appointment_id,
        version=parse_etag(etag) or _str(_dict(resource.get("meta")).get("versionId")),
        status=_status(resource) or "unknown",
        start=_instant(resource.get("start")),
        end=_instant(resource.get("end")),
        description=_str(resource.get("description")),
        comment=_str(resource.get("comment")),
        created=parse_fhir_datetime(resource.get("created")),
        slot_ids=tuple(
            _normalise_reference(written).removeprefix("Slot/")
            for written in (_str(s.get("reference")) for s in _list(resource.get("slot")))
            if written
        ),
        patient_id=actors.get("Patient"),
        location_id=actors.get("Location"),
        practitioner_id=actors.get("Practitioner"),
        slot_type=_concept_text(resource.get("serviceType")),
        schedule_type=_concept_text(resource.get("serviceCategory")),
        delivery_channel=_extension_code(resource, _DELIVERY_CHANNEL),
        practitioner_role=_coded(role.get("valueCodeableConcept")) if role else None,
        booking_organisation=booking,
        cancellation_reason=_str(reason.get("valueString")) if reason else None,
        trace_id=trace_id,
    )


def parse_patient_appointments(
    bundle: Any, *, trace_id: str, patient_id: str | None = None
) -> PatientAppointments:
    """Return a patient's appointments in start order, cancelled ones included.

    An appointment whose Patient participant is someone other than `patient_id` raises
    `InvalidResponse` rather than risk showing another person's appointment.
    """
    entries = _bundle_entries(bundle, trace_id=trace_id, what="patient appointments")
    appointments = [
        parse_appointment(resource, trace_id=trace_id)
        for resource in _unique_by_id(
            r for r in _resources(entries) if r.get("resourceType") == "Appointment"
        )
    ]
    for appointment in appointments:
        if patient_id is not None and appointment.patient_id not in (None, patient_id):
            raise InvalidResponse(
                "The GP practice's system returned another patient's appointment, so none "
                "is shown. Please report it with the trace ID.",
                diagnostics=f"Appointment/{appointment.id} is for Patient/{appointment.patient_id}",
                trace_id=trace_id,
            )
    appointments.sort(key=lambda a: (a.start is None, a.start.timestamp() if a.start else 0, a.id))
    return PatientAppointments(appointments=tuple(appointments), trace_id=trace_id)


def _schedule_of(reference: Mapping[str, Any], slot: Mapping[str, Any], index: _Index) -> Schedule:
    resource = index.resolve(reference, slot)
    if resource is None or resource.get("resourceType") != "Schedule":
        written = _normalise_reference(_str(reference.get("reference")) or "")
        return Schedule(id=written.removeprefix("Schedule/"))
    location = practitioner = None
    for actor in _list(resource.get("actor")):
        target = index.resolve(actor, resource)
        kind = _reference_type(actor, target)
        written = _normalise_reference(_str(actor.get("reference")) or "")
        if kind == "Location" and location is None:
            location = (
                _location_of(target, index)
                if target is not None
                else Location(id=written.removeprefix("Location/"))
            )
        elif kind == "Practitioner" and practitioner is None:
            practitioner = (
                _practitioner_of(target)
                if target is not None
                else Practitioner(id=written.removeprefix("Practitioner/"))
            )
    role = next(iter(_extensions(resource, _PRACTITIONER_ROLE)), None)
    return Schedule(
        id=_str(resource.get("id")) or "",
        schedule_type=_concept_text(resource.get("serviceCategory")),
        practitioner_role=_coded(role.get("valueCodeableConcept")) if role else None,
        location=location,
        practitioner=practitioner,
    )


def _location_of(resource: Mapping[str, Any], index: _Index) -> Location:
    managing = resource.get("managingOrganization")
    organisation = index.resolve(managing, resource)
    if organisation is not None and organisation.get("resourceType") != "Organization":
        organisation = None
    return Location(
        id=_str(resource.get("id")) or "",
        name=_str(resource.get("name")),
        address=_address(resource.get("address")),
        phone=_phone(resource),
        organisation=_organisation_of(organisation) if organisation is not None else None,
    )


def _organisation_of(resource: Mapping[str, Any]) -> Organisation:
    types = [
        _str(coding.get("code"))
        for concept in _list(resource.get("type"))
        for coding in _list(concept.get("coding"))
        if _str(coding.get("system")) == ORGANISATION_TYPE_SYSTEM
    ]
    return Organisation(
        id=_str(resource.get("id")) or "",
        name=_str(resource.get("name")),
        ods_code=_ods_code(resource),
        address=_address(resource.get("address")),
        phone=_phone(resource),
        type=next((t for t in types if t), None),
    )


def _practitioner_of(resource: Mapping[str, Any]) -> Practitioner:
    if resource.get("resourceType") != "Practitioner":
        return Practitioner(id=_str(resource.get("id")) or "")
    return Practitioner(
        id=_str(resource.get("id")) or "",
        name=_human_name(_pick_name(resource.get("name"), ("official", "usual"))),
        gender=_str(resource.get("gender")),
    )


def _instant(value: Any) -> datetime | None:
    """Return a dateTime with its offset; one without is taken as UK local time."""
    parsed = parse_fhir_datetime(value)
    if not isinstance(parsed, datetime):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_LONDON)


def _concept_text(value: Any) -> str | None:
    """Return the text of a CodeableConcept (or the first of a list), else its display."""
    concepts = _list(value)
    if not concepts:
        return None
    text = _str(concepts[0].get("text"))
    if text:
        return text
    coded = _coded(concepts[0])
    return coded.display if coded else None


def _extensions(resource: Mapping[str, Any], url_tail: str) -> list[Mapping[str, Any]]:
    return [
        extension
        for extension in _list(resource.get("extension"))
        if (_str(extension.get("url")) or "").lower().endswith(url_tail)
    ]


def _extension_code(resource: Mapping[str, Any], url_tail: str) -> str | None:
    for extension in _extensions(resource, url_tail):
        code = _str(extension.get("valueCode")) or _str(
            _dict(extension.get("valueCoding")).get("code")
        )
        if code:
            return code
    return None


# Access Document ---------------------------------------------------------------------------


def parse_document_search(
    bundle: Any, *, trace_id: str, patient_id: str | None = None
) -> DocumentSearch:
    """Return the documents of an Access Document search, each with its authors resolved.

    A DocumentReference repeated in the bundle (EMIS does this) is returned once, in the
    order the provider first sent it; `entered-in-error` documents are left out. Documents
    whose `subject` is a different patient (from `patient_id` when given, otherwise from
    each other) raise `InvalidResponse` rather than risk showing another person's documents.
    """
    entries = _bundle_entries(bundle, trace_id=trace_id, what="document search")
    index = _Index(entries)
    documents = _current_documents(entries)
    subject_id = _single_subject(documents, index, patient_id, trace_id)
    return DocumentSearch(
        documents=tuple(_document_summary(doc, index) for doc in documents),
        patient=_bundle_patient(entries, index, subject_id, trace_id),
        trace_id=trace_id,
    )


def parse_capabilities(resource: Any, *, trace_id: str) -> Capabilities:
    """Return what a consumer acts on from a provider's CapabilityStatement."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "CapabilityStatement":
        raise InvalidResponse(
            diagnostics=f"expected a CapabilityStatement, got {_describe(resource)}",
            trace_id=trace_id,
        )
    formats = resource.get("format")
    return Capabilities(
        name=_str(resource.get("name")),
        version=_str(resource.get("version")),
        fhir_version=_str(resource.get("fhirVersion")),
        publisher=_str(resource.get("publisher")),
        formats=tuple(f for f in map(_str, formats if isinstance(formats, list) else []) if f),
        trace_id=trace_id,
    )


# Access Record Structured ------------------------------------------------------------------


def parse_structured_documents(
    bundle: Any, *, trace_id: str, nhs_number: str | None = None
) -> StructuredDocuments:
    """Return every document in a `$gpc.getstructuredrecord` bundle with its consultations and problems.

    A document belongs to a consultation when its `context.encounter` is the consultation's
    Encounter, or when the consultation List tree (Consultation → Topic → Category → item,
    or a "flat" Topic → item) lists it. It belongs to a problem when the problem's
    Condition names it in a RelatedClinicalContent or ActualProblem extension, or when it
    sits under a consultation Topic linked to that problem. The secondary lists ("…
    documents contained in consultations", "… documents related to problems") only repeat
    documents the bundle already holds; their warning codes are kept in `warnings`.
    """
    entries = _bundle_entries(bundle, trace_id=trace_id, what="structured record")
    index = _Index(entries)
    documents = _current_documents(entries)
    subject_id = _single_subject(documents, index, None, trace_id)
    patient = _bundle_patient(entries, index, subject_id, trace_id)
    if patient is not None:
        _check_nhs_number(patient, nhs_number, trace_id)

    resources = list(_resources(entries))
    consultations: dict[str, Consultation] = {}
    # DocumentReference.id is mandatory; one without can still link through its encounter.
    document_keys = [
        _key(doc) if _str(doc.get("id")) else f"DocumentReference#{n}"
        for n, doc in enumerate(documents)
    ]
    by_document = {key: _Links() for key in document_keys}

    def link(
        document_key: str | None, *, consultation: str | None = None, problem: Problem | None = None
    ) -> None:
        links = by_document.get(document_key or "")
        if links is None:
            return
        if consultation is not None and consultation not in links.consultations:
            links.consultations.append(consultation)
        if problem is not None and problem.id not in {p.id for p in links.problems}:
            links.problems.append(problem)

    conditions = [(r, _problem(r)) for r in resources if r.get("resourceType") == "Condition"]
    problems = {_key(r): problem for r, problem in conditions if _str(r.get("id"))}
    for resource in resources:
        if resource.get("resourceType") != "List" or not _has_code(resource, _CONSULTATION_LIST):
            continue
        encounter = index.resolve(resource.get("encounter"))
        if encounter is not None and encounter.get("resourceType") != "Encounter":
            encounter = None
        consultation = _consultation(encounter, resource)
        key = _key(encounter) if encounter is not None else _key(resource)
        consultations.setdefault(key, consultation)
        for item, topic_problems in _consultation_items(resource, index):
            document_key = _document_key(item)
            link(document_key, consultation=key)
            for problem_key in topic_problems:
                if problem_key in problems:
                    link(document_key, problem=problems[problem_key])

    for document, document_key in zip(documents, document_keys, strict=True):
        encounter = index.resolve(_dict(document.get("context")).get("encounter"), document)
        if encounter is None or encounter.get("resourceType") != "Encounter":
            continue
        key = _key(encounter)
        consultations.setdefault(key, _consultation(encounter, None))
        link(document_key, consultation=key)

    for resource, problem in conditions:
        for extension in _list(resource.get("extension")):
            url = (_str(extension.get("url")) or "").lower()
            if url.endswith((_RELATED_CLINICAL_CONTENT, _ACTUAL_PROBLEM)):
                target = index.resolve(extension.get("valueReference"), resource)
                link(_document_key(target), problem=problem)

    linked = []
    for document, document_key in zip(documents, document_keys, strict=True):
        links = by_document[document_key]
        linked.append(
            LinkedDocument(
                document=_document_summary(document, index),
                consultations=tuple(consultations[key] for key in links.consultations),
                problems=tuple(links.problems),
            )
        )
    return StructuredDocuments(
        documents=tuple(linked),
        patient=patient,
        trace_id=trace_id,
        warnings=_list_warnings(resources),
    )


# Spine Directory Service -------------------------------------------------------------------


def parse_sds_endpoints(
    resource: Any, *, trace_id: str | None = None
) -> list[tuple[str, str | None]]:
    """Return `(address, party key)` for each usable SDS Endpoint, in the order SDS sent them.

    Accepts a searchset Bundle of Endpoints or a single Endpoint. The address is the
    service root (LDAP `nhsMhsEndPoint`), verbatim; the party key comes from the identifier
    with system `https://fhir.nhs.uk/Id/nhsMhsPartyKey`. Endpoints that are off, suspended,
    in error or entered in error are left out, as are repeats and ones without an address.
    """
    result: list[tuple[str, str | None]] = []
    for endpoint in _sds_resources(resource, "Endpoint", trace_id):
        address = _str(endpoint.get("address"))
        if address is None or _status(endpoint) in _UNUSABLE_STATUSES:
            continue
        item = (address, _identifier_value(endpoint, SDS_PARTY_KEY_SYSTEM))
        if item not in result:
            result.append(item)
    return result


def parse_sds_asids(
    resource: Any, *, party_key: str | None = None, trace_id: str | None = None
) -> list[str]:
    """Return the ASIDs (`https://fhir.nhs.uk/Id/nhsSpineASID`) of the SDS Devices, in order.

    Accepts a searchset Bundle of Devices or a single Device. With `party_key`, only
    Devices carrying that party key count. Inactive or entered-in-error Devices are left
    out, and each ASID appears once.
    """
    result: list[str] = []
    for device in _sds_resources(resource, "Device", trace_id):
        if _status(device) in _UNUSABLE_STATUSES:
            continue
        if party_key is not None and _identifier_value(device, SDS_PARTY_KEY_SYSTEM) != party_key:
            continue
        for identifier in _list(device.get("identifier")):
            value = _str(identifier.get("value"))
            if identifier.get("system") == SDS_ASID_SYSTEM and value and value not in result:
                result.append(value)
    return result


# Documents: one DocumentReference -----------------------------------------------------------


@dataclass(frozen=True)
class _Org:
    name: str | None
    ods: str | None
    key: str | None  # "Organization/{id}" when resolved, else the reference as written

    @property
    def known(self) -> bool:
        return bool(self.key or self.ods)


_NO_ORG = _Org(None, None, None)


def _document_summary(doc: Mapping[str, Any], index: _Index) -> DocumentSummary:
    doc_type = _coded(doc.get("type"))
    title = _str(doc.get("description")) or (doc_type.display if doc_type else None)

    author_org = _NO_ORG
    author_practitioner = None
    for author in _list(doc.get("author")):
        org, practitioner = _author(author, doc, index)
        if not author_org.known and org.known:
            author_org = org
        author_practitioner = author_practitioner or practitioner
    custodian = _organisation(doc.get("custodian"), doc, index)

    attachment = _attachment(doc)
    url = _str(attachment.get("url"))
    unavailable = None if url else (_str(attachment.get("title")) or UNAVAILABLE_REASON)
    encounter = _str(_dict(_dict(doc.get("context")).get("encounter")).get("reference"))

    return DocumentSummary(
        id=_str(doc.get("id")) or "",
        identifier=_first_identifier(doc),
        title=title or UNTITLED_DOCUMENT,
        type=doc_type,
        created=parse_fhir_datetime(doc.get("created")),
        indexed=parse_fhir_datetime(doc.get("indexed")),
        author_organisation=author_org.name,
        author_organisation_ods=author_org.ods,
        author_practitioner=author_practitioner,
        custodian=custodian.name,
        custodian_ods=custodian.ods,
        internal=_same_organisation(author_org, custodian),
        content_type=_str(attachment.get("contentType")) or DEFAULT_CONTENT_TYPE,
        size=_size(attachment.get("size")),
        url=url,
        unavailable_reason=unavailable,
        not_for_patient_disclosure=_nopat(doc),
        encounter_reference=encounter,
    )


def _author(
    reference: Mapping[str, Any], doc: Mapping[str, Any], index: _Index
) -> tuple[_Org, str | None]:
    """Return the organisation and practitioner name an author reference stands for."""
    resource = index.resolve(reference, doc)
    kind = _reference_type(reference, resource)
    if kind == "Organization":
        return _organisation(reference, doc, index), None
    if kind == "Practitioner":
        return _NO_ORG, _practitioner_name(resource) or _str(reference.get("display"))
    if kind == "PractitionerRole" and resource is not None:
        practitioner = index.resolve(resource.get("practitioner"), resource)
        name = _practitioner_name(practitioner) or _str(
            _dict(resource.get("practitioner")).get("display")
        )
        return _organisation(resource.get("organization"), resource, index), name
    return _NO_ORG, None


def _organisation(reference: Any, container: Mapping[str, Any], index: _Index) -> _Org:
    if not isinstance(reference, Mapping):
        return _NO_ORG
    resource = index.resolve(reference, container)
    if resource is not None and resource.get("resourceType") != "Organization":
        return _NO_ORG
    ods = _ods_code(resource) if resource is not None else None
    ods = ods or _ods_from_identifier(reference.get("identifier"))
    name = (_str(resource.get("name")) if resource is not None else None) or _str(
        reference.get("display")
    )
    if resource is not None:
        key: str | None = _key(resource)
    else:
        written = _str(reference.get("reference"))
        key = _normalise_reference(written) if written else None
    return _Org(name=name, ods=ods, key=key)


def _same_organisation(author: _Org, custodian: _Org) -> bool | None:
    """Internal (True) when the author organisation is the custodian; None if either is unknown."""
    if not (author.known and custodian.known):
        return None
    if author.ods and custodian.ods:
        return author.ods.upper() == custodian.ods.upper()
    if author.key and custodian.key:
        return author.key == custodian.key
    return None


def _attachment(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the first attachment with a URL, else the first attachment, else {}."""
    attachments = [_dict(c.get("attachment")) for c in _list(doc.get("content"))]
    for attachment in attachments:
        if _str(attachment.get("url")):
            return attachment
    return attachments[0] if attachments else {}


def _nopat(doc: Mapping[str, Any]) -> bool:
    codes = [c.get("code") for c in _list(_dict(doc.get("meta")).get("security"))]
    for label in _list(doc.get("securityLabel")):
        codes.append(label.get("code"))  # tolerate a Coding where a CodeableConcept belongs
        codes.extend(c.get("code") for c in _list(label.get("coding")))
    return any((_str(code) or "").upper() == _NOPAT for code in codes)


def _size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and value >= 0 else None


def _first_identifier(resource: Mapping[str, Any]) -> str | None:
    for identifier in _list(resource.get("identifier")):
        value = _str(identifier.get("value"))
        if value:
            return value
    return None


def _current_documents(entries: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return the DocumentReferences, once each, leaving out any entered in error."""
    documents = [
        r
        for r in _resources(entries)
        if r.get("resourceType") == "DocumentReference" and _status(r) != "entered-in-error"
    ]
    return _unique_by_id(documents)


def _single_subject(
    documents: list[Mapping[str, Any]],
    index: _Index,
    patient_id: str | None,
    trace_id: str,
) -> str | None:
    """Return the patient id the documents are about; raise if they are about several."""
    subjects = {s for s in (_patient_id(d.get("subject"), d, index) for d in documents) if s}
    if patient_id is not None:
        subjects.add(patient_id)
    if len(subjects) > 1:
        raise InvalidResponse(
            "The GP practice's system returned documents for more than one patient, so none "
            "is shown. Please report it with the trace ID.",
            diagnostics=f"DocumentReference subjects: {', '.join(sorted(subjects))}",
            trace_id=trace_id,
        )
    return next(iter(subjects), None)


def _patient_id(reference: Any, container: Mapping[str, Any], index: _Index) -> str | None:
    if not isinstance(reference, Mapping):
        return None
    resource = index.resolve(reference, container)
    if resource is not None:
        return _str(resource.get("id")) if resource.get("resourceType") == "Patient" else None
    written = _str(reference.get("reference"))
    match = _RELATIVE_TAIL.search(_HISTORY.sub("", written)) if written else None
    return match.group(2) if match and match.group(1) == "Patient" else None


def _bundle_patient(
    entries: list[Mapping[str, Any]], index: _Index, patient_id: str | None, trace_id: str
) -> Patient | None:
    """Return the bundle's Patient: the documents' subject, or the only Patient there is.

    A bundle whose Patient is not the documents' subject, or with several Patients and
    nothing to choose between them, raises: it may be another person's record.
    """
    patients = _unique_by_id(r for r in _resources(entries) if r.get("resourceType") == "Patient")
    if not patients:
        return None
    if patient_id is not None:
        chosen = next((p for p in patients if _str(p.get("id")) == patient_id), None)
    else:
        chosen = patients[0] if len(patients) == 1 else None
    if chosen is None:
        raise InvalidResponse(
            "The GP practice's system returned a record that does not clearly belong to one "
            "patient, so it is not shown. Please report it with the trace ID.",
            diagnostics=(
                f"Patient resources {', '.join(str(p.get('id')) for p in patients)}; "
                f"documents are about {patient_id or 'no stated patient'}"
            ),
            trace_id=trace_id,
        )
    return _gp_connect_patient(chosen, index)


# Structured record helpers ------------------------------------------------------------------


@dataclass
class _Links:
    """What links to one document: consultation keys and problems, in discovery order."""

    consultations: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _consultation(
    encounter: Mapping[str, Any] | None, consultation_list: Mapping[str, Any] | None
) -> Consultation:
    encounter = encounter or {}
    consultation_list = consultation_list or {}
    encounter_type = _coded(encounter.get("type"))
    when = parse_fhir_datetime(_dict(encounter.get("period")).get("start"))
    return Consultation(
        id=_str(encounter.get("id")) or _str(consultation_list.get("id")) or "",
        date=when or parse_fhir_datetime(consultation_list.get("date")),
        title=(encounter_type.display if encounter_type else None)
        or _str(consultation_list.get("title"))
        or "Consultation",
    )


def _consultation_items(
    consultation_list: Mapping[str, Any], index: _Index
) -> Iterator[tuple[Mapping[str, Any], tuple[str, ...]]]:
    """Yield each resource a consultation List tree reaches, with the problems of its Topic.

    Walks Consultation → Topic → Category → item and the "flat" Topic → item, following
    List references at any depth (each List once).
    """
    seen = {_key(consultation_list)}

    def walk(
        resource: Mapping[str, Any], problems: tuple[str, ...]
    ) -> Iterator[tuple[Mapping[str, Any], tuple[str, ...]]]:
        if _has_code(resource, _TOPIC_LIST) or _has_code(resource, _CATEGORY_LIST):
            problems = problems + _topic_problems(resource, index)
        for entry in _list(resource.get("entry")):
            item = index.resolve(entry.get("item"), resource)
            if item is None:
                continue  # e.g. "Referral items are not supported by the provider system"
            if item.get("resourceType") == "List":
                if _key(item) not in seen:
                    seen.add(_key(item))
                    yield from walk(item, problems)
            else:
                yield item, problems

    yield from walk(consultation_list, ())


def _topic_problems(topic: Mapping[str, Any], index: _Index) -> tuple[str, ...]:
    keys = []
    for extension in _list(topic.get("extension")):
        if not (_str(extension.get("url")) or "").lower().endswith(_RELATED_PROBLEM_HEADER):
            continue
        for part in _list(extension.get("extension")):
            if part.get("url") == "target":
                condition = index.resolve(part.get("valueReference"), topic)
                if condition is not None and condition.get("resourceType") == "Condition":
                    keys.append(_key(condition))
    return tuple(keys)


def _problem(condition: Mapping[str, Any]) -> Problem:
    code = _dict(condition.get("code"))
    name = _str(code.get("text"))
    for coding in _list(code.get("coding")):
        # The clinician's chosen term (the SNOMED description) beats the preferred term.
        for extension in _list(coding.get("extension")):
            if (_str(extension.get("url")) or "").lower().endswith(_SCT_DESCRIPTION_ID):
                for part in _list(extension.get("extension")):
                    if (_str(part.get("url")) or "").lower() == "descriptiondisplay":
                        name = name or _str(part.get("valueString"))
        name = name or _str(coding.get("display"))
    return Problem(id=_str(condition.get("id")) or "", name=name or "Unnamed problem")


def _document_key(resource: Mapping[str, Any] | None) -> str | None:
    if resource is None or resource.get("resourceType") != "DocumentReference":
        return None
    if not _str(resource.get("id")):
        return None
    return _key(resource)


def _list_warnings(resources: list[Mapping[str, Any]]) -> tuple[str, ...]:
    """Return the warning codes of the lists that hold or describe documents."""
    warnings: list[str] = []
    for resource in resources:
        if resource.get("resourceType") != "List" or not _documents_related_list(resource):
            continue
        for extension in _list(resource.get("extension")):
            if (_str(extension.get("url")) or "").lower().endswith(_LIST_WARNING_CODE):
                code = _str(extension.get("valueCode")) or _str(
                    _dict(extension.get("valueCoding")).get("code")
                )
                if code and code not in warnings:
                    warnings.append(code)
    return tuple(warnings)


def _documents_related_list(resource: Mapping[str, Any]) -> bool:
    codes = (
        _CONSULTATION_LIST,
        _LIST_OF_CONSULTATIONS,
        _PROBLEMS_LIST,
        _TOPIC_LIST,
        _CATEGORY_LIST,
    )
    if any(_has_code(resource, code) for code in codes):
        return True
    names = [_str(resource.get("title"))]
    for coding in _list(_dict(resource.get("code")).get("coding")):
        names += [_str(coding.get("code")), _str(coding.get("display"))]
    return any(name and name.lower() in _DOCUMENT_SECONDARY_LISTS for name in names)


def _has_code(resource: Mapping[str, Any], code: str) -> bool:
    codings = _list(_dict(resource.get("code")).get("coding"))
    return any(_str(coding.get("code")) == code for coding in codings)


# Patients helpers ---------------------------------------------------------------------------


def _gp_connect_patient(resource: Mapping[str, Any], index: _Index | None) -> Patient:
    deceased, deceased_at = _deceased(resource)
    return Patient(
        id=_str(resource.get("id")) or "",
        nhs_number=_nhs_number(resource) or "",
        name=_human_name(_pick_name(resource.get("name"), ("official", "usual"))),
        birth_date=_as_date(parse_fhir_datetime(resource.get("birthDate"))),
        gender=_str(resource.get("gender")),
        deceased=deceased,
        deceased_at=deceased_at,
        registered_practice_ods=_registered_practice(resource, index),
        restricted=_restricted(resource),
        home_address=_home_address(resource),
        telecom=_telecom(resource),
        registration_type=_registration_type(resource),
    )


def _home_address(patient: Mapping[str, Any]) -> Address | None:
    """Return the home address: a current one (no period end) before a historic one."""
    homes = [a for a in _list(patient.get("address")) if _str(a.get("use")) in ("home", None)]
    homes.sort(key=lambda a: _str(_dict(a.get("period")).get("end")) is not None)
    return _address(homes[:1])


def _address(value: Any) -> Address | None:
    addresses = _list(value)
    if not addresses:
        return None
    address = addresses[0]
    result = Address(
        lines=tuple(line for line in map(_str, _strings(address.get("line"))) if line),
        city=_str(address.get("city")),
        district=_str(address.get("district")),
        postcode=_str(address.get("postalCode")),
        use=_str(address.get("use")),
    )
    return result if result.display else None


def _telecom(resource: Mapping[str, Any]) -> tuple[ContactPoint, ...]:
    result: list[ContactPoint] = []
    for telecom in _list(resource.get("telecom")):
        system, value = _str(telecom.get("system")), _str(telecom.get("value"))
        if system and value:
            point = ContactPoint(system=system, value=value, use=_str(telecom.get("use")))
            if point not in result:
                result.append(point)
    return tuple(result)


def _phone(resource: Mapping[str, Any]) -> str | None:
    return next((t.value for t in _telecom(resource) if t.system == "phone"), None)


def _registration_type(patient: Mapping[str, Any]) -> str | None:
    for extension in _list(patient.get("extension")):
        if not (_str(extension.get("url")) or "").lower().endswith(_REGISTRATION_DETAILS):
            continue
        for detail in _list(extension.get("extension")):
            if _str(detail.get("url")) == "registrationType":
                coded = _coded(detail.get("valueCodeableConcept"))
                if coded is not None:
                    return coded.code or coded.display
    return None


def _registered_practice(patient: Mapping[str, Any], index: _Index | None) -> str | None:
    """Return the ODS code of the practice in `generalPractitioner`, when it can be found.

    The reference may carry the ODS code itself, or point at the practice's Organization,
    or (as in the specification's own examples) at the usual GP's Practitioner, whose one
    PractitionerRole in the bundle names the practice.
    """
    for reference in _list(patient.get("generalPractitioner")):
        ods = _ods_from_identifier(reference.get("identifier"))
        if ods:
            return ods
        if index is None:
            continue
        resource = index.resolve(reference, patient)
        if resource is None:
            continue
        if resource.get("resourceType") == "Organization":
            ods = _ods_code(resource)
        elif resource.get("resourceType") == "Practitioner":
            codes = {c for c in map(_ods_code, index.practitioner_organisations(resource)) if c}
            ods = codes.pop() if len(codes) == 1 else None
        if ods:
            return ods
    return None


def _check_nhs_number(patient: Patient, expected: str | None, trace_id: str) -> None:
    if expected is None:
        return
    if patient.nhs_number.replace(" ", "") != expected.replace(" ", ""):
        raise InvalidResponse(
            "The GP practice's system returned a patient with a different NHS number from "
            "the one asked for, so the record is not shown. Please report it with the trace ID.",
            diagnostics=f"asked for {expected}, got {patient.nhs_number or 'none'}",
            trace_id=trace_id,
        )


def _nhs_number(resource: Mapping[str, Any]) -> str | None:
    for system in (NHS_NUMBER_SYSTEM, _OLD_NHS_NUMBER_SYSTEM):
        value = _identifier_value(resource, system)
        if value:
            return value.replace(" ", "")
    return None


def _pick_name(names: Any, preferred_uses: tuple[str, ...]) -> Mapping[str, Any]:
    candidates = _list(names)
    for use in preferred_uses:
        for name in candidates:
            if name.get("use") == use:
                return name
    current = [n for n in candidates if n.get("use") not in ("old", "nickname", "anonymous")]
    return (current or candidates or [{}])[0]


def _human_name(name: Mapping[str, Any]) -> HumanName:
    family_value = name.get("family")
    if isinstance(family_value, list):  # DSTU2-era JSON
        family = " ".join(f for f in map(_str, family_value) if f)
    else:
        family = _str(family_value) or ""
    given = tuple(g for g in map(_str, _strings(name.get("given"))) if g)
    prefix = tuple(p for p in map(_str, _strings(name.get("prefix"))) if p)
    text = _str(name.get("text"))
    if not family and not given and text:
        # Only free text: keep it as written (as "given", which `display` leaves in its case).
        given = (text,)
    return HumanName(family=family, given=given, prefix=prefix)


def _practitioner_name(practitioner: Mapping[str, Any] | None) -> str | None:
    """Return "Dr Claire Jones" (prefix, given, family) for a Practitioner."""
    if practitioner is None or practitioner.get("resourceType") != "Practitioner":
        return None
    return _human_name(_pick_name(practitioner.get("name"), ("official", "usual"))).plain or None


def _deceased(resource: Mapping[str, Any]) -> tuple[bool, datetime | date | None]:
    if _str(resource.get("deceasedDateTime")):
        return True, parse_fhir_datetime(resource.get("deceasedDateTime"))
    return resource.get("deceasedBoolean") is True, None


def _restricted(resource: Mapping[str, Any]) -> bool:
    security = _list(_dict(resource.get("meta")).get("security"))
    return any((_str(c.get("code")) or "").upper() in _RESTRICTED_CODES for c in security)


def _as_date(value: datetime | date | None) -> date | None:
    return value.date() if isinstance(value, datetime) else value


# References ---------------------------------------------------------------------------------


class _Index:
    """Resolve references within a bundle: relative `Type/id`, absolute URLs matching an
    entry's `fullUrl` (or ending in `Type/id`), `urn:uuid:` full URLs and `#contained`."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self._resources: dict[str, Mapping[str, Any]] = {}
        self._roles: list[Mapping[str, Any]] = []
        for entry in entries:
            resource = _dict(entry.get("resource"))
            if not resource:
                continue
            full_url = _str(entry.get("fullUrl"))
            if full_url:
                self._resources.setdefault(full_url, resource)
                self._resources.setdefault(full_url.lower(), resource)
            if resource.get("resourceType") and resource.get("id"):
                self._resources.setdefault(_key(resource), resource)
            if resource.get("resourceType") == "PractitionerRole":
                self._roles.append(resource)

    def resolve(
        self, reference: Any, container: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        if not isinstance(reference, Mapping):
            return None
        written = _str(reference.get("reference"))
        if written is None:
            return None
        if written.startswith("#"):
            for contained in _list((container or {}).get("contained")):
                if contained.get("id") == written[1:]:
                    return contained
            return None
        found = self._resources.get(written) or self._resources.get(written.lower())
        if found is not None:
            return found
        return self._resources.get(_normalise_reference(written))

    def practitioner_organisations(
        self, practitioner: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        result = []
        for role in self._roles:
            if self.resolve(role.get("practitioner"), role) is practitioner:
                org = self.resolve(role.get("organization"), role)
                if org is not None and org.get("resourceType") == "Organization":
                    result.append(org)
        return result


def _normalise_reference(written: str) -> str:
    """Return `Type/id` for a relative or absolute reference (dropping `/_history/n`)."""
    written = _HISTORY.sub("", written)
    match = _RELATIVE_TAIL.search(written)
    return f"{match.group(1)}/{match.group(2)}" if match else written


def _reference_type(reference: Mapping[str, Any], resource: Mapping[str, Any] | None) -> str | None:
    if resource is not None:
        return _str(resource.get("resourceType"))
    written = _str(reference.get("reference"))
    if written:
        match = _RELATIVE_TAIL.search(_HISTORY.sub("", written))
        if match:
            return match.group(1)
    explicit = _str(reference.get("type"))  # R4 only, but harmless
    if explicit:
        return explicit
    if _ods_from_identifier(reference.get("identifier")):
        return "Organization"
    return None


def _key(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _unique_by_id(resources: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    seen: set[str] = set()
    result = []
    for resource in resources:
        rid = _str(resource.get("id"))
        if rid is not None:
            if rid in seen:
                continue
            seen.add(rid)
        result.append(resource)
    return result


# Identifiers and codes ----------------------------------------------------------------------


def _identifier_value(resource: Mapping[str, Any], system: str) -> str | None:
    for identifier in _list(resource.get("identifier")):
        if _str(identifier.get("system")) == system:
            value = _str(identifier.get("value"))
            if value:
                return value
    return None


def _ods_code(organisation: Mapping[str, Any] | None) -> str | None:
    if organisation is None:
        return None
    for system in _ODS_SYSTEMS:
        value = _identifier_value(organisation, system)
        if value:
            return value
    return None


def _ods_from_identifier(identifier: Any) -> str | None:
    identifier = _dict(identifier)
    if _str(identifier.get("system")) in _ODS_SYSTEMS:
        return _str(identifier.get("value"))
    return None


def _coded(value: Any) -> CodedConcept | None:
    """Return a CodeableConcept (or the first of a list of them) as a `CodedConcept`."""
    concepts = _list(value)
    concept = concepts[0] if concepts else {}
    text = _str(concept.get("text"))
    codings = _list(concept.get("coding"))
    coding = next((c for c in codings if _str(c.get("display"))), None)
    coding = coding or next((c for c in codings if _str(c.get("code"))), {})
    display = _str(coding.get("display")) or text or _str(coding.get("code"))
    if display is None:
        return None
    return CodedConcept(
        display=display, code=_str(coding.get("code")), system=_str(coding.get("system"))
    )


def _status(resource: Mapping[str, Any]) -> str | None:
    status = _str(resource.get("status"))
    return status.lower() if status else None


# Bundles and plain JSON ---------------------------------------------------------------------


def _bundle_entries(bundle: Any, *, trace_id: str | None, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        diagnostics = f"{what}: expected a Bundle, got {_describe(bundle)}"
        if isinstance(bundle, Mapping) and bundle.get("resourceType") == "OperationOutcome":
            issue = _list(bundle.get("issue"))[:1]
            if issue and _str(issue[0].get("diagnostics")):
                diagnostics += f" ({_str(issue[0].get('diagnostics'))})"
        raise InvalidResponse(diagnostics=diagnostics, trace_id=trace_id)
    entries = bundle.get("entry", [])
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidResponse(diagnostics=f"{what}: Bundle.entry is not a list", trace_id=trace_id)
    return [e for e in entries if isinstance(e, Mapping)]


def _resources(entries: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for entry in entries:
        resource = entry.get("resource")
        if isinstance(resource, Mapping):
            yield resource


def _sds_resources(
    resource: Any, resource_type: str, trace_id: str | None
) -> list[Mapping[str, Any]]:
    if isinstance(resource, Mapping) and resource.get("resourceType") == resource_type:
        return [resource]
    entries = _bundle_entries(resource, trace_id=trace_id, what=f"SDS {resource_type} search")
    return [r for r in _resources(entries) if r.get("resourceType") == resource_type]


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a {value.get('resourceType') or 'JSON object without resourceType'}"
    return f"a JSON {type(value).__name__}"


def _str(value: Any) -> str | None:
    """Return a non-blank string, trimmed; anything else is None."""
    if isinstance(value, str):
        return value.strip() or None
    return None


def _strings(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    return value if isinstance(value, list) else []


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    """Return the objects of a FHIR array, tolerating a lone object where an array belongs."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []
