"""GP Connect interactions: the `Ssp-InteractionID` and JWT `requested_scope` of each call.

Source: SPEC §1.1, §2 and §3 (GP Connect 1.6.2 / 1.2.9 interaction ID tables and the
provider test pack's JWT factory for scopes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Capability(StrEnum):
    """Each capability has its own service root in SDS; never reuse one for another."""

    DOCUMENTS = "documents"
    STRUCTURED = "structured"
    APPOINTMENTS = "appointments"  # Foundations and Appointment Management share one root


@dataclass(frozen=True)
class Interaction:
    id: str
    scope: str
    capability: Capability
    method: str


_DOC = "urn:nhs:names:services:gpconnect:documents:fhir:rest:"
_GPC = "urn:nhs:names:services:gpconnect:fhir:"


class Interactions:
    """The interactions this library calls, by name."""

    DOCUMENTS_METADATA = Interaction(
        _DOC + "read:metadata-1", "organization/*.read", Capability.DOCUMENTS, "GET"
    )
    DOCUMENTS_PATIENT_SEARCH = Interaction(
        _DOC + "search:patient-1", "patient/*.read", Capability.DOCUMENTS, "GET"
    )
    DOCUMENTS_SEARCH = Interaction(
        _DOC + "search:documentreference-1", "patient/*.read", Capability.DOCUMENTS, "GET"
    )
    DOCUMENTS_BINARY = Interaction(
        _DOC + "read:binary-1", "patient/*.read", Capability.DOCUMENTS, "GET"
    )

    STRUCTURED_METADATA = Interaction(
        "urn:nhs:names:services:gpconnect:structured:fhir:rest:read:metadata-1",
        "organization/*.read",
        Capability.STRUCTURED,
        "GET",
    )
    STRUCTURED_RECORD = Interaction(
        _GPC + "operation:gpc.getstructuredrecord-1",
        "patient/*.read",
        Capability.STRUCTURED,
        "POST",
    )

    FOUNDATIONS_METADATA = Interaction(
        _GPC + "rest:read:metadata-1", "organization/*.read", Capability.APPOINTMENTS, "GET"
    )
    PATIENT_SEARCH = Interaction(
        _GPC + "rest:search:patient-1", "patient/*.read", Capability.APPOINTMENTS, "GET"
    )
    PATIENT_READ = Interaction(
        _GPC + "rest:read:patient-1", "patient/*.read", Capability.APPOINTMENTS, "GET"
    )
    PATIENT_REGISTER = Interaction(
        _GPC + "operation:gpc.registerpatient-1",
        "patient/*.write",
        Capability.APPOINTMENTS,
        "POST",
    )
    SLOT_SEARCH = Interaction(
        _GPC + "rest:search:slot-1", "organization/*.read", Capability.APPOINTMENTS, "GET"
    )
    APPOINTMENT_CREATE = Interaction(
        _GPC + "rest:create:appointment-1", "patient/*.write", Capability.APPOINTMENTS, "POST"
    )
    APPOINTMENT_READ = Interaction(
        _GPC + "rest:read:appointment-1", "patient/*.read", Capability.APPOINTMENTS, "GET"
    )
    APPOINTMENT_AMEND = Interaction(
        _GPC + "rest:update:appointment-1", "patient/*.write", Capability.APPOINTMENTS, "PUT"
    )
    APPOINTMENT_CANCEL = Interaction(
        _GPC + "rest:cancel:appointment-1", "patient/*.write", Capability.APPOINTMENTS, "PUT"
    )
    PATIENT_APPOINTMENTS = Interaction(
        _GPC + "rest:search:patient_appointments-1",
        "patient/*.read",
        Capability.APPOINTMENTS,
        "GET",
    )
    LOCATION_READ = Interaction(
        _GPC + "rest:read:location-1", "organization/*.read", Capability.APPOINTMENTS, "GET"
    )

    @classmethod
    def all(cls) -> tuple[Interaction, ...]:
        return tuple(v for v in vars(cls).values() if isinstance(v, Interaction))
