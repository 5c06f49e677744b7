"""What a strict provider checks on every request before it looks at the question.

Written from the specification and the provider test pack (SPEC §4.1–4.3, PEERS §9),
independently of `gpconnect.auth`, so the client is tested against the rules and not
against itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from typing import Any

from gpconnect.interactions import Interaction

from .outcomes import ProviderFault

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
TOKEN_LIFETIME = 300
REQUIRED_CLAIMS = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "reason_for_request",
    "requested_scope",
    "requesting_device",
    "requesting_organization",
    "requesting_practitioner",
)
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_PREFIXED_DATE = re.compile(
    r"^(?P<prefix>ge|le)(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?P<time>T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?$"
)
_SCOPE = re.compile(r"^(?P<base>\S+)(?: conf/[NR])?$")
SSP_HEADERS = ("Ssp-TraceID", "Ssp-From", "Ssp-To", "Ssp-InteractionID")


def check_ssp_headers(headers: Mapping[str, str], *, asid: str, interaction: Interaction) -> str:
    """Return the trace ID; raise BAD_REQUEST unless the four Spine headers are present and right."""
    for name in SSP_HEADERS:
        if not headers.get(name, "").strip():
            raise ProviderFault("BAD_REQUEST", f"Missing or empty {name} header")
    trace_id = headers["Ssp-TraceID"].strip()
    try:
        uuid.UUID(trace_id)
    except ValueError:
        raise ProviderFault("BAD_REQUEST", "Ssp-TraceID must be a GUID") from None
    if headers["Ssp-To"].strip() != asid:
        raise ProviderFault(
            "BAD_REQUEST", f"Ssp-To {headers['Ssp-To']!r} is not this endpoint's ASID"
        )
    if headers["Ssp-InteractionID"].strip() != interaction.id:
        raise ProviderFault("BAD_REQUEST", "InteractionID header does not match request")
    return trace_id


def response_format(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """Return the FHIR format to answer in; `_format` wins over `Accept` (SPEC §4.1)."""
    requested = query.get("_format") or headers.get("Accept", "")
    if not requested.strip() or "*/*" in requested:
        return FHIR_JSON
    for media_type in (part.split(";")[0].strip().lower() for part in requested.split(",")):
        if media_type in (FHIR_JSON, "json", "application/json"):
            return FHIR_JSON
        if media_type in (FHIR_XML, "xml", "application/xml"):
            return FHIR_XML
    raise ProviderFault("BAD_REQUEST", f"Unsupported format {requested!r}", status=415)


def check_content_type(headers: Mapping[str, str]) -> None:
    """Raise 415 unless a write says it carries FHIR JSON."""
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type not in (FHIR_JSON, "application/json"):
        raise ProviderFault(
            "BAD_REQUEST",
            f"Content-Type must be {FHIR_JSON}, not {content_type or 'missing'}",
            status=415,
        )


def check_jwt(
    authorization: str | None, *, audience: str, scope: str, now: float
) -> dict[str, Any]:
    """Return the JWT claims; raise as the provider test pack expects when they are wrong."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ProviderFault("BAD_REQUEST", "Missing bearer token")
    parts = authorization[len("Bearer ") :].strip().split(".")
    if len(parts) != 3 or parts[2] != "":
        raise ProviderFault(
            "BAD_REQUEST", "JWT must be unsigned: header.payload. (ending with '.')"
        )
    header = _decode_part(parts[0], "header")
    if header != {"alg": "none", "typ": "JWT"}:
        raise ProviderFault("BAD_REQUEST", 'JWT header must be exactly {"alg":"none","typ":"JWT"}')
    claims: dict[str, Any] = _decode_part(parts[1], "payload")

    for claim in REQUIRED_CLAIMS:
        if claims.get(claim) in (None, "", [], {}):
            raise ProviderFault("BAD_REQUEST", f"JWT {claim} claim is missing")
    if "requested_record" in claims:
        raise ProviderFault("BAD_REQUEST", "JWT requested_record claim is not allowed")
    iat, exp = claims["iat"], claims["exp"]
    if not (isinstance(iat, int) and isinstance(exp, int)) or isinstance(iat, bool):
        raise ProviderFault("BAD_REQUEST", "JWT iat and exp must be integer seconds")
    if exp - iat != TOKEN_LIFETIME:
        raise ProviderFault("BAD_REQUEST", "JWT exp must be exactly 300 seconds after iat")
    if exp < now:
        raise ProviderFault("BAD_REQUEST", "JWT has expired")
    # A future iat is tolerated: the provider test pack expects 200 for iat = now + 200.
    if claims["aud"] != audience:
        raise ProviderFault("BAD_REQUEST", f"JWT aud must be this service root, {audience}")
    if claims["reason_for_request"] != "directcare":
        raise ProviderFault("BAD_REQUEST", "JWT reason_for_request must be directcare")
    match = _SCOPE.match(str(claims["requested_scope"]))
    if not match or match["base"] != scope:
        raise ProviderFault("BAD_REQUEST", f"JWT requested_scope must be {scope}")

    _check_resource(claims["requesting_device"], "Device")
    _check_resource(claims["requesting_organization"], "Organization")
    practitioner = claims["requesting_practitioner"]
    _check_resource(practitioner, "Practitioner")
    if claims["sub"] != practitioner.get("id"):
        raise ProviderFault("BAD_REQUEST", "JWT sub must equal requesting_practitioner.id")
    systems = {i.get("system") for i in practitioner.get("identifier", []) if isinstance(i, dict)}
    if "https://fhir.nhs.uk/Id/sds-user-id" not in systems:
        raise ProviderFault("BAD_REQUEST", "requesting_practitioner has no SDS user id")
    organisation_systems = {
        i.get("system")
        for i in claims["requesting_organization"].get("identifier", [])
        if isinstance(i, dict)
    }
    if "https://fhir.nhs.uk/Id/ods-organization-code" not in organisation_systems:
        raise ProviderFault("BAD_REQUEST", "requesting_organization has no ODS code")
    return claims


def date_bounds(parameter: str, values: Iterable[str], *, allow_time: bool) -> dict[str, date]:
    """Return {"ge": date, "le": date} (either may be absent) from `geYYYY-MM-DD`/`leYYYY-MM-DD`.

    Raise INVALID_PARAMETER for another prefix, a partial date, a time where only a date is
    allowed, or a prefix given twice.
    """
    bounds: dict[str, date] = {}
    for value in values:
        match = _PREFIXED_DATE.match(value)
        if match is None or (match["time"] and not allow_time):
            shape = "yyyy-mm-dd" + ("[Thh:mm:ss+hh:mm]" if allow_time else " only")
            raise ProviderFault(
                "INVALID_PARAMETER", f"{parameter}={value}: use ge or le and a date ({shape})"
            )
        if match["prefix"] in bounds:
            raise ProviderFault(
                "INVALID_PARAMETER", f"{parameter}={match['prefix']}… is sent twice"
            )
        try:
            bounds[match["prefix"]] = date.fromisoformat(match["date"])
        except ValueError:
            raise ProviderFault(
                "INVALID_PARAMETER", f"{parameter}={value} is not a real date"
            ) from None
    return bounds


def _decode_part(part: str, name: str) -> Any:
    # Base64url without padding only: providers like the NHS demonstrator reject '=', '+', '/'.
    if not _BASE64URL.match(part):
        raise ProviderFault("BAD_REQUEST", f"JWT {name} is not unpadded base64url")
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        raise ProviderFault("BAD_REQUEST", f"JWT {name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProviderFault("BAD_REQUEST", f"JWT {name} must be a JSON object")
    return value


def _check_resource(resource: Any, resource_type: str) -> None:
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise ProviderFault("BAD_REQUEST", f"JWT claim must be a {resource_type} resource")
    problem = _stu3_problem(json.dumps(resource, sort_keys=True))
    if problem:
        raise ProviderFault("INVALID_RESOURCE", f"JWT {resource_type} is not valid STU3: {problem}")


@lru_cache(maxsize=512)
def _stu3_problem(resource_json: str) -> str | None:
    """Return why a claim resource is not valid FHIR STU3, or None (parsed with fhir.resources)."""
    from fhir.resources.STU3 import get_fhir_model_class
    from pydantic import ValidationError

    resource = json.loads(resource_json)
    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except ValidationError as error:
        return str(error.errors()[0].get("msg", "invalid"))
    return None
