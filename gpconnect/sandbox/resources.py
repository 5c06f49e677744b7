"""FHIR STU3 resources as GP Connect providers shape them, built from the sandbox's records."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from .catalogue import Practice, SandboxPatient
from .records import DocumentRecord, Organisation, Practitioner

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
SDS_USER_SYSTEM = "https://fhir.nhs.uk/Id/sds-user-id"
PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/"
NOPAT = {
    "system": "http://hl7.org/fhir/v3/ActCode",
    "code": "NOPAT",
    "display": "no disclosure to patient, family or caregivers without attending provider's authorization",
}


def patient_resource(
    patient: SandboxPatient,
    practice: Practice,
    *,
    today: date,
    registration_type: str = "R",
    usual_gp_id: str | None = None,
) -> dict[str, Any]:
    """Return the CareConnect-GPC-Patient-1 the practice's system holds for the patient."""
    registration: list[dict[str, Any]] = [
        {"url": "registrationPeriod", "valuePeriod": {"start": "2010-04-01T00:00:00+01:00"}},
        {
            "url": "registrationType",
            "valueCodeableConcept": {
                "coding": [
                    {
                        "system": "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-RegistrationType-1",
                        "code": registration_type,
                        "display": "Regular" if registration_type == "R" else "Temporary",
                    }
                ]
            },
        },
        {
            "url": "preferredBranchSurgery",
            "valueReference": {"reference": f"Location/loc-{practice.ods.lower()}-main"},
        },
    ]
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient.logical_id,
        "meta": {"versionId": "1", "profile": [PROFILE + "CareConnect-GPC-Patient-1"]},
        "extension": [
            {
                "url": PROFILE + "Extension-CareConnect-GPC-RegistrationDetails-1",
                "extension": registration,
            }
        ],
        "identifier": [
            {
                "extension": [
                    {
                        "url": PROFILE + "Extension-CareConnect-GPC-NHSNumberVerificationStatus-1",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1",
                                    "code": "01",
                                    "display": "Number present and verified",
                                }
                            ]
                        },
                    }
                ],
                "system": NHS_NUMBER_SYSTEM,
                "value": patient.nhs_number,
            }
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "text": f"{patient.family.upper()} {' '.join(patient.given)} ({patient.prefix})",
                "family": patient.family,
                "given": list(patient.given),
                "prefix": [patient.prefix],
            }
        ],
        "gender": patient.gender,
        "birthDate": patient.birth_date.isoformat(),
        "address": [
            {
                "use": "home",
                "type": "physical",
                "line": [f"{10 + int(patient.nhs_number[-3:]) % 80} Synthetic Street"],
                "city": practice.address[-1],
                "postalCode": practice.postcode,
            }
        ],
        "managingOrganization": {"reference": f"Organization/{practice.organisation_id}"},
    }
    if usual_gp_id:
        resource["generalPractitioner"] = [{"reference": f"Practitioner/{usual_gp_id}"}]
    deceased = patient.deceased_on(today)
    if deceased is not None:
        resource["deceasedDateTime"] = fhir_datetime(datetime.combine(deceased, time(9, 30)))
    return resource


def practice_organisation(practice: Practice) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": practice.organisation_id,
        "meta": {"versionId": "1", "profile": [PROFILE + "CareConnect-GPC-Organization-1"]},
        "identifier": [{"system": ODS_SYSTEM, "value": practice.ods}],
        "name": practice.name,
        "telecom": [{"system": "phone", "value": practice.phone, "use": "work"}],
        "address": [
            {
                "use": "work",
                "line": list(practice.address[:-1]),
                "city": practice.address[-1],
                "postalCode": practice.postcode,
            }
        ],
    }


def organisation_resource(organisation: Organisation) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": organisation.id,
        "meta": {"versionId": "1", "profile": [PROFILE + "CareConnect-GPC-Organization-1"]},
        "identifier": [{"system": ODS_SYSTEM, "value": organisation.ods}],
        "name": organisation.name,
    }


def practitioner_resource(practitioner: Practitioner) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": practitioner.id,
        "meta": {"versionId": "1", "profile": [PROFILE + "CareConnect-GPC-Practitioner-1"]},
        "identifier": [{"system": SDS_USER_SYSTEM, "value": practitioner.sds_user_id}],
        "name": [
            {
                "use": "usual",
                "family": practitioner.family,
                "given": [practitioner.given],
                "prefix": [practitioner.prefix],
            }
        ],
        "gender": practitioner.gender,
    }


def practitioner_role_resource(practitioner: Practitioner, organisation_id: str) -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "id": f"role-{practitioner.id}",
        "meta": {"versionId": "1", "profile": [PROFILE + "CareConnect-GPC-PractitionerRole-1"]},
        "practitioner": {"reference": f"Practitioner/{practitioner.id}"},
        "organization": {"reference": f"Organization/{organisation_id}"},
        "code": [
            {
                "coding": [
                    {
                        "system": "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-SDSJobRoleName-1",
                        "code": practitioner.role_code,
                        "display": practitioner.role_display,
                    }
                ]
            }
        ],
    }


def document_reference(
    document: DocumentRecord,
    *,
    binary_root: str,
    author_organisation_id: str | None,
    custodian_organisation_id: str,
) -> dict[str, Any]:
    """Return the CareConnect-GPC-DocumentReference-1 for a document (SPEC §1.3)."""
    meta: dict[str, Any] = {"profile": [PROFILE + "CareConnect-GPC-DocumentReference-1"]}
    if document.nopat == "meta":
        meta["security"] = [NOPAT]
    if document.type_code:
        doc_type: dict[str, Any] = {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": document.type_code,
                    "display": document.type_display,
                }
            ]
        }
    else:
        doc_type = {"text": document.type_text or "Document"}
    attachment: dict[str, Any] = {"contentType": document.content_type, "size": document.size}
    if document.file is not None:
        attachment["url"] = f"{binary_root}/Binary/{document.id}"
    else:
        attachment["title"] = document.unavailable_reason
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": document.id,
        "meta": meta,
        "identifier": [
            {
                "system": "https://sandbox.gpconnect.example/document-id",
                "value": document.identifier,
            }
        ],
        "status": "current",
        "type": doc_type,
        "subject": {"reference": f"Patient/pat-{document.patient_nhs}"},
        "indexed": document.indexed,
        "custodian": {"reference": f"Organization/{custodian_organisation_id}"},
        "content": [{"attachment": attachment}],
        "context": {
            "practiceSetting": {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "1060971000000108",
                        "display": "General practice service",
                    }
                ]
            }
        },
    }
    if document.created:
        resource["created"] = document.created
    authors = []
    if author_organisation_id:
        authors.append({"reference": f"Organization/{author_organisation_id}"})
    if document.author_practitioner_id:
        authors.append({"reference": f"Practitioner/{document.author_practitioner_id}"})
    if authors:
        resource["author"] = authors
    if document.title:
        resource["description"] = document.title
    if document.encounter_id:
        resource["context"]["encounter"] = {"reference": f"Encounter/{document.encounter_id}"}
    if document.nopat == "label":
        resource["securityLabel"] = [{"coding": [NOPAT]}]
    return resource


def fhir_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="seconds")
