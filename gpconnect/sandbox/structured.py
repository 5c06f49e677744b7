"""Access Record Structured, enough to list documents: consultations and problems (SPEC §2)."""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from gpconnect.interactions import Capability, Interactions
from gpconnect.nhs_number import is_valid as nhs_number_is_valid

from .catalogue import PATIENTS
from .outcomes import ProviderFault
from .provider import ProviderCall, provider_route, read_json_body
from .records import ConsultationRecord, ProblemRecord
from .resources import (
    NHS_NUMBER_SYSTEM,
    PROFILE,
    document_reference,
    organisation_resource,
    patient_resource,
    practice_organisation,
    practitioner_resource,
    practitioner_role_resource,
)

ROOT = "/{ods}/STU3/1/gpconnect/structured"
SNOMED = "http://snomed.info/sct"
ALLOWED_PARTS = {
    "includeConsultations": {"consultationSearchPeriod", "includeNumberOfMostRecent"},
    "includeProblems": {"filterStatus"},
    "includeAllergies": {"includeResolvedAllergies"},
    "includeMedication": {"includePrescriptionIssues", "medicationSearchFromDate"},
    "includeImmunisations": {"includeNotGiven", "includeStatus"},
    "includeUncategorisedData": {"uncategorisedDataSearchPeriod"},
    "includeInvestigations": {"investigationSearchPeriod"},
    "includeReferrals": {"referralSearchPeriod"},
    "includeDiaryEntries": {"diaryEntriesSearchDate"},
}
RELATED_CONTENT = "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-RelatedClinicalContent-1"
ACTUAL_PROBLEM = (
    "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-ActualProblem-1"
)


# Parts a consumer must not send alongside consultations or problems (SPEC §2).
NOT_PERMITTED_WITH_CONSULTATIONS = {
    "medicationSearchFromDate",
    "uncategorisedDataSearchPeriod",
    "filterStatus",
    "referralSearchPeriod",
    "diaryEntriesSearchDate",
    "includeNotGiven",
    "includeStatus",
}
NOT_PERMITTED_WITH_PROBLEMS = NOT_PERMITTED_WITH_CONSULTATIONS - {"filterStatus"}


def _parameters(body: Any) -> dict[str, dict[str, Any]]:
    """Return the Parameters by name, refusing anything the operation does not define."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise ProviderFault("INVALID_RESOURCE", "The body must be a Parameters resource")
    listed = body.get("parameter") or []
    if not isinstance(listed, list):
        raise ProviderFault("INVALID_RESOURCE", "Parameters.parameter must be a list")
    parameters: dict[str, dict[str, Any]] = {}
    for parameter in listed:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name != "patientNHSNumber" and name not in ALLOWED_PARTS:
            raise ProviderFault("INVALID_PARAMETER", f"Unknown parameter {name!r}")
        if name in parameters:
            raise ProviderFault("INVALID_PARAMETER", f"Parameter {name} given twice")
        parts = parameter.get("part") or []
        if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
            raise ProviderFault("INVALID_RESOURCE", f"{name}.part must be a list of parameters")
        for part in parts:
            if part.get("name") not in ALLOWED_PARTS.get(name, set()):
                raise ProviderFault(
                    "INVALID_PARAMETER", f"Unknown part {part.get('name')!r} of {name}"
                )
        parameters[name] = parameter
    sent_parts = {
        p["name"] for parameter in parameters.values() for p in parameter.get("part") or []
    }
    forbidden: set[str] = set()
    if "includeConsultations" in parameters:
        forbidden |= NOT_PERMITTED_WITH_CONSULTATIONS
    if "includeProblems" in parameters:
        forbidden |= NOT_PERMITTED_WITH_PROBLEMS
    if sent_parts & forbidden:
        raise ProviderFault(
            "INVALID_PARAMETER",
            f"Not permitted with consultations or problems: {', '.join(sorted(sent_parts & forbidden))}",
        )
    if "includeAllergies" in parameters and not any(
        p.get("name") == "includeResolvedAllergies"
        for p in parameters["includeAllergies"].get("part") or []
    ):
        raise ProviderFault("INVALID_PARAMETER", "includeAllergies needs includeResolvedAllergies")
    return parameters


def _problem_status(parameter: dict[str, Any] | None) -> str | None:
    """Return "active" or "inactive" when the consumer filtered problems by status."""
    for part in (parameter or {}).get("part") or []:
        if part.get("name") == "filterStatus":
            status = part.get("valueCode")
            if status not in ("active", "inactive"):
                raise ProviderFault("INVALID_PARAMETER", "filterStatus must be active or inactive")
            return str(status)
    return None


def _nhs_number(parameters: dict[str, dict[str, Any]]) -> str:
    identifier = parameters.get("patientNHSNumber", {}).get("valueIdentifier")
    if not isinstance(identifier, dict):
        raise ProviderFault(
            "INVALID_PARAMETER", "patientNHSNumber with a valueIdentifier is required"
        )
    if identifier.get("system") != NHS_NUMBER_SYSTEM:
        raise ProviderFault(
            "INVALID_IDENTIFIER_SYSTEM", f"The NHS number system must be {NHS_NUMBER_SYSTEM}"
        )
    value = str(identifier.get("value", ""))
    if not nhs_number_is_valid(value):
        raise ProviderFault("INVALID_NHS_NUMBER", f"{value} is not a valid NHS number")
    return value


def _consultation_filter(
    parameter: dict[str, Any] | None, today: date
) -> tuple[date | None, date | None, int | None]:
    if parameter is None:
        return None, None, None
    parts = {p["name"]: p for p in parameter.get("part") or []}
    if len(parts) > 1:
        raise ProviderFault(
            "INVALID_RESOURCE",
            "consultationSearchPeriod and includeNumberOfMostRecent are mutually exclusive",
        )
    if "includeNumberOfMostRecent" in parts:
        count = parts["includeNumberOfMostRecent"].get("valuePositiveInt")
        if not isinstance(count, int) or count < 1:
            raise ProviderFault(
                "INVALID_PARAMETER", "includeNumberOfMostRecent must be a positive integer"
            )
        return None, None, count
    if "consultationSearchPeriod" in parts:
        period = parts["consultationSearchPeriod"].get("valuePeriod") or {}
        try:
            start = date.fromisoformat(period["start"]) if period.get("start") else None
            end = date.fromisoformat(period["end"]) if period.get("end") else None
        except (ValueError, TypeError, AttributeError):
            raise ProviderFault(
                "INVALID_PARAMETER", "consultationSearchPeriod must use whole dates"
            ) from None
        if (start and start > today) or (end and end > today) or (start and end and start > end):
            raise ProviderFault(
                "INVALID_PARAMETER", "consultationSearchPeriod is not a valid past period"
            )
        return start, end, None
    return None, None, None


def _coded_list(
    list_id: str,
    code: str,
    display: str,
    title: str,
    entries: list[str],
    system: str = SNOMED,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "resourceType": "List",
        "id": list_id,
        "meta": {"profile": [PROFILE + "CareConnect-GPC-List-1"]},
        "status": "current",
        "mode": "snapshot",
        "title": title,
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "entry": [{"item": {"reference": reference}} for reference in entries],
        **extra,
    }


def _consultation_resources(
    consultation: ConsultationRecord, patient_ref: str
) -> list[dict[str, Any]]:
    encounter = {
        "resourceType": "Encounter",
        "id": consultation.id,
        "meta": {"profile": [PROFILE + "CareConnect-GPC-Encounter-1"]},
        "status": "finished",
        "type": [{"text": consultation.title}],
        "subject": {"reference": patient_ref},
        "participant": [
            {"individual": {"reference": f"Practitioner/{consultation.practitioner_id}"}}
        ],
        "period": {"start": consultation.date},
    }
    topic_ids, resources = [], []
    for index, (title, document_ids) in enumerate(consultation.topics, start=1):
        topic_id = f"{consultation.id}-topic-{index}"
        topic_ids.append(f"List/{topic_id}")
        resources.append(
            _coded_list(
                topic_id,
                "25851000000105",
                "Topic (EHR)",
                title,
                [f"DocumentReference/{d}" for d in document_ids],
                subject={"reference": patient_ref},
                encounter={"reference": f"Encounter/{consultation.id}"},
            )
        )
    consultation_list = _coded_list(
        f"{consultation.id}-consultation",
        "325851000000107",
        "Consultation",
        consultation.title,
        topic_ids,
        subject={"reference": patient_ref},
        encounter={"reference": f"Encounter/{consultation.id}"},
        date=consultation.date,
    )
    return [encounter, consultation_list, *resources]


def _problem_resource(problem: ProblemRecord, patient_ref: str) -> dict[str, Any]:
    extensions = [
        {"url": RELATED_CONTENT, "valueReference": {"reference": f"DocumentReference/{d}"}}
        for d in problem.related_document_ids
    ]
    if problem.actual_problem_document_id:
        extensions.append(
            {
                "url": ACTUAL_PROBLEM,
                "valueReference": {
                    "reference": f"DocumentReference/{problem.actual_problem_document_id}"
                },
            }
        )
    return {
        "resourceType": "Condition",
        "id": problem.id,
        "meta": {"profile": [PROFILE + "CareConnect-GPC-ProblemHeader-Condition-1"]},
        "extension": extensions,
        "clinicalStatus": "active" if problem.active else "inactive",
        "category": [
            {
                "coding": [
                    {
                        "system": "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-ConditionCategory-1",
                        "code": "problem-list-item",
                        "display": "Problem List Item",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": SNOMED, "code": problem.snomed_code, "display": problem.name}],
            "text": problem.name,
        },
        "subject": {"reference": patient_ref},
        "onsetDateTime": problem.onset,
    }


async def get_structured_record(call: ProviderCall) -> Response:
    parameters = _parameters(await read_json_body(call.request))
    nhs_number = _nhs_number(parameters)
    consultations_wanted = "includeConsultations" in parameters
    if consultations_wanted and parameters.get("includeProblems", {}).get("part"):
        raise ProviderFault(
            "INVALID_PARAMETER", "includeProblems.filterStatus is not permitted with consultations"
        )
    today = call.sandbox.today()
    start, end, most_recent = _consultation_filter(parameters.get("includeConsultations"), today)

    patient = next((p for p in PATIENTS if p.nhs_number == nhs_number), None)
    if patient is None or not call.shares_record_of(patient):
        raise ProviderFault(
            "PATIENT_NOT_FOUND", "No patient with that NHS number is shared by this practice"
        )
    if not patient.consent:
        raise ProviderFault(
            "NO_PATIENT_CONSENT", "The patient has dissented from sharing their record"
        )

    record = call.sandbox.record
    patient_ref = f"Patient/{patient.logical_id}"
    consultations = sorted(
        (c for c in record.consultations if c.patient_nhs == nhs_number),
        key=lambda c: c.date,
        reverse=True,
    )
    if start or end:
        consultations = [
            c
            for c in consultations
            if (not start or c.date[:10] >= start.isoformat())
            and (not end or c.date[:10] <= end.isoformat())
        ]
    if most_recent:
        consultations = consultations[:most_recent]
    status = _problem_status(parameters.get("includeProblems"))
    problems = (
        [
            p
            for p in record.problems
            if p.patient_nhs == nhs_number and (status is None or (status == "active") == p.active)
        ]
        if "includeProblems" in parameters
        else []
    )
    if not consultations_wanted:
        consultations = []

    linked: set[str] = set()
    resources: list[dict[str, Any]] = [
        patient_resource(patient, call.practice, today=today, usual_gp_id=call.usual_gp_id()),
        practice_organisation(call.practice),
    ]
    for consultation in consultations:
        resources.extend(_consultation_resources(consultation, patient_ref))
        linked.update(d for _, ids in consultation.topics for d in ids)
    for problem in problems:
        resources.append(_problem_resource(problem, patient_ref))
        linked.update(problem.related_document_ids)
        if problem.actual_problem_document_id:
            linked.add(problem.actual_problem_document_id)
    if consultations:
        resources.append(
            _coded_list(
                "consultations",
                "1149501000000101",
                "List of consultations",
                "List of consultations",
                [f"Encounter/{c.id}" for c in consultations],
                subject={"reference": patient_ref},
            )
        )

    organisations = {o.ods: o for o in record.organisations}
    practitioners = {p.id: p for p in record.practitioners}
    # The usual GP is always in the bundle (SPEC §2), with their role.
    wanted_practitioners: set[str] = {c.practitioner_id for c in consultations}
    usual_gp = call.usual_gp_id()
    if usual_gp:
        wanted_practitioners.add(usual_gp)
    documents = [d for d in record.documents if d.id in linked and d.patient_nhs == nhs_number]
    for document in documents:
        author = organisations.get(document.author_org_ods or "")
        if author and author.ods != call.practice.ods:
            resources.append(organisation_resource(author))
        if document.author_practitioner_id:
            wanted_practitioners.add(document.author_practitioner_id)
        resources.append(
            document_reference(
                document,
                binary_root=call.sandbox.service_root(call.practice, Capability.DOCUMENTS),
                author_organisation_id=(
                    call.practice.organisation_id
                    if document.author_org_ods == call.practice.ods
                    else author.id
                    if author
                    else None
                ),
                custodian_organisation_id=call.practice.organisation_id,
            )
        )
    for practitioner_id in sorted(wanted_practitioners):
        if practitioner_id in practitioners:
            resources.append(practitioner_resource(practitioners[practitioner_id]))
            resources.append(
                practitioner_role_resource(
                    practitioners[practitioner_id], call.practice.organisation_id
                )
            )
    if documents and consultations:
        resources.append(
            _secondary_list(
                "consultations-documents-contained-in-consultations",
                "Consultations - documents contained in consultations",
                [d.id for d in documents if d.encounter_id],
                patient_ref,
            )
        )
    if documents and problems:
        problem_docs = {
            d
            for p in problems
            for d in (*p.related_document_ids, p.actual_problem_document_id)
            if d
        }
        resources.append(
            _secondary_list(
                "problems-documents-related-to-problems",
                "Problems - documents related to problems",
                sorted(problem_docs),
                patient_ref,
            )
        )

    unique = {(r["resourceType"], r["id"]): r for r in resources}
    bundle = {
        "resourceType": "Bundle",
        "id": call.trace_id,
        "meta": {"profile": [PROFILE + "GPConnect-StructuredRecord-Bundle-1"]},
        "type": "collection",
        "entry": [
            {"fullUrl": f"{call.service_root}/{t}/{i}", "resource": r}
            for (t, i), r in unique.items()
        ],
    }
    return call.fhir(bundle)


def _secondary_list(
    list_id: str, title: str, document_ids: list[str], patient_ref: str
) -> dict[str, Any]:
    return _coded_list(
        list_id,
        list_id,
        title,
        title,
        [f"DocumentReference/{d}" for d in document_ids],
        system="https://fhir.hl7.org.uk/STU3/CodeSystem/GPConnect-SecondaryListValues-1",
        subject={"reference": patient_ref},
    )


async def structured_metadata(call: ProviderCall) -> Response:
    return call.fhir(
        {
            "resourceType": "CapabilityStatement",
            "version": "1.6.2",
            "name": "GP Connect API - Access Record Structured",
            "status": "active",
            "date": "2023-07-01",
            "publisher": "GP Connect sandbox",
            "kind": "capability",
            "fhirVersion": "3.0.1",
            "acceptUnknown": "both",
            "format": ["application/fhir+json", "application/fhir+xml"],
            "rest": [
                {
                    "mode": "server",
                    "operation": [
                        {
                            "name": "gpc.getstructuredrecord",
                            "definition": {
                                "reference": "https://fhir.nhs.uk/STU3/OperationDefinition/GPConnect-GetStructuredRecord-Operation-1"
                            },
                        }
                    ],
                }
            ],
        }
    )


def routes() -> list[Route]:
    return [
        Route(
            f"{ROOT}/metadata",
            provider_route(Interactions.STRUCTURED_METADATA, structured_metadata),
        ),
        Route(
            f"{ROOT}/Patient/$gpc.getstructuredrecord",
            provider_route(Interactions.STRUCTURED_RECORD, get_structured_record),
            methods=["POST"],
        ),
    ]
