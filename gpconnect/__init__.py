"""A GP Connect (FHIR STU3) consumer library. It does not depend on Django.

from gpconnect import ClientConfig, Consumer, GPConnectClient, ProviderEndpoint, RequestingUser

config = ClientConfig(consumer=Consumer(asid=..., ods_code=..., organisation_name=..., issuer=...))
client = GPConnectClient(config, user=RequestingUser(...), endpoint=ProviderEndpoint(...))
patient = client.find_patient("943 476 5919").patient
for document in client.search_documents(patient.id).documents: ...
with client.open_binary(document.url) as download:
    for chunk in download: ...
"""

from __future__ import annotations

from . import binary, nhs_number
from .auth import GPConnectAuth, build_jwt
from .client import (
    DOCUMENT_SEARCH_INCLUDES,
    BinaryDownload,
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
    Capabilities,
    CodedConcept,
    Consultation,
    DocumentSearch,
    DocumentSummary,
    HumanName,
    LinkedDocument,
    Patient,
    PatientSearch,
    Problem,
    SdsEndpoint,
    StructuredDocuments,
)
from .spine import PersonalDemographics, SdsCache, SpineDirectory

__all__ = [
    "DOCUMENT_SEARCH_INCLUDES",
    "AccessDenied",
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
    "DocumentNotFound",
    "DocumentSearch",
    "DocumentSummary",
    "DuplicateRejected",
    "EndpointNotFound",
    "Forbidden",
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
    "NoPatientConsent",
    "NotFound",
    "NotSupported",
    "Patient",
    "PatientNotFound",
    "PatientSearch",
    "PersonalDemographics",
    "Problem",
    "ProviderEndpoint",
    "ProviderError",
    "ProviderInternalError",
    "ProviderUnavailable",
    "RequestingUser",
    "RetryPolicy",
    "SdsCache",
    "SdsEndpoint",
    "SpineDirectory",
    "SpineProxyError",
    "StructuredDocuments",
    "TLSConfig",
    "Timeouts",
    "binary",
    "build_http_client",
    "build_jwt",
    "error_from_response",
    "nhs_number",
]
