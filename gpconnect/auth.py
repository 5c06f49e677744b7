"""The unsigned JWT and the Spine Secure Proxy headers that every GP Connect request carries.

SPEC §4.1 to §4.3. `GPConnectAuth` is an `httpx.Auth`: httpx runs its `auth_flow` each time
a request is sent, so every request, and every retry of one, gets a new JWT and a new
`Ssp-TraceID`. `trace_id_of` reads the trace ID back for audit and error reports.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any

import httpx

from .config import ConfigurationError, Consumer, ProviderEndpoint, RequestingUser
from .interactions import Interaction

TOKEN_LIFETIME_SECONDS = 300  # `exp` SHALL be `iat` + 5 minutes, exactly (SPEC §4.3)
REASON_FOR_REQUEST = "directcare"
# The base scopes only. A demonstrator-like provider matches these exactly, so no
# "conf/N" suffix is ever sent for direct care (SPEC §4.3).
REQUESTED_SCOPES = frozenset(
    {"patient/*.read", "patient/*.write", "organization/*.read", "organization/*.write"}
)

ODS_ORGANIZATION_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
SDS_USER_ID_SYSTEM = "https://fhir.nhs.uk/Id/sds-user-id"
SDS_ROLE_PROFILE_ID_SYSTEM = "https://fhir.nhs.uk/Id/sds-role-profile-id"

FHIR_JSON = "application/fhir+json;charset=utf-8"  # no space after ";" (SPEC §4.1)
TRACE_ID_HEADER = "Ssp-TraceID"

# The JWT is built here rather than with PyJWT. PyJWT 2.x's `encode(..., algorithm="none")`
# does produce exactly this header today, but the header is what providers check most
# strictly (only `alg` and `typ`, only these values), and PyJWT decides the header's keys,
# their order and its JSON layout itself (it has its own `typ` and `sort_headers` rules,
# and "none" is an algorithm JWT libraries tend to restrict). A constant and base64url
# keep the exact bytes under our control, so no library upgrade can change what we send.
# The tests still decode our tokens with PyJWT as an independent reader.
_HEADER_JSON = b'{"alg":"none","typ":"JWT"}'
_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*")
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_MAX_FHIR_ID_LENGTH = 64  # SPEC §4.1; fhir.resources checks the id's characters, not this


def _b64url(data: bytes) -> str:
    """Base64url without padding: providers reject tokens containing `=`, `+` or `/`."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_ENCODED_HEADER = _b64url(_HEADER_JSON)


def requesting_device(consumer: Consumer) -> dict[str, Any]:
    """The JWT `requesting_device` claim: a minimal STU3 Device for this application."""
    return {
        "resourceType": "Device",
        "identifier": [
            {"system": consumer.device_identifier_system, "value": consumer.device_identifier}
        ],
        "model": consumer.device_model,
        "version": consumer.device_version,
    }


def requesting_organization(consumer: Consumer) -> dict[str, Any]:
    """The JWT `requesting_organization` claim: the user's (originating) organisation."""
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ODS_ORGANIZATION_CODE_SYSTEM, "value": consumer.ods_code}],
        "name": consumer.organisation_name,
    }


def requesting_practitioner(consumer: Consumer, user: RequestingUser) -> dict[str, Any]:
    """The JWT `requesting_practitioner` claim. Its `id` is the JWT `sub`."""
    name: dict[str, Any] = {"family": user.family_name}
    # An empty array is not valid FHIR JSON, so absent given names or prefixes are omitted.
    if user.given_names:
        name["given"] = list(user.given_names)
    if user.prefixes:
        name["prefix"] = list(user.prefixes)
    return {
        "resourceType": "Practitioner",
        "id": user.local_user_id,
        "identifier": [
            {"system": SDS_USER_ID_SYSTEM, "value": user.sds_user_id},
            {"system": SDS_ROLE_PROFILE_ID_SYSTEM, "value": user.sds_role_profile_id},
            {"system": consumer.user_id_system, "value": user.local_user_id},
        ],
        "name": [name],
    }


def build_jwt(
    *,
    consumer: Consumer,
    user: RequestingUser,
    audience: str,
    scope: str,
    issued_at: int,
) -> str:
    """Return the unsigned GP Connect JWT (SPEC §4.3): `header.payload.` with no signature.

    `audience` is the provider's service root for the capability being called and
    `scope` one of the four base `requested_scope` values. This does not validate the
    claim resources: `GPConnectAuth` does that once, when it is created.
    """
    if scope not in REQUESTED_SCOPES:
        raise ValueError(
            f"requested_scope must be one of {sorted(REQUESTED_SCOPES)}, not {scope!r}"
        )
    payload = {
        "iss": consumer.issuer,
        "sub": user.local_user_id,
        "aud": audience,
        "exp": issued_at + TOKEN_LIFETIME_SECONDS,
        "iat": issued_at,
        "reason_for_request": REASON_FOR_REQUEST,
        "requested_scope": scope,
        "requesting_device": requesting_device(consumer),
        "requesting_organization": requesting_organization(consumer),
        "requesting_practitioner": requesting_practitioner(consumer, user),
    }
    # Compact JSON; non-ASCII names are sent as \u escapes, which every JSON parser reads
    # the same way whatever it assumes about the bytes' encoding.
    encoded_payload = _b64url(json.dumps(payload, separators=(",", ":")).encode("ascii"))
    return f"{_ENCODED_HEADER}.{encoded_payload}."


def _require_url(label: str, value: str) -> None:
    if not _HTTP_URL.fullmatch(value):
        raise ConfigurationError(f"{label} must be an absolute http(s) URL, not {value!r}")


def _require_uri(label: str, value: str) -> None:
    # FHIR Identifier.system: any absolute URI (a URL, or e.g. urn:oid:...), no whitespace.
    if not _ABSOLUTE_URI.fullmatch(value):
        raise ConfigurationError(f"{label} must be an absolute URI, not {value!r}")


@functools.lru_cache(maxsize=256)
def validate_claims(consumer: Consumer, user: RequestingUser) -> None:
    """Raise ConfigurationError unless this consumer and user make claims providers accept.

    Providers parse the three claim resources strictly as STU3 FHIR and reject the request
    if they are not (SPEC §4.3), so they are parsed here with fhir.resources. Successful
    results are cached: the arguments are frozen dataclasses, and a client creates a
    `GPConnectAuth` for every request.
    """
    _require_url("Consumer.issuer (the JWT iss)", consumer.issuer)
    _require_uri("Consumer.device_identifier_system", consumer.device_identifier_system)
    _require_uri("Consumer.user_id_system", consumer.user_id_system)
    if len(user.local_user_id) > _MAX_FHIR_ID_LENGTH:
        raise ConfigurationError(
            "RequestingUser.local_user_id is the JWT sub and the requesting_practitioner's "
            f"FHIR id, so it must be at most {_MAX_FHIR_ID_LENGTH} characters"
        )

    # fhir.resources (and pydantic behind it) take a while to import: only do it here.
    from fhir.resources.STU3.device import Device
    from fhir.resources.STU3.organization import Organization
    from fhir.resources.STU3.practitioner import Practitioner
    from pydantic import ValidationError

    claims: tuple[tuple[str, Any, dict[str, Any]], ...] = (
        ("requesting_device", Device, requesting_device(consumer)),
        ("requesting_organization", Organization, requesting_organization(consumer)),
        ("requesting_practitioner", Practitioner, requesting_practitioner(consumer, user)),
    )
    for claim, model, resource in claims:
        try:
            model.model_validate(resource)
        except ValidationError as error:
            # Where and what, without the input values: they include the user's name.
            problems = "; ".join(
                f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"
                for detail in error.errors(include_input=False, include_url=False)
            )
            raise ConfigurationError(
                f"The JWT {claim} claim is not a valid STU3 {resource['resourceType']}: {problems}"
            ) from None
        except ValueError as error:
            raise ConfigurationError(
                f"The JWT {claim} claim is not a valid STU3 {resource['resourceType']}: {error}"
            ) from None


def _new_trace_id() -> str:
    return str(uuid.uuid4())


class GPConnectAuth(httpx.Auth):
    """Adds the JWT and the SSP headers to every request, built afresh each time it is sent.

    It does no I/O. `clock` gives UNIX seconds (the JWT `iat` is its whole part, with no
    skew: providers accept iat = now); `trace_ids` gives each request's `Ssp-TraceID`.
    Creating one validates the consumer's and user's claims (cached), raising
    ConfigurationError if a provider would reject them.
    """

    def __init__(
        self,
        consumer: Consumer,
        user: RequestingUser,
        endpoint: ProviderEndpoint,
        interaction: Interaction,
        *,
        clock: Callable[[], float] = time.time,
        trace_ids: Callable[[], str] = _new_trace_id,
    ) -> None:
        validate_claims(consumer, user)
        self.consumer = consumer
        self.user = user
        self.endpoint = endpoint
        self.interaction = interaction
        self._clock = clock
        self._trace_ids = trace_ids

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = build_jwt(
            consumer=self.consumer,
            user=self.user,
            audience=self.endpoint.service_root,
            scope=self.interaction.scope,
            issued_at=int(self._clock()),
        )
        # The request is changed in place, so `trace_id_of(request)` works after sending.
        headers = request.headers
        headers["Authorization"] = f"Bearer {token}"
        headers[TRACE_ID_HEADER] = self._trace_ids()
        headers["Ssp-From"] = self.consumer.asid
        headers["Ssp-To"] = self.endpoint.asid
        headers["Ssp-InteractionID"] = self.interaction.id
        headers["Accept"] = FHIR_JSON  # replaces httpx's default "*/*"
        if request.method in ("POST", "PUT"):
            headers["Content-Type"] = FHIR_JSON  # replaces e.g. json=...'s application/json
        yield request


def trace_id_of(request_or_response: httpx.Request | httpx.Response) -> str | None:
    """The `Ssp-TraceID` a request was (or a response's request was) sent with, if any."""
    if isinstance(request_or_response, httpx.Response):
        try:
            request = request_or_response.request
        except RuntimeError:  # a Response built by hand has no request
            return None
    else:
        request = request_or_response
    trace_id: str | None = request.headers.get(TRACE_ID_HEADER)  # httpx types .get as Any
    return trace_id
