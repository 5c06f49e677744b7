from __future__ import annotations

from django.test import override_settings

from gpconnect.config import ClientConfig
from viewer.services import gpconnect_client_config


def test_the_client_config_is_built_from_the_gpconnect_settings() -> None:
    with override_settings(
        GPCONNECT_CONSUMER_ASID="200000000359",
        GPCONNECT_CONSUMER_ODS_CODE="A11111",
        GPCONNECT_CONSUMER_ORG_NAME="Test Consumer Org",
        GPCONNECT_JWT_ISSUER="https://consumer.example/",
        GPCONNECT_SPINE_PROXY_URL="https://proxy.example",
        GPCONNECT_TLS_CLIENT_CERT="/run/secrets/client.pem",
        GPCONNECT_TLS_CLIENT_KEY="/run/secrets/client.key",
        GPCONNECT_TLS_CA_BUNDLE="/run/secrets/ca.pem",
        GPCONNECT_CONNECT_TIMEOUT=3,
        GPCONNECT_READ_TIMEOUT=25,
    ):
        config = gpconnect_client_config()
    assert isinstance(config, ClientConfig)
    assert config.consumer.asid == "200000000359"
    assert config.consumer.ods_code == "A11111"
    assert config.consumer.organisation_name == "Test Consumer Org"
    assert config.consumer.issuer == "https://consumer.example/"
    assert config.spine_proxy_url == "https://proxy.example"
    assert config.tls.client_cert == "/run/secrets/client.pem"
    assert config.tls.client_key == "/run/secrets/client.key"
    assert config.tls.ca_bundle == "/run/secrets/ca.pem"
    assert (config.timeouts.connect, config.timeouts.read) == (3.0, 25.0)


def test_the_default_settings_give_a_working_sandbox_config() -> None:
    config = gpconnect_client_config()
    # No proxy: the local sandbox is called directly, over plain http without client TLS.
    assert config.spine_proxy_url is None
    assert config.tls.client_cert is None
    assert config.consumer.asid == "999999999999"
