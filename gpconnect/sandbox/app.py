"""The sandbox as one ASGI app: three federated practices, SDS, PDS and a Spine Secure Proxy."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpconnect.interactions import Interactions

from . import documents, spine_services, structured
from .catalogue import PATIENTS, PRACTICES
from .outcomes import ProviderFault, ProxyFault
from .provider import NO_STORE, Sandbox, fault_response, fhir_response

SSP_PREFIX = "/ssp/"
INTERACTIONS_BY_ID = {interaction.id: interaction for interaction in Interactions.all()}


def scenarios_catalogue(sandbox: Sandbox) -> dict[str, Any]:
    """Return the practices and patients a demo or a test can use."""
    return {
        "practices": [
            {
                "ods": p.ods,
                "name": p.name,
                "asid": p.asid,
                "federated": p.federated,
                "documents_enabled": p.documents_enabled,
                "service_roots": {
                    capability: p.service_root(sandbox.base_url, capability)
                    for capability in ("documents", "structured", "appointments")
                },
            }
            for p in PRACTICES
        ],
        "patients": [
            {
                "nhs_number": p.nhs_number,
                "practice_ods": p.practice_ods,
                "scenario": p.scenario,
                "name": f"{p.prefix} {' '.join(p.given)} {p.family}",
                "description": p.description,
                "documents": sum(
                    1 for d in sandbox.record.documents if d.patient_nhs == p.nhs_number
                ),
            }
            for p in PATIENTS
        ],
        "spine": {
            "sds": f"{sandbox.base_url}{spine_services.SDS_ROOT}",
            "pds": f"{sandbox.base_url}{spine_services.PDS_ROOT}",
            "ssp": f"{sandbox.base_url}/ssp",
        },
    }


async def scenarios(request: Request) -> Response:
    catalogue = scenarios_catalogue(request.app.state.sandbox)
    if (
        "text/html" not in request.headers.get("Accept", "")
        or request.query_params.get("format") == "json"
    ):
        return JSONResponse(catalogue, headers=NO_STORE)
    return HTMLResponse(_scenarios_page(catalogue), headers=NO_STORE)


def _scenarios_page(catalogue: dict[str, Any]) -> str:
    e = html.escape
    practice_rows = "".join(
        f"<tr><td>{e(p['ods'])}</td><td>{e(p['name'])}</td><td>{e(p['asid'])}</td>"
        f"<td>{'yes' if p['documents_enabled'] else 'no (ACCESS DENIED)'}</td>"
        f"<td><code>{e(p['service_roots']['documents'])}</code></td></tr>"
        for p in catalogue["practices"]
    )
    patient_rows = "".join(
        f"<tr><td><code>{e(p['nhs_number'][:3])} {e(p['nhs_number'][3:6])} {e(p['nhs_number'][6:])}</code></td>"
        f"<td>{e(p['scenario'])}</td><td>{e(p['name'])}</td><td>{e(p['practice_ods'])}</td>"
        f"<td>{p['documents']}</td><td>{e(p['description'])}</td></tr>"
        for p in catalogue["patients"]
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>GP Connect sandbox: scenarios</title>
<style>body{{font-family:Arial,sans-serif;margin:2rem;color:#212b32}}table{{border-collapse:collapse;margin-bottom:2rem}}
th,td{{border-bottom:1px solid #d8dde0;padding:.4rem .8rem;text-align:left;vertical-align:top}}th{{background:#f0f4f5}}</style>
</head><body><h1>GP Connect sandbox</h1>
<p>Synthetic data only. Every NHS number below is in the 999 test range.</p>
<h2>Practices</h2><table><thead><tr><th>ODS</th><th>Name</th><th>ASID</th><th>Access Document</th><th>Documents service root</th></tr></thead>
<tbody>{practice_rows}</tbody></table>
<h2>Patients</h2><table><thead><tr><th>NHS number</th><th>Scenario</th><th>Name</th><th>Practice</th><th>Documents</th><th>What it shows</th></tr></thead>
<tbody>{patient_rows}</tbody></table>
<p>The same as JSON: <a href="/scenarios?format=json">/scenarios?format=json</a></p></body></html>"""


class SpineSecureProxy:
    """`/ssp/{absolute provider URL}`: the SSP's own checks, then the provider route (SPEC §4.2)."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(SSP_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            path = self._checked_target(scope)
        except ProxyFault as fault:
            response = fhir_response(fault.body(), fault.status)
            await response(scope, receive, send)
            return
        await self.app({**scope, "path": path, "raw_path": path.encode()}, receive, send)

    def _checked_target(self, scope: Scope) -> str:
        target = str(scope["path"])[len(SSP_PREFIX) :]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        sender, receiver = headers.get("ssp-from", ""), headers.get("ssp-to", "")
        interaction = INTERACTIONS_BY_ID.get(headers.get("ssp-interactionid", ""))
        if interaction is None or (
            self.sandbox.consumer_asids and sender not in self.sandbox.consumer_asids
        ):
            raise ProxyFault(403, f"ASID_CHECK_FAILED_MESSAGESENDER_{sender}", "forbidden")
        practice = next((p for p in PRACTICES if p.asid == receiver), None)
        if practice is None:
            raise ProxyFault(
                403, f"PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_{receiver}", "forbidden"
            )
        if scope["method"] != interaction.method:
            raise ProxyFault(405, "405: Method Not Allowed", "forbidden")
        # The target must start with the endpoint SDS publishes for this practice and interaction.
        endpoint = self.sandbox.service_root(practice, interaction.capability)
        if not (target == endpoint or target.startswith(endpoint + "/")):
            raise ProxyFault(400, f"ENDPOINT_{endpoint}_VARIES_FROM_TARGETURL_{target}")
        parts = urlsplit(target)
        if f"{parts.scheme}://{parts.netloc}" != self.sandbox.base_url:
            raise ProxyFault(502, f"ERROR_COMMUNICATING_TO_ENDPOINT_URL_{target}", "transient")
        return parts.path


class NoStore:
    """`Cache-Control: no-store` on every response, errors included (the test pack checks it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, send_with_header)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        return fault_response(
            ProviderFault("BAD_REQUEST", f"{request.method} is not allowed here", status=405)
        )
    return fault_response(
        ProviderFault("BAD_REQUEST", f"No endpoint at {request.url.path}", status=404)
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    return fault_response(ProviderFault("INTERNAL_SERVER_ERROR", "The sandbox failed: see its log"))


def create_app(sandbox: Sandbox) -> ASGIApp:
    """Return the ASGI app serving the whole sandbox."""
    from .appointments import routes as appointment_routes

    app = Starlette(
        routes=[
            Route("/scenarios", scenarios),
            *documents.routes(),
            *structured.routes(),
            *appointment_routes(),
            *spine_services.routes(),
        ],
        exception_handlers={404: _not_found, 405: _not_found, 500: _server_error},
    )
    app.state.sandbox = sandbox
    return NoStore(SpineSecureProxy(app, sandbox))
