"""The Spine services around the practices: SDS (who answers what) and PDS (who the patient is).

Both are FHIR R4 APIs on the NHS API Platform; the sandbox answers them consistently with
its catalogue, so a consumer's service discovery runs exactly as it would for real.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpconnect.interactions import Interactions
from gpconnect.nhs_number import is_valid as nhs_number_is_valid

from .catalogue import PATIENTS_BY_NHS_NUMBER, PRACTICES_BY_ODS, Practice
from .provider import NO_STORE, Sandbox

SDS_ROOT = "/spine-directory/FHIR/R4"
PDS_ROOT = "/personal-demographics/FHIR/R4"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION_SYSTEM = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"
PARTY_KEY_SYSTEM = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"
ASID_SYSTEM = "https://fhir.nhs.uk/Id/nhsSpineASID"
INTERACTIONS_BY_ID = {interaction.id: interaction for interaction in Interactions.all()}


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/fhir+json",
        headers={**NO_STORE, "X-Request-ID": str(uuid.uuid4())},
    )


def _r4_error(status: int, code: str, diagnostics: str) -> Response:
    return _json(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid" if status == 400 else "not-found",
                    "details": {
                        "coding": [
                            {
                                "system": "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode",
                                "code": code,
                            }
                        ]
                    },
                    "diagnostics": diagnostics,
                }
            ],
        },
        status,
    )


def _token(request: Request, name: str, system: str) -> list[str]:
    values = []
    for value in request.query_params.getlist(name):
        token_system, _, code = value.partition("|")
        if token_system == system and code:
            values.append(code)
    return values


def _lookup(request: Request) -> tuple[list[Practice], str] | Response:
    organisations = _token(request, "organization", ODS_SYSTEM)
    interactions = _token(request, "identifier", INTERACTION_SYSTEM)
    if len(organisations) != 1 or len(interactions) != 1:
        return _r4_error(
            400,
            "INVALID_SEARCH_DATA",
            "Give organization=…ods-organization-code|{ODS} and identifier=…nhsServiceInteractionId|{id}",
        )
    practice = PRACTICES_BY_ODS.get(organisations[0].upper())
    interaction_id = interactions[0]
    found = [practice] if practice and interaction_id in INTERACTIONS_BY_ID else []
    return found, interaction_id


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources],
    }


async def sds_endpoint(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    found = _lookup(request)
    if isinstance(found, Response):
        return found
    practices, interaction_id = found
    capability = INTERACTIONS_BY_ID[interaction_id].capability if practices else None
    resources = [
        {
            "resourceType": "Endpoint",
            "id": f"endpoint-{practice.ods}-{capability.value if capability else ''}",
            "status": "active",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "hl7-fhir-rest",
            },
            "payloadType": [{"coding": [{"code": "any"}]}],
            "address": sandbox.service_root(practice, capability) if capability else "",
            "managingOrganization": {"identifier": {"system": ODS_SYSTEM, "value": practice.ods}},
            "identifier": [
                {
                    "system": "https://fhir.nhs.uk/Id/nhsMhsFQDN",
                    "value": sandbox.base_url.split("//", 1)[-1],
                },
                {"system": PARTY_KEY_SYSTEM, "value": practice.party_key},
            ],
            "extension": [
                {
                    "url": "https://fhir.nhs.uk/StructureDefinition/Extension-SDS-NhsServiceInteractionId",
                    "valueReference": {
                        "identifier": {"system": INTERACTION_SYSTEM, "value": interaction_id}
                    },
                }
            ],
        }
        for practice in practices
    ]
    return _json(_bundle(resources))


async def sds_device(request: Request) -> Response:
    found = _lookup(request)
    if isinstance(found, Response):
        return found
    practices, interaction_id = found
    party_keys = _token(request, "identifier", PARTY_KEY_SYSTEM)
    resources = [
        {
            "resourceType": "Device",
            "id": f"device-{practice.ods}",
            "identifier": [
                {"system": ASID_SYSTEM, "value": practice.asid},
                {"system": PARTY_KEY_SYSTEM, "value": practice.party_key},
            ],
            "owner": {"identifier": {"system": ODS_SYSTEM, "value": practice.ods}},
        }
        for practice in practices
        if not party_keys or practice.party_key in party_keys
    ]
    return _json(_bundle(resources))


async def pds_patient(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    nhs_number = request.path_params["nhs_number"]
    if not (nhs_number.isascii() and nhs_number.isdigit() and nhs_number_is_valid(nhs_number)):
        return _r4_error(400, "INVALID_RESOURCE_ID", f"Invalid NHS number {nhs_number}")
    patient = PATIENTS_BY_NHS_NUMBER.get(nhs_number)
    if patient is None:
        return _r4_error(404, "RESOURCE_NOT_FOUND", f"No patient with NHS number {nhs_number}")
    practice = PRACTICES_BY_ODS[patient.practice_ods]
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": nhs_number,
        "meta": {
            "versionId": "2",
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                    "code": "R" if patient.restricted else "U",
                    "display": "restricted" if patient.restricted else "unrestricted",
                }
            ],
        },
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs_number}],
        "name": [
            {
                "id": "name-1",
                "use": "usual",
                "given": list(patient.given),
                "family": patient.family,
                "prefix": [patient.prefix],
            }
        ],
        "gender": patient.gender,
        "birthDate": patient.birth_date.isoformat(),
    }
    deceased = patient.deceased_on(sandbox.today())
    if deceased is not None:
        resource["deceasedDateTime"] = f"{deceased.isoformat()}T09:30:00+00:00"
    # A restricted record on PDS shows no registered practice or address (S-flag).
    if not patient.restricted:
        resource["generalPractitioner"] = [
            {
                "id": "gp-1",
                "type": "Organization",
                "identifier": {"system": ODS_SYSTEM, "value": practice.ods},
            }
        ]
    return _json(resource)


def routes() -> list[Route]:
    return [
        Route(f"{SDS_ROOT}/Endpoint", sds_endpoint),
        Route(f"{SDS_ROOT}/Device", sds_device),
        Route(f"{PDS_ROOT}/Patient/{{nhs_number}}", pds_patient),
    ]
