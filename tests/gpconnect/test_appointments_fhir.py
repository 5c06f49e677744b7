"""Foundations and Appointment Management payloads: the specification's examples, read and written."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fhir.resources.STU3 import get_fhir_model_class

from gpconnect import (
    Consumer,
    HumanName,
    InvalidResponse,
    Location,
    Practitioner,
    Schedule,
    Slot,
    bookable_together,
)
from gpconnect.client import appointment_booking, register_patient_parameters
from gpconnect.fhir import (
    appointment_id_from_location,
    parse_appointment,
    parse_capabilities,
    parse_etag,
    parse_free_slots,
    parse_location,
    parse_patient_appointments,
    parse_patient_record,
    parse_patient_search,
    parse_pds_patient,
    parse_registered_patient,
)
from tests.fixtures import fixture_json

BST = timezone(timedelta(hours=1))
EXAMPLE_BOOKER = Consumer(
    asid="200000000359",
    ods_code="A00001",
    organisation_name="Test Organization Name",
    issuer="https://consumer.example.nhs.uk/",
    organisation_type="gp-practice",
    organisation_phone="0300 303 5678",
)


def stu3(resource: dict) -> None:
    """Raise unless the resource is valid FHIR STU3."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


# Free slots --------------------------------------------------------------------------------------


def test_the_example_slots_show_time_channel_types_place_practitioner_and_practice():
    free = parse_free_slots(
        fixture_json("appointments_search_for_free_slots_response.json"), trace_id="t-1"
    )

    first, second = free.slots
    assert (first.id, second.id) == ("1584", "1644")
    assert first.start == datetime(2016, 8, 15, 11, 30, tzinfo=BST)
    assert first.duration == timedelta(minutes=10)
    assert (first.slot_type, second.slot_type) == ("General GP Appointment", "NHS Health Check")
    assert first.delivery_channel == "In-person"
    schedule = first.schedule
    assert schedule is second.schedule
    assert schedule.schedule_type == "General GP Appointments"
    assert (schedule.practitioner_role.code, schedule.practitioner_role.display) == (
        "R0260",
        "General Medical Practitioner",
    )
    assert first.location.name == "The Trevelyan Practice"
    assert first.location.address.display == "Trevelyan Square, Boar Ln, Leeds, LS1 6AE"
    assert first.location.phone == "03003035678"
    assert first.practitioner.name.plain == "Mrs Sarah Black"
    assert first.practitioner.gender == "female"
    assert (first.organisation.ods_code, first.organisation.name) == (
        "A00001",
        "The Trevelyan Practice",
    )
    assert free.practice_ods == "A00001"
    assert free.trace_id == "t-1"


def test_example_slots_of_different_slot_types_cannot_be_booked_together():
    first, second = parse_free_slots(
        fixture_json("appointments_search_for_free_slots_response.json"), trace_id="t"
    ).slots

    assert second.start == first.end
    assert not second.follows(first)
    assert not bookable_together([first, second])
    assert bookable_together([first])


def test_slots_come_back_in_start_order_and_unbookable_ones_are_left_out():
    bundle = fixture_json("appointments_search_for_free_slots_response.json")
    slots = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Slot"]
    bundle["entry"].reverse()
    broken = copy.deepcopy(slots[0])
    broken["resource"].update(id="no-end")
    del broken["resource"]["end"]
    busy = copy.deepcopy(slots[0])
    busy["resource"].update(id="busy", status="busy")
    bundle["entry"] += [broken, busy]

    free = parse_free_slots(bundle, trace_id="t")

    assert [s.id for s in free.slots] == ["1584", "1644"]


def test_a_slot_whose_schedule_was_not_included_still_names_its_schedule():
    bundle = fixture_json("appointments_search_for_free_slots_response.json")
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Slot"]

    slot = parse_free_slots(bundle, trace_id="t", practice_ods="A00001").slots[0]

    assert slot.schedule.id == "14"
    assert slot.location is None and slot.organisation is None


def test_an_empty_slot_search_is_no_slots_not_an_error():
    free = parse_free_slots({"resourceType": "Bundle", "type": "searchset"}, trace_id="t")
    assert free.slots == ()


def test_a_slot_search_answered_with_something_else_is_an_invalid_response():
    with pytest.raises(InvalidResponse):
        parse_free_slots(fixture_json("operationoutcome_no_record_found.json"), trace_id="t")


# Booking ---------------------------------------------------------------------------------------


def example_slot() -> Slot:
    return Slot(
        id="1",
        start=datetime(2017, 5, 30, 10, 0, tzinfo=BST),
        end=datetime(2017, 5, 30, 10, 25, tzinfo=BST),
        slot_type="General GP Appointment",
        delivery_channel="In-person",
        schedule=Schedule(id="14", location=Location(id="32")),
    )


def test_the_booking_we_send_is_exactly_the_specifications_example_request():
    body = appointment_booking(
        consumer=EXAMPLE_BOOKER,
        patient_id="1",
        slots=[example_slot()],
        description="Free text description.",
        comment="Free text comment.",
        created=datetime(2017, 5, 25, 12, 48, 41, tzinfo=UTC),
    )

    assert body == fixture_json("appointments_book_appt_request.json")
    stu3(body)


def test_the_booking_names_the_schedules_practitioner_and_leaves_out_an_unsent_org_type():
    schedule = Schedule(id="14", location=Location(id="32"), practitioner=Practitioner(id="2"))
    consumer = Consumer(
        asid="1",
        ods_code="X1",
        organisation_name="Urgent treatment centre",
        issuer="https://consumer.example.nhs.uk/",
        organisation_phone="0300 000 0000",
    )

    body = appointment_booking(
        consumer=consumer,
        patient_id="1",
        slots=[replace(example_slot(), schedule=schedule)],
        description="Review",
        comment="  ",
        created=datetime(2017, 5, 25, 12, 0, tzinfo=UTC),
    )

    assert {"actor": {"reference": "Practitioner/2"}, "status": "accepted"} in body["participant"]
    assert "type" not in body["contained"][0]
    assert "comment" not in body
    stu3(body)


@pytest.mark.parametrize(
    ("description", "comment", "message"),
    [
        ("", None, "needs a description"),
        ("x" * 101, None, "at most 100"),
        ("Review", "x" * 501, "at most 500"),
    ],
)
def test_a_description_or_comment_beyond_the_limits_is_refused(description, comment, message):
    with pytest.raises(ValueError, match=message):
        appointment_booking(
            consumer=EXAMPLE_BOOKER,
            patient_id="1",
            slots=[example_slot()],
            description=description,
            comment=comment,
            created=datetime(2017, 5, 25, tzinfo=UTC),
        )


def test_the_longest_description_and_comment_allowed_are_sent():
    body = appointment_booking(
        consumer=EXAMPLE_BOOKER,
        patient_id="1",
        slots=[example_slot()],
        description="d" * 100,
        comment="c" * 500,
        created=datetime(2017, 5, 25, tzinfo=UTC),
    )
    assert (len(body["description"]), len(body["comment"])) == (100, 500)


def test_the_booked_example_reads_with_its_version_types_channel_and_booking_organisation():
    appointment = parse_appointment(
        fixture_json("appointments_book_appt_response.json"), trace_id="t-2"
    )

    assert appointment.id == "9"
    assert appointment.version == "636068818095315079"
    assert appointment.etag == 'W/"636068818095315079"'
    assert appointment.status == "booked" and not appointment.cancelled
    assert appointment.start == datetime(2017, 5, 30, 10, 0, tzinfo=BST)
    assert appointment.end == datetime(2017, 5, 30, 10, 25, tzinfo=BST)
    assert (appointment.description, appointment.comment) == (
        "Free text description.",
        "Free text comment.",
    )
    assert appointment.slot_ids == ("1",)
    assert (appointment.patient_id, appointment.location_id, appointment.practitioner_id) == (
        "1",
        "32",
        None,
    )
    assert appointment.slot_type == "General GP Appointment"
    assert appointment.schedule_type == "General GP Appointments"
    assert appointment.delivery_channel == "In-person"
    assert appointment.practitioner_role.display == "General Medical Practitioner"
    assert appointment.booking_organisation.ods_code == "A00001"
    assert appointment.booking_organisation.name == "Test Organization Name"
    assert appointment.booking_organisation.phone == "0300 303 5678"
    assert appointment.cancellation_reason is None
    assert appointment.trace_id == "t-2"


def test_the_etag_of_the_response_is_the_version_to_send_back():
    appointment = parse_appointment(
        fixture_json("appointments_read_appt_response.json"), trace_id="t", etag='W/"7"'
    )
    assert appointment.version == "7"


@pytest.mark.parametrize(
    ("etag", "version"), [('W/"3"', "3"), ('"3"', "3"), ("W/3", None), ("", None), (None, None)]
)
def test_weak_and_strong_etags_give_their_version(etag, version):
    assert parse_etag(etag) == version


def test_the_cancelled_example_reads_as_cancelled_with_its_reason():
    appointment = parse_appointment(
        fixture_json("appointments_cancel_appt_response.json"), trace_id="t"
    )
    assert appointment.cancelled
    assert appointment.cancellation_reason == "Free text cancellation reason."


def test_the_booking_location_header_names_the_appointment():
    location = "https://provider.example/A1/STU3/1/gpconnect/Appointment/appt-9/_history/1"
    assert appointment_id_from_location(location) == "appt-9"
    assert appointment_id_from_location("https://provider.example/Patient/1") is None


# A patient's appointments ---------------------------------------------------------------------------


def test_the_example_list_of_a_patients_appointments_is_in_start_order():
    listed = parse_patient_appointments(
        fixture_json("appointments_retrieve_patients_appts_response.json"),
        trace_id="t",
        patient_id="2",
    )

    assert [a.id for a in listed.appointments] == ["149", "148"]
    assert listed.appointments[1].slot_ids == ("544", "545", "546")
    assert listed.appointments[1].practitioner_id == "2"


def test_another_patients_appointment_in_the_list_is_an_invalid_response():
    with pytest.raises(InvalidResponse, match="another patient"):
        parse_patient_appointments(
            fixture_json("appointments_retrieve_patients_appts_response.json"),
            trace_id="t",
            patient_id="1",
        )


# Foundations ------------------------------------------------------------------------------------------


def test_the_foundations_capability_statement_reads():
    capabilities = parse_capabilities(
        fixture_json("foundations_get_capability_statement_response.json"), trace_id="t"
    )
    assert (capabilities.name, capabilities.fhir_version) == ("GP Connect", "3.0.1")


def test_the_foundations_patient_example_reads_with_address_and_phone():
    found = parse_patient_search(
        fixture_json("foundations_find_patient_response.json"),
        trace_id="t",
        nhs_number="9476719931",
    )
    record = parse_patient_record(
        fixture_json("foundations_read_patient_response.json"), trace_id="t", patient_id="2"
    )

    assert found.patient.name.display == "JACKSON, Jane (Miss)"
    assert record.patient.nhs_number == "9476719931"
    assert record.patient.telecom[0].value == "01454587554"


def test_a_read_patient_answer_for_another_id_is_an_invalid_response():
    with pytest.raises(InvalidResponse):
        parse_patient_record(
            fixture_json("foundations_read_patient_response.json"), trace_id="t", patient_id="99"
        )


def test_the_registered_example_is_a_temporary_registration_with_the_details_sent():
    record = parse_registered_patient(
        fixture_json("foundations_register_patient_response.json"),
        trace_id="t",
        nhs_number="9476719931",
    )

    patient = record.patient
    assert patient.id == "2"
    assert patient.registration_type == "T"
    assert (
        patient.home_address.display == "1 Withings Lane, Shadwell, Leeds, West Yorkshire, LS18 1AE"
    )
    assert [(t.system, t.use) for t in patient.telecom] == [("phone", "home"), ("phone", "mobile")]


def test_a_registration_answer_without_the_patient_is_an_invalid_response():
    with pytest.raises(InvalidResponse):
        parse_registered_patient(
            {"resourceType": "Bundle", "type": "searchset"}, trace_id="t", nhs_number="9476719931"
        )


def test_registering_from_a_pds_record_sends_only_the_fields_the_specification_allows():
    pds = parse_pds_patient(fixture_json("pds_fhir_patient.json"))

    body = register_patient_parameters(pds)

    (parameter,) = body["parameter"]
    assert parameter["name"] == "registerPatient"
    patient = parameter["resource"]
    assert set(patient) <= {
        "resourceType",
        "meta",
        "identifier",
        "name",
        "gender",
        "birthDate",
        "address",
        "telecom",
    }
    assert patient["meta"]["profile"] == [
        "https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-Patient-1"
    ]
    assert patient["identifier"] == [
        {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": pds.nhs_number}
    ]
    assert patient["name"] == [
        {"use": "official", "family": "Smith", "given": ["Jane"], "prefix": ["Mrs"]}
    ]
    assert patient["birthDate"] == "2010-10-22"
    assert [a["use"] for a in patient["address"]] == ["home"]
    assert patient["address"][0]["postalCode"] == "LS1 6AE"
    # PDS's textphone ("other") is not a contact the registration may carry.
    assert [(t["system"], t.get("use")) for t in patient["telecom"]] == [
        ("phone", "home"),
        ("email", "home"),
    ]
    stu3(body)


def test_a_patient_restricted_on_pds_is_never_registered():
    pds = parse_pds_patient(fixture_json("pds_fhir_patient_sensitive.json"))
    with pytest.raises(ValueError, match="restricted"):
        register_patient_parameters(pds)


def test_a_patient_without_a_birth_date_or_names_cannot_be_registered():
    pds = parse_pds_patient(fixture_json("pds_fhir_patient.json"))

    with pytest.raises(ValueError, match="birth date"):
        register_patient_parameters(replace(pds, birth_date=None))
    with pytest.raises(ValueError, match="given names"):
        register_patient_parameters(replace(pds, name=HumanName(family="Smith")))


def test_the_location_examples_read_with_name_address_and_phone():
    surgery = parse_location(fixture_json("foundations_read_location_response.json"), trace_id="t")
    visit = parse_location(fixture_json("appointments_unknown_visit_location.json"), trace_id="t")

    assert (surgery.id, surgery.name) == ("17", "Trevelyan Surgery")
    assert surgery.address.display == "Trevelyan Square, Boar Ln, Leeds, West Yorkshire, LS1 6AE"
    assert surgery.phone == "03003035678"
    assert visit.name == "Contact practice for location of the visit"
    assert visit.address.display == "Unknown, Unknown"
    assert visit.phone is None


def test_a_pds_home_address_that_is_current_is_preferred_to_a_historic_one():
    resource = fixture_json("pds_fhir_patient.json")
    historic = copy.deepcopy(resource["address"][0])
    historic["line"] = ["Old House"]
    current = copy.deepcopy(resource["address"][0])
    del current["period"]["end"]
    current["line"] = ["New House"]
    resource["address"] = [historic, current]

    assert parse_pds_patient(resource).home_address.lines == ("New House",)
