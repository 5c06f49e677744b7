"""PDS trace and SDS lookup: the Spine calls made before talking to a practice."""

from __future__ import annotations

import httpx
import pytest

from gpconnect import (
    Capability,
    EndpointNotFound,
    Interactions,
    PatientNotFound,
    PersonalDemographics,
    ProviderUnavailable,
    SdsCache,
    SpineDirectory,
)
from tests.fixtures import fixture_json

from .helpers import FakeProvider, json_response

SDS = "https://sds.example.nhs.uk/spine-directory/FHIR/R4"
PDS = "https://pds.example.nhs.uk/personal-demographics/FHIR/R4"


def searchset(*resources):
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{SDS}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }


def documents_endpoint():
    endpoint = fixture_json("sds_fhir_endpoint.json")
    endpoint["address"] = "https://provider.example.nhs.uk/A20047/STU3/1/gpconnect/documents"
    # The two SDS examples come from different organisations; make the party keys agree
    # as they do for one practice, since the ASID is matched on the party key.
    for identifier in endpoint["identifier"]:
        if identifier["system"] == "https://fhir.nhs.uk/Id/nhsMhsPartyKey":
            identifier["value"] = "A20047-821870"
    return endpoint


def directory(provider, cache=None):
    return SpineDirectory(
        SDS, http=httpx.Client(transport=httpx.MockTransport(provider)), api_key="k3y", cache=cache
    )


def test_sds_gives_the_service_root_from_the_endpoint_and_the_asid_from_the_device():
    provider = FakeProvider().queue(
        json_response(200, searchset(documents_endpoint())),
        json_response(200, searchset(fixture_json("sds_fhir_device.json"))),
    )
    endpoint = directory(provider).provider_endpoint("a20047", Interactions.DOCUMENTS_SEARCH)

    assert (
        endpoint.service_root == "https://provider.example.nhs.uk/A20047/STU3/1/gpconnect/documents"
    )
    assert endpoint.asid == "200000000985"
    assert endpoint.ods_code == "A20047"
    assert endpoint.capability is Capability.DOCUMENTS


def test_sds_is_asked_by_ods_code_and_interaction_id_with_the_api_key():
    provider = FakeProvider().queue(
        json_response(200, searchset(documents_endpoint())),
        json_response(200, searchset(fixture_json("sds_fhir_device.json"))),
    )
    directory(provider).lookup("A20047", Interactions.DOCUMENTS_SEARCH)

    endpoint_request, device_request = provider.requests
    assert endpoint_request.url.path.endswith("/Endpoint")
    assert endpoint_request.url.params.get_list("organization") == [
        "https://fhir.nhs.uk/Id/ods-organization-code|A20047"
    ]
    assert endpoint_request.url.params.get_list("identifier") == [
        "https://fhir.nhs.uk/Id/nhsServiceInteractionId|"
        "urn:nhs:names:services:gpconnect:documents:fhir:rest:search:documentreference-1"
    ]
    assert endpoint_request.headers["apikey"] == "k3y"
    assert device_request.url.path.endswith("/Device")
    assert (
        "https://fhir.nhs.uk/Id/nhsMhsPartyKey|A20047-821870"
        in device_request.url.params.get_list("identifier")
    )


def test_a_second_lookup_in_the_same_session_is_answered_from_the_cache():
    provider = FakeProvider().queue(
        json_response(200, searchset(documents_endpoint())),
        json_response(200, searchset(fixture_json("sds_fhir_device.json"))),
    )
    cache = SdsCache()
    first = directory(provider, cache).lookup("A20047", Interactions.DOCUMENTS_SEARCH)
    restored = SdsCache.from_dict(cache.to_dict())  # as a web session would store it
    second = directory(provider, restored).lookup("A20047", Interactions.DOCUMENTS_SEARCH)

    assert second == first
    assert len(provider.requests) == 2


def test_a_practice_without_an_sds_entry_is_not_set_up_for_gp_connect():
    provider = FakeProvider().queue(json_response(200, searchset()))
    with pytest.raises(EndpointNotFound) as caught:
        directory(provider).lookup("B99999", Interactions.DOCUMENTS_SEARCH)
    assert "not set up" in caught.value.message
    assert caught.value.trace_id == provider.last.headers["X-Request-ID"]


def test_sds_not_answering_is_retried_then_reported_unavailable():
    provider = FakeProvider().queue(*[httpx.ConnectError("refused")] * 3)
    spine = SpineDirectory(
        SDS, http=httpx.Client(transport=httpx.MockTransport(provider)), sleep=lambda s: None
    )
    with pytest.raises(ProviderUnavailable):
        spine.lookup("A20047", Interactions.DOCUMENTS_SEARCH)
    assert len(provider.requests) == 3


def pds(provider):
    return PersonalDemographics(PDS, http=httpx.Client(transport=httpx.MockTransport(provider)))


def test_a_pds_trace_gives_the_registered_practice_and_demographics():
    provider = FakeProvider().queue(json_response(200, fixture_json("pds_fhir_patient.json")))
    patient, request_id = pds(provider).trace("900 000 0009")

    assert str(provider.last.url) == f"{PDS}/Patient/9000000009"
    assert request_id == provider.last.headers["X-Request-ID"]
    assert patient.nhs_number == "9000000009"
    assert patient.registered_practice_ods == "Y12345"
    assert patient.name.family == "Smith"
    assert patient.restricted is False


def test_a_restricted_patient_is_flagged_so_gp_connect_is_not_called():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("pds_fhir_patient_sensitive.json"))
    )
    patient, _ = pds(provider).trace("9000000025")
    assert patient.restricted is True


def test_an_nhs_number_pds_does_not_know_is_patient_not_found():
    provider = FakeProvider().queue(
        json_response(
            404,
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "not-found",
                        "details": {
                            "coding": [
                                {
                                    "system": "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode",
                                    "code": "RESOURCE_NOT_FOUND",
                                }
                            ]
                        },
                    }
                ],
            },
        )
    )
    with pytest.raises(PatientNotFound) as caught:
        pds(provider).trace("9690937286")
    assert "Personal Demographics Service" in caught.value.message
    assert caught.value.http_status == 404
