"""`GPConnectClient`: one user talking to one provider service root.

A client is cheap: it holds no connection of its own. Create one per (user, practice,
capability) and share one pooled `httpx.Client` between them (building an httpx client
costs 30–45 ms because of its SSL context; see PERFORMANCE.md).

For Foundations and Appointment Management, `GPConnectClient.for_practice` looks the
practice up in SDS for each interaction it calls (SPEC §3.6): that interaction's ASID is
the `Ssp-To` and its service root the JWT `aud` and the start of the URL.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from typing import Any, Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

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
    Consumer,
    ProviderEndpoint,
    RequestingUser,
    RetryPolicy,
    TLSConfig,
)
from .errors import (
    BinaryDecodeError,
    DuplicateRejected,
    GPConnectError,
    InvalidResponse,
    ProviderUnavailable,
    error_from_response,
)
from .interactions import Capability, Interaction, Interactions
from .models import (
    Appointment,
    Capabilities,
    ContactPoint,
    DocumentSearch,
    FreeSlots,
    Location,
    Patient,
    PatientAppointments,
    PatientRecord,
    PatientSearch,
    Slot,
    StructuredDocuments,
    bookable_together,
)
from .nhs_number import is_valid as nhs_number_is_valid
from .nhs_number import normalise as normalise_nhs_number

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
ORGANISATION_TYPE_SYSTEM = fhir.ORGANISATION_TYPE_SYSTEM
_PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/"
PATIENT_PROFILE = _PROFILE + "CareConnect-GPC-Patient-1"
ORGANISATION_PROFILE = _PROFILE + "CareConnect-GPC-Organization-1"
APPOINTMENT_PROFILE = _PROFILE + "GPConnect-Appointment-1"
BOOKING_ORGANISATION_EXTENSION = _PROFILE + "Extension-GPConnect-BookingOrganisation-1"
CANCELLATION_REASON_EXTENSION = _PROFILE + "Extension-GPConnect-AppointmentCancellationReason-1"

# SPEC §3.3-§3.5: limits the consumer enforces before sending anything.
MAX_SLOT_SEARCH = timedelta(days=14)
MAX_DESCRIPTION = 100
MAX_COMMENT = 500
UK_TIME = ZoneInfo("Europe/London")

# Free slots with who, where and which practice (SPEC §3.3); the first is mandatory.
SLOT_SEARCH_INCLUDES: tuple[tuple[str, str], ...] = (
    ("_include", "Slot:schedule"),
    ("_include:recurse", "Schedule:actor:Practitioner"),
    ("_include:recurse", "Schedule:actor:Location"),
    ("_include:recurse", "Location:managingOrganization"),
)

# Servers default to it, but a booking answered without the Appointment would leave us
# not knowing what was booked.
_RETURN_REPRESENTATION = {"Prefer": "return=representation"}

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
_PATIENT_SEARCH_INTERACTIONS = {
    Capability.DOCUMENTS: Interactions.DOCUMENTS_PATIENT_SEARCH,
    Capability.APPOINTMENTS: Interactions.PATIENT_SEARCH,
}

EndpointResolver = Callable[[Interaction], ProviderEndpoint]


class EndpointDirectory(Protocol):
    """What `GPConnectClient.for_practice` needs from SDS (`spine.SpineDirectory` is one)."""

    def provider_endpoint(self, ods_code: str, interaction: Interaction) -> ProviderEndpoint: ...


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
    """Calls one provider on behalf of one user.

    Give it either `endpoint`, the service root and ASID for the capability being called
    (from SDS), or `resolve_endpoint`, which returns them for each interaction called (see
    `for_practice`). Calling a documents operation on a structured endpoint is the
    caller's mistake and is refused, because providers and the SSP reject a root used for
    the wrong capability. `clock` gives UNIX seconds: the JWT `iat`, a booking's `created`
    and "today" for appointment searches.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        user: RequestingUser,
        endpoint: ProviderEndpoint | None = None,
        resolve_endpoint: EndpointResolver | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (endpoint is None) == (resolve_endpoint is None):
            raise ConfigurationError("Give GPConnectClient an endpoint or resolve_endpoint (one)")
        self.config = config
        self.user = user
        self.endpoint = endpoint
        self._resolve_endpoint = resolve_endpoint
        self._http = http if http is not None else build_http_client(config)
        self._owns_http = http is None
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def for_practice(
        cls,
        config: ClientConfig,
        *,
        user: RequestingUser,
        ods_code: str,
        directory: EndpointDirectory,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> GPConnectClient:
        """Return a client for one practice that finds each interaction's endpoint in SDS.

        SDS is asked when an interaction is first called (its cache, owned by the caller,
        answers after that), so a practice that does not offer an interaction raises
        `EndpointNotFound` from the call that needs it.
        """

        def resolve(interaction: Interaction) -> ProviderEndpoint:
            return directory.provider_endpoint(ods_code, interaction)

        return cls(config, user=user, resolve_endpoint=resolve, http=http, clock=clock, sleep=sleep)

    def endpoint_for(self, interaction: Interaction) -> ProviderEndpoint:
        """Return the service root and ASID that answer `interaction` for this client."""
        if self._resolve_endpoint is not None:
            endpoint = self._resolve_endpoint(interaction)
        else:
            assert self.endpoint is not None  # checked in __init__
            endpoint = self.endpoint
        expected = endpoint.capability
        if expected is not None and interaction.capability is not expected:
            raise ConfigurationError(
                f"{interaction.id} is a {interaction.capability.value} interaction, but this "
                f"client's endpoint is the {expected.value} service root"
            )
        return endpoint

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
        response, trace_id = self._get(interaction, "/metadata")
        return fhir.parse_capabilities(_json(response, trace_id), trace_id=trace_id)

    def find_patient(
        self, nhs_number: str, *, capability: Capability = Capability.DOCUMENTS
    ) -> PatientSearch:
        """Find the patient at this practice; no match gives `patient=None`.

        The Access Document variant by default; `Capability.APPOINTMENTS` uses Foundations'
        own interaction, which finds any active registration, temporary ones included.
        """
        interaction = _PATIENT_SEARCH_INTERACTIONS.get(capability)
        if interaction is None:
            raise ValueError(f"there is no find-a-patient interaction for {capability.value}")
        nhs_number = _checked_nhs_number(nhs_number)
        query = encode_query([("identifier", f"{NHS_NUMBER_SYSTEM}|{nhs_number}")])
        response, trace_id = self._get(interaction, f"/Patient?{query}")
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
        response, trace_id = self._get(Interactions.DOCUMENTS_SEARCH, path)
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
        timeout = self._timeout(read=self.config.timeouts.binary_read)
        response, trace_id = self._send_with_retries(
            Interactions.DOCUMENTS_BINARY, "GET", attachment_url, timeout=timeout, stream=True
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
        response, trace_id = self._send_once(
            Interactions.STRUCTURED_RECORD, "POST", "/Patient/$gpc.getstructuredrecord", body
        )
        return fhir.parse_structured_documents(
            _json(response, trace_id), trace_id=trace_id, nhs_number=nhs_number
        )

    # Foundations ----------------------------------------------------------------------

    def read_patient(self, patient_id: str) -> PatientRecord:
        """Return the patient with this logical id at this practice (Foundations read)."""
        if not patient_id:
            raise ValueError("patient_id is required")
        path = f"/Patient/{quote(patient_id, safe='')}"
        response, trace_id = self._get(Interactions.PATIENT_READ, path)
        return fhir.parse_patient_record(
            _json(response, trace_id), trace_id=trace_id, patient_id=patient_id
        )

    def register_patient(
        self, demographics: Patient, *, telecom: Sequence[ContactPoint] | None = None
    ) -> PatientRecord:
        """Register the patient temporarily at this practice, from their PDS demographics.

        Only the fields the specification allows are sent (SPEC §3.2): NHS number, official
        name, birth date, gender, home address and at most one phone number of each use and
        one email, from `telecom` if given, else from the demographics. The practice checks
        them against PDS itself. Never retried automatically. An existing registration
        raises `DuplicateRejected`.
        """
        body = register_patient_parameters(demographics, telecom=telecom)
        try:
            response, trace_id = self._send_once(
                Interactions.PATIENT_REGISTER, "POST", "/Patient/$gpc.registerpatient", body
            )
        except DuplicateRejected as error:
            # The class's own message is about slots; say what a duplicate means here.
            raise DuplicateRejected(
                "The patient is already registered at this practice, so they were not "
                "registered again: find them there instead.",
                spine_code=error.spine_code,
                display=error.display,
                diagnostics=error.diagnostics,
                http_status=error.http_status,
                trace_id=error.trace_id,
            ) from error
        return fhir.parse_registered_patient(
            _json(response, trace_id),
            trace_id=trace_id,
            nhs_number=normalise_nhs_number(demographics.nhs_number),
        )

    def read_location(self, location_id: str) -> Location:
        """Return a Location of this practice: where an appointment happens."""
        if not location_id:
            raise ValueError("location_id is required")
        path = f"/Location/{quote(location_id, safe='')}"
        response, trace_id = self._get(Interactions.LOCATION_READ, path)
        return fhir.parse_location(_json(response, trace_id), trace_id=trace_id)

    # Appointment Management -----------------------------------------------------------

    def search_free_slots(self, start: date | datetime, end: date | datetime) -> FreeSlots:
        """Return this practice's free slots from `start` to `end`, at most 14 days apart.

        A date covers the whole of that day; a datetime must be timezone-aware and is sent
        in UK local time. The search carries our ODS code and organisation type, so it
        finds the slots kept for organisations like ours (SPEC §3.3). A larger window is
        refused with ValueError before anything is sent: search week by week instead.
        """
        params = free_slot_search_params(start, end, consumer=self.config.consumer)
        response, trace_id = self._get(Interactions.SLOT_SEARCH, f"/Slot?{encode_query(params)}")
        return fhir.parse_free_slots(
            _json(response, trace_id),
            trace_id=trace_id,
            practice_ods=self.endpoint_for(Interactions.SLOT_SEARCH).ods_code,
        )

    def book_appointment(
        self,
        *,
        patient_id: str,
        slots: Sequence[Slot],
        description: str,
        comment: str | None = None,
    ) -> Appointment:
        """Book the slots (one, or several adjacent ones) for the patient at this practice.

        `patient_id` is the patient's logical id *at this practice* (find or register them
        here first). We are named as the booking organisation. This is **never retried**:
        after a timeout or a 5xx the booking may or may not have been made, so the caller
        must look at the patient's appointments before trying again. A slot taken in the
        meantime raises `DuplicateRejected`.
        """
        body = appointment_booking(
            consumer=self.config.consumer,
            patient_id=patient_id,
            slots=slots,
            description=description,
            comment=comment,
            created=datetime.fromtimestamp(self._clock(), tz=UK_TIME),
        )
        response, trace_id = self._send_once(
            Interactions.APPOINTMENT_CREATE,
            "POST",
            "/Appointment",
            body,
            headers=_RETURN_REPRESENTATION,
        )
        return self._appointment_answer(response, trace_id)

    def read_appointment(self, appointment_id: str) -> Appointment:
        """Return a future appointment, with the version to amend or cancel it by."""
        resource, etag, trace_id = self._appointment_resource(appointment_id)
        return fhir.parse_appointment(resource, trace_id=trace_id, etag=etag)

    def search_appointments(self, patient_id: str, start: date, end: date) -> PatientAppointments:
        """Return the patient's appointments at this practice starting on `start` to `end`.

        Dates only, and not in the past (today is fine). Cancelled appointments are
        included.
        """
        if not patient_id:
            raise ValueError("patient_id is required")
        if isinstance(start, datetime) or isinstance(end, datetime):
            raise ValueError("search appointments by date, without a time")
        if end < start:
            raise ValueError("the end date must not be before the start date")
        today = datetime.fromtimestamp(self._clock(), tz=UK_TIME).date()
        if start < today:
            raise ValueError("a practice only lists appointments from today onwards")
        params = [("start", f"ge{start.isoformat()}"), ("start", f"le{end.isoformat()}")]
        path = f"/Patient/{quote(patient_id, safe='')}/Appointment?{encode_query(params)}"
        response, trace_id = self._get(Interactions.PATIENT_APPOINTMENTS, path)
        return fhir.parse_patient_appointments(
            _json(response, trace_id), trace_id=trace_id, patient_id=patient_id
        )

    def amend_appointment(
        self, appointment_id: str, *, version: str, description: str, comment: str | None
    ) -> Appointment:
        """Change the description and comment of the appointment as it was at `version`.

        The appointment is read again and sent back with only those two changed, with
        `If-Match` of `version`: if someone changed it since, the practice refuses with
        `Conflict`. `comment=None` (or blank) removes the comment. Never retried.
        """
        description, comment = _checked_texts(description, comment)
        if_match = _if_match(version)
        resource, etag, _ = self._appointment_resource(appointment_id)
        _refuse_if_cancelled(resource, etag, version)
        resource["description"] = description
        if comment:
            resource["comment"] = comment
        else:
            resource.pop("comment", None)
        return self._put_appointment(
            Interactions.APPOINTMENT_AMEND, appointment_id, resource, if_match
        )

    def cancel_appointment(self, appointment_id: str, *, version: str, reason: str) -> Appointment:
        """Cancel the appointment as it was at `version`, giving the reason.

        Only the status and the cancellation reason change (SPEC §3.5); `If-Match` of
        `version` makes the practice refuse with `Conflict` if it changed since. Never
        retried.
        """
        reason = reason.strip()
        if not reason:
            raise ValueError("give the reason for cancelling")
        if_match = _if_match(version)
        resource, etag, _ = self._appointment_resource(appointment_id)
        _refuse_if_cancelled(resource, etag, version)
        resource["status"] = "cancelled"
        extensions = [
            e
            for e in _dicts(resource.get("extension"))
            if e.get("url") != CANCELLATION_REASON_EXTENSION
        ]
        extensions.append({"url": CANCELLATION_REASON_EXTENSION, "valueString": reason})
        resource["extension"] = extensions
        return self._put_appointment(
            Interactions.APPOINTMENT_CANCEL, appointment_id, resource, if_match
        )

    def _appointment_resource(self, appointment_id: str) -> tuple[dict[str, Any], str | None, str]:
        """Return an appointment as the practice sent it, its ETag and the trace ID."""
        if not appointment_id:
            raise ValueError("appointment_id is required")
        path = f"/Appointment/{quote(appointment_id, safe='')}"
        response, trace_id = self._get(Interactions.APPOINTMENT_READ, path)
        resource = _json(response, trace_id)
        if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
            # Parsing says what it got instead, with the trace ID.
            fhir.parse_appointment(resource, trace_id=trace_id)
        return resource, response.headers.get("ETag"), trace_id

    def _put_appointment(
        self, interaction: Interaction, appointment_id: str, resource: dict[str, Any], if_match: str
    ) -> Appointment:
        path = f"/Appointment/{quote(appointment_id, safe='')}"
        headers = {"If-Match": if_match, **_RETURN_REPRESENTATION}
        response, trace_id = self._send_once(interaction, "PUT", path, resource, headers=headers)
        return self._appointment_answer(response, trace_id, appointment_id)

    def _appointment_answer(
        self, response: httpx.Response, trace_id: str, appointment_id: str | None = None
    ) -> Appointment:
        """Return the Appointment a write answered with, reading it back if the body is empty."""
        if not response.content.strip():
            # A provider that ignored `Prefer: return=representation`: the change is made,
            # so read it rather than report a failure. The result carries the write's trace ID.
            location = response.headers.get("Location") or ""
            written = appointment_id or fhir.appointment_id_from_location(location)
            if written:
                return replace(self.read_appointment(written), trace_id=trace_id)
        return fhir.parse_appointment(
            _json(response, trace_id), trace_id=trace_id, etag=response.headers.get("ETag")
        )

    # Plumbing -------------------------------------------------------------------------

    def _proxied(self, absolute_url: str) -> str:
        # The SSP takes the provider's absolute URL after its own, unaltered (SPEC §4.2).
        proxy = self.config.spine_proxy_url
        return f"{proxy.rstrip('/')}/{absolute_url}" if proxy else absolute_url

    def _auth(self, endpoint: ProviderEndpoint, interaction: Interaction) -> GPConnectAuth:
        return GPConnectAuth(
            self.config.consumer, self.user, endpoint, interaction, clock=self._clock
        )

    def _timeout(self, *, read: float | None = None) -> httpx.Timeout:
        t = self.config.timeouts
        return httpx.Timeout(
            connect=t.connect, read=read if read is not None else t.read, write=t.write, pool=t.pool
        )

    def _get(self, interaction: Interaction, path: str) -> tuple[httpx.Response, str]:
        return self._send_with_retries(interaction, "GET", path, timeout=self._timeout())

    def _send_with_retries(
        self,
        interaction: Interaction,
        method: str,
        target: str,
        *,
        timeout: httpx.Timeout,
        stream: bool = False,
    ) -> tuple[httpx.Response, str]:
        """Send a read, retrying transient failures; every try gets a fresh JWT and trace ID."""
        if method != "GET":
            raise ValueError("only reads are retried")
        for attempt in read_retrying(self.config.retry, self._sleep):
            with attempt:
                return self._send(interaction, method, target, timeout=timeout, stream=stream)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _send_once(
        self,
        interaction: Interaction,
        method: str,
        target: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, str]:
        # Writes are never retried automatically: a retried booking could book twice.
        content = json.dumps(body, separators=(",", ":")).encode()
        return self._send(
            interaction, method, target, timeout=self._timeout(), content=content, headers=headers
        )

    def _send(
        self,
        interaction: Interaction,
        method: str,
        target: str,
        *,
        timeout: httpx.Timeout,
        stream: bool = False,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, str]:
        """Send one request; `target` is a path under the interaction's service root, or an absolute URL."""
        endpoint = self.endpoint_for(interaction)
        absolute = target.startswith(("http://", "https://"))
        url = self._proxied(target if absolute else endpoint.service_root + target)
        request = self._http.build_request(
            method, url, content=content, timeout=timeout, headers=headers
        )
        try:
            response = self._http.send(
                request, auth=self._auth(endpoint, interaction), stream=stream
            )
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


def register_patient_parameters(
    demographics: Patient, *, telecom: Sequence[ContactPoint] | None = None
) -> dict[str, Any]:
    """Return the `Parameters` body of `$gpc.registerpatient`, with only the allowed fields.

    Raise ValueError for what a practice would refuse anyway: an invalid NHS number, no
    family or given name, no birth date, or a patient restricted (S-flagged) on PDS, for
    whom GP Connect must not be called at all (SPEC §3.1).
    """
    nhs_number = _checked_nhs_number(demographics.nhs_number)
    if demographics.restricted:
        raise ValueError("the patient is restricted on PDS: GP Connect must not be used for them")
    name = demographics.name
    given = [g.strip() for g in name.given if g.strip()]
    if not name.family.strip() or not given:
        raise ValueError("registering a patient needs their family and given names")
    if demographics.birth_date is None:
        raise ValueError("registering a patient needs their birth date")
    official: dict[str, Any] = {"use": "official", "family": name.family.strip(), "given": given}
    prefixes = [p.strip() for p in name.prefix if p.strip()]
    if prefixes:
        official["prefix"] = prefixes
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"profile": [PATIENT_PROFILE]},
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": nhs_number}],
        "name": [official],
    }
    contact = _registration_telecom(demographics.telecom if telecom is None else telecom)
    if contact:
        patient["telecom"] = contact
    if demographics.gender in ("male", "female", "other", "unknown"):
        patient["gender"] = demographics.gender
    patient["birthDate"] = demographics.birth_date.isoformat()
    address = demographics.home_address
    if address is not None and address.display:
        home: dict[str, Any] = {"use": "home"}
        if address.lines:
            home["line"] = list(address.lines)
        for key, value in (
            ("city", address.city),
            ("district", address.district),
            ("postalCode", address.postcode),
        ):
            if value:
                home[key] = value
        patient["address"] = [home]
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "registerPatient", "resource": patient}],
    }


def _registration_telecom(telecom: Sequence[ContactPoint]) -> list[dict[str, str]]:
    """Keep the first phone number of each use the specification allows, and the first email."""
    kept: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for point in telecom:
        value = point.value.strip()
        if point.system == "phone" and point.use in ("home", "work", "mobile", "temp"):
            kind = ("phone", point.use)
        elif point.system == "email":
            kind = ("email", "")
        else:
            continue
        if not value or kind in seen:
            continue
        seen.add(kind)
        entry = {"system": point.system, "value": value}
        if point.use:
            entry["use"] = point.use
        kept.append(entry)
    return kept


def free_slot_search_params(
    start: date | datetime, end: date | datetime, *, consumer: Consumer
) -> list[tuple[str, str]]:
    """Return the query of a free-slot search (SPEC §3.3); ValueError for a bad window."""
    start_text, start_at = _search_bound(start, "start")
    end_text, end_at = _search_bound(end, "end")
    if end_at < start_at:
        raise ValueError("the end of a free-slot search must not be before its start")
    # Wall-clock days in UK time, as providers count them across a change of the clocks.
    if end_at - start_at > MAX_SLOT_SEARCH:
        raise ValueError(
            f"a free-slot search may cover at most {MAX_SLOT_SEARCH.days} days; "
            "search in windows of 14 days or less"
        )
    params = [("start", f"ge{start_text}"), ("end", f"le{end_text}"), ("status", "free")]
    params += SLOT_SEARCH_INCLUDES
    if consumer.organisation_type:
        params.append(("searchFilter", f"{ORGANISATION_TYPE_SYSTEM}|{consumer.organisation_type}"))
    params.append(("searchFilter", f"{ODS_CODE_SYSTEM}|{consumer.ods_code}"))
    return params


def _search_bound(value: date | datetime, name: str) -> tuple[str, datetime]:
    """Return how a slot search bound is written, and the UK local time it starts at."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"the {name} of a free-slot search must be timezone-aware")
        local = value.astimezone(UK_TIME)
        return fhir_instant(local), local
    return value.isoformat(), datetime.combine(value, time_of_day(), tzinfo=UK_TIME)


def appointment_booking(
    *,
    consumer: Consumer,
    patient_id: str,
    slots: Sequence[Slot],
    description: str,
    comment: str | None,
    created: datetime,
) -> dict[str, Any]:
    """Return the Appointment to `POST` to book the slots, with every mandatory element (SPEC §3.4).

    We are the booking organisation, as a contained Organization the BookingOrganisation
    extension points at; its type is the one our slot searches send. Raise ValueError
    for slots that cannot be booked together or texts that are too long, and
    ConfigurationError when we have no phone number to give as the booking organisation's.
    """
    if not patient_id:
        raise ValueError("patient_id is required")
    if not slots:
        raise ValueError("choose at least one slot to book")
    if not bookable_together(slots):
        raise ValueError(
            "these slots cannot be booked together: they must follow each other on the same "
            "schedule, with the same delivery channel and slot type"
        )
    description, checked_comment = _checked_texts(description, comment)
    if not (consumer.organisation_phone and consumer.organisation_phone.strip()):
        raise ConfigurationError(
            "Consumer.organisation_phone is needed to book: the practice records how to "
            "contact the booking organisation"
        )
    ordered = sorted(slots, key=lambda slot: slot.start)
    schedule = ordered[0].schedule
    if schedule.location is None or not schedule.location.id:
        raise ValueError("the slot's schedule names no Location, so it cannot be booked")
    organisation: dict[str, Any] = {
        "resourceType": "Organization",
        "id": "1",
        "meta": {"profile": [ORGANISATION_PROFILE]},
        "identifier": [{"system": ODS_CODE_SYSTEM, "value": consumer.ods_code}],
    }
    if consumer.organisation_type:
        # The type sent in the search's searchFilter; left out when none was sent.
        organisation["type"] = [
            {"coding": [{"system": ORGANISATION_TYPE_SYSTEM, "code": consumer.organisation_type}]}
        ]
    organisation["name"] = consumer.organisation_name
    organisation["telecom"] = [{"system": "phone", "value": consumer.organisation_phone.strip()}]
    participants = [
        {"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"},
        {"actor": {"reference": f"Location/{schedule.location.id}"}, "status": "accepted"},
    ]
    if schedule.practitioner is not None and schedule.practitioner.id:
        participants.append(
            {
                "actor": {"reference": f"Practitioner/{schedule.practitioner.id}"},
                "status": "accepted",
            }
        )
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "meta": {"profile": [APPOINTMENT_PROFILE]},
        "contained": [organisation],
        "extension": [
            {"url": BOOKING_ORGANISATION_EXTENSION, "valueReference": {"reference": "#1"}}
        ],
        "status": "booked",
        "description": description,
        "start": fhir_instant(ordered[0].start),
        "end": fhir_instant(ordered[-1].end),
        "slot": [{"reference": f"Slot/{slot.id}"} for slot in ordered],
        "created": fhir_instant(created),
    }
    if checked_comment:
        body["comment"] = checked_comment
    body["participant"] = participants
    return body


def fhir_instant(value: datetime) -> str:
    """Return a dateTime in UK local time with its offset: `2027-03-29T09:00:00+01:00`."""
    return value.astimezone(UK_TIME).isoformat(timespec="seconds")


def _checked_texts(description: str, comment: str | None) -> tuple[str, str | None]:
    """Return the description and comment trimmed, or raise ValueError (SPEC §3.4 limits)."""
    description = description.strip()
    if not description:
        raise ValueError("an appointment needs a description")
    if len(description) > MAX_DESCRIPTION:
        raise ValueError(f"the description must be at most {MAX_DESCRIPTION} characters")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise ValueError(f"the comment must be at most {MAX_COMMENT} characters")
    return description, comment


def _if_match(version: str) -> str:
    """Return the `If-Match` header for a version (`3` or `W/"3"`)."""
    number = fhir.parse_etag(version) or version.strip()
    if not number or '"' in number:
        raise ValueError(f"{version!r} is not an appointment version")
    return f'W/"{number}"'


def _refuse_if_cancelled(resource: Mapping[str, Any], etag: str | None, version: str) -> None:
    # Only when the caller saw it cancelled: if it changed since, the practice's Conflict says so.
    meta = (_dicts(resource.get("meta")) or [{}])[0]
    current = fhir.parse_etag(etag) or str(meta.get("versionId", ""))
    if resource.get("status") == "cancelled" and current == (fhir.parse_etag(version) or version):
        raise ValueError("the appointment is cancelled: it can no longer be changed")


def _dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


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
    "MAX_COMMENT",
    "MAX_DESCRIPTION",
    "MAX_SLOT_SEARCH",
    "SLOT_SEARCH_INCLUDES",
    "BinaryDownload",
    "EndpointDirectory",
    "EndpointResolver",
    "GPConnectClient",
    "GPConnectError",
    "appointment_booking",
    "build_http_client",
    "encode_query",
    "fhir_instant",
    "free_slot_search_params",
    "register_patient_parameters",
    "structured_record_parameters",
]
