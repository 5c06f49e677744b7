"""Spine lookups a consumer needs before calling a practice: PDS (who and where) and SDS (how).

Both are NHS API Platform FHIR R4 APIs, called directly (not through the Spine Secure
Proxy). SDS answers are cached per user session only, as the specification requires
(SPEC §4.6): the caller owns an `SdsCache` and drops it when the session ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import httpx

from . import fhir
from .client import read_retrying
from .config import ConfigurationError, ProviderEndpoint, RetryPolicy
from .errors import (
    EndpointNotFound,
    GPConnectError,
    InvalidResponse,
    NotFound,
    PatientNotFound,
    ProviderUnavailable,
    error_from_response,
)
from .interactions import Interaction
from .models import Patient, SdsEndpoint
from .nhs_number import is_valid as nhs_number_is_valid
from .nhs_number import normalise as normalise_nhs_number

ODS_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION_ID_SYSTEM = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"
PARTY_KEY_SYSTEM = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"


class SdsCache:
    """SDS answers for one user session, keyed by (ODS code, interaction ID).

    It round-trips through plain dicts (`to_dict`/`from_dict`) so a web framework can keep
    it in the user's session and forget it with the session.
    """

    def __init__(self, entries: dict[str, SdsEndpoint] | None = None) -> None:
        self._entries = dict(entries or {})

    @staticmethod
    def _key(ods_code: str, interaction_id: str) -> str:
        return f"{ods_code.upper()} {interaction_id}"

    def get(self, ods_code: str, interaction_id: str) -> SdsEndpoint | None:
        return self._entries.get(self._key(ods_code, interaction_id))

    def put(self, entry: SdsEndpoint) -> None:
        self._entries[self._key(entry.ods_code, entry.interaction_id)] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {key: asdict(entry) for key, entry in self._entries.items()}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> SdsCache:
        return cls({key: SdsEndpoint(**value) for key, value in data.items()})


class _ApiPlatformClient:
    """What SDS and PDS share: base URL, API key header, correlation IDs, retries on reads."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.Client,
        api_key: str | None = None,
        access_token: str | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{base_url!r} must be an absolute http(s) URL")
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._api_key = api_key
        self._access_token = access_token
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def _get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> tuple[Any, str]:
        for attempt in read_retrying(self._retry, self._sleep):
            with attempt:
                return self._get_once(path, params)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _get_once(self, path: str, params: Sequence[tuple[str, str]]) -> tuple[Any, str]:
        request_id = str(uuid.uuid4())
        headers = {
            "Accept": "application/fhir+json",
            "X-Request-ID": request_id,
            "X-Correlation-ID": request_id,
        }
        if self._api_key:
            headers["apikey"] = self._api_key
        if self._access_token:
            headers["Authorization"] = f"Bearer {self._access_token}"
        try:
            response = self._http.get(self.base_url + path, params=list(params), headers=headers)
        except httpx.TransportError as error:
            raise ProviderUnavailable(
                "The NHS Spine service did not respond. Trying again in a few minutes may work.",
                diagnostics=repr(error),
                trace_id=request_id,
            ) from error
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, trace_id=request_id)
        try:
            return response.json(), request_id
        except ValueError as error:
            raise InvalidResponse(
                diagnostics=f"body is not JSON: {error}", trace_id=request_id
            ) from error


class SpineDirectory(_ApiPlatformClient):
    """The Spine Directory Service FHIR API: which service root and ASID answer an interaction."""

    def __init__(
        self, base_url: str, *, http: httpx.Client, cache: SdsCache | None = None, **kwargs: Any
    ) -> None:
        super().__init__(base_url, http=http, **kwargs)
        self.cache = cache if cache is not None else SdsCache()

    def lookup(self, ods_code: str, interaction: Interaction | str) -> SdsEndpoint:
        """Return the practice's service root, party key and ASID for the interaction."""
        ods_code = ods_code.strip().upper()
        interaction_id = interaction if isinstance(interaction, str) else interaction.id
        cached = self.cache.get(ods_code, interaction_id)
        if cached is not None:
            return cached
        organisation = ("organization", f"{ODS_CODE_SYSTEM}|{ods_code}")
        interaction_param = ("identifier", f"{INTERACTION_ID_SYSTEM}|{interaction_id}")
        bundle, request_id = self._get("/Endpoint", [organisation, interaction_param])
        endpoints = fhir.parse_sds_endpoints(bundle, trace_id=request_id)
        if not endpoints:
            raise EndpointNotFound(
                diagnostics=f"no SDS Endpoint for {ods_code} and {interaction_id}",
                trace_id=request_id,
            )
        service_root, party_key = endpoints[0]
        device_params = [organisation, interaction_param]
        if party_key:
            device_params.append(("identifier", f"{PARTY_KEY_SYSTEM}|{party_key}"))
        devices, request_id = self._get("/Device", device_params)
        asids = fhir.parse_sds_asids(devices, party_key=party_key, trace_id=request_id)
        if not asids:
            raise EndpointNotFound(
                diagnostics=f"no SDS Device (ASID) for {ods_code} and {interaction_id}",
                trace_id=request_id,
            )
        entry = SdsEndpoint(
            ods_code=ods_code,
            interaction_id=interaction_id,
            # SSP compares the URL prefix exactly, and the spec forbids a trailing slash.
            service_root=service_root.rstrip("/"),
            party_key=party_key,
            asid=asids[0],
        )
        self.cache.put(entry)
        return entry

    def provider_endpoint(self, ods_code: str, interaction: Interaction) -> ProviderEndpoint:
        """Return the `ProviderEndpoint` a `GPConnectClient` needs for this interaction."""
        entry = self.lookup(ods_code, interaction)
        return ProviderEndpoint(
            service_root=entry.service_root,
            asid=entry.asid,
            ods_code=entry.ods_code,
            capability=interaction.capability,
        )


class PersonalDemographics(_ApiPlatformClient):
    """The Personal Demographics Service FHIR API: trace a patient by NHS number."""

    def trace(self, nhs_number: str) -> tuple[Patient, str]:
        """Return the PDS record (with the registered practice and restricted flag) and the request ID."""
        number = normalise_nhs_number(nhs_number)
        if not nhs_number_is_valid(number):
            raise ValueError(f"{nhs_number!r} is not a valid NHS number")
        try:
            resource, request_id = self._get(f"/Patient/{number}")
        except NotFound as error:
            raise PatientNotFound(
                "No patient with this NHS number was found on the Personal Demographics "
                "Service (PDS). Check the number.",
                spine_code=error.spine_code,
                http_status=error.http_status,
                diagnostics=error.diagnostics,
                trace_id=error.trace_id,
            ) from error
        except GPConnectError as error:
            if error.http_status == 400:
                raise PatientNotFound(
                    "The Personal Demographics Service (PDS) did not accept this NHS number.",
                    spine_code=error.spine_code,
                    http_status=error.http_status,
                    diagnostics=error.diagnostics,
                    trace_id=error.trace_id,
                ) from error
            raise
        return fhir.parse_pds_patient(resource, trace_id=request_id), request_id
