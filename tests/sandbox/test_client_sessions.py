"""Our GPConnectClient completes the specification's consumer sessions against the sandbox."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import replace

import httpx
import pytest

from gpconnect import (
    AccessDenied,
    BinaryDecodeError,
    ClientConfig,
    GPConnectClient,
    Interactions,
    NoPatientConsent,
    PersonalDemographics,
    ProviderUnavailable,
    SpineDirectory,
    TLSConfig,
    build_http_client,
)
from gpconnect.config import RetryPolicy
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO
from gpconnect.sandbox.provider import Sandbox
from gpconnect.sandbox.tls import generate_certificates

from .conftest import RunningSandbox, _ThreadedServer, bound_socket
from .requests import CONSUMER, USER

CONFIG = ClientConfig(consumer=CONSUMER, retry=RetryPolicy(attempts=1))


def spine(running, http):
    return (
        PersonalDemographics(f"{running.base_url}/personal-demographics/FHIR/R4", http=http),
        SpineDirectory(f"{running.base_url}/spine-directory/FHIR/R4", http=http),
    )


def client_for(running, http, nhs_number, interaction=Interactions.DOCUMENTS_SEARCH, config=CONFIG):
    pds, sds = spine(running, http)
    patient, _ = pds.trace(nhs_number)
    endpoint = sds.provider_endpoint(patient.registered_practice_ods, interaction)
    return GPConnectClient(config, user=USER, endpoint=endpoint, http=http)


def sha256_of(client, url):
    digest = hashlib.sha256()
    with client.open_binary(url) as download:
        for chunk in download:
            digest.update(chunk)
    return digest.hexdigest()


def test_pds_sds_find_search_and_retrieve_every_document_of_the_documents_patient(
    running_sandbox, http
):
    nhs_number = PATIENTS_BY_SCENARIO["documents"].nhs_number
    client = client_for(running_sandbox, http, nhs_number)

    found = client.find_patient(nhs_number)
    assert found.patient is not None and found.patient.nhs_number == nhs_number
    search = client.search_documents(found.patient.id)
    generated = {
        d.id: d for d in running_sandbox.sandbox.record.documents if d.patient_nhs == nhs_number
    }

    assert {d.id for d in search.documents} == set(generated)  # the duplicate entry listed once
    for document in search.documents:
        if document.retrievable:
            assert sha256_of(client, document.url) == generated[document.id].sha256, document.title
    assert any(d.not_for_patient_disclosure for d in search.documents)
    assert any(d.internal is False for d in search.documents)
    assert any(d.created is None for d in search.documents)


def test_the_structured_record_lists_linked_documents_which_download_from_access_document(
    running_sandbox, http
):
    nhs_number = PATIENTS_BY_SCENARIO["structured"].nhs_number
    structured = client_for(running_sandbox, http, nhs_number, Interactions.STRUCTURED_RECORD)
    documents = client_for(running_sandbox, http, nhs_number, Interactions.DOCUMENTS_BINARY)

    result = structured.structured_documents(nhs_number)
    assert result.documents
    assert any(linked.consultations for linked in result.documents)
    assert any(linked.problems for linked in result.documents)
    generated = {d.id: d for d in running_sandbox.sandbox.record.documents}
    for linked in result.documents:
        if linked.document.retrievable:
            assert sha256_of(documents, linked.document.url) == generated[linked.document.id].sha256


def test_the_same_session_works_through_the_spine_secure_proxy(running_sandbox, http):
    nhs_number = PATIENTS_BY_SCENARIO["deceased-recent"].nhs_number
    proxied = replace(CONFIG, spine_proxy_url=f"{running_sandbox.base_url}/ssp")
    client = client_for(running_sandbox, http, nhs_number, config=proxied)

    patient = client.find_patient(nhs_number).patient
    assert patient is not None and patient.deceased
    documents = client.search_documents(patient.id).documents
    assert documents
    assert sha256_of(client, documents[0].url)


def test_a_patient_who_dissented_is_found_but_their_documents_are_refused(running_sandbox, http):
    nhs_number = PATIENTS_BY_SCENARIO["no-consent"].nhs_number
    client = client_for(running_sandbox, http, nhs_number)
    patient = client.find_patient(nhs_number).patient
    with pytest.raises(NoPatientConsent):
        client.search_documents(patient.id)


def test_a_practice_with_access_document_off_is_access_denied(running_sandbox, http):
    nhs_number = PATIENTS_BY_SCENARIO["access-denied"].nhs_number
    with pytest.raises(AccessDenied):
        client_for(running_sandbox, http, nhs_number).find_patient(nhs_number)


def test_pds_flags_the_sensitive_patient_as_restricted(running_sandbox, http):
    pds, _ = spine(running_sandbox, http)
    patient, _ = pds.trace(PATIENTS_BY_SCENARIO["sensitive"].nhs_number)
    assert patient.restricted is True
    assert patient.registered_practice_ods is None


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("stops-half-way", ProviderUnavailable),
        ("invalid-base64", BinaryDecodeError),
        ("non-json", BinaryDecodeError),
    ],
)
def test_a_broken_document_from_the_faulty_patient_fails_loudly(
    running_sandbox, http, fault, error
):
    nhs_number = PATIENTS_BY_SCENARIO["faulty"].nhs_number
    document = next(
        d
        for d in running_sandbox.sandbox.record.documents
        if d.patient_nhs == nhs_number and d.fault == fault
    )
    # The faulty patient also answers 503 now and then: retries absorb those, not the fault.
    patient_config = replace(CONFIG, retry=RetryPolicy(attempts=12, initial_backoff=0.01, jitter=0))
    client = client_for(running_sandbox, http, nhs_number, config=patient_config)
    url = f"{client.endpoint.service_root}/Binary/{document.id}"
    with pytest.raises(error), client.open_binary(url) as download:
        for _ in download:
            pass


def test_the_client_talks_to_the_sandbox_over_mutual_tls_and_is_refused_without_a_certificate(
    sandbox_data, tmp_path
):
    certificates = generate_certificates(tmp_path / "certs")
    data_dir, record = sandbox_data
    sock = bound_socket()
    base_url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    tls = {
        "ssl_certfile": str(certificates.server_cert),
        "ssl_keyfile": str(certificates.server_key),
        "ssl_ca_certs": str(certificates.ca_cert),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }
    with_certificate = replace(
        CONFIG,
        tls=TLSConfig(
            client_cert=str(certificates.client_cert),
            client_key=str(certificates.client_key),
            ca_bundle=str(certificates.ca_cert),
        ),
    )
    without_certificate = replace(CONFIG, tls=TLSConfig(ca_bundle=str(certificates.ca_cert)))
    nhs_number = PATIENTS_BY_SCENARIO["documents"].nhs_number
    sandbox = Sandbox(base_url=base_url, data_dir=data_dir, record=record)

    with _ThreadedServer(sandbox, sock, **tls):
        with build_http_client(with_certificate) as http:
            running = RunningSandbox(base_url, sandbox)
            client = client_for(running, http, nhs_number, config=with_certificate)
            found = client.find_patient(nhs_number).patient
            assert found is not None
            document = next(d for d in client.search_documents(found.id).documents if d.retrievable)
            expected = next(d for d in record.documents if d.id == document.id)
            assert sha256_of(client, document.url) == expected.sha256
        with build_http_client(without_certificate) as http, pytest.raises(httpx.TransportError):
            http.get(f"{base_url}/scenarios")
