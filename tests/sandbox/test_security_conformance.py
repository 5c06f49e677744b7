"""JWT, Spine headers and HTTP conformance (PEERS §9 "Cross-cutting"), on /metadata as the test pack does."""

from __future__ import annotations

import time

import pytest

from gpconnect.interactions import Interactions
from gpconnect.sandbox.catalogue import PRACTICES_BY_ODS

from .requests import gp_headers, spine_code, token_from, valid_claims

METADATA = Interactions.DOCUMENTS_METADATA


def metadata(http, running, **headers):
    return http.get(
        f"{running.base_url}/A20047/STU3/1/gpconnect/documents/metadata",
        headers=gp_headers(running.base_url, "A20047", METADATA, **headers),
    )


def audience(running):
    return PRACTICES_BY_ODS["A20047"].service_root(running.base_url, "documents")


def claims(running, **changes):
    value = valid_claims(audience(running), METADATA.scope)
    for key, new in changes.items():
        if new is None:
            value.pop(key, None)
        else:
            value[key] = new
    return value


def test_a_valid_request_gets_the_capability_statement(http, running_sandbox):
    response = metadata(http, running_sandbox)
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"
    assert response.headers["Content-Type"].startswith("application/fhir+json")


@pytest.mark.parametrize(
    "claim",
    [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "reason_for_request",
        "requested_scope",
        "requesting_device",
        "requesting_organization",
        "requesting_practitioner",
    ],
)
def test_a_jwt_missing_a_required_claim_is_a_bad_request(http, running_sandbox, claim):
    response = metadata(http, running_sandbox, claims=claims(running_sandbox, **{claim: None}))
    assert (response.status_code, spine_code(response)) == (400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("iat_offset", "lifetime", "status"),
    [
        (0, 300, 200),
        (0, 301, 400),
        (0, 299, 400),
        (0, -1, 400),  # exp before iat
        (200, 300, 200),  # a future iat is tolerated
        (-600, 300, 400),  # expired
    ],
)
def test_jwt_timing_is_checked_as_the_test_pack_does(
    http, running_sandbox, iat_offset, lifetime, status
):
    iat = int(time.time()) + iat_offset
    response = metadata(
        http, running_sandbox, claims=claims(running_sandbox, iat=iat, exp=iat + lifetime)
    )
    assert response.status_code == status
    if status == 400:
        assert spine_code(response) == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        (
            {"requested_scope": "patient/*.read"},
            400,
            "BAD_REQUEST",
        ),  # metadata needs organization/*.read
        ({"aud": "https://somewhere-else.example/A20047/STU3/1"}, 400, "BAD_REQUEST"),
        ({"reason_for_request": "migration"}, 400, "BAD_REQUEST"),
        ({"sub": "someone-else"}, 400, "BAD_REQUEST"),
        ({"requested_record": {"resourceType": "Patient"}}, 400, "BAD_REQUEST"),
        (
            {"requesting_device": {"resourceType": "Device", "identifier": "not-a-list"}},
            422,
            "INVALID_RESOURCE",
        ),
        ({"requesting_device": {"resourceType": "Patient"}}, 400, "BAD_REQUEST"),
        ({"requested_scope": "organization/*.read conf/N"}, 200, None),
    ],
)
def test_jwt_claims_are_checked_against_the_interaction_and_the_service_root(
    http, running_sandbox, changes, status, code
):
    response = metadata(http, running_sandbox, claims=claims(running_sandbox, **changes))
    assert (response.status_code, spine_code(response)) == (status, code)


def test_a_practitioner_with_unknown_sds_identity_and_no_role_profile_is_accepted(
    http, running_sandbox
):
    value = claims(running_sandbox)
    value["requesting_practitioner"]["identifier"] = [
        {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "UNK"}
    ]
    assert metadata(http, running_sandbox, claims=value).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30=.",  # padded
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2lnbmF0dXJl",  # signed, HS256
    ],
)
def test_a_malformed_or_signed_token_is_a_bad_request(http, running_sandbox, token):
    response = metadata(http, running_sandbox, token=token)
    assert (response.status_code, spine_code(response)) == (400, "BAD_REQUEST")


def test_a_header_other_than_alg_none_typ_jwt_is_refused(http, running_sandbox):
    token = token_from(claims(running_sandbox), header={"alg": "none", "typ": "JWT", "kid": "1"})
    assert metadata(http, running_sandbox, token=token).status_code == 400


@pytest.mark.parametrize(
    "overrides",
    [
        {"Ssp-TraceID": None},
        {"Ssp-From": None},
        {"Ssp-To": None},
        {"Ssp-InteractionID": None},
        {"Authorization": None},
        {"Ssp-TraceID": "not-a-guid"},
        {"Ssp-To": "918999198002"},  # another practice's ASID
        {"Ssp-InteractionID": Interactions.DOCUMENTS_SEARCH.id},  # does not match the route
    ],
)
def test_missing_or_inconsistent_spine_headers_are_a_bad_request(http, running_sandbox, overrides):
    response = metadata(http, running_sandbox, **overrides)
    assert (response.status_code, spine_code(response)) == (400, "BAD_REQUEST")
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        ("application/fhir+json", 200, "application/fhir+json"),
        ("*/*", 200, "application/fhir+json"),
        ("application/fhir+xml", 200, "application/fhir+xml"),
        ("text/html", 415, "application/fhir+json"),
    ],
)
def test_the_response_format_follows_accept(http, running_sandbox, accept, status, content_type):
    response = metadata(http, running_sandbox, Accept=accept)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type)


@pytest.mark.parametrize(
    ("format_parameter", "accept", "content_type"),
    [
        ("application/fhir%2Bjson", "application/fhir+xml", "application/fhir+json"),
        ("application/fhir%2Bxml", "application/fhir+json", "application/fhir+xml"),
    ],
)
def test_format_wins_over_accept(http, running_sandbox, format_parameter, accept, content_type):
    response = http.get(
        f"{running_sandbox.base_url}/A20047/STU3/1/gpconnect/documents/metadata?_format={format_parameter}",
        headers=gp_headers(running_sandbox.base_url, "A20047", METADATA, Accept=accept),
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(content_type)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/A20047/STU3/1/gpconnect/documents/patient", 404),  # wrong case
        ("GET", "/A20047/STU3/1/gpconnect/documents/Nothing", 404),
        ("DELETE", "/A20047/STU3/1/gpconnect/documents/metadata", 405),
        ("PATCH", "/A20047/STU3/1/gpconnect/documents/metadata", 405),
    ],
)
def test_unknown_endpoints_and_wrong_verbs_are_refused_with_an_operation_outcome(
    http, running_sandbox, method, path, status
):
    response = http.request(
        method,
        running_sandbox.base_url + path,
        headers=gp_headers(running_sandbox.base_url, "A20047", METADATA),
    )
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["Cache-Control"] == "no-store"
