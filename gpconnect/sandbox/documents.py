"""Access Document: find a patient, search their documents, retrieve a document (SPEC §1)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import date
from html import escape
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gpconnect.interactions import Interactions
from gpconnect.nhs_number import is_valid as nhs_number_is_valid

from .catalogue import PATIENTS, SandboxPatient
from .checks import FHIR_XML, date_bounds
from .outcomes import ProviderFault
from .provider import (
    FHIR_JSON_UTF8,
    FHIR_XML_UTF8,
    NO_STORE,
    ProviderCall,
    provider_route,
    searchset,
)
from .records import DocumentRecord
from .resources import (
    NHS_NUMBER_SYSTEM,
    ODS_SYSTEM,
    document_reference,
    organisation_resource,
    patient_resource,
    practice_organisation,
    practitioner_resource,
    practitioner_role_resource,
)

ROOT = "/{ods}/STU3/1/gpconnect/documents"
MANDATORY_INCLUDES = {
    ("_include", "DocumentReference:subject:Patient"),
    ("_include", "DocumentReference:custodian:Organization"),
    ("_include", "DocumentReference:author:Organization"),
    ("_include", "DocumentReference:author:Practitioner"),
    ("_revinclude:recurse", "PractitionerRole:practitioner"),
}
SEARCH_PARAMETERS = {
    "_include",
    "_revinclude:recurse",
    "created",
    "author",
    "description",
    "_format",
}
# Base64 of 3 * 2**18 bytes at a time: whole quanta, so chunks concatenate into valid base64.
_READ_SIZE = 3 * 256 * 1024
SLOW_DRIP_BYTES = 1024


def parse_nhs_identifier(query: Iterable[tuple[str, str]]) -> str:
    """Return the NHS number from `identifier=system|value`, checked as providers are tested."""
    pairs = list(query)
    identifiers = [value for key, value in pairs if key == "identifier"]
    if any(key.lower() == "identifier" and key != "identifier" for key, _ in pairs):
        raise ProviderFault("BAD_REQUEST", "Parameter names are case sensitive: use 'identifier'")
    if not identifiers:
        raise ProviderFault("BAD_REQUEST", "The identifier parameter is required")
    if len(identifiers) > 1:
        raise ProviderFault("BAD_REQUEST", "Only one identifier parameter is allowed")
    unknown = {key for key, _ in pairs} - {"identifier", "_format"}
    if unknown:
        raise ProviderFault(
            "INVALID_PARAMETER", f"Unknown parameter(s): {', '.join(sorted(unknown))}"
        )
    system, separator, value = identifiers[0].partition("|")
    if not separator or not system.strip() or not value.strip():
        raise ProviderFault("INVALID_PARAMETER", "identifier must be system|value")
    if system != NHS_NUMBER_SYSTEM:
        raise ProviderFault("INVALID_PARAMETER", f"identifier system must be {NHS_NUMBER_SYSTEM}")
    if not (value.isascii() and value.isdigit() and nhs_number_is_valid(value)):
        raise ProviderFault("INVALID_NHS_NUMBER", f"{value} is not a valid NHS number")
    return value


def _require_documents_enabled(call: ProviderCall) -> None:
    if not call.practice.documents_enabled:
        raise ProviderFault(
            "ACCESS DENIED", "The Access Document capability is disabled at this practice."
        )


async def find_patient(call: ProviderCall) -> Response:
    nhs_number = parse_nhs_identifier(call.request.query_params.multi_items())
    _require_documents_enabled(call)
    resources: list[Mapping[str, Any]] = []
    patient = next((p for p in PATIENTS if p.nhs_number == nhs_number), None)
    # Only a regular (GMS) registration here, shareable: otherwise an empty searchset.
    if patient is not None and call.shares_record_of(patient):
        resources.append(
            patient_resource(
                patient, call.practice, today=call.sandbox.today(), usual_gp_id=call.usual_gp_id()
            )
        )
    return call.fhir(searchset(call, resources))


def _check_search_parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    unknown = {key for key, _ in pairs} - SEARCH_PARAMETERS
    if unknown:
        raise ProviderFault(
            "INVALID_PARAMETER", f"Unknown parameter(s): {', '.join(sorted(unknown))}"
        )
    includes = {(k, v) for k, v in pairs if k in ("_include", "_revinclude:recurse")}
    missing = MANDATORY_INCLUDES - includes
    if missing:
        raise ProviderFault(
            "INVALID_PARAMETER",
            "Missing mandatory include(s): " + ", ".join(f"{k}={v}" for k, v in sorted(missing)),
        )
    if includes - MANDATORY_INCLUDES:
        raise ProviderFault("INVALID_PARAMETER", "Unsupported _include or _revinclude value")
    criteria: dict[str, Any] = dict(
        date_bounds("created", (v for k, v in pairs if k == "created"), allow_time=True)
    )
    for key, value in pairs:
        if key == "author":
            system, _, code = value.partition("|")
            if system != ODS_SYSTEM or not code:
                raise ProviderFault(
                    "INVALID_PARAMETER", f"author must be {ODS_SYSTEM}|{{ODS code}}"
                )
            criteria["author"] = code
        elif key == "description":
            criteria["description"] = value
    return criteria


def _matches(document: DocumentRecord, criteria: Mapping[str, Any]) -> bool:
    # Without a created date, the provider MUST filter on indexed instead (SPEC §1.3).
    when = date.fromisoformat((document.created or document.indexed)[:10])
    if "ge" in criteria and when < criteria["ge"]:
        return False
    if "le" in criteria and when > criteria["le"]:
        return False
    if "author" in criteria and document.author_org_ods != criteria["author"]:
        return False
    if "description" in criteria:
        haystack = " ".join(
            filter(None, [document.title, document.type_display, document.type_text])
        ).lower()
        if not all(word in haystack for word in criteria["description"].lower().split()):
            return False
    return True


def _patient_shared_for_documents(call: ProviderCall, patient: SandboxPatient) -> None:
    if not patient.consent:
        raise ProviderFault(
            "NO_PATIENT_CONSENT", "The patient has dissented from sharing their record"
        )


async def search_documents(call: ProviderCall) -> Response:
    pairs = call.request.query_params.multi_items()
    criteria = _check_search_parameters(pairs)
    _require_documents_enabled(call)
    patient = call.patient_for_logical_id(call.request.path_params["patient_id"])
    _patient_shared_for_documents(call, patient)

    record = call.sandbox.record
    documents = [
        d
        for d in record.documents
        if d.patient_nhs == patient.nhs_number
        and d.practice_ods == call.practice.ods
        and _matches(d, criteria)
    ]
    organisations = {o.ods: o for o in record.organisations}
    practitioners = {p.id: p for p in record.practitioners}
    usual_gp = call.usual_gp_id()
    resources: list[Mapping[str, Any]] = [
        patient_resource(patient, call.practice, today=call.sandbox.today(), usual_gp_id=usual_gp),
        practice_organisation(call.practice),
    ]
    seen_organisations = {call.practice.ods}
    seen_practitioners: set[str] = set()
    if usual_gp:
        seen_practitioners.add(usual_gp)
    for document in documents:
        author_org_id = None
        if document.author_org_ods == call.practice.ods:
            author_org_id = call.practice.organisation_id
        elif document.author_org_ods in organisations:
            organisation = organisations[document.author_org_ods]
            author_org_id = organisation.id
            if organisation.ods not in seen_organisations:
                seen_organisations.add(organisation.ods)
                resources.append(organisation_resource(organisation))
        reference = document_reference(
            document,
            binary_root=call.service_root,
            author_organisation_id=author_org_id,
            custodian_organisation_id=call.practice.organisation_id,
        )
        resources.append(reference)
        if document.listed_twice:
            resources.append(reference)  # as EMIS does: the consumer must cope
        practitioner_id = document.author_practitioner_id
        if (
            practitioner_id
            and practitioner_id not in seen_practitioners
            and practitioner_id in practitioners
        ):
            seen_practitioners.add(practitioner_id)
    for practitioner_id in sorted(seen_practitioners):
        if practitioner_id in practitioners:
            practitioner = practitioners[practitioner_id]
            resources.append(practitioner_resource(practitioner))
            organisation_id = (
                call.practice.organisation_id
                if practitioner.organisation_ods == call.practice.ods
                else organisations[practitioner.organisation_ods].id
                if practitioner.organisation_ods in organisations
                else call.practice.organisation_id
            )
            resources.append(practitioner_role_resource(practitioner, organisation_id))
    return call.fhir(searchset(call, resources))


def _binary_envelope(document: DocumentRecord, answer_format: str) -> tuple[bytes, bytes]:
    """Return what goes before and after the streamed base64 of a Binary resource."""
    if answer_format == FHIR_XML:
        prefix = (
            "<?xml version='1.0' encoding='utf-8'?>\n"
            f'<Binary xmlns="http://hl7.org/fhir"><id value="{escape(document.id)}"/>'
            '<meta><versionId value="1"/></meta>'
            f'<contentType value="{escape(document.content_type)}"/><content value="'
        )
        return prefix.encode(), b'"/></Binary>'
    prefix = (
        f'{{"resourceType":"Binary","id":{json.dumps(document.id)},"meta":{{"versionId":"1"}},'
        f'"contentType":{json.dumps(document.content_type)},"content":"'
    )
    return prefix.encode(), b'"}'


async def retrieve_binary(call: ProviderCall) -> Response:
    _require_documents_enabled(call)
    binary_id = call.request.path_params["binary_id"]
    document = next(
        (
            d
            for d in call.sandbox.record.documents
            if d.id == binary_id and d.practice_ods == call.practice.ods
        ),
        None,
    )
    if document is None or document.file is None:
        raise ProviderFault("NO_RECORD_FOUND", f"No document with id {binary_id}")
    patient = next((p for p in PATIENTS if p.nhs_number == document.patient_nhs), None)
    if patient is None or not call.shares_record_of(patient):
        raise ProviderFault("PATIENT_NOT_FOUND", "The document's patient is not available")
    _patient_shared_for_documents(call, patient)
    if document.size > call.sandbox.max_document_bytes and not document.over_limit:
        raise ProviderFault("NO_RECORD_FOUND", "The document exceeds the 5MB retrieval limit")

    path = call.sandbox.data_dir / document.file
    fault = call.sandbox.binary_faults.get(document.id, document.fault)
    if fault == "non-json":
        return Response(
            "<html><body><h1>Document service error</h1></body></html>",
            media_type="text/html",
            headers=NO_STORE,
        )
    prefix, suffix = _binary_envelope(document, call.format)
    size = path.stat().st_size
    length = len(prefix) + 4 * ((size + 2) // 3) + len(suffix)

    async def body() -> AsyncIterator[bytes]:
        yield prefix
        sent = 0
        # A document that "stops half way" sends whole base64 quanta up to its middle, then
        # drops the connection, whatever its size.
        stop_at = (size // 2) // 3 * 3 if fault == "stops-half-way" else None
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, _READ_SIZE):
                if stop_at is not None and sent + len(chunk) >= stop_at:
                    yield base64.b64encode(chunk[: stop_at - sent])
                    raise ConnectionAbortedError("sandbox fault: Binary stops half way")
                encoded = base64.b64encode(chunk)
                if fault == "invalid-base64" and sent == 0:
                    encoded = b"!!!!" + encoded[4:]
                if fault == "slow-drip":
                    # About 5 KB a second: a few seconds even for a small letter.
                    for start in range(0, len(encoded), SLOW_DRIP_BYTES):
                        await asyncio.sleep(0.2)
                        yield encoded[start : start + SLOW_DRIP_BYTES]
                else:
                    yield encoded
                sent += len(chunk)
        yield suffix

    return StreamingResponse(
        body(),
        media_type=FHIR_XML_UTF8 if call.format == FHIR_XML else FHIR_JSON_UTF8,
        headers={**NO_STORE, "Content-Length": str(length)},
    )


def documents_metadata_statement(base: str) -> dict[str, Any]:
    profile = "https://fhir.nhs.uk/STU3/StructureDefinition/"
    return {
        "resourceType": "CapabilityStatement",
        "version": "1.6.2",
        "name": "GP Connect API - Access Document",
        "status": "active",
        "date": "2023-07-01",
        "publisher": "GP Connect sandbox",
        "description": "The GP Connect Access Document API of the sandbox provider.",
        "kind": "capability",
        "software": {"name": "gpconnect-sandbox", "version": "1.0.0"},
        "fhirVersion": "3.0.1",
        "acceptUnknown": "both",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "profile": [
            {"reference": profile + "CareConnect-GPC-Patient-1/_history/1.8"},
            {"reference": profile + "CareConnect-GPC-Organization-1/_history/1.4"},
            {"reference": profile + "CareConnect-GPC-Practitioner-1/_history/1.3"},
            {"reference": profile + "CareConnect-GPC-PractitionerRole-1/_history/1.2"},
            {"reference": profile + "GPConnect-OperationOutcome-1/_history/1.2"},
            {"reference": profile + "CareConnect-GPC-DocumentReference-1/_history/1.3"},
            {"reference": profile + "GPConnect-Searchset-Bundle-1/_history/1.3"},
        ],
        "rest": [
            {
                "mode": "server",
                "security": {"cors": True},
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [{"name": "identifier", "type": "token"}],
                    },
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                    {
                        "type": "DocumentReference",
                        "interaction": [{"code": "search-type"}],
                        "searchInclude": [
                            "DocumentReference:subject:Patient",
                            "DocumentReference:custodian:Organization",
                            "DocumentReference:author:Organization",
                            "DocumentReference:author:Practitioner",
                        ],
                        "searchRevInclude": ["PractitionerRole:practitioner"],
                        "searchParam": [
                            {"name": "created", "type": "date"},
                            {"name": "author", "type": "token"},
                            {"name": "description", "type": "string"},
                        ],
                    },
                ],
            }
        ],
    }


async def documents_metadata(call: ProviderCall) -> Response:
    _require_documents_enabled(call)
    return call.fhir(documents_metadata_statement(call.sandbox.base_url))


def routes() -> list[Route]:
    return [
        Route(
            f"{ROOT}/metadata", provider_route(Interactions.DOCUMENTS_METADATA, documents_metadata)
        ),
        Route(
            f"{ROOT}/Patient", provider_route(Interactions.DOCUMENTS_PATIENT_SEARCH, find_patient)
        ),
        Route(
            f"{ROOT}/Patient/{{patient_id}}/DocumentReference",
            provider_route(Interactions.DOCUMENTS_SEARCH, search_documents),
        ),
        Route(
            f"{ROOT}/Binary/{{binary_id}}",
            provider_route(Interactions.DOCUMENTS_BINARY, retrieve_binary),
        ),
    ]
