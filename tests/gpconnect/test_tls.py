"""Mutual TLS: the client presents its certificate and verifies the provider's, for real."""

from __future__ import annotations

import http.server
import ssl
import threading

import httpx
import pytest
import trustme

from gpconnect import ClientConfig, Consumer, TLSConfig, build_http_client

CONSUMER = Consumer(asid="200000000359", ods_code="RR8", organisation_name="T", issuer="https://t/")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        peer = self.connection.getpeercert()
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        body = subject.get("commonName", "none").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mutual_tls_server(tmp_path):
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("consumer.example.nhs.uk", common_name="consumer.example.nhs.uk")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    for blob in client_cert.cert_chain_pems:
        blob.write_to_path(str(cert_path), append=True)
    client_cert.private_key_pem.write_to_path(str(key_path))
    yield f"https://127.0.0.1:{httpd.server_port}/", ca_path, cert_path, key_path
    httpd.shutdown()
    httpd.server_close()


def test_the_client_presents_its_certificate_to_a_provider_that_requires_one(mutual_tls_server):
    url, ca, cert, key = mutual_tls_server
    config = ClientConfig(
        consumer=CONSUMER,
        tls=TLSConfig(client_cert=str(cert), client_key=str(key), ca_bundle=str(ca)),
    )
    with build_http_client(config) as http:
        response = http.get(url)
    assert response.text == "consumer.example.nhs.uk"


def test_without_a_client_certificate_the_provider_refuses_the_connection(mutual_tls_server):
    url, ca, _, _ = mutual_tls_server
    config = ClientConfig(consumer=CONSUMER, tls=TLSConfig(ca_bundle=str(ca)))
    with build_http_client(config) as http, pytest.raises(httpx.TransportError):
        http.get(url)
