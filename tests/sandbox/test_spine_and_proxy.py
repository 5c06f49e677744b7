"""The Spine around the practices: SDS, PDS, the Spine Secure Proxy's checks, and /scenarios."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from gpconnect.interactions import Interactions
from gpconnect.sandbox.catalogue import PATIENTS, PRACTICES
from gpconnect.sandbox.provider import Sandbox

from .conftest import _ThreadedServer, bound_socket
from .requests import gp_headers

ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"


def sds(http, running, resource, ods, interaction_id):
    query = f"organization={quote(f'{ODS}|{ods}', safe='')}&identifier={quote(f'{INTERACTION}|{interaction_id}', safe='')}"
    return http.get(f"{running.base_url}/spine-directory/FHIR/R4/{resource}?{query}")


@pytest.mark.parametrize("practice", PRACTICES, ids=lambda p: p.ods)
@pytest.mark.parametrize(
    ("interaction", "suffix"),
    [
        (Interactions.DOCUMENTS_SEARCH, "/STU3/1/gpconnect/documents"),
        (Interactions.STRUCTURED_RECORD, "/STU3/1/gpconnect/structured"),
        (Interactions.SLOT_SEARCH, "/STU3/1/gpconnect"),
    ],
)
def test_sds_publishes_each_practices_service_root_and_asid_per_capability(
    http, running_sandbox, practice, interaction, suffix
):
    endpoints = sds(http, running_sandbox, "Endpoint", practice.ods, interaction.id).json()
    devices = sds(http, running_sandbox, "Device", practice.ods, interaction.id).json()
    [endpoint] = [e["resource"] for e in endpoints["entry"]]
    [device] = [e["resource"] for e in devices["entry"]]
    assert endpoint["address"] == f"{running_sandbox.base_url}/{practice.ods}{suffix}"
    assert {"system": "https://fhir.nhs.uk/Id/nhsSpineASID", "value": practice.asid} in device[
        "identifier"
    ]


def test_sds_knows_nothing_of_an_unknown_practice_and_refuses_an_incomplete_query(
    http, running_sandbox
):
    unknown = sds(http, running_sandbox, "Endpoint", "Z99999", Interactions.DOCUMENTS_SEARCH.id)
    assert unknown.status_code == 200 and unknown.json()["total"] == 0
    incomplete = http.get(f"{running_sandbox.base_url}/spine-directory/FHIR/R4/Endpoint")
    assert incomplete.status_code == 400


@pytest.mark.parametrize("patient", PATIENTS, ids=lambda p: p.scenario)
def test_pds_knows_every_sandbox_patient_and_their_practice(http, running_sandbox, patient):
    response = http.get(
        f"{running_sandbox.base_url}/personal-demographics/FHIR/R4/Patient/{patient.nhs_number}"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"][0]["family"] == patient.family
    if patient.restricted:
        assert body["meta"]["security"][0]["code"] == "R"
        assert "generalPractitioner" not in body
    else:
        assert body["generalPractitioner"][0]["identifier"]["value"] == patient.practice_ods
    assert ("deceasedDateTime" in body) is (patient.deceased_days_ago is not None)


@pytest.mark.parametrize(("nhs_number", "status"), [("9990000019", 400), ("9000000009", 404)])
def test_pds_refuses_an_invalid_number_and_does_not_know_others(
    http, running_sandbox, nhs_number, status
):
    assert (
        http.get(
            f"{running_sandbox.base_url}/personal-demographics/FHIR/R4/Patient/{nhs_number}"
        ).status_code
        == status
    )


def test_the_scenarios_catalogue_lists_practices_and_patients_as_json_and_html(
    http, running_sandbox
):
    catalogue = http.get(f"{running_sandbox.base_url}/scenarios").json()
    assert len([p for p in catalogue["practices"] if p["federated"]]) == 3
    assert {p["scenario"] for p in catalogue["patients"]} >= {
        "documents",
        "placeholders",
        "many-documents",
        "no-documents",
        "sensitive",
        "deceased-recent",
        "deceased-expired",
        "no-consent",
        "not-registered",
        "structured",
        "slow",
        "faulty",
        "stress",
    }
    page = http.get(f"{running_sandbox.base_url}/scenarios", headers={"Accept": "text/html"})
    assert page.headers["Content-Type"].startswith("text/html")
    assert "999 000 0018" in page.text and "Riverside Medical Practice" in page.text


# The Spine Secure Proxy ---------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(sandbox_data):
    """A second sandbox whose proxy accepts only our consumer ASID, as the real SSP registers senders."""
    data_dir, record = sandbox_data
    sock = bound_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sandbox = Sandbox(
        base_url=base_url,
        data_dir=data_dir,
        record=record,
        consumer_asids=frozenset({"200000000359"}),
    )
    with _ThreadedServer(sandbox, sock), httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def proxied(client, target, method="GET", **headers):
    base = str(client.base_url).rstrip("/")
    interaction = Interactions.DOCUMENTS_METADATA
    return client.request(
        method,
        f"/ssp/{target.replace('BASE', base)}",
        headers=gp_headers(base, "A20047", interaction, **headers),
    )


def ssp_display(response):
    return response.json()["issue"][0]["details"]["coding"][0]["display"]


def test_the_proxy_forwards_a_well_formed_request_to_the_provider(proxy):
    response = proxied(proxy, "BASE/A20047/STU3/1/gpconnect/documents/metadata")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize(
    ("target", "headers", "status", "display_start"),
    [
        (
            "BASE/A20047/STU3/1/gpconnect/documents/metadata",
            {"Ssp-From": "100000000001"},
            403,
            "ASID_CHECK_FAILED_MESSAGESENDER_100000000001",
        ),
        (
            "BASE/A20047/STU3/1/gpconnect/documents/metadata",
            {"Ssp-To": "999999999999"},
            403,
            "PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_999999999999",
        ),
        ("BASE/A20047/STU3/1/gpconnect/structured/metadata", {}, 400, "ENDPOINT_"),
        ("BASE/a20047/STU3/1/gpconnect/documents/metadata", {}, 400, "ENDPOINT_"),
        (
            "http://elsewhere.example/A20047/STU3/1/gpconnect/documents/metadata",
            {},
            400,
            "ENDPOINT_",
        ),
    ],
)
def test_the_proxy_applies_its_own_checks_with_its_own_error_bodies(
    proxy, target, headers, status, display_start
):
    response = proxied(proxy, target, **headers)
    assert response.status_code == status
    assert ssp_display(response).startswith(display_start)
    assert response.headers["Cache-Control"] == "no-store"


def test_the_proxy_refuses_a_verb_the_interaction_does_not_use(proxy):
    response = proxied(proxy, "BASE/A20047/STU3/1/gpconnect/documents/metadata", method="POST")
    assert response.status_code == 405


def test_the_proxy_cannot_reach_a_provider_that_is_not_there(proxy):
    response = proxied(proxy, "http://127.0.0.1:9/A20047/STU3/1/gpconnect/documents/metadata")
    assert response.status_code in (400, 502)
