"""What every provider route shares: the sandbox state, the strict checks, and answering.

A route is written as `async def handler(call: ProviderCall) -> Response` and wrapped by
`provider_route(interaction, handler)`, which:
1. finds the practice from the `{ods}` in the path (unknown → 404 ORGANISATION_NOT_FOUND),
2. applies the practice's and patient's fault injection (latency, 5xx rate, and a
   write's reply held back after the write is made),
3. checks the Spine headers, the JWT (aud = this capability's service root, the
   interaction's scope) and the requested format,
4. runs the handler; a `ProviderFault` raised anywhere becomes the exact OperationOutcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gpconnect.interactions import Capability, Interaction

from .catalogue import (
    DECEASED_ACCESS_DAYS,
    PATIENTS,
    PATIENTS_BY_NHS_NUMBER,
    PRACTICES_BY_ODS,
    Faults,
    Practice,
    SandboxPatient,
)
from .checks import (
    FHIR_JSON,
    FHIR_XML,
    check_content_type,
    check_jwt,
    check_ssp_headers,
    response_format,
)
from .outcomes import ProviderFault
from .records import SandboxRecord

log = logging.getLogger("gpconnect.sandbox")

FHIR_JSON_UTF8 = "application/fhir+json;charset=utf-8"
FHIR_XML_UTF8 = "application/fhir+xml;charset=utf-8"
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class Sandbox:
    """The running sandbox: where it is reachable, what it holds, and its injected faults."""

    base_url: str  # e.g. http://127.0.0.1:8001 (no trailing slash): the service roots' prefix
    data_dir: Path
    record: SandboxRecord
    consumer_asids: frozenset[str] = frozenset()  # empty: the SSP accepts any sender
    faults: dict[str, Faults] = field(default_factory=dict)  # by ODS code or NHS number
    binary_faults: dict[str, str] = field(default_factory=dict)  # by document id
    clock: Callable[[], float] = time.time
    max_document_bytes: int = 5 * 1024 * 1024
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(20261122))
    # Per-feature state that other modules keep on the sandbox (e.g. the appointment book).
    extensions: dict[str, Any] = field(default_factory=dict)

    def today(self) -> date:
        return datetime.fromtimestamp(self.clock(), tz=UTC).date()

    def service_root(self, practice: Practice, capability: Capability) -> str:
        return practice.service_root(self.base_url, capability.value)

    def faults_for(self, *keys: str) -> Faults:
        """Return the faults configured for the first key that has some, else the patient's own.

        Keys are NHS numbers and ODS codes, most specific first.
        """
        for key in keys:
            if key in self.faults:
                return self.faults[key]
        for key in keys:
            patient = PATIENTS_BY_NHS_NUMBER.get(key)
            if patient is not None and patient.faults.any:
                return patient.faults
        return Faults()


@dataclass
class ProviderCall:
    """One checked request to one practice's endpoint."""

    request: Request
    sandbox: Sandbox
    practice: Practice
    interaction: Interaction
    trace_id: str
    claims: dict[str, Any]
    format: str

    @property
    def service_root(self) -> str:
        return self.sandbox.service_root(self.practice, self.interaction.capability)

    def fhir(self, resource: Mapping[str, Any], status: int = 200, **headers: str) -> Response:
        return fhir_response(resource, status, headers, answer_format=self.format)

    def usual_gp_id(self) -> str | None:
        """Return the practice's first practitioner: the usual GP on every patient it shares."""
        for practitioner in self.sandbox.record.practitioners:
            if practitioner.organisation_ods == self.practice.ods:
                return practitioner.id
        return None

    def patient_for_logical_id(self, logical_id: str) -> SandboxPatient:
        """Return the patient this practice shares under that id, or raise PATIENT_NOT_FOUND."""
        for patient in PATIENTS:
            if patient.logical_id == logical_id and self.shares_record_of(patient):
                return patient
        raise ProviderFault("PATIENT_NOT_FOUND", f"No patient with logical id {logical_id}")

    def shares_record_of(self, patient: SandboxPatient) -> bool:
        """Whether this practice holds and may share the patient's GMS record (SPEC §1.2/1.3)."""
        if patient.practice_ods != self.practice.ods or not patient.registered_at_practice:
            return False
        if not patient.active:
            return False
        if patient.restricted:
            return False
        deceased = patient.deceased_on(self.sandbox.today())
        return deceased is None or (self.sandbox.today() - deceased).days <= DECEASED_ACCESS_DAYS


Handler = Callable[[ProviderCall], Awaitable[Response]]


def fhir_response(
    resource: Mapping[str, Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    answer_format: str = FHIR_JSON,
) -> Response:
    """Return the resource as FHIR JSON, or as FHIR XML when the consumer asked for it."""
    if answer_format == FHIR_XML:
        body, media_type = fhir_xml(resource), FHIR_XML_UTF8
    else:
        body = json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode()
        media_type = FHIR_JSON_UTF8
    return Response(
        body, status_code=status, media_type=media_type, headers={**NO_STORE, **(headers or {})}
    )


def fhir_xml(resource: Mapping[str, Any]) -> bytes:
    """Return the resource in FHIR XML, validated against its STU3 structure on the way."""
    from fhir.resources.STU3 import get_fhir_model_class

    model = get_fhir_model_class(str(resource["resourceType"]))
    xml: bytes | str = model.model_validate(dict(resource)).model_dump_xml()
    return xml.encode() if isinstance(xml, str) else xml


def fault_response(fault: ProviderFault, answer_format: str = FHIR_JSON) -> Response:
    return fhir_response(fault.body(), fault.status, answer_format=answer_format)


def provider_route(
    interaction: Interaction, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with the practice lookup, fault injection and strict checks."""

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        practice = PRACTICES_BY_ODS.get(request.path_params["ods"])
        if practice is None:
            return fault_response(
                ProviderFault("ORGANISATION_NOT_FOUND", "No practice at this address")
            )
        answer_format = FHIR_JSON
        try:
            faults = sandbox.faults_for(*await _fault_keys(request, sandbox, practice))
            response = await _inject_faults(sandbox, faults)
            if response is not None:
                return response
            headers = request.headers
            # First, so that even the errors below come in the format the consumer reads.
            answer_format = response_format(headers, request.query_params)
            trace_id = check_ssp_headers(headers, asid=practice.asid, interaction=interaction)
            audience = sandbox.service_root(practice, interaction.capability)
            claims = check_jwt(
                headers.get("Authorization"),
                audience=audience,
                scope=interaction.scope,
                now=sandbox.clock(),
            )
            if interaction.method in ("POST", "PUT"):
                check_content_type(headers)
            call = ProviderCall(
                request=request,
                sandbox=sandbox,
                practice=practice,
                interaction=interaction,
                trace_id=trace_id,
                claims=claims,
                format=answer_format,
            )
            if interaction.method in ("POST", "PUT") and faults.write_commit_delay_seconds:
                # Read the body first: once the consumer has given up, it can no longer be
                # read, and the write must still be made.
                await request.body()
                await asyncio.sleep(faults.write_commit_delay_seconds)
            answer = await handler(call)
            if interaction.method in ("POST", "PUT") and faults.write_reply_delay_seconds:
                # The write is made (the handler has returned): only the reply is late.
                await asyncio.sleep(faults.write_reply_delay_seconds)
            return answer
        except ProviderFault as fault:
            log.info("%s %s -> %s %s", request.method, request.url.path, fault.status, fault)
            return fault_response(fault, answer_format)

    endpoint.__name__ = getattr(handler, "__name__", "provider_endpoint")
    return endpoint


async def _fault_keys(request: Request, sandbox: Sandbox, practice: Practice) -> list[str]:
    """Return what faults may be configured by for this request: the patient first, then the practice."""
    keys: list[str] = []
    identifier = request.query_params.get("identifier", "")
    if "|" in identifier:
        keys.append(identifier.split("|", 1)[1])
    parts = request.url.path.split("/")
    if "Patient" in parts and parts.index("Patient") + 1 < len(parts):
        logical_id = parts[parts.index("Patient") + 1]
        keys.append(logical_id.removeprefix("pat-"))
    binary_id = request.path_params.get("binary_id")
    if binary_id:
        keys.extend(d.patient_nhs for d in sandbox.record.documents if d.id == binary_id)
    if request.method == "POST" and request.url.path.endswith("$gpc.getstructuredrecord"):
        # Starlette keeps the body, so the handler can still read it.
        try:
            body = json.loads(await request.body())
            keys.extend(
                str(p["valueIdentifier"]["value"])
                for p in body.get("parameter", [])
                if p.get("name") == "patientNHSNumber"
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            pass  # the handler answers a malformed body
    keys.append(practice.ods)
    return keys


async def _inject_faults(sandbox: Sandbox, faults: Faults) -> Response | None:
    if faults.latency_seconds:
        await asyncio.sleep(faults.latency_seconds)
    if faults.error_rate:
        with sandbox.lock:
            unlucky = sandbox.rng.random() < faults.error_rate
        if unlucky:
            return Response(
                "<html><body><h1>503 Service Unavailable</h1></body></html>",
                status_code=503,
                media_type="text/html",
                headers=NO_STORE,
            )
    return None


def searchset(call: ProviderCall, resources: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Return a GP Connect searchset Bundle whose id is the request's trace ID."""
    return {
        "resourceType": "Bundle",
        "id": call.trace_id,
        "meta": {
            "lastUpdated": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": [
                "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-Searchset-Bundle-1"
            ],
        },
        "type": "searchset",
        "entry": [
            {"fullUrl": f"{call.service_root}/{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }


async def read_json_body(request: Request) -> Any:
    """Return the request's JSON body, or raise BAD_REQUEST for a malformed one."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProviderFault("BAD_REQUEST", "The request body is not valid JSON") from None
