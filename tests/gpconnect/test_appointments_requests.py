"""GPConnectClient's Foundations and Appointment Management calls: what goes on the wire."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from urllib.parse import parse_qsl

import httpx
import pytest

from gpconnect import (
    Capability,
    ClientConfig,
    ConfigurationError,
    Conflict,
    Consumer,
    DuplicateRejected,
    GPConnectClient,
    Interaction,
    Interactions,
    ProviderEndpoint,
    ProviderUnavailable,
    RetryPolicy,
)
from gpconnect.client import free_slot_search_params
from gpconnect.fhir import parse_free_slots
from tests.fixtures import fixture_json

from .helpers import USER, FakeProvider, decode_jwt_claims, json_response

NOW = datetime(2017, 5, 25, 12, 48, 41, tzinfo=UTC)
CONSUMER = Consumer(
    asid="200000000359",
    ods_code="A00001",
    organisation_name="Test Organization Name",
    issuer="https://consumer.example.nhs.uk/",
    organisation_type="gp-practice",
    organisation_phone="0300 303 5678",
)
CONFIG = ClientConfig(consumer=CONSUMER, retry=RetryPolicy(attempts=3, jitter=0))
ROOT = "https://provider.example.nhs.uk/B82617/STU3/1/gpconnect"
GPC = "urn:nhs:names:services:gpconnect:fhir:"
BOOKED = fixture_json("appointments_book_appt_response.json")
FREE = parse_free_slots(
    fixture_json("appointments_search_for_free_slots_response.json"), trace_id=""
)


class Directory:
    """SDS as the client sees it: a different (made-up) ASID for each interaction, to tell them apart."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def asid(self, interaction: Interaction) -> str:
        return str(100000 + sorted(i.id for i in Interactions.all()).index(interaction.id))

    def provider_endpoint(self, ods_code: str, interaction: Interaction) -> ProviderEndpoint:
        self.asked.append((ods_code, interaction.id))
        return ProviderEndpoint(
            service_root=ROOT,
            asid=self.asid(interaction),
            ods_code=ods_code,
            capability=interaction.capability,
        )


def practice(
    provider: FakeProvider, config: ClientConfig = CONFIG, directory: Directory | None = None
) -> GPConnectClient:
    return GPConnectClient.for_practice(
        config,
        user=USER,
        ods_code="B82617",
        directory=directory or Directory(),
        http=httpx.Client(transport=httpx.MockTransport(provider)),
        clock=NOW.timestamp,
        sleep=lambda seconds: None,
    )


def query_pairs(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(request.url.query.decode(), keep_blank_values=True)


def sent_json(request: httpx.Request) -> dict:
    return json.loads(request.content)


def booked(status: int = 201, body: dict = BOOKED, **headers: str) -> httpx.Response:
    return json_response(status, body, **headers)


# Service discovery per interaction -------------------------------------------------------------


def test_each_call_goes_to_the_asid_and_service_root_sds_gives_for_its_own_interaction():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("appointments_search_for_free_slots_response.json")),
        booked(200, ETag='W/"1"'),
    )
    directory = Directory()
    client = practice(provider, directory=directory)

    client.search_free_slots(date(2017, 5, 22), date(2017, 5, 31))
    client.read_appointment("9")

    search, read = provider.requests
    assert set(directory.asked) == {
        ("B82617", Interactions.SLOT_SEARCH.id),
        ("B82617", Interactions.APPOINTMENT_READ.id),
    }
    for request, interaction in (
        (search, Interactions.SLOT_SEARCH),
        (read, Interactions.APPOINTMENT_READ),
    ):
        assert request.headers["Ssp-InteractionID"] == interaction.id
        assert request.headers["Ssp-To"] == directory.asid(interaction)
        assert decode_jwt_claims(request.headers["Authorization"])["aud"] == ROOT
        assert decode_jwt_claims(request.headers["Authorization"])["requested_scope"] == (
            interaction.scope
        )
    assert search.headers["Ssp-To"] != read.headers["Ssp-To"]


def test_a_client_is_given_one_endpoint_or_a_way_to_find_them_not_both():
    endpoint = ProviderEndpoint(service_root=ROOT, asid="1")
    with pytest.raises(ConfigurationError):
        GPConnectClient(CONFIG, user=USER)
    with pytest.raises(ConfigurationError):
        GPConnectClient(CONFIG, user=USER, endpoint=endpoint, resolve_endpoint=lambda i: endpoint)


def test_an_appointments_call_on_a_documents_endpoint_is_refused_before_sending():
    provider = FakeProvider()
    endpoint = ProviderEndpoint(
        service_root=ROOT + "/documents", asid="1", capability=Capability.DOCUMENTS
    )
    client = GPConnectClient(
        CONFIG,
        user=USER,
        endpoint=endpoint,
        http=httpx.Client(transport=httpx.MockTransport(provider)),
    )

    with pytest.raises(ConfigurationError, match="appointments interaction"):
        client.search_free_slots(date(2017, 5, 22), date(2017, 5, 23))
    assert provider.requests == []


# Foundations --------------------------------------------------------------------------------


def test_finding_a_patient_for_booking_uses_the_foundations_interaction():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("foundations_find_patient_response.json"))
    )

    found = practice(provider).find_patient("9476719931", capability=Capability.APPOINTMENTS)

    request = provider.last
    assert request.headers["Ssp-InteractionID"] == GPC + "rest:search:patient-1"
    assert str(request.url) == (
        f"{ROOT}/Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9476719931"
    )
    assert found.patient.id == "2"


def test_reading_a_patient_and_a_location_use_their_own_interactions():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("foundations_read_patient_response.json")),
        json_response(200, fixture_json("foundations_read_location_response.json")),
    )
    client = practice(provider)

    assert client.read_patient("2").patient.nhs_number == "9476719931"
    assert client.read_location("17").name == "Trevelyan Surgery"
    patient, location = provider.requests
    assert (patient.url.path, patient.headers["Ssp-InteractionID"]) == (
        "/B82617/STU3/1/gpconnect/Patient/2",
        GPC + "rest:read:patient-1",
    )
    assert (location.url.path, location.headers["Ssp-InteractionID"]) == (
        "/B82617/STU3/1/gpconnect/Location/17",
        GPC + "rest:read:location-1",
    )


def test_registering_posts_the_parameters_to_the_operation_with_the_write_scope_once():
    demographics = (
        practice(
            FakeProvider().queue(
                json_response(200, fixture_json("foundations_find_patient_response.json"))
            )
        )
        .find_patient("9476719931", capability=Capability.APPOINTMENTS)
        .patient
    )
    provider = FakeProvider().queue(json_response(503, b""), json_response(503, b""))

    with pytest.raises(ProviderUnavailable):
        practice(provider).register_patient(demographics)

    request = provider.last
    assert len(provider.requests) == 1
    assert request.method == "POST"
    assert request.url.path == "/B82617/STU3/1/gpconnect/Patient/$gpc.registerpatient"
    assert request.headers["Ssp-InteractionID"] == GPC + "operation:gpc.registerpatient-1"
    assert request.headers["Content-Type"] == "application/fhir+json;charset=utf-8"
    assert (
        decode_jwt_claims(request.headers["Authorization"])["requested_scope"] == "patient/*.write"
    )
    assert sent_json(request)["parameter"][0]["resource"]["identifier"][0]["value"] == "9476719931"


def test_registering_someone_already_registered_is_a_duplicate():
    demographics = (
        practice(
            FakeProvider().queue(
                json_response(200, fixture_json("foundations_find_patient_response.json"))
            )
        )
        .find_patient("9476719931", capability=Capability.APPOINTMENTS)
        .patient
    )
    provider = FakeProvider().queue(
        json_response(409, fixture_json("operationoutcome_duplicate_rejected.json"))
    )

    with pytest.raises(DuplicateRejected):
        practice(provider).register_patient(demographics)


# Free slots -------------------------------------------------------------------------------------


def test_a_slot_search_sends_the_mandatory_parameters_the_includes_and_our_search_filters():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("appointments_search_for_free_slots_response.json"))
    )

    practice(provider).search_free_slots(date(2017, 10, 20), date(2017, 10, 31))

    assert provider.last.url.path == "/B82617/STU3/1/gpconnect/Slot"
    assert query_pairs(provider.last) == [
        ("start", "ge2017-10-20"),
        ("end", "le2017-10-31"),
        ("status", "free"),
        ("_include", "Slot:schedule"),
        ("_include:recurse", "Schedule:actor:Practitioner"),
        ("_include:recurse", "Schedule:actor:Location"),
        ("_include:recurse", "Location:managingOrganization"),
        (
            "searchFilter",
            "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-OrganisationType-1|gp-practice",
        ),
        ("searchFilter", "https://fhir.nhs.uk/Id/ods-organization-code|A00001"),
    ]
    assert decode_jwt_claims(provider.last.headers["Authorization"])["requested_scope"] == (
        "organization/*.read"
    )


def test_times_are_sent_in_uk_local_time_with_the_plus_of_the_offset_percent_encoded():
    provider = FakeProvider().queue(
        json_response(200, {"resourceType": "Bundle", "type": "searchset"})
    )

    practice(provider).search_free_slots(
        datetime(2017, 10, 20, 8, 0, tzinfo=UTC), datetime(2017, 10, 20, 17, 0, tzinfo=UTC)
    )

    assert "start=ge2017-10-20T09%3A00%3A00%2B01%3A00" in str(provider.last.url)
    assert ("end", "le2017-10-20T18:00:00+01:00") in query_pairs(provider.last)


def test_without_an_organisation_type_only_our_ods_code_filters_the_slots():
    consumer = replace(CONSUMER, organisation_type=None)
    params = free_slot_search_params(date(2017, 10, 20), date(2017, 10, 21), consumer=consumer)
    assert [v for k, v in params if k == "searchFilter"] == [
        "https://fhir.nhs.uk/Id/ods-organization-code|A00001"
    ]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (date(2017, 10, 20), date(2017, 11, 4), "at most 14 days"),
        (date(2017, 10, 20), date(2017, 10, 19), "must not be before"),
        (datetime(2017, 10, 20, 9), datetime(2017, 10, 20, 17), "timezone-aware"),
    ],
)
def test_a_slot_search_window_providers_would_refuse_is_refused_before_sending(start, end, message):
    provider = FakeProvider()
    with pytest.raises(ValueError, match=message):
        practice(provider).search_free_slots(start, end)
    assert provider.requests == []


def test_exactly_fourteen_days_is_a_window_providers_accept():
    params = free_slot_search_params(date(2017, 10, 20), date(2017, 11, 3), consumer=CONSUMER)
    assert params[:2] == [("start", "ge2017-10-20"), ("end", "le2017-11-03")]


# Booking ----------------------------------------------------------------------------------------


def test_a_booking_posts_fhir_json_with_the_write_scope_and_asks_for_the_appointment_back():
    provider = FakeProvider().queue(booked(ETag='W/"1"'))

    appointment = practice(provider).book_appointment(
        patient_id="1", slots=[FREE.slots[0]], description="Review"
    )

    request = provider.last
    assert (request.method, request.url.path) == ("POST", "/B82617/STU3/1/gpconnect/Appointment")
    assert request.headers["Ssp-InteractionID"] == GPC + "rest:create:appointment-1"
    assert request.headers["Content-Type"] == "application/fhir+json;charset=utf-8"
    assert request.headers["Prefer"] == "return=representation"
    assert (
        decode_jwt_claims(request.headers["Authorization"])["requested_scope"] == "patient/*.write"
    )
    body = sent_json(request)
    assert body["created"] == "2017-05-25T13:48:41+01:00"  # the client's clock, in UK time
    assert body["participant"][1:] == [
        {"actor": {"reference": "Location/17"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/2"}, "status": "accepted"},
    ]
    assert appointment.version == "1"
    assert appointment.trace_id == request.headers["Ssp-TraceID"]


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("connection refused"),
        json_response(503, b"<html>Service Unavailable</html>"),
        json_response(504, b""),
    ],
)
def test_a_booking_is_sent_once_whatever_goes_wrong(failure):
    provider = FakeProvider().queue(failure, booked())

    with pytest.raises(ProviderUnavailable):
        practice(provider).book_appointment(
            patient_id="1", slots=[FREE.slots[0]], description="Review"
        )

    assert len(provider.requests) == 1


def test_a_slot_taken_in_the_meantime_is_a_duplicate_booking():
    provider = FakeProvider().queue(
        json_response(409, fixture_json("operationoutcome_duplicate_rejected.json"))
    )

    with pytest.raises(DuplicateRejected) as raised:
        practice(provider).book_appointment(
            patient_id="1", slots=[FREE.slots[0]], description="Review"
        )

    assert "slot has usually just been taken" in raised.value.message
    assert raised.value.trace_id == provider.last.headers["Ssp-TraceID"]


def test_a_booking_answered_without_a_body_is_read_back_from_its_location():
    provider = FakeProvider().queue(
        httpx.Response(
            201, headers={"Location": f"{ROOT}/Appointment/9/_history/1", "ETag": 'W/"1"'}
        ),
        booked(200, ETag='W/"1"'),
    )

    appointment = practice(provider).book_appointment(
        patient_id="1", slots=[FREE.slots[0]], description="Review"
    )

    post, read = provider.requests
    assert read.url.path == "/B82617/STU3/1/gpconnect/Appointment/9"
    assert appointment.id == "9"
    assert appointment.trace_id == post.headers["Ssp-TraceID"]


def test_booking_without_a_phone_number_for_us_is_a_configuration_error_before_sending():
    provider = FakeProvider()
    config = replace(CONFIG, consumer=replace(CONSUMER, organisation_phone=None))

    with pytest.raises(ConfigurationError, match="organisation_phone"):
        practice(provider, config).book_appointment(
            patient_id="1", slots=[FREE.slots[0]], description="Review"
        )
    assert provider.requests == []


def test_an_organisation_type_outside_the_code_system_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="organisation_type"):
        replace(CONSUMER, organisation_type="Urgent Care")


# Reading, listing, amending, cancelling ----------------------------------------------------------


def test_a_patients_appointments_are_searched_with_two_start_dates():
    provider = FakeProvider().queue(
        json_response(200, fixture_json("appointments_retrieve_patients_appts_response.json"))
    )

    listed = practice(provider).search_appointments("2", date(2017, 5, 25), date(2017, 6, 8))

    assert provider.last.url.path == "/B82617/STU3/1/gpconnect/Patient/2/Appointment"
    assert query_pairs(provider.last) == [("start", "ge2017-05-25"), ("start", "le2017-06-08")]
    assert provider.last.headers["Ssp-InteractionID"] == GPC + "rest:search:patient_appointments-1"
    assert len(listed.appointments) == 2


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (date(2017, 5, 24), date(2017, 6, 1), "from today"),
        (date(2017, 6, 2), date(2017, 6, 1), "must not be before"),
        (datetime(2017, 5, 26, 9, tzinfo=UTC), date(2017, 6, 1), "without a time"),
    ],
)
def test_an_appointment_search_providers_would_refuse_is_refused_before_sending(
    start, end, message
):
    provider = FakeProvider()
    with pytest.raises(ValueError, match=message):
        practice(provider).search_appointments("2", start, end)
    assert provider.requests == []


def changed(before: dict, after: dict) -> set[str]:
    return {key for key in set(before) | set(after) if before.get(key) != after.get(key)}


def test_amending_sends_the_appointment_as_read_with_only_description_and_comment_changed():
    provider = FakeProvider().queue(booked(200, ETag='W/"636068818095315079"'), booked(200))

    practice(provider).amend_appointment(
        "9", version="636068818095315079", description="Updated", comment=None
    )

    read, put = provider.requests
    assert read.headers["Ssp-InteractionID"] == GPC + "rest:read:appointment-1"
    assert (put.method, put.url.path) == ("PUT", "/B82617/STU3/1/gpconnect/Appointment/9")
    assert put.headers["Ssp-InteractionID"] == GPC + "rest:update:appointment-1"
    assert put.headers["If-Match"] == 'W/"636068818095315079"'
    body = sent_json(put)
    assert changed(BOOKED, body) == {"description", "comment"}
    assert body["description"] == "Updated" and "comment" not in body


def test_cancelling_sends_the_appointment_as_read_with_only_status_and_reason_changed():
    provider = FakeProvider().queue(
        booked(200, ETag='W/"3"'),
        booked(200, fixture_json("appointments_cancel_appt_response.json")),
    )

    cancelled = practice(provider).cancel_appointment("9", version='W/"3"', reason="Feeling better")

    _, put = provider.requests
    assert put.headers["Ssp-InteractionID"] == GPC + "rest:cancel:appointment-1"
    assert put.headers["If-Match"] == 'W/"3"'
    body = sent_json(put)
    assert changed(BOOKED, body) == {"status", "extension"}
    assert body["status"] == "cancelled"
    assert body["extension"] == [
        *BOOKED["extension"],
        {
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-AppointmentCancellationReason-1",
            "valueString": "Feeling better",
        },
    ]
    assert cancelled.cancelled


def test_a_version_older_than_the_practices_is_sent_as_given_and_the_refusal_is_a_conflict():
    refusal = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "conflict",
                "details": {
                    "coding": [
                        {
                            "system": "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1",
                            "code": "FHIR_CONSTRAINT_VIOLATION",
                        }
                    ]
                },
            }
        ],
    }
    provider = FakeProvider().queue(booked(200, ETag='W/"5"'), json_response(409, refusal))

    with pytest.raises(Conflict) as raised:
        practice(provider).cancel_appointment("9", version="4", reason="Feeling better")

    assert provider.last.headers["If-Match"] == 'W/"4"'
    assert "Someone else changed this" in raised.value.message
    assert len(provider.requests) == 2  # the read, and one PUT: never retried


def test_a_precondition_failed_answer_is_a_conflict_too():
    provider = FakeProvider().queue(booked(200, ETag='W/"5"'), httpx.Response(412))
    with pytest.raises(Conflict):
        practice(provider).amend_appointment("9", version="5", description="x", comment=None)


@pytest.mark.parametrize("version", ["", 'W/""', 'W/"1"2"'])
def test_an_appointment_version_that_is_not_one_is_refused_before_sending(version):
    provider = FakeProvider()
    with pytest.raises(ValueError, match="version"):
        practice(provider).amend_appointment("9", version=version, description="x", comment=None)
    assert provider.requests == []


def test_amending_is_refused_before_anything_is_sent_when_the_description_is_too_long():
    provider = FakeProvider()
    with pytest.raises(ValueError, match="at most 100"):
        practice(provider).amend_appointment("9", version="1", description="x" * 101, comment=None)
    assert provider.requests == []


def test_every_appointments_url_stays_under_the_service_root_through_the_spine_proxy():
    provider = FakeProvider().queue(booked(200, ETag='W/"1"'))
    config = replace(CONFIG, spine_proxy_url="https://proxy.spine.example")

    practice(provider, config).read_appointment("9")

    assert str(provider.last.url) == f"https://proxy.spine.example/{ROOT}/Appointment/9"
    assert decode_jwt_claims(provider.last.headers["Authorization"])["aud"] == ROOT
