"""The sandbox's error answers: GP Connect OperationOutcomes and the Spine Secure Proxy's own.

Handlers raise `ProviderFault`; the app turns it into the exact body and status a strict
provider sends (SPEC §4.5), with `Cache-Control: no-store` like every other response.
"""

from __future__ import annotations

import uuid
from typing import Any

SPINE_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
OUTCOME_PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-OperationOutcome-1"
SSP_SYSTEM = "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0"

# Spine code -> (HTTP status, issue.code, display), from SPEC §4.5.
SPINE_CODES: dict[str, tuple[int, str, str]] = {
    "INVALID_IDENTIFIER_SYSTEM": (400, "value", "Invalid identifier system"),
    "INVALID_IDENTIFIER_VALUE": (400, "value", "Invalid identifier value"),
    "INVALID_NHS_NUMBER": (400, "value", "Invalid NHS number"),
    "INVALID_PATIENT_DEMOGRAPHICS": (400, "business-rule", "Invalid patient demographics"),
    "ORGANISATION_NOT_FOUND": (404, "not-found", "Organisation not found"),
    "PATIENT_NOT_FOUND": (404, "not-found", "Patient not found"),
    "PRACTITIONER_NOT_FOUND": (404, "not-found", "Practitioner not found"),
    "NO_RECORD_FOUND": (404, "not-found", "No record found"),
    "NO_PATIENT_CONSENT": (403, "forbidden", "Patient has not provided consent to share data"),
    "ACCESS DENIED": (403, "forbidden", "Access denied"),
    "NO_RELATIONSHIP": (403, "forbidden", "No legitimate relationship exists with this patient"),
    "DUPLICATE_REJECTED": (
        409,
        "duplicate",
        "Create would lead to creation of a duplicate resource",
    ),
    "FHIR_CONSTRAINT_VIOLATION": (409, "conflict", "FHIR constraint violated"),
    "INVALID_RESOURCE": (422, "invalid", "Invalid validation of resource"),
    "INVALID_PARAMETER": (422, "invalid", "Invalid parameter"),
    "REFERENCE_NOT_FOUND": (422, "invalid", "Reference not found"),
    "BAD_REQUEST": (400, "invalid", "Bad request"),
    "CONFLICTING_VALUES": (
        400,
        "invalid",
        "Conflicting values have been specified in different fields",
    ),
    "NOT_IMPLEMENTED": (501, "not-supported", "Not implemented"),
    "INTERNAL_SERVER_ERROR": (500, "exception", "Internal server error"),
}


class ProviderFault(Exception):
    """Raised by a handler: answer with this Spine code's OperationOutcome."""

    def __init__(self, code: str, diagnostics: str | None = None, *, status: int | None = None):
        if code not in SPINE_CODES:
            raise ValueError(f"unknown Spine code {code!r}")
        self.code = code
        self.diagnostics = diagnostics
        self.status = status if status is not None else SPINE_CODES[code][0]
        super().__init__(f"{code}: {diagnostics or ''}")

    def body(self) -> dict[str, Any]:
        return operation_outcome(self.code, self.diagnostics)


class ProxyFault(Exception):
    """Raised by the Spine Secure Proxy routes: answer in the SSP's own error format."""

    def __init__(self, status: int, display: str, issue_code: str = "invalid"):
        self.status = status
        self.display = display
        self.issue_code = issue_code
        super().__init__(display)

    def body(self) -> dict[str, Any]:
        return {
            "resourceType": "OperationOutcome",
            "id": str(uuid.uuid4()),
            "issue": [
                {
                    "code": self.issue_code,
                    "severity": "error",
                    "details": {
                        "coding": [
                            {
                                "code": str(self.status),
                                "display": self.display,
                                "system": SSP_SYSTEM,
                            }
                        ]
                    },
                    "diagnostics": self.display,
                }
            ],
        }


def operation_outcome(code: str, diagnostics: str | None = None) -> dict[str, Any]:
    """Return the GP Connect OperationOutcome for a Spine code."""
    _, issue_code, display = SPINE_CODES[code]
    issue: dict[str, Any] = {
        "severity": "error",
        "code": issue_code,
        "details": {"coding": [{"system": SPINE_SYSTEM, "code": code, "display": display}]},
    }
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {
        "resourceType": "OperationOutcome",
        "meta": {"profile": [OUTCOME_PROFILE]},
        "issue": [issue],
    }
