"""`GPConnectClient`: one user talking to one provider service root.

A client is cheap: it holds no connection of its own. Create one per (user, practice,
capability) and share one pooled `httpx.Client` between them (building an httpx client
costs 30–45 ms because of its SSL context; see PERFORMANCE.md).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any
from urllib.parse import quote

import certifi
import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from . import binary, fhir
from .auth import GPConnectAuth
from .auth import trace_id_of as _header_trace_id
from .config import (
    ClientConfig,
    ConfigurationError,
    ProviderEndpoint,
    RequestingUser,
    RetryPolicy,
    TLSConfig,
)
from .errors import (
    BinaryDecodeError,
    GPConnectError,
    InvalidResponse,
    ProviderUnavailable,
    error_from_response,
)
from .interactions import Capability, Interaction, Interactions
from .models import Capabilities, DocumentSearch, PatientSearch, StructuredDocuments
from .nhs_number import is_valid as nhs_number_is_valid
from .nhs_number import normalise as normalise_nhs_number

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"

# The five parameters the specification makes mandatory on every document search (SPEC §1.3).
DOCUMENT_SEARCH_INCLUDES: tuple[tuple[str, str], ...] = (
    ("_include", "DocumentReference:subject:Patient"),
    ("_include", "DocumentReference:custodian:Organization"),
    ("_include", "DocumentReference:author:Organization"),
    ("_include", "DocumentReference:author:Practitioner"),
    ("_revinclude:recurse", "PractitionerRole:practitioner"),
)

# Retrying on these means the provider never saw the request, or said it was overloaded.
_RETRY_STATUSES = frozenset({502, 503, 504})

# httpx's own 64 KiB network reads: re-chunking them into larger pieces costs a copy per
# chunk and measured 0.57x the raw transfer against 1.1x without (bench/binary_decode.py).
BINARY_READ_SIZE: int | None = None

_ERROR_BODY_LIMIT = 64 * 1024

_METADATA_INTERACTIONS = {
    Capability.DOCUMENTS: Interactions.DOCUMENTS_METADATA,
    Capability.STRUCTURED: Interactions.STRUCTURED_METADATA,
    Capability.APPOINTMENTS: Interactions.FOUNDATIONS_METADATA,
}


def build_http_client(config: ClientConfig) -> httpx.Client:
    """Return a pooled `httpx.Client` with the configuration's timeouts and (mutual) TLS."""
    t = config.timeouts
    return httpx.Client(
        verify=ssl_context(config.tls),
        timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )


def ssl_context(tls: TLSConfig) -> ssl.SSLContext | bool:
    """Return the TLS settings for httpx: a context with our CA and client certificate, if any."""
    if not (tls.ca_bundle or tls.client_cert):
        return tls.verify
    context = ssl.create_default_context(cafile=tls.ca_bundle or certifi.where())
    # The specification requires TLS 1.2 or later on every leg (SPEC §4.4).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def encode_query(params: Sequence[tuple[str, str]]) -> str:
    """Return a query string with every value percent-encoded (RFC 3986), `|` as `%7C`.

    Keys keep their `:` (`_revinclude:recurse`) as the specification writes them.
    """
    return "&".join(f"{quote(key, safe=':')}={quote(value, safe='')}" for key, value in params)


class BinaryDownload:
    """An open Binary retrieval: iterate it for the decoded document bytes.

    `content_type` is what the Binary says, known once the decoder has read that field
    (it may follow the data, so only at the end); prefer the DocumentReference's.
    """

    def __init__(self, response: httpx.Response, trace_id: str) -> None:
        self._response = response
        self._decoder = binary.decode(self._raw_chunks())
        self.trace_id = trace_id
        self.http_status = response.status_code

    @property
    def content_type(self) -> str | None:
        return self._decoder.content_type

    @property
    def bytes_decoded(self) -> int:
        return self._decoder.bytes_decoded

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._decoder
        except BinaryDecodeError as error:
            error.trace_id = self.trace_id
            raise

    def _raw_chunks(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes(BINARY_READ_SIZE)
        except httpx.TransportError as error:
            raise ProviderUnavailable(
                "The GP practice's system stopped sending the document part way through.",
                diagnostics=repr(error),
                trace_id=self.trace_id,
            ) from error


class GPConnectClient:
    """Calls one provider service root on behalf of one user.

    `endpoint` is the service root and ASID for the capability being called (from SDS);
    calling a documents operation on a structured endpoint is the caller's mistake and is
    refused, because providers and the SSP reject a root used for the wrong capability.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        user: RequestingUser,
        endpoint: ProviderEndpoint,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.user = user
        self.endpoint = endpoint
        self._http = http if http is not None else build_http_client(config)
        self._owns_http = http is None
        self._clock = clock
        self._sleep = sleep

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> GPConnectClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Access Document ------------------------------------------------------------------

    def capabilities(self, capability: Capability = Capability.DOCUMENTS) -> Capabilities:
        """Return the provider's CapabilityStatement for `capability` (GET /metadata)."""
        interaction = _METADATA_INTERACTIONS[capability]
        response, trace_id = self._get(interaction, self._url("/metadata"))
        return fhir.parse_capabilities(_json(response, trace_id), trace_id=trace_id)

    def find_patient(self, nhs_number: str) -> PatientSearch:
        """Find the patient at this practice (Access Document variant); no match gives `patient=None`."""
        nhs_number = _checked_nhs_number(nhs_number)
        query = encode_query([("identifier", f"{NHS_NUMBER_SYSTEM}|{nhs_number}")])
        response, trace_id = self._get(
            Interactions.DOCUMENTS_PATIENT_SEARCH, self._url(f"/Patient?{query}")
        )
        return fhir.parse_patient_search(
            _json(response, trace_id), trace_id=trace_id, nhs_number=nhs_number
        )

    def search_documents(
        self,
        patient_id: str,
        created_from: date | None = None,
        created_to: date | None = None,
        author_ods: str | None = None,
        description: str | None = None,
    ) -> DocumentSearch:
        """Return the patient's documents, filtered on the provider by the optional criteria."""
        if not patient_id:
            raise ValueError("patient_id is required")
        if created_from and created_to and created_from > created_to:
            raise ValueError("created_from must not be after created_to")
        params: list[tuple[str, str]] = list(DOCUMENT_SEARCH_INCLUDES)
        if created_from is not None:
            params.append(("created", f"ge{created_from.isoformat()}"))
        if created_to is not None:
            params.append(("created", f"le{created_to.isoformat()}"))
        if author_ods:
            params.append(("author", f"{ODS_CODE_SYSTEM}|{author_ods.strip()}"))
        if description and description.strip():
            params.append(("description", description.strip()))
        path = f"/Patient/{quote(patient_id, safe='')}/DocumentReference?{encode_query(params)}"
        response, trace_id = self._get(Interactions.DOCUMENTS_SEARCH, self._url(path))
        return fhir.parse_document_search(
            _json(response, trace_id), trace_id=trace_id, patient_id=patient_id
        )

    @contextmanager
    def open_binary(self, attachment_url: str) -> Iterator[BinaryDownload]:
        """Open a document for streaming, using the DocumentReference's URL verbatim.

        Failures before the first byte raise as usual (and are retried like any GET);
        failures part way through raise from the iteration, never as a short document.
        """
        if not attachment_url.startswith(("http://", "https://")):
            raise ValueError(f"attachment URL {attachment_url!r} is not absolute")
        url = self._proxied(attachment_url)
        timeout = self._timeout(read=self.config.timeouts.binary_read)
        response, trace_id = self._send_with_retries(
            Interactions.DOCUMENTS_BINARY, "GET", url, timeout=timeout, stream=True
        )
        try:
            yield BinaryDownload(response, trace_id)
        finally:
            response.close()

    # Access Record Structured ---------------------------------------------------------

    def structured_documents(
        self,
        nhs_number: str,
        *,
        consultations: bool = True,
        problems: bool = True,
        consultation_period: tuple[date, date] | None = None,
        most_recent_consultations: int | None = None,
    ) -> StructuredDocuments:
        """Return documents linked from the patient's consultations and/or problems.

        Posts `$gpc.getstructuredrecord`; the bytes still come from the Access Document
        endpoint via each document's URL.
        """
        nhs_number = _checked_nhs_number(nhs_number)
        if not (consultations or problems):
            raise ValueError("ask for consultations, problems or both")
        if consultation_period and most_recent_consultations:
            raise ValueError("a consultation period and a most-recent count are mutually exclusive")
        body = structured_record_parameters(
            nhs_number,
            consultations=consultations,
            problems=problems,
            consultation_period=consultation_period,
            most_recent_consultations=most_recent_consultations,
        )
        url = self._url("/Patient/$gpc.getstructuredrecord")
        response, trace_id = self._send_once(Interactions.STRUCTURED_RECORD, "POST", url, body)
        return fhir.parse_structured_documents(
            _json(response, trace_id), trace_id=trace_id, nhs_number=nhs_number
        )

    # Plumbing -------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._proxied(self.endpoint.service_root + path)

    def _proxied(self, absolute_url: str) -> str:
        # The SSP takes the provider's absolute URL after its own, unaltered (SPEC §4.2).
        proxy = self.config.spine_proxy_url
        return f"{proxy.rstrip('/')}/{absolute_url}" if proxy else absolute_url

    def _auth(self, interaction: Interaction) -> GPConnectAuth:
        return GPConnectAuth(
            self.config.consumer, self.user, self.endpoint, interaction, clock=self._clock
        )

    def _timeout(self, *, read: float | None = None) -> httpx.Timeout:
        t = self.config.timeouts
        return httpx.Timeout(
            connect=t.connect, read=read if read is not None else t.read, write=t.write, pool=t.pool
        )

    def _get(self, interaction: Interaction, url: str) -> tuple[httpx.Response, str]:
        return self._send_with_retries(interaction, "GET", url, timeout=self._timeout())

    def _send_with_retries(
        self,
        interaction: Interaction,
        method: str,
        url: str,
        *,
        timeout: httpx.Timeout,
        stream: bool = False,
    ) -> tuple[httpx.Response, str]:
        """Send a read, retrying transient failures; every try gets a fresh JWT and trace ID."""
        for attempt in read_retrying(self.config.retry, self._sleep):
            with attempt:
                return self._send(interaction, method, url, timeout=timeout, stream=stream)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _send_once(
        self, interaction: Interaction, method: str, url: str, body: Mapping[str, Any]
    ) -> tuple[httpx.Response, str]:
        # Writes are never retried automatically: a retried booking could book twice.
        content = json.dumps(body, separators=(",", ":")).encode()
        return self._send(interaction, method, url, timeout=self._timeout(), content=content)

    def _send(
        self,
        interaction: Interaction,
        method: str,
        url: str,
        *,
        timeout: httpx.Timeout,
        stream: bool = False,
        content: bytes | None = None,
    ) -> tuple[httpx.Response, str]:
        expected = self.endpoint.capability
        if expected is not None and interaction.capability is not expected:
            raise ConfigurationError(
                f"{interaction.id} is a {interaction.capability.value} interaction, but this "
                f"client's endpoint is the {expected.value} service root"
            )
        request = self._http.build_request(method, url, content=content, timeout=timeout)
        try:
            response = self._http.send(request, auth=self._auth(interaction), stream=stream)
        except httpx.TimeoutException as error:
            raise ProviderUnavailable(
                "The GP practice's system did not respond in time. Trying again in a few "
                "minutes may work.",
                diagnostics=repr(error),
                trace_id=trace_id_of(request),
            ) from error
        except httpx.TransportError as error:
            raise ProviderUnavailable(
                diagnostics=repr(error), trace_id=trace_id_of(request)
            ) from error
        trace_id = trace_id_of(request)
        if response.status_code >= 400 or response.status_code in _RETRY_STATUSES:
            body = _bounded_body(response) if stream else response.content[:_ERROR_BODY_LIMIT]
            response.close()
            raise error_from_response(response.status_code, body, trace_id=trace_id)
        if not 200 <= response.status_code < 300:
            response.close()
            raise InvalidResponse(
                diagnostics=f"unexpected HTTP status {response.status_code}",
                http_status=response.status_code,
                trace_id=trace_id,
            )
        return response, trace_id


def read_retrying(policy: RetryPolicy, sleep: Callable[[float], None]) -> Retrying:
    """Return the retry loop for reads: only `ProviderUnavailable`, exponential backoff with jitter."""
    return Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
        ),
        retry=retry_if_exception_type(ProviderUnavailable),
        sleep=sleep,
        reraise=True,
    )


def structured_record_parameters(
    nhs_number: str,
    *,
    consultations: bool,
    problems: bool,
    consultation_period: tuple[date, date] | None = None,
    most_recent_consultations: int | None = None,
) -> dict[str, Any]:
    """Return the `Parameters` body of `$gpc.getstructuredrecord` for consultations/problems."""
    parameters: list[dict[str, Any]] = [
        {
            "name": "patientNHSNumber",
            "valueIdentifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number},
        }
    ]
    if consultations:
        part: list[dict[str, Any]] = []
        if consultation_period:
            start, end = consultation_period
            part.append(
                {
                    "name": "consultationSearchPeriod",
                    "valuePeriod": {"start": start.isoformat(), "end": end.isoformat()},
                }
            )
        elif most_recent_consultations:
            part.append(
                {"name": "includeNumberOfMostRecent", "valuePositiveInt": most_recent_consultations}
            )
        parameters.append({"name": "includeConsultations", **({"part": part} if part else {})})
    if problems:
        # No filterStatus: it is not permitted alongside consultations, and a clinician
        # looking for letters wants inactive problems' documents too.
        parameters.append({"name": "includeProblems"})
    return {"resourceType": "Parameters", "parameter": parameters}


def trace_id_of(request: httpx.Request) -> str:
    # GPConnectAuth sets the header before anything is sent, even when sending then fails.
    return _header_trace_id(request) or ""


def _checked_nhs_number(value: str) -> str:
    number = normalise_nhs_number(value)
    if not nhs_number_is_valid(number):
        raise ValueError(f"{value!r} is not a valid NHS number")
    return number


def _bounded_body(response: httpx.Response) -> bytes:
    """Read at most 64 KiB of a streamed error body: an OperationOutcome is small, a broken proxy's may not be."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass  # the status alone still gives the right error
    return b"".join(chunks)[:_ERROR_BODY_LIMIT]


def _json(response: httpx.Response, trace_id: str) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidResponse(
            diagnostics=f"body is not JSON: {error}",
            http_status=response.status_code,
            trace_id=trace_id,
        ) from error


__all__ = [
    "BINARY_READ_SIZE",
    "DOCUMENT_SEARCH_INCLUDES",
    "BinaryDownload",
    "GPConnectClient",
    "GPConnectError",
    "build_http_client",
    "encode_query",
    "structured_record_parameters",
]
