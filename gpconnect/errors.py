"""The one exception tree of the library, mapped from responses in one place.

    GPConnectError                      anything that went wrong talking to GP Connect
    ├── ProviderError                   the provider answered with an error (OperationOutcome or status)
    │   ├── BadRequest                  BAD_REQUEST, INVALID_PARAMETER, INVALID_RESOURCE, INVALID_IDENTIFIER_*,
    │   │   │                           CONFLICTING_VALUES, REFERENCE_NOT_FOUND, other 400/422
    │   │   ├── InvalidNhsNumber        INVALID_NHS_NUMBER
    │   │   └── InvalidDemographics     INVALID_PATIENT_DEMOGRAPHICS
    │   ├── NotFound                    ORGANISATION_NOT_FOUND, PRACTITIONER_NOT_FOUND, other 404
    │   │   ├── PatientNotFound         PATIENT_NOT_FOUND (and a PDS trace that finds nobody)
    │   │   ├── DocumentNotFound        NO_RECORD_FOUND
    │   │   └── EndpointNotFound        SDS has no endpoint or ASID for the practice and interaction
    │   ├── Forbidden                   NO_RELATIONSHIP, NO_ORGANISATION_CONSENT, other 401/403
    │   │   ├── AccessDenied            ACCESS DENIED (and ACCESS_DENIED)
    │   │   └── NoPatientConsent        NO_PATIENT_CONSENT
    │   ├── Conflict                    FHIR_CONSTRAINT_VIOLATION (a stale If-Match), other 409/412
    │   │   └── DuplicateRejected       DUPLICATE_REJECTED (a slot already taken, a patient already registered)
    │   ├── NotSupported                NOT_IMPLEMENTED, 405, 415, 501
    │   └── ProviderInternalError       INTERNAL_SERVER_ERROR, other 500
    ├── SpineProxyError                 the Spine Secure Proxy refused or failed to forward the request
    ├── ProviderUnavailable             timeouts, connection failures, 502/503/504
    └── InvalidResponse                 a body that is not the FHIR the call expects
        └── BinaryDecodeError           a Binary body that cannot be decoded to document bytes

Every error carries the Spine code, display, diagnostics, HTTP status and trace ID (when
known), a plain-English `message` a clinician can act on, and `retryable`: whether trying
again later may help.
"""

from __future__ import annotations

import json
from typing import Any

SPINE_CODE_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
SSP_CODE_SYSTEMS = frozenset(
    {
        "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0",
        "https://fhir.nhs.uk/StructureDefinition/spine-operationoutcome-1",
    }
)


class GPConnectError(Exception):
    """Base class. `message` is written for a clinician; `str(error)` adds the detail."""

    default_message = "Something went wrong while contacting the GP practice's system."
    retryable = False

    def __init__(
        self,
        message: str | None = None,
        *,
        spine_code: str | None = None,
        display: str | None = None,
        diagnostics: str | None = None,
        http_status: int | None = None,
        trace_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.spine_code = spine_code
        self.display = display
        self.diagnostics = diagnostics
        self.http_status = http_status
        self.trace_id = trace_id
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self.message)

    def __str__(self) -> str:
        detail = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("status", self.http_status),
                ("code", self.spine_code),
                ("diagnostics", self.diagnostics),
                ("trace_id", self.trace_id),
            )
            if value is not None
        )
        return f"{self.message} ({detail})" if detail else self.message


class ProviderError(GPConnectError):
    pass


class BadRequest(ProviderError):
    default_message = (
        "The GP practice's system could not accept the request. This is a fault in this "
        "application, not something you can fix: please report it with the trace ID."
    )


class InvalidNhsNumber(BadRequest):
    default_message = (
        "The GP practice's system says the NHS number is not valid. Check it and try again."
    )


class InvalidDemographics(BadRequest):
    default_message = (
        "The patient's details could not be verified against the Personal Demographics "
        "Service (PDS), so the GP practice could not accept them."
    )


class NotFound(ProviderError):
    default_message = "The GP practice's system could not find what was asked for."


class PatientNotFound(NotFound):
    default_message = (
        "The GP practice has no record it can share for this patient. They may not be "
        "registered there, or their record may not be available through GP Connect."
    )


class DocumentNotFound(NotFound):
    default_message = (
        "The GP practice's system could not find this document. It may have been removed, "
        "or it is too large to retrieve through GP Connect."
    )


class EndpointNotFound(NotFound):
    default_message = (
        "This GP practice is not set up to share this information through GP Connect "
        "(it has no entry in the NHS Spine Directory Service)."
    )


class Forbidden(ProviderError):
    default_message = "The GP practice's system refused to share this information."


class AccessDenied(Forbidden):
    default_message = (
        "This GP practice does not share records through this GP Connect service. "
        "Contact the practice if you need the information."
    )


class NoPatientConsent(Forbidden):
    default_message = (
        "The patient has asked their GP practice not to share their record. "
        "Contact the practice directly if you need the information."
    )


class Conflict(ProviderError):
    default_message = (
        "Someone else changed this at the same time, so the GP practice's system "
        "rejected the change."
    )


class DuplicateRejected(Conflict):
    default_message = (
        "The GP practice's system rejected this as a duplicate: for a booking, the slot "
        "has usually just been taken by someone else."
    )


class NotSupported(ProviderError):
    default_message = "The GP practice's system does not support this request."


class ProviderInternalError(ProviderError):
    default_message = "The GP practice's system had an internal error. Trying again later may work."
    retryable = True


class SpineProxyError(GPConnectError):
    default_message = (
        "The NHS Spine refused to pass the request to the GP practice. This is usually a "
        "configuration problem: please report it with the trace ID."
    )


class ProviderUnavailable(GPConnectError):
    default_message = (
        "The GP practice's system did not respond in time or could not be reached. "
        "Trying again in a few minutes may work."
    )
    retryable = True


class InvalidResponse(GPConnectError):
    default_message = (
        "The GP practice's system sent a reply this application could not understand. "
        "Please report it with the trace ID."
    )


class BinaryDecodeError(InvalidResponse):
    default_message = (
        "The document sent by the GP practice's system was damaged or incomplete, "
        "so it was not shown."
    )


# Spine code -> (class, HTTP status the spec gives it). Codes from SPEC §4.5 plus the
# ones the provider test pack and the spec use outside that table.
SPINE_CODES: dict[str, type[ProviderError]] = {
    "INVALID_IDENTIFIER_SYSTEM": BadRequest,
    "INVALID_IDENTIFIER_VALUE": BadRequest,
    "INVALID_NHS_NUMBER": InvalidNhsNumber,
    "INVALID_PATIENT_DEMOGRAPHICS": InvalidDemographics,
    "ORGANISATION_NOT_FOUND": NotFound,
    "PATIENT_NOT_FOUND": PatientNotFound,
    "PRACTITIONER_NOT_FOUND": NotFound,
    "NO_RECORD_FOUND": DocumentNotFound,
    "NO_PATIENT_CONSENT": NoPatientConsent,
    "NO_ORGANISATION_CONSENT": Forbidden,
    "NO_ORGANISATIONAL_CONSENT": Forbidden,
    "ACCESS DENIED": AccessDenied,
    "NO_RELATIONSHIP": Forbidden,
    "NOT_AUTHORISED": Forbidden,
    "DUPLICATE_REJECTED": DuplicateRejected,
    "FHIR_CONSTRAINT_VIOLATION": Conflict,
    "INVALID_RESOURCE": BadRequest,
    "INVALID_PARAMETER": BadRequest,
    "REFERENCE_NOT_FOUND": BadRequest,
    "BAD_REQUEST": BadRequest,
    "CONFLICTING_VALUES": BadRequest,
    "NOT_IMPLEMENTED": NotSupported,
    "INTERNAL_SERVER_ERROR": ProviderInternalError,
}

# Messages that say more than the class default for a specific code.
_SPECIFIC_MESSAGES = {
    "ORGANISATION_NOT_FOUND": "The GP practice's system could not find the organisation.",
    "PRACTITIONER_NOT_FOUND": "The GP practice's system could not find the practitioner.",
    "NO_RELATIONSHIP": "The GP practice's system says there is no care relationship with this patient.",
    "NO_ORGANISATION_CONSENT": "The GP practice has not agreed to share records with your organisation.",
    "NO_ORGANISATIONAL_CONSENT": "The GP practice has not agreed to share records with your organisation.",
}

_STATUS_FALLBACK: dict[int, type[GPConnectError]] = {
    400: BadRequest,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    405: NotSupported,
    406: NotSupported,
    409: Conflict,
    412: Conflict,
    415: NotSupported,
    422: BadRequest,
    500: ProviderInternalError,
    501: NotSupported,
    502: ProviderUnavailable,
    503: ProviderUnavailable,
    504: ProviderUnavailable,
}


def normalise_spine_code(code: str) -> str:
    """Return the Spine code as the CodeSystem spells it (`ACCESS_DENIED` → `ACCESS DENIED`)."""
    code = code.strip().upper()
    return "ACCESS DENIED" if code == "ACCESS_DENIED" else code


def error_from_response(
    status: int, body: bytes | str | None, *, trace_id: str | None = None
) -> GPConnectError:
    """Return the error for a non-success response, from its OperationOutcome or its status."""
    issue = _first_issue(body)
    coding = _first_coding(issue) if issue else {}
    code = str(coding.get("code") or "").strip()
    display = _text(coding.get("display"))
    diagnostics = _text(issue.get("diagnostics")) if issue else None
    common: dict[str, Any] = {
        "display": display,
        "diagnostics": diagnostics,
        "http_status": status,
        "trace_id": trace_id,
    }

    if coding.get("system") in SSP_CODE_SYSTEMS or (code.isdigit() and issue):
        return _spine_proxy_error(status, code, display or diagnostics or "", common)

    if code:
        spine_code = normalise_spine_code(code)
        cls = SPINE_CODES.get(spine_code)
        if cls is not None:
            return cls(_SPECIFIC_MESSAGES.get(spine_code), spine_code=spine_code, **common)
        common["spine_code"] = spine_code

    fallback = _STATUS_FALLBACK.get(status)
    if fallback is None:
        fallback = ProviderInternalError if status >= 500 else ProviderError
    return fallback(**common)


def _spine_proxy_error(
    status: int, code: str, display: str, common: dict[str, Any]
) -> GPConnectError:
    # The SSP reports a target it cannot reach as a 502; to the user that is an unavailable
    # practice, and trying again may help. Its other refusals are configuration faults.
    common["spine_code"] = code or str(status)
    if status in (502, 503, 504) or display.startswith("ERROR_COMMUNICATING"):
        return ProviderUnavailable(**common)
    message = None
    if display.startswith("ASID_CHECK_FAILED"):
        message = (
            "The NHS Spine does not recognise this application as allowed to make this "
            "request. Please report it with the trace ID."
        )
    elif display.startswith("PARTYKEY_INTERACTION_CHECK_FAILED"):
        message = "The GP practice is not set up on the NHS Spine to answer this kind of request."
    elif display.startswith("FOT_CHECK_FAILED"):
        message = "The NHS Spine does not allow this application to contact this GP practice."
    elif "VARIES_FROM_TARGETURL" in display:
        message = (
            "The address used for the GP practice does not match its entry in the NHS "
            "Spine Directory. Please report it with the trace ID."
        )
    return SpineProxyError(message, **common)


def _first_issue(body: bytes | str | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        resource = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return {}
    issues = resource.get("issue")
    if isinstance(issues, list) and issues and isinstance(issues[0], dict):
        return issues[0]
    return {}


def _first_coding(issue: dict[str, Any]) -> dict[str, Any]:
    details = issue.get("details")
    if not isinstance(details, dict):
        return {}
    codings = details.get("coding")
    if isinstance(codings, list) and codings and isinstance(codings[0], dict):
        return codings[0]
    return {}


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
