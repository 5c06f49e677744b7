"""Configuration for a GP Connect consumer, as frozen dataclasses.

Nothing here reads the environment: a Django project, a script or a test builds these
objects from whatever configuration it has and hands them to the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .interactions import Capability


class ConfigurationError(ValueError):
    """Raised when a configuration value cannot work against a GP Connect provider."""


# The codes of CodeSystem GPConnect-OrganisationType-1 (SPEC §3.3).
ORGANISATION_TYPES = frozenset({"gp-practice", "urgent-care"})


@dataclass(frozen=True)
class Consumer:
    """The consuming system: who we are on the Spine.

    `asid` goes in `Ssp-From`; `ods_code` and `organisation_name` become the JWT
    `requesting_organization`; `issuer` is the JWT `iss` (our Spine endpoint URL); the
    device fields become the JWT `requesting_device`.

    For appointments we are also the booking organisation: `ods_code` and
    `organisation_type` (`gp-practice` or `urgent-care`) go in every free-slot search's
    `searchFilter`, and a booking names us with `organisation_name` and `organisation_phone`
    (SPEC §3.3, §3.4).
    """

    asid: str
    ods_code: str
    organisation_name: str
    issuer: str
    device_identifier: str = "gpconnect-document-viewer"
    device_model: str = "GP Connect document viewer"
    device_version: str = "0.1.0"
    device_identifier_system: str = "https://gpconnect-viewer.example/Id/device-identifier"
    user_id_system: str = "https://gpconnect-viewer.example/Id/user-guid"
    organisation_type: str | None = None
    organisation_phone: str | None = None

    def __post_init__(self) -> None:
        for name in ("asid", "ods_code", "organisation_name", "issuer"):
            if not getattr(self, name).strip():
                raise ConfigurationError(f"Consumer.{name} must not be empty")
        if self.organisation_type is not None and self.organisation_type not in ORGANISATION_TYPES:
            raise ConfigurationError(
                f"Consumer.organisation_type must be one of {sorted(ORGANISATION_TYPES)}, "
                f"not {self.organisation_type!r}"
            )


@dataclass(frozen=True)
class RequestingUser:
    """The person the request is made for; becomes the JWT `requesting_practitioner`.

    `local_user_id` is our own identifier for the user: it is both the JWT `sub` and the
    practitioner's `id`, which providers require to be equal. SDS ids default to "UNK",
    which the specification allows when a user has none.
    """

    local_user_id: str
    family_name: str
    given_names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    sds_user_id: str = "UNK"
    sds_role_profile_id: str = "UNK"

    def __post_init__(self) -> None:
        if not self.local_user_id.strip():
            raise ConfigurationError("RequestingUser.local_user_id must not be empty")
        if not self.family_name.strip():
            raise ConfigurationError("RequestingUser.family_name must not be empty")


@dataclass(frozen=True)
class ProviderEndpoint:
    """One provider service root (per capability) and the ASID that answers for it.

    The service root is what SDS publishes as the endpoint address; it is the JWT `aud`
    and, after the Spine Secure Proxy prefix, the start of every request URL.
    """

    service_root: str
    asid: str
    ods_code: str = ""
    capability: Capability | None = None  # when set, the client refuses other capabilities' calls

    def __post_init__(self) -> None:
        if not self.service_root.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"Service root {self.service_root!r} must be an absolute http(s) URL"
            )
        # The specification forbids a trailing slash, and SSP compares prefixes exactly.
        if self.service_root.endswith("/"):
            raise ConfigurationError(f"Service root {self.service_root!r} must not end with '/'")
        if not self.asid.strip():
            raise ConfigurationError("ProviderEndpoint.asid must not be empty")


@dataclass(frozen=True)
class TLSConfig:
    """Mutual TLS material. With no client certificate, plain server verification is used."""

    client_cert: str | None = None
    client_key: str | None = None
    ca_bundle: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if self.client_key and not self.client_cert:
            raise ConfigurationError("A TLS client key needs a client certificate")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Documents get a longer read timeout: a 5 MB scan can take a while on the Spine."""

    connect: float = 5.0
    read: float = 30.0
    binary_read: float = 120.0
    write: float = 30.0
    pool: float = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """How GETs are retried on connection errors, timeouts and 502/503/504. Never POST or PUT."""

    attempts: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts must be at least 1")


@dataclass(frozen=True)
class ClientConfig:
    """Everything a `GPConnectClient` needs apart from the user and the provider.

    `spine_proxy_url` is the SSP base (e.g. `https://proxy.spine.nhs.uk`); `None` calls
    providers directly, which is what the sandbox and local tests do.
    """

    consumer: Consumer
    spine_proxy_url: str | None = None
    tls: TLSConfig = field(default_factory=TLSConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.spine_proxy_url is not None and not self.spine_proxy_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigurationError(
                f"Spine proxy URL {self.spine_proxy_url!r} must be an absolute http(s) URL"
            )
