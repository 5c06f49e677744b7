"""GPConnectClient: what goes on the wire, and what the caller gets back."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import date
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import pytest

from gpconnect import (
    AccessDenied,
    BadRequest,
    BinaryDecodeError,
    Capability,
    ConfigurationError,
    DocumentNotFound,
    InvalidNhsNumber,
    InvalidResponse,
    NoPatientConsent,
    PatientNotFound,
    ProviderEndpoint,
    ProviderInternalError,
    ProviderUnavailable,
    SpineProxyError,
)
from gpconnect.client import encode_query
from tests.fixtures import fixture_bytes, fixture_json

from .helpers import (
    CONSUMER_ASID,
    DOCUMENTS_ROOT,
    PROVIDER_ASID,
    STRUCTURED_ROOT,
    USER,
    BrokenStream,
    FakeProvider,
    decode_jwt_claims,
    json_response,
    make_client,
)

DOC_NS = "urn:nhs:names:services:gpconnect:documents:fhir:rest:"
FIVE_INCLUDES = [
    ("_include", "DocumentReference:subject:Patient"),
    ("_include", "DocumentReference:custodian:Organization"),
    ("_include", "DocumentReference:author:Organization"),
    ("_include", "DocumentReference:author:Practitioner"),
    ("_revinclude:recurse", "PractitionerRole:practitioner"),
]
EMPTY_SEARCHSET = {"resourceType": "Bundle", "type": "searchset", "entry": []}


def query_pairs(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(request.url.query.decode(), keep_blank_values=True)


# Find a patient -----------------------------------------------------------------------


def test_find_patient_sends_the_percent_encoded_nhs_number_identifier():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("documents_find_patient_bundle.json"))
    )
    make_client(provider).find_patient("947 671 9931")

    request = provider.last
    assert request.method == "GET"
    assert str(request.url) == (
        f"{DOCUMENTS_ROOT}/Patient?identifier="
        "https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9476719931"
    )


def test_every_request_carries_the_spine_headers_and_an_unsigned_jwt():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("documents_find_patient_bundle.json"))
    )
    make_client(provider).find_patient("9476719931")

    headers = provider.last.headers
    assert headers["Ssp-From"] == CONSUMER_ASID
    assert headers["Ssp-To"] == PROVIDER_ASID
    assert headers["Ssp-InteractionID"] == DOC_NS + "search:patient-1"
    assert headers["Accept"] == "application/fhir+json;charset=utf-8"
    assert len(headers["Ssp-TraceID"]) == 36
    assert headers["Authorization"].startswith("Bearer ")
    assert headers["Authorization"].endswith(".")
    claims = decode_jwt_claims(headers["Authorization"])
    assert claims["aud"] == DOCUMENTS_ROOT
    assert claims["requested_scope"] == "patient/*.read"
    assert claims["sub"] == USER.local_user_id == claims["requesting_practitioner"]["id"]
    assert claims["exp"] - claims["iat"] == 300
    assert "Content-Type" not in headers


def test_find_patient_returns_the_patient_and_the_trace_id_of_the_request():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("documents_find_patient_bundle.json"))
    )
    found = make_client(provider).find_patient("9476719931")

    assert found.patient is not None
    assert found.patient.nhs_number == "9476719931"
    assert found.patient.name.family == "Jackson"
    assert found.trace_id == provider.last.headers["Ssp-TraceID"]


def test_a_patient_the_practice_does_not_hold_is_none_not_an_error():
    provider = FakeProvider().queue(json_response(200, EMPTY_SEARCHSET))
    assert make_client(provider).find_patient("9690937286").patient is None


def test_an_invalid_nhs_number_is_refused_before_anything_is_sent():
    provider = FakeProvider()
    with pytest.raises(ValueError, match="not a valid NHS number"):
        make_client(provider).find_patient("1234567891")
    assert provider.requests == []


# Search for documents -----------------------------------------------------------------


def test_a_document_search_always_sends_the_five_mandatory_includes_and_nothing_else():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("documents_search_bundle.json"))
    )
    make_client(provider).search_documents("04603d77-1a4e-4d63-b246-d7504f8bd833")

    request = provider.last
    assert request.url.path == (
        "/A20047/STU3/1/gpconnect/documents/Patient/"
        "04603d77-1a4e-4d63-b246-d7504f8bd833/DocumentReference"
    )
    assert query_pairs(request) == FIVE_INCLUDES
    assert request.headers["Ssp-InteractionID"] == DOC_NS + "search:documentreference-1"


def test_document_filters_use_the_prefixes_and_token_syntax_of_the_specification():
    provider = FakeProvider().queue(json_response(200, EMPTY_SEARCHSET))
    make_client(provider).search_documents(
        "04603d77",
        created_from=date(2019, 6, 24),
        created_to=date(2020, 1, 31),
        author_ods="O001",
        description="discharge summary",
    )

    pairs = query_pairs(provider.last)
    assert pairs[:5] == FIVE_INCLUDES
    assert pairs[5:] == [
        ("created", "ge2019-06-24"),
        ("created", "le2020-01-31"),
        ("author", "https://fhir.nhs.uk/Id/ods-organization-code|O001"),
        ("description", "discharge summary"),
    ]
    raw_query = provider.last.url.query.decode()
    assert "author=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code%7CO001" in raw_query
    assert "description=discharge%20summary" in raw_query


def test_a_reversed_date_range_is_refused_before_anything_is_sent():
    provider = FakeProvider()
    with pytest.raises(ValueError, match="after"):
        make_client(provider).search_documents(
            "p1", created_from=date(2024, 2, 1), created_to=date(2024, 1, 1)
        )
    assert provider.requests == []


def test_a_patient_id_with_odd_characters_is_percent_encoded_in_the_path():
    provider = FakeProvider().queue(json_response(200, EMPTY_SEARCHSET))
    make_client(provider).search_documents("a/b c")
    assert "/Patient/a%2Fb%20c/DocumentReference" in provider.last.url.raw_path.decode()


def test_the_search_returns_the_documents_of_the_specification_example():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("documents_search_bundle.json"))
    )
    search = make_client(provider).search_documents("04603d77-1a4e-4d63-b246-d7504f8bd833")

    assert [d.title for d in search.documents] == ["Discharge Summary"]
    document = search.documents[0]
    assert document.url == (
        "http://exampleGPSystem.co.uk/GP0001/STU3/1/gpconnect-documents/Binary/"
        "07a6483f-732b-461e-86b6-edb665c45510"
    )
    assert document.content_type == "application/msword"
    assert search.trace_id == provider.last.headers["Ssp-TraceID"]


def test_query_values_are_fully_percent_encoded_and_keys_keep_their_colons():
    assert encode_query([("_revinclude:recurse", "PractitionerRole:practitioner")]) == (
        "_revinclude:recurse=PractitionerRole%3Apractitioner"
    )
    assert encode_query([("identifier", "a|b c/d")]) == "identifier=a%7Cb%20c%2Fd"


# Spine Secure Proxy -------------------------------------------------------------------


def test_through_the_spine_proxy_the_provider_url_follows_the_proxy_unaltered():
    provider = FakeProvider().queue(json_response(200, EMPTY_SEARCHSET))
    make_client(provider, proxy="https://proxy.spine.example/").find_patient("9690937286")

    url = str(provider.last.url)
    assert url.startswith(f"https://proxy.spine.example/{DOCUMENTS_ROOT}/Patient?identifier=")
    assert decode_jwt_claims(provider.last.headers["Authorization"])["aud"] == DOCUMENTS_ROOT


def test_a_document_is_fetched_from_its_attachment_url_verbatim_even_in_odd_case():
    url = "https://Provider.example.nhs.uk/A20047/STU3/1/GPConnect/Documents/Binary/07a6483f"
    provider = FakeProvider().queue(json_response(200, b'{"resourceType":"Binary","content":""}'))
    client = make_client(provider, proxy="https://proxy.spine.example")
    with client.open_binary(url) as download:
        assert b"".join(download) == b""

    sent = str(provider.last.url)
    assert unquote(urlsplit(sent).path).endswith(
        "/A20047/STU3/1/GPConnect/Documents/Binary/07a6483f"
    )
    assert sent.startswith("https://proxy.spine.example/https://")
    assert provider.last.headers["Ssp-InteractionID"] == DOC_NS + "read:binary-1"


# Retrieving a document ----------------------------------------------------------------


def test_the_specification_binary_example_streams_out_as_its_decoded_bytes():
    body = fixture_bytes("documents_binary_response.json")
    expected = base64.b64decode(json.loads(body)["content"])
    provider = FakeProvider().queue(json_response(200, body))

    with make_client(provider).open_binary(DOCUMENTS_ROOT + "/Binary/07a6483f") as download:
        data = b"".join(download)
        assert download.content_type == "application/msword"
        assert download.trace_id == provider.last.headers["Ssp-TraceID"]
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected).digest()


def test_a_connection_lost_part_way_through_a_document_fails_the_download_loudly():
    document = b"%PDF-1.7 " * 10_000
    body = json.dumps({"resourceType": "Binary", "content": base64.b64encode(document).decode()})
    provider = FakeProvider().queue(
        lambda request: httpx.Response(200, stream=BrokenStream(body[: len(body) // 2].encode()))
    )
    received = bytearray()
    with (
        make_client(provider).open_binary(DOCUMENTS_ROOT + "/Binary/x") as download,
        pytest.raises(ProviderUnavailable) as caught,
    ):
        for chunk in download:
            received += chunk
    assert len(received) < len(document)
    assert caught.value.trace_id == provider.last.headers["Ssp-TraceID"]


def test_a_damaged_binary_raises_a_decode_error_carrying_the_trace_id():
    provider = FakeProvider().queue(
        json_response(200, b'{"resourceType":"Binary","content":"not*base64"}')
    )
    with (
        make_client(provider).open_binary(DOCUMENTS_ROOT + "/Binary/x") as download,
        pytest.raises(BinaryDecodeError) as caught,
    ):
        b"".join(download)
    assert caught.value.trace_id == provider.last.headers["Ssp-TraceID"]


def test_a_document_over_the_size_limit_is_document_not_found_as_the_provider_says():
    provider = FakeProvider().queue(
        json_response(404, fixture_json("operationoutcome_no_record_found.json"))
    )
    with (
        pytest.raises(DocumentNotFound) as caught,
        make_client(provider).open_binary(DOCUMENTS_ROOT + "/Binary/big"),
    ):
        pass
    assert caught.value.http_status == 404
    assert caught.value.trace_id == provider.last.headers["Ssp-TraceID"]


# Errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "status", "error_class", "code"),
    [
        ("operationoutcome_access_denied.json", 403, AccessDenied, "ACCESS DENIED"),
        ("operationoutcome_bad_request_jwt.json", 400, BadRequest, "BAD_REQUEST"),
        ("operationoutcome_invalid_nhs_number.json", 400, InvalidNhsNumber, "INVALID_NHS_NUMBER"),
        ("operationoutcome_no_patient_consent.json", 403, NoPatientConsent, "NO_PATIENT_CONSENT"),
        ("operationoutcome_patient_not_found.json", 404, PatientNotFound, "PATIENT_NOT_FOUND"),
        (
            "operationoutcome_internal_server_error.json",
            500,
            ProviderInternalError,
            "INTERNAL_SERVER_ERROR",
        ),
        ("ssp_error_sender_asid_not_authorised.json", 403, SpineProxyError, "403"),
    ],
)
def test_a_provider_error_reaches_the_caller_as_the_matching_exception(
    fixture, status, error_class, code
):
    provider = FakeProvider().queue(json_response(status, fixture_json(fixture)))
    with pytest.raises(error_class) as caught:
        make_client(provider).search_documents("p1")

    error = caught.value
    assert error.spine_code == code
    assert error.http_status == status
    assert error.trace_id == provider.last.headers["Ssp-TraceID"]
    assert error.message  # a sentence for a clinician
    assert len(provider.requests) == 1  # none of these is retried


def test_a_success_status_with_a_body_that_is_not_json_is_an_invalid_response():
    provider = FakeProvider().queue(httpx.Response(200, text="<html>Service Unavailable</html>"))
    with pytest.raises(InvalidResponse) as caught:
        make_client(provider).find_patient("9690937286")
    assert caught.value.trace_id == provider.last.headers["Ssp-TraceID"]


def test_an_error_status_with_an_html_body_falls_back_to_the_http_status():
    provider = FakeProvider().queue(httpx.Response(403, text="<html>Forbidden</html>"))
    with pytest.raises(Exception) as caught:
        make_client(provider).find_patient("9690937286")
    assert caught.value.http_status == 403
    assert caught.value.spine_code is None


# Retries ------------------------------------------------------------------------------


def test_a_read_is_retried_after_a_503_with_a_fresh_trace_id_and_jwt():
    clock = iter([1_700_000_000.0, 1_700_000_007.0, 1_700_000_020.0]).__next__
    sleeps: list[float] = []
    provider = FakeProvider().queue(
        httpx.Response(503), json_response(200, fixture_json("documents_find_patient_bundle.json"))
    )
    found = make_client(provider, clock=clock, sleeps=sleeps).find_patient("9476719931")

    first, second = provider.requests
    assert first.headers["Ssp-TraceID"] != second.headers["Ssp-TraceID"]
    assert decode_jwt_claims(first.headers["Authorization"])["iat"] == 1_700_000_000
    assert decode_jwt_claims(second.headers["Authorization"])["iat"] == 1_700_000_007
    assert found.trace_id == second.headers["Ssp-TraceID"]
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 4.1


def test_timeouts_are_retried_with_backoff_then_reported_as_provider_unavailable():
    sleeps: list[float] = []
    provider = FakeProvider().queue(
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
    )
    with pytest.raises(ProviderUnavailable) as caught:
        make_client(provider, attempts=3, sleeps=sleeps).search_documents("p1")

    assert len(provider.requests) == 3
    assert len({r.headers["Ssp-TraceID"] for r in provider.requests}) == 3
    assert caught.value.retryable is True
    assert caught.value.trace_id == provider.last.headers["Ssp-TraceID"]
    assert "did not respond in time" in caught.value.message
    assert len(sleeps) == 2 and sleeps[1] >= sleeps[0] * 0.9


def test_a_500_from_the_provider_is_not_retried():
    provider = FakeProvider().queue(
        json_response(500, fixture_json("operationoutcome_internal_server_error.json"))
    )
    with pytest.raises(ProviderInternalError):
        make_client(provider).find_patient("9690937286")
    assert len(provider.requests) == 1


def test_a_binary_retrieval_is_retried_before_its_first_byte():
    document = b"hello"
    body = json.dumps({"resourceType": "Binary", "content": base64.b64encode(document).decode()})
    provider = FakeProvider().queue(httpx.Response(502), json_response(200, body.encode()))
    with make_client(provider).open_binary(DOCUMENTS_ROOT + "/Binary/x") as download:
        assert b"".join(download) == document
    assert len(provider.requests) == 2


# Access Record Structured -------------------------------------------------------------


def structured_client(provider, **kwargs):
    return make_client(
        provider,
        endpoint=ProviderEndpoint(
            service_root=STRUCTURED_ROOT, asid=PROVIDER_ASID, capability=Capability.STRUCTURED
        ),
        **kwargs,
    )


def test_the_structured_record_is_asked_for_consultations_and_problems_by_post():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("structured_problems_response_bundle.json"))
    )
    structured_client(provider).structured_documents("9999999999")

    request = provider.last
    assert request.method == "POST"
    assert str(request.url) == STRUCTURED_ROOT + "/Patient/$gpc.getstructuredrecord"
    assert request.headers["Ssp-InteractionID"] == (
        "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
    )
    assert request.headers["Content-Type"] == "application/fhir+json;charset=utf-8"
    assert (
        decode_jwt_claims(request.headers["Authorization"])["requested_scope"] == "patient/*.read"
    )
    body = json.loads(request.content)
    assert body["resourceType"] == "Parameters"
    assert body["parameter"] == [
        {
            "name": "patientNHSNumber",
            "valueIdentifier": {
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": "9999999999",
            },
        },
        {"name": "includeConsultations"},
        {"name": "includeProblems"},
    ]


def test_a_consultation_period_goes_in_the_consultations_part():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("structured_problems_response_bundle.json"))
    )
    structured_client(provider).structured_documents(
        "9999999999", problems=False, consultation_period=(date(2020, 1, 1), date(2024, 12, 31))
    )
    parameters = json.loads(provider.last.content)["parameter"]
    assert parameters[1] == {
        "name": "includeConsultations",
        "part": [
            {
                "name": "consultationSearchPeriod",
                "valuePeriod": {"start": "2020-01-01", "end": "2024-12-31"},
            }
        ],
    }
    assert len(parameters) == 2


def test_the_structured_post_is_never_retried_automatically():
    provider = FakeProvider().queue(httpx.Response(503), httpx.Response(200))
    with pytest.raises(ProviderUnavailable):
        structured_client(provider).structured_documents("9690937286")
    assert len(provider.requests) == 1


def test_a_documents_call_on_a_structured_endpoint_is_refused_before_sending():
    provider = FakeProvider()
    with pytest.raises(ConfigurationError, match="documents interaction"):
        structured_client(provider).find_patient("9690937286")
    assert provider.requests == []
