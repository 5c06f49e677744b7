"""A GP Connect (FHIR STU3) consumer library. It does not depend on Django.

from gpconnect import ClientConfig, Consumer, GPConnectClient, ProviderEndpoint, RequestingUser

config = ClientConfig(consumer=Consumer(asid=..., ods_code=..., organisation_name=..., issuer=...))
client = GPConnectClient(config, user=RequestingUser(...), endpoint=ProviderEndpoint(...))
patient = client.find_patient("943 476 5919").patient
for document in client.search_documents(patient.id).documents: ...
with client.open_binary(document.url) as download:
    for chunk in download: ...

Appointments, at any practice of a federation (each interaction looked up in SDS):

practice = GPConnectClient.for_practice(config, user=..., ods_code="B82617", directory=sds)
free = practice.search_free_slots(date(2027, 3, 22), date(2027, 3, 28))
found = practice.find_patient(nhs_number, capability=Capability.APPOINTMENTS).patient
patient = found or practice.register_patient(pds_patient).patient
booked = practice.book_appointment(patient_id=patient.id, slots=[free.slots[0]], description=...)
practice.cancel_appointment(booked.id, version=booked.version, reason=...)
"""

from __future__ import annotations

from . import binary, nhs_number
from .auth import GPConnectAuth, build_jwt
from .client import (
    DOCUMENT_SEARCH_INCLUDES,
    SLOT_SEARCH_INCLUDES,
    BinaryDownload,
    EndpointDirectory,
    GPConnectClient,
    build_http_client,
)
from .config import (
    ClientConfig,
    ConfigurationError,
    Consumer,
    ProviderEndpoint,
    RequestingUser,
    RetryPolicy,
    Timeouts,
    TLSConfig,
)
from .errors import (
    AccessDenied,
    BadRequest,
    BinaryDecodeError,
    Conflict,
    DocumentNotFound,
    DuplicateRejected,
    EndpointNotFound,
    Forbidden,
    GPConnectError,
    InvalidDemographics,
    InvalidNhsNumber,
    InvalidResponse,
    NoPatientConsent,
    NotFound,
    NotSupported,
    PatientNotFound,
    ProviderError,
    ProviderInternalError,
    ProviderUnavailable,
    SpineProxyError,
    error_from_response,
)
from .interactions import Capability, Interaction, Interactions
from .models import (
    Address,
    Appointment,
    Capabilities,
    CodedConcept,
    Consultation,
    ContactPoint,
    DocumentSearch,
    DocumentSummary,
    FreeSlots,
    HumanName,
    LinkedDocument,
    Location,
    Organisation,
    Patient,
    PatientAppointments,
    PatientRecord,
    PatientSearch,
    Practitioner,
    Problem,
    Schedule,
    SdsEndpoint,
    Slot,
    StructuredDocuments,
    bookable_together,
)
from .spine import PersonalDemographics, SdsCache, SpineDirectory

__all__ = [
    "DOCUMENT_SEARCH_INCLUDES",
    "SLOT_SEARCH_INCLUDES",
    "AccessDenied",
    "Address",
    "Appointment",
    "BadRequest",
    "BinaryDecodeError",
    "BinaryDownload",
    "Capabilities",
    "Capability",
    "ClientConfig",
    "CodedConcept",
    "ConfigurationError",
    "Conflict",
    "Consultation",
    "Consumer",
    "ContactPoint",
    "DocumentNotFound",
    "DocumentSearch",
    "DocumentSummary",
    "DuplicateRejected",
    "EndpointDirectory",
    "EndpointNotFound",
    "Forbidden",
    "FreeSlots",
    "GPConnectAuth",
    "GPConnectClient",
    "GPConnectError",
    "HumanName",
    "Interaction",
    "Interactions",
    "InvalidDemographics",
    "InvalidNhsNumber",
    "InvalidResponse",
    "LinkedDocument",
    "Location",
    "NoPatientConsent",
    "NotFound",
    "NotSupported",
    "Organisation",
    "Patient",
    "PatientAppointments",
    "PatientNotFound",
    "PatientRecord",
    "PatientSearch",
    "PersonalDemographics",
    "Practitioner",
    "Problem",
    "ProviderEndpoint",
    "ProviderError",
    "ProviderInternalError",
    "ProviderUnavailable",
    "RequestingUser",
    "RetryPolicy",
    "Schedule",
    "SdsCache",
    "SdsEndpoint",
    "Slot",
    "SpineDirectory",
    "SpineProxyError",
    "StructuredDocuments",
    "TLSConfig",
    "Timeouts",
    "binary",
    "bookable_together",
    "build_http_client",
    "build_jwt",
    "error_from_response",
    "nhs_number",
]
