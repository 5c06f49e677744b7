"""GPConnectClient books appointments at the sandbox's federated practices over loopback.

The specification's consumer sessions (SPEC §3, §3.6) end to end: PDS trace, SDS lookup for
each interaction, free slots, find or register the patient at the practice, book, then read,
list, amend and cancel. The sandbox's clock (and so the client's) is fixed to Monday 22 March
2027, 07:00 UTC, so two-week windows cross the start of British Summer Time on the 28th.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gpconnect import (
    Appointment,
    Capability,
    ClientConfig,
    Conflict,
    Consumer,
    DuplicateRejected,
    GPConnectClient,
    Interactions,
    PersonalDemographics,
    ProviderUnavailable,
    RequestingUser,
    RetryPolicy,
    Slot,
    SpineDirectory,
    Timeouts,
    bookable_together,
)
from gpconnect.sandbox.catalogue import PATIENTS_BY_SCENARIO, PRACTICES_BY_ODS, Faults
from gpconnect.sandbox.data import PRACTITIONERS
from gpconnect.sandbox.provider import Sandbox
from gpconnect.sandbox.records import SandboxRecord
from tests.sandbox.conftest import _ThreadedServer, bound_socket

START = datetime(2027, 3, 22, 7, 0, tzinfo=UTC)  # a Monday, before the clocks go forward
TODAY = START.date()
RECORD = SandboxRecord(
    organisations=(), practitioners=PRACTITIONERS, documents=(), consultations=(), problems=()
)
# A receptionist at Riverside (A20047) booking for the federation's practices.
CONSUMER = Consumer(
    asid="200000000359",
    ods_code="A20047",
    organisation_name="Riverside Medical Practice",
    issuer="https://viewer.example.nhs.uk/",
    organisation_type="gp-practice",
    organisation_phone="0113 496 0001",
)
USER = RequestingUser(
    local_user_id="receptionist-7",
    family_name="Okoro",
    given_names=("Ada",),
    prefixes=("Ms",),
    sds_user_id="687227875014",
    sds_role_profile_id="418654321012",
)
CONFIG = ClientConfig(
    consumer=CONSUMER, retry=RetryPolicy(attempts=5, initial_backoff=0.01, jitter=0)
)
FEDERATION = ("A20047", "B82617", "C81016")


def day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> float:
        return self.now.timestamp()


@dataclass
class Federation:
    """The sandbox's practices as a consumer sees them: PDS, SDS and one client per practice."""

    sandbox: Sandbox
    http: httpx.Client
    clock: Clock
    sent: list[httpx.Request] = field(default_factory=list)

    @property
    def pds(self) -> PersonalDemographics:
        return PersonalDemographics(
            f"{self.sandbox.base_url}/personal-demographics/FHIR/R4", http=self.http
        )

    @property
    def sds(self) -> SpineDirectory:
        return SpineDirectory(f"{self.sandbox.base_url}/spine-directory/FHIR/R4", http=self.http)

    def practice(self, ods: str, config: ClientConfig = CONFIG) -> GPConnectClient:
        return GPConnectClient.for_practice(
            config,
            user=USER,
            ods_code=ods,
            directory=self.sds,
            http=self.http,
            clock=self.clock,
            sleep=lambda seconds: None,
        )

    def gp_connect_requests(self, method: str | None = None) -> list[httpx.Request]:
        return [
            r for r in self.sent if "Ssp-InteractionID" in r.headers and method in (None, r.method)
        ]


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    sock = bound_socket()
    clock = Clock()
    sandbox = Sandbox(
        base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
        data_dir=tmp_path,
        record=RECORD,
        clock=clock,
    )
    sent: list[httpx.Request] = []
    with (
        _ThreadedServer(sandbox, sock),
        httpx.Client(timeout=30, event_hooks={"request": [sent.append]}) as http,
    ):
        yield Federation(sandbox, http, clock, sent)


def first_free(client: GPConnectClient, slot_type: str = "Routine appointment") -> Slot:
    free = client.search_free_slots(day(1), day(7))
    return next(slot for slot in free.slots if slot.slot_type == slot_type)


def adjacent_pair(slots: tuple[Slot, ...]) -> list[Slot]:
    for first, second in zip(slots, slots[1:], strict=False):
        if second.follows(first):
            return [first, second]
    raise AssertionError("no two adjacent free slots")


def jwt_claims(request: httpx.Request) -> dict[str, Any]:
    payload = request.headers["Authorization"].removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# The specification's three consumer sessions ---------------------------------------------------


def test_simplest_case_a_registered_patient_is_booked_at_their_own_practice(federation):
    nhs_number = PATIENTS_BY_SCENARIO["documents"].nhs_number
    traced, _ = federation.pds.trace(nhs_number)
    practice = federation.practice(traced.registered_practice_ods)

    free = practice.search_free_slots(day(1), day(7))
    slot = next(s for s in free.slots if s.slot_type == "Routine appointment")
    found = practice.find_patient(nhs_number, capability=Capability.APPOINTMENTS).patient
    assert found is not None
    booked = practice.book_appointment(
        patient_id=found.id, slots=[slot], description="Blood pressure review"
    )

    assert booked.status == "booked"
    assert (booked.start, booked.end) == (slot.start, slot.end)
    assert booked.slot_ids == (slot.id,)
    assert booked.patient_id == found.id
    assert booked.location_id == slot.location.id
    assert booked.practitioner_id == slot.practitioner.id
    assert booked.slot_type == "Routine appointment"
    assert booked.delivery_channel == slot.delivery_channel
    assert booked.booking_organisation.ods_code == "A20047"
    assert booked.version == "1" and booked.etag == 'W/"1"'
    read = practice.read_appointment(booked.id)
    assert read.trace_id != booked.trace_id
    assert replace(read, trace_id=booked.trace_id) == booked
    assert slot.id not in {s.id for s in practice.search_free_slots(day(1), day(7)).slots}


def test_federated_practices_are_each_searched_and_booked_through_their_own_sds_entry(federation):
    nhs_number = PATIENTS_BY_SCENARIO["documents"].nhs_number  # registered at Riverside
    traced, _ = federation.pds.trace(nhs_number)
    practices = {ods: federation.practice(ods) for ods in FEDERATION}

    searches = {ods: client.search_free_slots(day(1), day(7)) for ods, client in practices.items()}
    for ods, free in searches.items():
        assert free.practice_ods == ods
        assert free.slots
        assert {slot.organisation.ods_code for slot in free.slots} == {ods}

    # Book at Hillcrest, where the patient has no record yet: register them there first.
    hillcrest = practices["B82617"]
    slot = next(s for s in searches["B82617"].slots if s.slot_type == "Routine appointment")
    assert hillcrest.find_patient(nhs_number, capability=Capability.APPOINTMENTS).patient is None
    registered = hillcrest.register_patient(traced).patient
    booked = hillcrest.book_appointment(
        patient_id=registered.id, slots=[slot], description="Asthma review"
    )

    assert booked.booking_organisation.ods_code == CONSUMER.ods_code  # us, not the practice
    listed = hillcrest.search_appointments(registered.id, day(0), day(14)).appointments
    assert [a.id for a in listed] == [booked.id]
    riverside = practices["A20047"]
    at_home = riverside.find_patient(nhs_number, capability=Capability.APPOINTMENTS).patient
    assert riverside.search_appointments(at_home.id, day(0), day(14)).appointments == ()
    # Every request went to its practice's ASID, with that practice's service root as aud.
    for request in federation.gp_connect_requests():
        ods = urlsplit(str(request.url)).path.split("/")[1]
        root = PRACTICES_BY_ODS[ods].service_root(federation.sandbox.base_url, "appointments")
        assert request.headers["Ssp-To"] == PRACTICES_BY_ODS[ods].asid
        assert jwt_claims(request)["aud"] == root
        assert str(request.url).startswith(root + "/")


def test_a_patient_the_practice_does_not_know_is_registered_temporarily_then_booked(federation):
    who = PATIENTS_BY_SCENARIO["not-registered"]
    traced, _ = federation.pds.trace(who.nhs_number)
    practice = federation.practice(traced.registered_practice_ods)
    slots = adjacent_pair(practice.search_free_slots(day(1), day(7)).slots)

    assert practice.find_patient(who.nhs_number, capability=Capability.APPOINTMENTS).patient is None
    registration = practice.register_patient(traced)
    patient = registration.patient
    found = practice.find_patient(who.nhs_number, capability=Capability.APPOINTMENTS).patient
    booked = practice.book_appointment(
        patient_id=patient.id,
        slots=slots,
        description="New patient check",
        comment="Interpreter not needed",
    )

    assert patient.nhs_number == who.nhs_number
    assert patient.registration_type == "T"
    assert patient.name.family == who.family
    assert found == patient
    assert practice.read_patient(patient.id).patient.id == patient.id
    assert (booked.start, booked.end) == (slots[0].start, slots[1].end)
    assert booked.slot_ids == (slots[0].id, slots[1].id)
    assert booked.comment == "Interpreter not needed"


def test_registering_a_patient_twice_at_a_practice_is_a_duplicate(federation):
    traced, _ = federation.pds.trace(PATIENTS_BY_SCENARIO["not-registered"].nhs_number)
    practice = federation.practice("C81016")
    practice.register_patient(traced)

    with pytest.raises(DuplicateRejected, match="already registered at this practice"):
        practice.register_patient(traced)


# Reading, amending and cancelling -----------------------------------------------------------


@pytest.fixture
def booking(federation) -> tuple[GPConnectClient, Appointment, Slot]:
    practice = federation.practice("A20047")
    slot = first_free(practice)
    patient = practice.find_patient(
        PATIENTS_BY_SCENARIO["documents"].nhs_number, capability=Capability.APPOINTMENTS
    ).patient
    booked = practice.book_appointment(
        patient_id=patient.id, slots=[slot], description="Medication review", comment="Morning"
    )
    return practice, booked, slot


def test_amending_changes_only_the_description_and_comment_and_gives_a_new_version(booking):
    practice, booked, _ = booking
    read = practice.read_appointment(booked.id)

    amended = practice.amend_appointment(
        booked.id, version=read.version, description="Diabetes review", comment="Bring meter"
    )

    assert (amended.description, amended.comment) == ("Diabetes review", "Bring meter")
    assert amended.version == "2"
    assert (amended.start, amended.slot_ids, amended.status) == (
        read.start,
        read.slot_ids,
        "booked",
    )
    assert practice.read_appointment(booked.id).description == "Diabetes review"


def test_amending_with_no_comment_removes_the_comment(booking):
    practice, booked, _ = booking
    amended = practice.amend_appointment(
        booked.id, version=booked.version, description="Medication review", comment=None
    )
    assert amended.comment is None


def test_cancelling_with_a_reason_frees_the_slot_and_the_cancellation_stays_listed(booking):
    practice, booked, slot = booking

    cancelled = practice.cancel_appointment(
        booked.id, version=booked.etag, reason="Patient feels better"
    )

    assert cancelled.cancelled
    assert cancelled.cancellation_reason == "Patient feels better"
    assert cancelled.description == booked.description
    assert slot.id in {s.id for s in practice.search_free_slots(day(1), day(7)).slots}
    listed = practice.search_appointments(booked.patient_id, day(0), day(14)).appointments
    assert [(a.id, a.status) for a in listed] == [(booked.id, "cancelled")]


def test_a_change_made_since_the_appointment_was_read_is_refused_as_a_conflict(booking):
    practice, booked, _ = booking
    practice.amend_appointment(  # someone else, at another desk
        booked.id, version=booked.version, description="Changed elsewhere", comment=None
    )

    with pytest.raises(Conflict) as raised:
        practice.cancel_appointment(booked.id, version=booked.version, reason="No longer needed")

    assert raised.value.spine_code == "FHIR_CONSTRAINT_VIOLATION"
    assert practice.read_appointment(booked.id).status == "booked"


def test_an_appointment_seen_cancelled_cannot_be_amended_or_cancelled_again(booking):
    practice, booked, _ = booking
    cancelled = practice.cancel_appointment(booked.id, version=booked.version, reason="Moved")

    with pytest.raises(ValueError, match="cancelled"):
        practice.amend_appointment(
            booked.id, version=cancelled.version, description="Too late", comment=None
        )
    with pytest.raises(ValueError, match="cancelled"):
        practice.cancel_appointment(booked.id, version=cancelled.version, reason="Again")


# Slots someone else took ----------------------------------------------------------------------


def test_booking_a_slot_someone_else_has_just_booked_is_a_duplicate(booking, federation):
    practice, _, slot = booking
    other = practice.find_patient(
        PATIENTS_BY_SCENARIO["placeholders"].nhs_number, capability=Capability.APPOINTMENTS
    ).patient

    with pytest.raises(DuplicateRejected) as raised:
        practice.book_appointment(patient_id=other.id, slots=[slot], description="Check up")

    assert raised.value.http_status == 409
    assert "slot" in raised.value.message


def test_two_receptionists_booking_one_slot_at_the_same_moment_make_one_booking(federation):
    desks = [federation.practice("B82617") for _ in range(2)]
    slot = first_free(desks[0])
    patient = (
        desks[0]
        .find_patient(
            PATIENTS_BY_SCENARIO["no-documents"].nhs_number, capability=Capability.APPOINTMENTS
        )
        .patient
    )
    barrier = threading.Barrier(len(desks))
    outcomes: list[object] = []

    def book(desk: GPConnectClient) -> None:
        barrier.wait()
        try:
            outcomes.append(
                desk.book_appointment(patient_id=patient.id, slots=[slot], description="Review")
            )
        except DuplicateRejected as error:
            outcomes.append(error)

    threads = [threading.Thread(target=book, args=(desk,)) for desk in desks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(type(o).__name__ for o in outcomes) == ["Appointment", "DuplicateRejected"]
    listed = desks[0].search_appointments(patient.id, day(0), day(14)).appointments
    assert len(listed) == 1


# The 14-day limit on slot searches -------------------------------------------------------------


def test_a_free_slot_search_over_fourteen_days_is_refused_before_anything_is_sent(federation):
    practice = federation.practice("A20047")

    with pytest.raises(ValueError, match="at most 14 days"):
        practice.search_free_slots(day(0), day(15))
    with pytest.raises(ValueError, match="at most 14 days"):
        practice.search_free_slots(START, START + timedelta(days=14, minutes=1))

    assert federation.gp_connect_requests() == []


def test_fourteen_days_across_the_change_to_summer_time_are_accepted_by_the_practice(federation):
    free = federation.practice("A20047").search_free_slots(day(0), day(14))

    assert free.slots
    assert max(s.start for s in free.slots).date() == day(14)  # the last day is included
    assert {s.start.utcoffset() for s in free.slots} == {timedelta(0), timedelta(hours=1)}


def test_a_search_between_two_times_returns_only_slots_wholly_inside_them(federation):
    practice = federation.practice("A20047")
    start = datetime(2027, 3, 23, 9, 0, tzinfo=UTC)
    end = datetime(2027, 3, 23, 10, 0, tzinfo=UTC)

    free = practice.search_free_slots(start, end)

    assert free.slots
    assert all(start <= s.start and s.end <= end for s in free.slots)


# Bookings are never retried ------------------------------------------------------------------


def test_a_booking_answered_with_a_5xx_is_sent_once_and_reported_unavailable(federation):
    practice = federation.practice("B82617")
    slot = first_free(practice)
    patient = practice.find_patient(
        PATIENTS_BY_SCENARIO["no-documents"].nhs_number, capability=Capability.APPOINTMENTS
    ).patient
    federation.sandbox.faults["B82617"] = Faults(error_rate=1.0)

    with pytest.raises(ProviderUnavailable) as raised:
        practice.book_appointment(patient_id=patient.id, slots=[slot], description="Review")

    assert raised.value.http_status == 503
    assert len(federation.gp_connect_requests("POST")) == 1
    del federation.sandbox.faults["B82617"]
    assert practice.search_appointments(patient.id, day(0), day(14)).appointments == ()


def test_a_booking_that_times_out_is_sent_once_and_reported_unavailable(federation):
    impatient = replace(CONFIG, timeouts=Timeouts(read=0.3))
    practice = federation.practice("B82617", impatient)
    slot = first_free(practice)
    patient = practice.find_patient(
        PATIENTS_BY_SCENARIO["no-documents"].nhs_number, capability=Capability.APPOINTMENTS
    ).patient
    federation.sandbox.faults["B82617"] = Faults(latency_seconds=1.0)

    with pytest.raises(ProviderUnavailable, match="did not respond in time"):
        practice.book_appointment(patient_id=patient.id, slots=[slot], description="Review")

    assert len(federation.gp_connect_requests("POST")) == 1


class LostReply(httpx.BaseTransport):
    """Delivers every request, but loses the reply to a booking: the provider has booked it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/Appointment"):
            response.read()
            response.close()
            raise httpx.ReadTimeout("the reply was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_booking_whose_reply_is_lost_is_not_sent_again_and_shows_in_the_patients_list(
    federation,
):
    posts: list[httpx.Request] = []
    with httpx.Client(transport=LostReply(), event_hooks={"request": [posts.append]}) as http:
        practice = replace(federation, http=http).practice("B82617")
        slot = first_free(practice)
        patient = practice.find_patient(
            PATIENTS_BY_SCENARIO["no-documents"].nhs_number, capability=Capability.APPOINTMENTS
        ).patient

        with pytest.raises(ProviderUnavailable) as raised:
            practice.book_appointment(patient_id=patient.id, slots=[slot], description="Review")
        listed = practice.search_appointments(patient.id, day(0), day(14)).appointments

    assert raised.value.retryable  # for reads; a booking is the caller's to reconcile
    assert [r.method for r in posts].count("POST") == 1
    assert [a.slot_ids for a in listed] == [(slot.id,)]


def test_a_slot_search_unlike_a_booking_is_retried_after_a_5xx(federation):
    practice = federation.practice("C81016")
    federation.sandbox.faults["C81016"] = Faults(error_rate=1.0)

    with pytest.raises(ProviderUnavailable):
        practice.search_free_slots(day(1), day(2))

    assert len(federation.gp_connect_requests("GET")) == CONFIG.retry.attempts


# What the slots and appointments show -----------------------------------------------------------


def test_each_slot_carries_everything_the_specification_says_to_show(federation):
    free = federation.practice("A20047").search_free_slots(day(1), day(7))

    assert free.trace_id
    for slot in free.slots:
        assert slot.start < slot.end and slot.duration in (
            timedelta(minutes=10),
            timedelta(minutes=15),
        )
        assert slot.delivery_channel in ("In-person", "Telephone", "Video")
        assert slot.slot_type and slot.schedule.schedule_type
        assert slot.location.name and slot.location.address.postcode
        assert slot.practitioner.name.family and slot.practitioner.gender
        assert slot.schedule.practitioner_role.display
        assert slot.organisation.name == "Riverside Medical Practice"
    assert len({slot.location.id for slot in free.slots}) == 2  # the main and branch surgeries


def test_slots_kept_for_the_federation_are_offered_to_its_practices_only(federation):
    ours = federation.practice("B82617").search_free_slots(day(1), day(7))
    outsider = replace(CONSUMER, ods_code="RR8", organisation_name="Leeds Teaching Hospitals")
    theirs = federation.practice("B82617", replace(CONFIG, consumer=outsider)).search_free_slots(
        day(1), day(7)
    )

    assert {s.id for s in theirs.slots} < {s.id for s in ours.slots}


def test_slots_that_do_not_follow_each_other_are_refused_before_anything_is_sent(federation):
    practice = federation.practice("A20047")
    free = practice.search_free_slots(day(1), day(2))
    first = free.slots[0]
    later = next(s for s in free.slots if s.start > first.end)
    assert not bookable_together([first, later])
    sent = len(federation.gp_connect_requests())

    with pytest.raises(ValueError, match="cannot be booked together"):
        practice.book_appointment(patient_id="pat-1", slots=[first, later], description="Review")
    assert len(federation.gp_connect_requests()) == sent


def test_the_capability_statement_is_read_from_the_foundations_endpoint(federation):
    capabilities = federation.practice("A20047").capabilities(Capability.APPOINTMENTS)

    assert capabilities.version == "1.2.9"
    request = federation.gp_connect_requests()[-1]
    assert request.headers["Ssp-InteractionID"] == Interactions.FOUNDATIONS_METADATA.id
