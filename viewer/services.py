"""The only bridge between Django and the gpconnect library.

Views and tasks call these functions; nothing else reads GP Connect settings or builds
`gpconnect` objects, so the library stays free of Django.
"""

from __future__ import annotations

from django.conf import settings

from gpconnect.config import ClientConfig, Consumer, Timeouts, TLSConfig


def gpconnect_client_config() -> ClientConfig:
    """Return the library's client configuration built from the GPCONNECT_* settings."""
    return ClientConfig(
        consumer=Consumer(
            asid=settings.GPCONNECT_CONSUMER_ASID,
            ods_code=settings.GPCONNECT_CONSUMER_ODS_CODE,
            organisation_name=settings.GPCONNECT_CONSUMER_ORG_NAME,
            issuer=settings.GPCONNECT_JWT_ISSUER,
        ),
        spine_proxy_url=settings.GPCONNECT_SPINE_PROXY_URL,
        tls=TLSConfig(
            client_cert=settings.GPCONNECT_TLS_CLIENT_CERT,
            client_key=settings.GPCONNECT_TLS_CLIENT_KEY,
            ca_bundle=settings.GPCONNECT_TLS_CA_BUNDLE,
        ),
        timeouts=Timeouts(
            connect=float(settings.GPCONNECT_CONNECT_TIMEOUT),
            read=float(settings.GPCONNECT_READ_TIMEOUT),
        ),
    )
