"""Fault injection for demos and tests, and the sandbox's command line."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from gpconnect import ClientConfig, GPConnectClient, ProviderEndpoint, ProviderUnavailable
from gpconnect.config import RetryPolicy
from gpconnect.interactions import Capability, Interactions
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO, PRACTICES_BY_ODS, Faults
from gpconnect.sandbox.cli import build_parser, configured_faults
from gpconnect.sandbox.provider import Sandbox

from .conftest import _ThreadedServer, bound_socket
from .requests import CONSUMER, USER, gp_headers


@pytest.fixture
def faulty_sandbox(sandbox_data):
    """A sandbox whose faults each test sets for itself."""
    data_dir, record = sandbox_data
    sock = bound_socket()
    sandbox = Sandbox(
        base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", data_dir=data_dir, record=record
    )
    with _ThreadedServer(sandbox, sock):
        yield sandbox


def documents_client(sandbox, http, ods="A20047", attempts=1):
    practice = PRACTICES_BY_ODS[ods]
    endpoint = ProviderEndpoint(
        service_root=practice.service_root(sandbox.base_url, "documents"),
        asid=practice.asid,
        capability=Capability.DOCUMENTS,
    )
    config = ClientConfig(
        consumer=CONSUMER, retry=RetryPolicy(attempts=attempts, initial_backoff=0.01, jitter=0)
    )
    return GPConnectClient(config, user=USER, endpoint=endpoint, http=http, sleep=lambda s: None)


def test_a_practice_set_to_fail_every_request_answers_503_and_the_client_gives_up_cleanly(
    faulty_sandbox, http
):
    faulty_sandbox.faults["A20047"] = Faults(error_rate=1.0)
    client = documents_client(faulty_sandbox, http, attempts=3)
    with pytest.raises(ProviderUnavailable):
        client.find_patient(PATIENTS_BY_SCENARIO["documents"].nhs_number)


def test_an_intermittent_503_rate_is_absorbed_by_the_clients_retries(faulty_sandbox, http):
    faulty_sandbox.faults["A20047"] = Faults(error_rate=0.5)
    client = documents_client(faulty_sandbox, http, attempts=12)
    for _ in range(5):
        assert client.find_patient(PATIENTS_BY_SCENARIO["documents"].nhs_number).patient is not None


def test_a_binary_fault_set_for_one_document_stops_that_download_half_way(faulty_sandbox, http):
    document = next(
        d
        for d in faulty_sandbox.record.documents
        if d.patient_nhs == PATIENTS_BY_SCENARIO["documents"].nhs_number
        and d.file
        and d.size > 100_000
    )
    faulty_sandbox.binary_faults[document.id] = "stops-half-way"
    client = documents_client(faulty_sandbox, http)
    received = 0
    with (
        pytest.raises(ProviderUnavailable),
        client.open_binary(f"{client.endpoint.service_root}/Binary/{document.id}") as d,
    ):
        for chunk in d:
            received += len(chunk)
    assert 0 < received < document.size


def test_a_slowly_dripping_document_still_arrives_whole(faulty_sandbox, http):
    nhs_number = PATIENTS_BY_SCENARIO["faulty"].nhs_number
    document = next(
        d
        for d in faulty_sandbox.record.documents
        if d.patient_nhs == nhs_number and d.fault == "slow-drip"
    )
    client = documents_client(faulty_sandbox, http, ods="C81016")
    faulty_sandbox.faults[nhs_number] = Faults()  # no 503s for this test
    digest = hashlib.sha256()
    with client.open_binary(f"{client.endpoint.service_root}/Binary/{document.id}") as download:
        for chunk in download:
            digest.update(chunk)
    assert digest.hexdigest() == document.sha256


def test_latency_and_error_rates_come_from_the_command_line_by_practice_or_patient():
    args = build_parser().parse_args(
        [
            "--latency",
            "A20047=2.5",
            "--error-rate",
            "9990000018=0.25",
            "--binary-fault",
            "doc-1=non-json",
        ]
    )
    faults = configured_faults(args.latency, args.error_rate)
    assert faults["A20047"] == Faults(latency_seconds=2.5)
    assert faults["9990000018"] == Faults(error_rate=0.25)
    assert dict(args.binary_fault) == {"doc-1": "non-json"}


def test_an_unknown_fault_key_is_refused_with_a_clear_message():
    with pytest.raises(SystemExit, match="neither a sandbox practice"):
        configured_faults([("Z99999", "1")], [])


def test_the_slow_patient_is_configured_with_several_seconds_of_latency():
    assert PATIENTS_BY_SCENARIO["slow"].faults.latency_seconds >= 3


def test_make_certs_writes_a_ca_and_server_and_client_certificates(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gpconnect.sandbox", "--make-certs", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {"ca.pem", "server.pem", "server.key", "client.pem", "client.key"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert "client" in result.stdout


def test_python_m_gpconnect_sandbox_serves_the_scenarios_on_the_port_it_is_given(tmp_path):
    with bound_socket() as sock:
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpconnect.sandbox",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--no-stress",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/scenarios", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    detail = (
                        process.communicate()[1].decode()
                        if process.poll() is not None
                        else "timeout"
                    )
                    raise AssertionError(detail) from None
                time.sleep(0.2)
        assert response.status_code == 200
        documents_root = response.json()["practices"][0]["service_roots"]["documents"]
        assert documents_root == f"http://127.0.0.1:{port}/A20047/STU3/1/gpconnect/documents"
        metadata = httpx.get(
            documents_root + "/metadata",
            headers=gp_headers(
                f"http://127.0.0.1:{port}", "A20047", Interactions.DOCUMENTS_METADATA
            ),
        )
        assert metadata.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)  # reads and closes the pipes


@pytest.mark.parametrize("route", ["search", "binary"])
def test_a_patients_error_rate_reaches_their_document_search_and_documents_too(
    faulty_sandbox, http, route
):
    someone = PATIENTS_BY_SCENARIO["documents"]
    faulty_sandbox.faults[someone.nhs_number] = Faults(error_rate=1.0)
    client = documents_client(faulty_sandbox, http)
    document = next(
        d for d in faulty_sandbox.record.documents if d.patient_nhs == someone.nhs_number and d.file
    )
    with pytest.raises(ProviderUnavailable):
        if route == "search":
            client.search_documents(someone.logical_id)
        else:
            with client.open_binary(
                f"{client.endpoint.service_root}/Binary/{document.id}"
            ) as download:
                b"".join(download)


def test_the_faulty_patients_small_document_really_stops_half_way(faulty_sandbox, http):
    nhs_number = PATIENTS_BY_SCENARIO["faulty"].nhs_number
    faulty_sandbox.faults[nhs_number] = Faults()  # no 503s: only the document's own fault
    document = next(
        d
        for d in faulty_sandbox.record.documents
        if d.patient_nhs == nhs_number and d.fault == "stops-half-way"
    )
    client = documents_client(faulty_sandbox, http, ods="C81016")
    received = 0
    with (
        pytest.raises(ProviderUnavailable),
        client.open_binary(f"{client.endpoint.service_root}/Binary/{document.id}") as d,
    ):
        for chunk in d:
            received += len(chunk)
    assert received <= document.size // 2


def test_a_slow_drip_arrives_in_many_small_pieces(faulty_sandbox, http):
    nhs_number = PATIENTS_BY_SCENARIO["faulty"].nhs_number
    faulty_sandbox.faults[nhs_number] = Faults()
    document = next(
        d
        for d in faulty_sandbox.record.documents
        if d.patient_nhs == nhs_number and d.fault == "slow-drip"
    )
    practice = PRACTICES_BY_ODS["C81016"]
    url = f"{practice.service_root(faulty_sandbox.base_url, 'documents')}/Binary/{document.id}"
    with http.stream(
        "GET",
        url,
        headers=gp_headers(faulty_sandbox.base_url, "C81016", Interactions.DOCUMENTS_BINARY),
    ) as r:
        pieces = [chunk for chunk in r.iter_raw() if chunk]
    assert len(pieces) >= 3


def test_the_sandbox_serves_mutual_tls_from_the_command_line(tmp_path):
    from gpconnect import ClientConfig, TLSConfig, build_http_client

    certs = tmp_path / "certs"
    with bound_socket() as sock:
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpconnect.sandbox",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--no-stress",
            "--tls",
            "--cert-dir",
            str(certs),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    config = ClientConfig(
        consumer=CONSUMER,
        tls=TLSConfig(
            client_cert=str(certs / "client.pem"),
            client_key=str(certs / "client.key"),
            ca_bundle=str(certs / "ca.pem"),
        ),
    )
    try:
        deadline = time.monotonic() + 60
        while not (certs / "client.key").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with build_http_client(config) as client:
            while True:
                try:
                    response = client.get(f"https://127.0.0.1:{port}/scenarios")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise AssertionError(process.communicate()[1].decode()) from None
                    time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["practices"][0]["service_roots"]["documents"].startswith(
            f"https://127.0.0.1:{port}/"
        )
        with (
            build_http_client(
                ClientConfig(consumer=CONSUMER, tls=TLSConfig(ca_bundle=str(certs / "ca.pem")))
            ) as bare,
            pytest.raises(httpx.TransportError),
        ):
            bare.get(f"https://127.0.0.1:{port}/scenarios")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
