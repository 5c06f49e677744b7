"""Access Document conformance: the provider test pack's scenarios (PEERS §9), over real HTTP."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote

import pytest

from gpconnect.interactions import Interactions
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO

from .requests import gp_headers, spine_code

NHS = "https://fhir.nhs.uk/Id/nhs-number"
INCLUDES = (
    "_include=DocumentReference:subject:Patient"
    "&_include=DocumentReference:custodian:Organization"
    "&_include=DocumentReference:author:Organization"
    "&_include=DocumentReference:author:Practitioner"
    "&_revinclude:recurse=PractitionerRole:practitioner"
)


def patient(scenario):
    return PATIENTS_BY_SCENARIO[scenario]


def documents_root(running, ods):
    return f"{running.base_url}/{ods}/STU3/1/gpconnect/documents"


def find(http, running, ods, query, **headers):
    return http.get(
        f"{documents_root(running, ods)}/Patient?{query}",
        headers=gp_headers(running.base_url, ods, Interactions.DOCUMENTS_PATIENT_SEARCH, **headers),
    )


def identifier(nhs_number, system=NHS):
    return "identifier=" + quote(f"{system}|{nhs_number}", safe="")


def entries(response, resource_type):
    return [
        e["resource"]
        for e in response.json().get("entry", [])
        if e["resource"]["resourceType"] == resource_type
    ]


# Find a patient -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "ods", "patients_returned"),
    [
        ("documents", "A20047", 1),
        ("no-documents", "A20047", 0),  # registered at another practice: not an error
        ("sensitive", "A20047", 0),
        ("deceased-recent", "C81016", 1),
        ("deceased-expired", "C81016", 0),
        ("no-consent", "A20047", 1),  # consent is enforced on the document search
        ("not-registered", "A20047", 0),
        ("inactive", "B82617", 0),
    ],
)
def test_finding_a_patient_returns_a_searchset_as_the_test_pack_expects(
    http, running_sandbox, scenario, ods, patients_returned
):
    response = find(http, running_sandbox, ods, identifier(patient(scenario).nhs_number))

    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    assert len(entries(response, "Patient")) == patients_returned
    assert response.headers["Cache-Control"] == "no-store"


def test_the_bundle_id_is_the_trace_id_and_the_patient_carries_its_logical_id(
    http, running_sandbox
):
    trace_id = "0d1c5d2b-7d0e-4f4b-9a3e-2b6f0c8a1e55"
    response = find(
        http,
        running_sandbox,
        "A20047",
        identifier(patient("documents").nhs_number),
        **{"Ssp-TraceID": trace_id},
    )
    assert response.json()["id"] == trace_id
    [found] = entries(response, "Patient")
    assert found["id"] and found["meta"]["profile"] and found["meta"]["versionId"]
    assert found["name"][0]["use"] == "official"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "BAD_REQUEST"),
        ("Identifier=" + quote(f"{NHS}|9990000018", safe=""), 400, "BAD_REQUEST"),
        (identifier("9990000018") + "&" + identifier("9990000018"), 400, "BAD_REQUEST"),
        (identifier("9990000018") + "&" + identifier("9990000026"), 400, "BAD_REQUEST"),
        ("identifier=" + quote("|9990000018", safe=""), 422, "INVALID_PARAMETER"),
        ("identifier=9990000018", 422, "INVALID_PARAMETER"),
        ("identifier=" + quote(f"{NHS}|", safe=""), 422, "INVALID_PARAMETER"),
        (
            identifier("9990000018", system="http://fhir.nhs.net/Id/nhs-number"),
            422,
            "INVALID_PARAMETER",
        ),
        (identifier("9990000019"), 400, "INVALID_NHS_NUMBER"),
        (identifier("1234567891"), 400, "INVALID_NHS_NUMBER"),
    ],
)
def test_a_malformed_patient_search_gets_the_test_packs_error(
    http, running_sandbox, query, status, code
):
    response = find(http, running_sandbox, "A20047", query)
    assert (response.status_code, spine_code(response)) == (status, code)
    assert response.headers["Cache-Control"] == "no-store"  # on errors too


def test_a_practice_with_access_document_switched_off_denies_access(http, running_sandbox):
    response = find(
        http, running_sandbox, "D99001", identifier(patient("access-denied").nhs_number)
    )
    assert (response.status_code, spine_code(response)) == (403, "ACCESS DENIED")


# Search for documents -------------------------------------------------------------------


def search(http, running, ods, patient_id, query=INCLUDES, **headers):
    return http.get(
        f"{documents_root(running, ods)}/Patient/{patient_id}/DocumentReference?{query}",
        headers=gp_headers(running.base_url, ods, Interactions.DOCUMENTS_SEARCH, **headers),
    )


def test_a_document_search_returns_conformant_document_references(http, running_sandbox):
    documents_patient = patient("documents")
    response = search(http, running_sandbox, "A20047", documents_patient.logical_id)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == response.request.headers["Ssp-TraceID"]
    references = entries(response, "DocumentReference")
    assert len(references) >= 35
    patients = {p["id"] for p in entries(response, "Patient")}
    for reference in references:
        assert reference["id"] and reference["meta"]["profile"]
        assert reference["identifier"][0]["system"] and reference["identifier"][0]["value"]
        assert reference["status"] == "current"
        assert reference["type"].get("text") or {"system", "code", "display"} <= set(
            reference["type"]["coding"][0]
        )
        assert reference["subject"]["reference"].split("/")[1] in patients
        assert reference["indexed"]
        for content in reference["content"]:
            assert "size" in content["attachment"] and "contentType" in content["attachment"]
            assert "data" not in content["attachment"]
        for unused in ("docStatus", "class", "authenticator", "relatesTo"):
            assert unused not in reference


def test_a_patient_with_no_documents_gets_a_searchset_without_document_references(
    http, running_sandbox
):
    response = search(http, running_sandbox, "B82617", patient("no-documents").logical_id)
    assert response.status_code == 200
    assert entries(response, "DocumentReference") == []
    assert len(entries(response, "Patient")) == 1


def test_filters_by_created_date_and_author_narrow_the_documents(http, running_sandbox):
    everything = entries(
        search(http, running_sandbox, "A20047", patient("documents").logical_id),
        "DocumentReference",
    )
    recent = search(
        http,
        running_sandbox,
        "A20047",
        patient("documents").logical_id,
        INCLUDES + "&created=ge2024-01-01",
    )
    internal = search(
        http,
        running_sandbox,
        "A20047",
        patient("documents").logical_id,
        INCLUDES
        + "&author="
        + quote("https://fhir.nhs.uk/Id/ods-organization-code|A20047", safe=""),
    )
    assert recent.status_code == internal.status_code == 200
    assert 0 < len(entries(recent, "DocumentReference")) < len(everything)
    assert 0 < len(entries(internal, "DocumentReference")) < len(everything)
    for reference in entries(recent, "DocumentReference"):
        assert (reference.get("created") or reference["indexed"])[:10] >= "2024-01-01"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("_include=DocumentReference:subject:Patient", "INVALID_PARAMETER"),
        (
            INCLUDES + "&author=" + quote("https://example.org/not-ods|X1", safe=""),
            "INVALID_PARAMETER",
        ),
        (INCLUDES + "&BadParameter=BadParamValue", "INVALID_PARAMETER"),
        (INCLUDES + "&created=2024-01-01", "INVALID_PARAMETER"),
        (INCLUDES + "&created=gt2024-01-01", "INVALID_PARAMETER"),
        (INCLUDES + "&_count=10", "INVALID_PARAMETER"),
    ],
)
def test_a_document_search_outside_the_specification_is_an_invalid_parameter(
    http, running_sandbox, query, code
):
    response = search(http, running_sandbox, "A20047", patient("documents").logical_id, query)
    assert (response.status_code, spine_code(response)) == (422, code)


@pytest.mark.parametrize(
    ("scenario", "ods", "status", "code"),
    [
        ("no-consent", "A20047", 403, "NO_PATIENT_CONSENT"),
        ("deceased-expired", "C81016", 404, "PATIENT_NOT_FOUND"),
        ("sensitive", "A20047", 404, "PATIENT_NOT_FOUND"),
        ("documents", "B82617", 404, "PATIENT_NOT_FOUND"),  # not registered there
        ("inactive", "B82617", 404, "PATIENT_NOT_FOUND"),
        ("access-denied", "D99001", 403, "ACCESS DENIED"),
    ],
)
def test_a_document_search_the_practice_may_not_answer_is_refused_with_its_code(
    http, running_sandbox, scenario, ods, status, code
):
    response = search(http, running_sandbox, ods, patient(scenario).logical_id)
    assert (response.status_code, spine_code(response)) == (status, code)


def test_an_unknown_patient_id_is_patient_not_found(http, running_sandbox):
    response = search(http, running_sandbox, "A20047", "pat-does-not-exist")
    assert (response.status_code, spine_code(response)) == (404, "PATIENT_NOT_FOUND")


# Retrieve a document --------------------------------------------------------------------


def test_every_retrievable_document_comes_back_as_a_binary_with_the_generated_bytes(
    http, running_sandbox
):
    references = entries(
        search(http, running_sandbox, "A20047", patient("documents").logical_id),
        "DocumentReference",
    )
    record = {d.id: d for d in running_sandbox.sandbox.record.documents}
    retrieved = 0
    for reference in references:
        url = reference["content"][0]["attachment"].get("url")
        if not url:
            continue
        response = http.get(
            url,
            headers=gp_headers(running_sandbox.base_url, "A20047", Interactions.DOCUMENTS_BINARY),
        )
        assert response.status_code == 200, url
        binary = response.json()
        assert binary["resourceType"] == "Binary" and binary["contentType"]
        assert "securityContext" not in binary
        assert (
            hashlib.sha256(base64.b64decode(binary["content"])).hexdigest()
            == record[reference["id"]].sha256
        )
        retrieved += 1
    assert retrieved >= 30


def test_a_placeholder_or_unknown_binary_is_no_record_found(http, running_sandbox):
    placeholder = next(
        d
        for d in running_sandbox.sandbox.record.documents
        if d.patient_nhs == patient("placeholders").nhs_number and d.file is None
    )
    for binary_id in (placeholder.id, "does-not-exist"):
        response = http.get(
            f"{documents_root(running_sandbox, 'A20047')}/Binary/{binary_id}",
            headers=gp_headers(running_sandbox.base_url, "A20047", Interactions.DOCUMENTS_BINARY),
        )
        assert (response.status_code, spine_code(response)) == (404, "NO_RECORD_FOUND")


def test_placeholders_are_listed_without_a_url_and_with_the_reason(http, running_sandbox):
    references = entries(
        search(http, running_sandbox, "A20047", patient("placeholders").logical_id),
        "DocumentReference",
    )
    placeholders = [r for r in references if "url" not in r["content"][0]["attachment"]]
    assert len(placeholders) >= 4
    for reference in placeholders:
        assert reference["content"][0]["attachment"]["title"]
    assert any(r["content"][0]["attachment"]["size"] > 5 * 1024 * 1024 for r in placeholders)


@pytest.mark.parametrize("scenario", ["documents", "placeholders", "deceased-recent"])
def test_searches_answer_in_fhir_xml_that_validates_as_stu3_when_asked(
    http, running_sandbox, scenario
):
    someone = patient(scenario)
    found = find(
        http,
        running_sandbox,
        someone.practice_ods,
        identifier(someone.nhs_number),
        Accept="application/fhir+xml",
    )
    listed = search(
        http,
        running_sandbox,
        someone.practice_ods,
        someone.logical_id,
        INCLUDES + "&_format=application/fhir%2Bxml",
    )
    for response in (found, listed):
        assert response.status_code == 200, response.text[:500]
        assert response.headers["Content-Type"].startswith("application/fhir+xml")
        assert response.text.lstrip().startswith("<?xml") and "<Bundle" in response.text


def test_a_document_asked_for_in_xml_streams_as_a_fhir_xml_binary(http, running_sandbox):
    import xml.etree.ElementTree as ElementTree

    document = next(
        d
        for d in running_sandbox.sandbox.record.documents
        if d.patient_nhs == patient("documents").nhs_number and d.file and d.size < 100_000
    )
    response = http.get(
        f"{documents_root(running_sandbox, 'A20047')}/Binary/{document.id}",
        headers=gp_headers(
            running_sandbox.base_url,
            "A20047",
            Interactions.DOCUMENTS_BINARY,
            Accept="application/fhir+xml",
        ),
    )
    assert response.headers["Content-Type"].startswith("application/fhir+xml")
    root = ElementTree.fromstring(response.content)
    content = root.find("{http://hl7.org/fhir}content").get("value")
    assert hashlib.sha256(base64.b64decode(content)).hexdigest() == document.sha256


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        ("&created=le2020-12-31", lambda when: when <= "2020-12-31"),
        (
            "&created=ge2019-01-01&created=le2021-12-31",
            lambda when: "2019-01-01" <= when <= "2021-12-31",
        ),
        ("&created=ge2019-01-01T00:00:00%2B00:00", lambda when: when >= "2019-01-01"),
    ],
)
def test_created_bounds_narrow_the_documents_by_date(http, running_sandbox, filters, check):
    response = search(
        http, running_sandbox, "A20047", patient("documents").logical_id, INCLUDES + filters
    )
    assert response.status_code == 200
    references = entries(response, "DocumentReference")
    assert references
    assert all(check((r.get("created") or r["indexed"])[:10]) for r in references)


@pytest.mark.parametrize(
    "value", ["ge2024-01-01T99", "ge2024-13-01", "ge2024-01-01&created=ge2024-02-01"]
)
def test_a_malformed_created_bound_is_an_invalid_parameter(http, running_sandbox, value):
    response = search(
        http,
        running_sandbox,
        "A20047",
        patient("documents").logical_id,
        INCLUDES + "&created=" + value,
    )
    assert (response.status_code, spine_code(response)) == (422, "INVALID_PARAMETER")


def test_an_error_comes_in_xml_when_xml_was_asked_for(http, running_sandbox):
    response = search(
        http,
        running_sandbox,
        "A20047",
        patient("documents").logical_id,
        "_format=application/fhir%2Bxml",
    )
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/fhir+xml")
    assert "<OperationOutcome" in response.text and "INVALID_PARAMETER" in response.text


def test_a_patient_registered_only_temporarily_has_no_documents_to_share(http, running_sandbox):
    someone = patient("not-registered")
    register = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "registerPatient",
                "resource": {
                    "resourceType": "Patient",
                    "meta": {
                        "profile": [
                            "https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-Patient-1"
                        ]
                    },
                    "identifier": [{"system": NHS, "value": someone.nhs_number}],
                    "name": [
                        {"use": "official", "family": someone.family, "given": list(someone.given)}
                    ],
                    "gender": someone.gender,
                    "birthDate": someone.birth_date.isoformat(),
                },
            }
        ],
    }
    registered = http.post(
        f"{running_sandbox.base_url}/A20047/STU3/1/gpconnect/Patient/$gpc.registerpatient",
        json=register,
        headers=gp_headers(running_sandbox.base_url, "A20047", Interactions.PATIENT_REGISTER),
    )
    assert registered.status_code in (200, 409)  # 409: an earlier run of this test registered them
    assert (
        entries(find(http, running_sandbox, "A20047", identifier(someone.nhs_number)), "Patient")
        == []
    )
    response = search(http, running_sandbox, "A20047", someone.logical_id)
    assert (response.status_code, spine_code(response)) == (404, "PATIENT_NOT_FOUND")
