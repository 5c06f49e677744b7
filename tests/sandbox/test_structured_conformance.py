"""Access Record Structured conformance: the parameter rules and what the bundle must hold (SPEC §2)."""

from __future__ import annotations

import pytest

from gpconnect.interactions import Interactions
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO

from .requests import gp_headers, spine_code

NHS = "https://fhir.nhs.uk/Id/nhs-number"
STRUCTURED = PATIENTS_BY_SCENARIO["structured"]


def post(http, running, parameters, nhs_number=STRUCTURED.nhs_number, ods=STRUCTURED.practice_ods):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patientNHSNumber", "valueIdentifier": {"system": NHS, "value": nhs_number}},
            *parameters,
        ],
    }
    return http.post(
        f"{running.base_url}/{ods}/STU3/1/gpconnect/structured/Patient/$gpc.getstructuredrecord",
        json=body,
        headers=gp_headers(running.base_url, ods, Interactions.STRUCTURED_RECORD),
    )


def resources(response, resource_type):
    return [
        e["resource"]
        for e in response.json()["entry"]
        if e["resource"]["resourceType"] == resource_type
    ]


@pytest.mark.parametrize(
    ("parameters", "status", "code"),
    [
        ([{"name": "includeProblems", "part": ["not-a-parameter"]}], 422, "INVALID_RESOURCE"),
        (
            [
                {
                    "name": "includeConsultations",
                    "part": [
                        {"name": "consultationSearchPeriod", "valuePeriod": {"start": 20200101}}
                    ],
                }
            ],
            422,
            "INVALID_PARAMETER",
        ),
        (
            [
                {
                    "name": "includeConsultations",
                    "part": [
                        {
                            "name": "consultationSearchPeriod",
                            "valuePeriod": {"start": "2020-01-01"},
                        },
                        {"name": "includeNumberOfMostRecent", "valuePositiveInt": 3},
                    ],
                }
            ],
            422,
            "INVALID_RESOURCE",
        ),
        (
            [{"name": "includeProblems", "part": [{"name": "filterStatus", "valueCode": "bogus"}]}],
            422,
            "INVALID_PARAMETER",
        ),
        (
            [
                {"name": "includeConsultations"},
                {
                    "name": "includeMedication",
                    "part": [{"name": "medicationSearchFromDate", "valueDate": "2020-01-01"}],
                },
            ],
            422,
            "INVALID_PARAMETER",
        ),
        (
            [
                {"name": "includeConsultations"},
                {
                    "name": "includeProblems",
                    "part": [{"name": "filterStatus", "valueCode": "active"}],
                },
            ],
            422,
            "INVALID_PARAMETER",
        ),
        ([{"name": "includeAllergies"}], 422, "INVALID_PARAMETER"),
        ([{"name": "includeEverything"}], 422, "INVALID_PARAMETER"),
    ],
)
def test_a_structured_request_outside_the_operation_definition_is_refused_not_a_crash(
    http, running_sandbox, parameters, status, code
):
    response = post(http, running_sandbox, parameters)
    assert (response.status_code, spine_code(response)) == (status, code)


def test_an_invalid_nhs_number_and_an_unshared_patient_are_refused(http, running_sandbox):
    invalid = post(http, running_sandbox, [{"name": "includeProblems"}], nhs_number="9990000019")
    assert (invalid.status_code, spine_code(invalid)) == (400, "INVALID_NHS_NUMBER")
    elsewhere = post(
        http,
        running_sandbox,
        [{"name": "includeProblems"}],
        nhs_number=PATIENTS_BY_SCENARIO["documents"].nhs_number,
    )
    assert (elsewhere.status_code, spine_code(elsewhere)) == (404, "PATIENT_NOT_FOUND")
    dissent = PATIENTS_BY_SCENARIO["no-consent"]
    refused = post(
        http,
        running_sandbox,
        [{"name": "includeProblems"}],
        nhs_number=dissent.nhs_number,
        ods=dissent.practice_ods,
    )
    assert (refused.status_code, spine_code(refused)) == (403, "NO_PATIENT_CONSENT")


def test_the_bundle_is_a_collection_with_the_usual_gp_and_the_trace_id(http, running_sandbox):
    response = post(http, running_sandbox, [{"name": "includeProblems"}])
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "collection"
    assert bundle["id"] == response.request.headers["Ssp-TraceID"]
    [patient] = resources(response, "Patient")
    usual_gp = patient["generalPractitioner"][0]["reference"].split("/")[1]
    assert usual_gp in {p["id"] for p in resources(response, "Practitioner")}
    assert any(
        r["practitioner"]["reference"] == f"Practitioner/{usual_gp}"
        for r in resources(response, "PractitionerRole")
    )


@pytest.mark.parametrize("status", ["active", "inactive"])
def test_problems_can_be_filtered_by_status(http, running_sandbox, status):
    response = post(
        http,
        running_sandbox,
        [{"name": "includeProblems", "part": [{"name": "filterStatus", "valueCode": status}]}],
    )
    conditions = resources(response, "Condition")
    expected = [
        p
        for p in running_sandbox.sandbox.record.problems
        if p.patient_nhs == STRUCTURED.nhs_number and p.active == (status == "active")
    ]
    assert {c["id"] for c in conditions} == {p.id for p in expected}
    assert all(c["clinicalStatus"] == status for c in conditions)


def test_secondary_lists_use_the_specifications_codes(http, running_sandbox):
    response = post(
        http, running_sandbox, [{"name": "includeConsultations"}, {"name": "includeProblems"}]
    )
    codes = {lst["code"]["coding"][0]["code"] for lst in resources(response, "List")}
    assert {
        "consultations-documents-contained-in-consultations",
        "problems-documents-related-to-problems",
    } <= codes


def test_a_most_recent_count_limits_the_consultations(http, running_sandbox):
    response = post(
        http,
        running_sandbox,
        [
            {
                "name": "includeConsultations",
                "part": [{"name": "includeNumberOfMostRecent", "valuePositiveInt": 1}],
            }
        ],
    )
    assert len(resources(response, "Encounter")) == 1
