"""Hand-made GP Connect requests for conformance tests, so each rule can be broken on purpose."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from gpconnect.auth import build_jwt
from gpconnect.config import Consumer, RequestingUser
from gpconnect.interactions import Interaction
from gpconnect.sandbox.catalogue import PRACTICES_BY_ODS

CONSUMER = Consumer(
    asid="200000000359",
    ods_code="RR8",
    organisation_name="Leeds Teaching Hospitals",
    issuer="https://viewer.example.nhs.uk/",
)
USER = RequestingUser(
    local_user_id="user-1",
    family_name="Jones",
    given_names=("Claire",),
    prefixes=("Dr",),
    sds_user_id="111222333444",
    sds_role_profile_id="444555666777",
)


def b64url(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def valid_claims(audience: str, scope: str, *, now: int | None = None) -> dict[str, Any]:
    token = build_jwt(
        consumer=CONSUMER,
        user=USER,
        audience=audience,
        scope=scope,
        issued_at=int(time.time()) if now is None else now,
    )
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_from(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    return f"{b64url(header or {'alg': 'none', 'typ': 'JWT'})}.{b64url(claims)}."


def gp_headers(
    base_url: str,
    ods: str,
    interaction: Interaction,
    *,
    claims: dict[str, Any] | None = None,
    token: str | None = None,
    **overrides: str | None,
) -> dict[str, str]:
    """Return valid headers for the interaction at the practice; overrides replace or (None) drop."""
    practice = PRACTICES_BY_ODS[ods]
    audience = practice.service_root(base_url, interaction.capability.value)
    if token is None:
        token = token_from(
            claims if claims is not None else valid_claims(audience, interaction.scope)
        )
    headers: dict[str, str | None] = {
        "Accept": "application/fhir+json;charset=utf-8",
        "Authorization": f"Bearer {token}",
        "Ssp-TraceID": str(uuid.uuid4()),
        "Ssp-From": CONSUMER.asid,
        "Ssp-To": practice.asid,
        "Ssp-InteractionID": interaction.id,
    }
    if interaction.method in ("POST", "PUT"):
        headers["Content-Type"] = "application/fhir+json;charset=utf-8"
    for name, value in overrides.items():
        headers[name.replace("_", "-")] = value
    return {k: v for k, v in headers.items() if v is not None}


def spine_code(response: Any) -> str | None:
    """Return the Spine code of an OperationOutcome response, or None."""
    try:
        body = response.json()
        return body["issue"][0]["details"]["coding"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
