"""The appointment services against a real sandbox over loopback (one per test).

The specification's three consumer sessions (SPEC §3, §3.6), amend and cancel, and what
happens when a booking is raced, refused, or answered too late.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.utils import timezone

from gpconnect import GPConnectClient, Organisation, Schedule, Slot
from gpconnect.sandbox.catalogue import Faults
from tests.viewer import appointment_sandbox
from tests.viewer.appointment_sandbox import (
    SSP_CODES,
    AppointmentSandbox,
    book_elsewhere,
    first_free_slot,
    operation_outcome,
)
from tests.viewer.conftest import make_user, nhs_number_of
from viewer import tasks
from viewer.models import AuditEvent, Booking, BookingState
from viewer.services import PatientLookupError
from viewer.services import appointments as service

pytestmark = pytest.mark.django_db

appointments_gp = appointment_sandbox.appointments_gp
federation = appointment_sandbox.federation


def patient_of(user: User, scenario: str, session: SessionStore) -> service.BookingPatient:
    return service.appointment_patient_open(
        user=user, nhs_number=nhs_number_of(scenario), session=session
    )


def book(
    user: User,
    patient: service.BookingPatient,
    session: SessionStore,
    ods: str,
    slot: Any,
    *,
    token: uuid.UUID | None = None,
    confirmed: bool = False,
    length: int = 1,
) -> Booking:
    return service.appointment_book(
        user=user,
        patient=patient,
        session=session,
        practice_ods=ods,
        slot_id=slot.id,
        start=slot.start,
        length=length,
        description="Review of repeat medication",
        comment="Needs step-free access",
        token=token or uuid.uuid4(),
        registration_confirmed=confirmed,
    )


def rows_at(user: User, patient: service.BookingPatient, session: SessionStore, ods: str) -> Any:
    listing = service.appointments_list(user=user, patient=patient, session=session)
    return next(entry for entry in listing if entry.practice.ods_code == ods)


# The specification's three consumer sessions --------------------------------------------------


def test_the_simplest_case_books_a_registered_patient_at_their_own_practice(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    found = service.slots_search(
        user=receptionist,
        patient=patient,
        session=session,
        practice_codes=["A20047"],
        start=appointments_gp.today() + timedelta(days=1),
        days=7,
        filters=service.SlotFilters(),
    )
    row = found.days[0].practices[0].rows[0]
    slot = first_free_slot(appointments_gp, "A20047", slot_type=row.slot_type)

    booking = book(receptionist, patient, session, "A20047", slot)

    assert booking.state == BookingState.CONFIRMED
    assert booking.appointment_id and not booking.registered
    assert slot.id in appointments_gp.booked_slot_ids("A20047")
    assert appointments_gp.bookings_posted() == 1
    event = AuditEvent.objects.filter(action="book").get()
    assert (event.outcome, event.nhs_number) == ("success", nhs_number_of("documents"))
    assert event.trace_id == booking.trace_id != ""
    assert AuditEvent.objects.filter(action="search_slots", outcome="success").exists()


def test_federated_practices_are_searched_at_once_grouped_by_day_then_practice(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "no-documents", session)
    found = service.slots_search(
        user=receptionist,
        patient=patient,
        session=session,
        practice_codes=["A20047", "B82617", "C81016"],
        start=appointments_gp.today(),
        days=14,
        filters=service.SlotFilters(channel="Telephone", time_of_day="morning"),
    )

    assert found.failures == []
    practices_per_day = [{p.ods_code for p in day.practices} for day in found.days]
    assert any(len(codes) == 3 for codes in practices_per_day)
    assert [day.day for day in found.days] == sorted(day.day for day in found.days)
    rows = [row for day in found.days for p in day.practices for row in p.rows]
    assert rows and all(r.channel == "Telephone" and r.start < "12:00" for r in rows)
    assert found.shown < found.found  # the filters hid the rest
    assert AuditEvent.objects.filter(action="search_slots").count() == 3


def test_slots_can_be_narrowed_to_a_practitioner_role_and_gender(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)

    def search(filters: service.SlotFilters) -> Any:
        return service.slots_search(
            user=receptionist,
            patient=patient,
            session=session,
            practice_codes=["A20047", "B82617"],
            start=appointments_gp.today() + timedelta(days=1),
            days=7,
            filters=filters,
        )

    everything = search(service.SlotFilters())
    every_row = [r for d in everything.days for p in d.practices for r in p.rows]
    role = everything.role_options[0]
    narrowed = search(service.SlotFilters(role=role, gender="female"))
    rows = [r for d in narrowed.days for p in d.practices for r in p.rows]

    assert len(everything.role_options) > 1
    assert rows and all(
        (r.practitioner_role, r.practitioner_gender) == (role, "Female") for r in rows
    )
    assert len(rows) < len(every_row)
    assert {(r.practitioner_role, r.practitioner_gender) for r in every_row} > {(role, "Female")}


def test_booking_at_another_practice_registers_the_patient_there_once_confirmed(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "no-documents", session)  # registered at B82617
    slot = first_free_slot(appointments_gp, "C81016")

    with pytest.raises(service.RegistrationNeeded):
        book(receptionist, patient, session, "C81016", slot)
    assert appointments_gp.bookings_posted() == 0

    booking = book(receptionist, patient, session, "C81016", slot, confirmed=True)

    assert booking.state == BookingState.CONFIRMED and booking.registered
    listed = rows_at(receptionist, patient, session, "C81016")
    assert [r.description for r in listed.rows] == ["Review of repeat medication"]


def test_a_patient_no_practice_knows_is_registered_then_booked(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "not-registered", session)
    slot = first_free_slot(appointments_gp, "A20047")
    option = service.booking_option(
        user=receptionist,
        patient=patient,
        session=session,
        practice_ods="A20047",
        slot_id=slot.id,
        start=slot.start,
    )
    assert option.registered is False

    booking = book(receptionist, patient, session, "A20047", slot, confirmed=True)

    assert booking.state == BookingState.CONFIRMED and booking.registered
    registration = AuditEvent.objects.get(action="register_patient")
    assert registration.outcome == "success" and registration.trace_id
    booked = AuditEvent.objects.get(action="book")
    assert "registered temporarily" in booked.detail
    assert registration.trace_id in booked.detail  # with the find and registration traces


def test_adjacent_slots_are_booked_together_as_one_longer_appointment(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    found = service.slots_search(
        user=receptionist,
        patient=patient,
        session=session,
        practice_codes=["A20047"],
        start=appointments_gp.today() + timedelta(days=1),
        days=7,
        filters=service.SlotFilters(),
    )
    row = next(r for d in found.days for p in d.practices for r in p.rows if r.followers >= 1)
    option = service.booking_option(
        user=receptionist,
        patient=patient,
        session=session,
        practice_ods="A20047",
        slot_id=row.id,
        start=service.datetime.fromisoformat(row.start_iso),
    )
    assert len(option.lengths) >= 2

    booking = service.appointment_book(
        user=receptionist,
        patient=patient,
        session=session,
        practice_ods="A20047",
        slot_id=row.id,
        start=service.datetime.fromisoformat(row.start_iso),
        length=2,
        description="Double appointment",
        comment="",
        token=uuid.uuid4(),
        registration_confirmed=False,
    )

    assert booking.state == BookingState.CONFIRMED
    assert len(booking.slot_ids) == 2
    assert set(booking.slot_ids) <= appointments_gp.booked_slot_ids("A20047")


# Amend and cancel -------------------------------------------------------------------------------


def test_amending_changes_the_description_and_comment_at_the_practice(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    book(receptionist, patient, session, "A20047", first_free_slot(appointments_gp, "A20047"))
    row = rows_at(receptionist, patient, session, "A20047").rows[0]
    view = service.appointment_get(
        user=receptionist, patient=patient, session=session, practice_ods="A20047", key=row.key
    )

    service.appointment_amend(
        user=receptionist,
        patient=patient,
        session=session,
        practice_ods="A20047",
        key=row.key,
        version=view.appointment.version or "",
        description="Blood pressure check",
        comment="",
    )

    after = rows_at(receptionist, patient, session, "A20047").rows[0]
    assert (after.description, after.comment) == ("Blood pressure check", "")
    assert AuditEvent.objects.filter(action="amend", outcome="success").exists()


def test_an_amendment_from_a_stale_page_is_refused_and_says_so(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    book(receptionist, patient, session, "A20047", first_free_slot(appointments_gp, "A20047"))
    row = rows_at(receptionist, patient, session, "A20047").rows[0]
    amend = {
        "user": receptionist,
        "patient": patient,
        "session": session,
        "practice_ods": "A20047",
        "key": row.key,
        "version": row.version,
        "comment": "",
    }
    service.appointment_amend(**amend, description="First change")

    with pytest.raises(service.AppointmentError, match="changed this appointment"):
        service.appointment_amend(**amend, description="Second change, from an old page")
    assert rows_at(receptionist, patient, session, "A20047").rows[0].description == "First change"


def test_cancelling_with_a_reason_frees_the_slot_and_lists_the_appointment_cancelled(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    booking = book(receptionist, patient, session, "A20047", slot)
    row = rows_at(receptionist, patient, session, "A20047").rows[0]

    service.appointment_cancel(
        user=receptionist,
        patient=patient,
        session=session,
        practice_ods="A20047",
        key=row.key,
        version=row.version,
        reason="Patient asked to cancel",
    )

    after = rows_at(receptionist, patient, session, "A20047").rows[0]
    assert after.cancelled and after.cancellation_reason == "Patient asked to cancel"
    assert slot.id not in appointments_gp.booked_slot_ids("A20047")
    booking.refresh_from_db()
    assert booking.state == BookingState.CANCELLED
    assert AuditEvent.objects.filter(action="cancel", outcome="success").exists()


def test_an_amendment_without_an_answer_is_recorded_unknown_and_read_back(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User, settings: Any
) -> None:
    settings.GPCONNECT_READ_TIMEOUT = 1
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    book(receptionist, patient, session, "A20047", first_free_slot(appointments_gp, "A20047"))
    row = rows_at(receptionist, patient, session, "A20047").rows[0]
    appointments_gp.sandbox.faults["A20047"] = Faults(write_commit_delay_seconds=2)

    with pytest.raises(service.AppointmentError, match="did not confirm") as raised:
        service.appointment_amend(
            user=receptionist,
            patient=patient,
            session=session,
            practice_ods="A20047",
            key=row.key,
            version=row.version,
            description="Blood pressure check",
            comment="",
        )

    assert raised.value.reason == "unknown"
    event = AuditEvent.objects.get(action="amend")
    assert event.outcome == "unknown" and "read back: not amended yet" in event.detail
    assert AuditEvent.objects.filter(action="read_appointment", outcome="success").exists()


def test_a_cancellation_whose_answer_was_lost_is_read_back_and_shown_done(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User, settings: Any
) -> None:
    settings.GPCONNECT_READ_TIMEOUT = 1
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    book(receptionist, patient, session, "A20047", first_free_slot(appointments_gp, "A20047"))
    row = rows_at(receptionist, patient, session, "A20047").rows[0]
    appointments_gp.sandbox.faults["A20047"] = Faults(write_reply_delay_seconds=3)

    cancelled = service.appointment_cancel(
        user=receptionist,
        patient=patient,
        session=session,
        practice_ods="A20047",
        key=row.key,
        version=row.version,
        reason="Patient asked to cancel",
    )

    assert cancelled.cancelled
    event = AuditEvent.objects.get(action="cancel")
    assert event.outcome == "success" and "then read back: cancelled" in event.detail
    assert Booking.objects.get().state == BookingState.CANCELLED


def test_another_patients_appointment_key_is_a_404_and_audited(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    booked_for = patient_of(receptionist, "documents", session)
    book(receptionist, booked_for, session, "A20047", first_free_slot(appointments_gp, "A20047"))
    key = rows_at(receptionist, booked_for, session, "A20047").rows[0].key
    other = patient_of(receptionist, "placeholders", session)

    with pytest.raises(service.Http404):
        service.appointment_get(
            user=receptionist, patient=other, session=session, practice_ods="A20047", key=key
        )
    assert AuditEvent.objects.filter(action="access_denied").exists()


# Reliability -------------------------------------------------------------------------------------


def test_the_same_form_submitted_twice_books_once_and_returns_the_same_booking(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    token = uuid.uuid4()

    first = book(receptionist, patient, session, "A20047", slot, token=token)
    again = book(receptionist, patient, session, "A20047", slot, token=token)

    assert first.pk == again.pk and again.state == BookingState.CONFIRMED
    assert appointments_gp.bookings_posted() == 1


def test_a_slot_someone_else_just_booked_is_refused_with_the_nearest_alternatives(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    slot = first_free_slot(appointments_gp, "B82617")
    other_receptionist = make_user("colleague", "Receptionist")
    book(
        other_receptionist,
        patient_of(other_receptionist, "no-documents", SessionStore()),
        SessionStore(),
        "B82617",
        slot,
    )
    patient = patient_of(receptionist, "many-documents", session)  # also at B82617

    with pytest.raises(service.SlotTaken) as raised:
        book(receptionist, patient, session, "B82617", slot)

    taken = raised.value
    assert "Someone else has just booked this slot" in taken.message
    assert taken.practice.ods_code == "B82617"
    assert 0 < len(taken.alternatives) <= service.ALTERNATIVES
    assert slot.id not in {a.id for a in taken.alternatives}
    assert {a.practice_ods for a in taken.alternatives} == {"B82617"}
    mine = Booking.objects.get(user=receptionist)
    assert mine.state == BookingState.FAILED


# Real transactions: each thread has its own connection; the role groups are kept.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_receptionists_booking_one_slot_at_the_same_moment_make_one_booking(
    appointments_gp: AppointmentSandbox, federation: Any
) -> None:
    slot = first_free_slot(appointments_gp, "B82617")
    people = [make_user(f"receptionist{n}", "Receptionist") for n in (1, 2)]
    sessions = [SessionStore(), SessionStore()]
    patients = [
        patient_of(people[0], "no-documents", sessions[0]),
        patient_of(people[1], "many-documents", sessions[1]),
    ]
    # The winner's booking takes a second at the practice: the loser arrives meanwhile.
    appointments_gp.sandbox.faults["B82617"] = Faults(write_commit_delay_seconds=1)
    start = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def attempt(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = book(people[index], patients[index], sessions[index], "B82617", slot)
        except service.SlotTaken as taken:
            outcomes[index] = taken
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    booked = [o for o in outcomes if isinstance(o, Booking)]
    taken = [o for o in outcomes if isinstance(o, service.SlotTaken)]
    assert len(booked) == 1 and booked[0].state == BookingState.CONFIRMED
    assert len(taken) == 1 and taken[0].alternatives
    assert Booking.objects.filter(state=BookingState.CONFIRMED).count() == 1
    assert appointments_gp.booked_slot_ids("B82617") >= {slot.id}
    # This service's own lock decided: the loser's booking was never sent.
    assert taken[0].message == service.SLOT_IN_FLIGHT_MESSAGE
    assert appointments_gp.bookings_posted() == 1


def test_a_slot_booked_through_another_system_meanwhile_is_refused_by_the_practice(
    appointments_gp: AppointmentSandbox,
    federation: Any,
    receptionist: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "many-documents", session)
    slot = first_free_slot(appointments_gp, "B82617")
    chain = service._chain

    def then_taken_elsewhere(*args: Any) -> Any:
        found = chain(*args)  # still free when we look…
        book_elsewhere(appointments_gp, "B82617", slot, nhs_number_of("no-documents"))
        return found  # …taken by the time we book

    monkeypatch.setattr(service, "_chain", then_taken_elsewhere)

    with pytest.raises(service.SlotTaken) as raised:
        book(receptionist, patient, session, "B82617", slot)

    # The practice's 409 decided, and the patient's list showed it was not ours.
    assert raised.value.message == service.SLOT_TAKEN_MESSAGE
    assert appointments_gp.bookings_posted() == 2
    event = AuditEvent.objects.get(action="book")
    assert "409 DUPLICATE_REJECTED" in event.detail and event.outcome == "failure"


def test_a_booking_made_but_answered_too_late_is_found_and_shown_booked_once(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User, settings: Any
) -> None:
    settings.GPCONNECT_READ_TIMEOUT = 1
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    appointments_gp.sandbox.faults["A20047"] = Faults(write_reply_delay_seconds=3)

    booking = book(receptionist, patient, session, "A20047", slot)

    assert booking.state == BookingState.CONFIRMED and booking.appointment_id
    assert appointments_gp.bookings_posted() == 1  # never sent again
    del appointments_gp.sandbox.faults["A20047"]
    rows = rows_at(receptionist, patient, session, "A20047").rows
    assert len(rows) == 1 and not rows[0].cancelled
    event = AuditEvent.objects.get(action="book")
    assert event.outcome == "success" and "found in the patient's appointments" in event.detail


def test_a_practice_unreachable_before_booking_is_sent_nothing_and_the_user_told(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    appointments_gp.sandbox.faults["A20047"] = Faults(error_rate=1.0)

    with pytest.raises(service.GPConnectError) as raised:
        book(receptionist, patient, session, "A20047", slot)

    assert raised.value.trace_id
    assert appointments_gp.bookings_posted() == 0
    assert Booking.objects.get().state == BookingState.FAILED
    assert AuditEvent.objects.get(action="book").outcome == "failure"


def expire_lease(booking: Booking) -> None:
    """As if the request holding the booking had stopped, or its next check were due."""
    Booking.objects.filter(pk=booking.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        (None, "a gateway's 503"),
        ((500, operation_outcome("500", system=SSP_CODES)), "the Spine proxy's 500"),
        # A practice whose server failed part way may still have saved the appointment.
        ((500, operation_outcome("INTERNAL_SERVER_ERROR")), "the practice's own 500"),
    ],
)
def test_a_booking_lost_on_the_way_stays_unknown_with_its_slot_held_until_it_settles(
    appointments_gp: AppointmentSandbox,
    federation: Any,
    receptionist: User,
    settings: Any,
    reply: Any,
    answer: str,
) -> None:
    settings.GPCONNECT_BOOKING_SETTLE_SECONDS = 1
    session = SessionStore()
    patient = patient_of(receptionist, "no-documents", session)
    slot = first_free_slot(appointments_gp, "B82617")
    appointments_gp.refuse_bookings = reply is None
    appointments_gp.booking_reply = reply

    booking = book(receptionist, patient, session, "B82617", slot)

    assert booking.state == BookingState.UNKNOWN, answer
    assert "may still be making it" in booking.failure and "Do not book again" in booking.failure
    colleague = make_user("colleague", "Receptionist")
    with pytest.raises(service.SlotTaken) as raised:
        book(
            colleague,
            patient_of(colleague, "many-documents", SessionStore()),
            SessionStore(),
            "B82617",
            slot,
        )
    assert raised.value.message == service.SLOT_IN_FLIGHT_MESSAGE
    assert appointments_gp.bookings_posted() == 1

    time.sleep(1.1)  # the settle window passes
    expire_lease(booking)
    checked = service.booking_get(user=receptionist, token=booking.token, session=session)

    assert checked.state == BookingState.FAILED and "nothing was booked" in checked.failure
    assert [
        e.outcome
        for e in AuditEvent.objects.filter(action="book", user=receptionist).order_by("id")
    ] == ["unknown", "failure"]


def test_a_booking_the_practice_makes_after_the_timeout_stays_unknown_until_it_is_found(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User, settings: Any
) -> None:
    settings.GPCONNECT_READ_TIMEOUT = 1
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    appointments_gp.sandbox.faults["A20047"] = Faults(write_commit_delay_seconds=2)

    booking = book(receptionist, patient, session, "A20047", slot)

    # Checked at once, and not there yet: not "nothing was booked", since it may still be.
    assert booking.state == BookingState.UNKNOWN
    assert slot.id not in appointments_gp.booked_slot_ids("A20047")
    deadline = time.monotonic() + 10
    while slot.id not in appointments_gp.booked_slot_ids("A20047"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    expire_lease(booking)
    checked = service.booking_get(user=receptionist, token=booking.token, session=session)

    assert checked.state == BookingState.CONFIRMED and checked.appointment_id
    assert appointments_gp.bookings_posted() == 1


@pytest.mark.parametrize(
    "reply",
    [
        (201, b"this is not the Appointment"),
        (500, operation_outcome("INTERNAL_SERVER_ERROR")),
        (409, operation_outcome("DUPLICATE_REJECTED")),
        (504, b"gateway timeout"),
    ],
    ids=["an unreadable 201", "a 500", "a 409", "a 504"],
)
def test_a_booking_the_practice_made_is_shown_booked_whatever_came_back(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User, reply: Any
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    appointments_gp.booking_reply = reply
    appointments_gp.reply_after_booking = True

    booking = book(receptionist, patient, session, "A20047", slot)

    assert booking.state == BookingState.CONFIRMED and booking.appointment_id
    assert appointments_gp.bookings_posted() == 1
    event = AuditEvent.objects.get(action="book")
    assert event.outcome == "success" and "found in the patient's appointments" in event.detail


def test_a_refusal_from_the_practice_is_not_booked_at_once_and_frees_the_slot(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    appointments_gp.booking_reply = (400, operation_outcome("INVALID_RESOURCE"))

    with pytest.raises(service.AppointmentError):
        book(receptionist, patient, session, "A20047", slot)

    assert Booking.objects.get().state == BookingState.FAILED
    appointments_gp.booking_reply = None
    assert book(receptionist, patient, session, "A20047", slot).state == BookingState.CONFIRMED


def test_an_unexpected_fault_after_sending_is_checked_rather_than_called_a_failure(
    appointments_gp: AppointmentSandbox,
    federation: Any,
    receptionist: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    sent = GPConnectClient.book_appointment

    def book_then_break(self: GPConnectClient, **kwargs: Any) -> Any:
        sent(self, **kwargs)
        raise RuntimeError("a bug of ours while reading the answer")

    monkeypatch.setattr(GPConnectClient, "book_appointment", book_then_break)

    booking = book(receptionist, patient, session, "A20047", slot)

    assert booking.state == BookingState.CONFIRMED


def test_an_unexpected_fault_before_sending_fails_the_booking_and_frees_the_slot(
    appointments_gp: AppointmentSandbox,
    federation: Any,
    receptionist: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    chain = service._chain
    monkeypatch.setattr(service, "_chain", lambda *args: 1 / 0)

    with pytest.raises(service.AppointmentError, match="nothing was booked"):
        book(receptionist, patient, session, "A20047", slot)

    assert Booking.objects.get().state == BookingState.FAILED
    monkeypatch.setattr(service, "_chain", chain)
    assert book(receptionist, patient, session, "A20047", slot).state == BookingState.CONFIRMED


def stalled_booking(
    user: User, patient: service.BookingPatient, slot: Any, **fields: Any
) -> Booking:
    """A pending booking of the slot whose request stopped (its worker was killed)."""
    return Booking.objects.create(
        token=uuid.uuid4(),
        user=user,
        nhs_number=patient.nhs_number,
        patient_key=patient.id,
        practice_ods="A20047",
        first_slot_id=slot.id,
        slot_ids=[slot.id],
        description="Review of repeat medication",
        **{"lease_until": timezone.now() - timedelta(seconds=1), **fields},
    )


def test_a_booking_whose_request_stopped_before_sending_no_longer_holds_the_slot(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    colleague = make_user("colleague", "Receptionist")
    stalled = stalled_booking(colleague, patient, slot)

    booking = book(receptionist, patient, session, "A20047", slot)

    assert booking.state == BookingState.CONFIRMED
    stalled.refresh_from_db()
    assert stalled.state == BookingState.FAILED and "stopped before" in stalled.failure
    assert appointments_gp.bookings_posted() == 1


def test_a_booking_still_being_made_is_left_alone_by_its_polling_page(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    busy = stalled_booking(
        receptionist,
        patient,
        slot,
        sent_at=timezone.now() - timedelta(minutes=5),
        lease_until=timezone.now() + timedelta(minutes=1),  # its request is still going
    )
    asked = len(appointments_gp.paths)

    checked = service.booking_get(user=receptionist, token=busy.token, session=session)

    assert checked.state == BookingState.PENDING
    assert len(appointments_gp.paths) == asked


def test_the_scheduled_check_settles_a_booking_whose_request_stopped_after_sending(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    long_ago = timezone.now() - timedelta(hours=1)
    stalled = stalled_booking(
        receptionist,
        patient,
        slot,
        sent_at=long_ago,
        settle_until=long_ago,
        start=slot.start,
        end=slot.end,
        patient_logical_id=f"pat-{patient.nhs_number}",  # the sandbox's logical ids
    )

    assert tasks.recheck_bookings() == 1

    stalled.refresh_from_db()
    assert stalled.state == BookingState.FAILED
    assert AuditEvent.objects.get(action="book").detail.count("scheduled check") == 1


def test_a_booking_whose_check_also_fails_is_unknown_and_resolved_by_the_scheduled_check(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User, settings: Any
) -> None:
    settings.GPCONNECT_READ_TIMEOUT = 1
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    appointments_gp.sandbox.faults["A20047"] = Faults(write_reply_delay_seconds=3)
    appointments_gp.fail_after_booking = True

    booking = book(receptionist, patient, session, "A20047", slot)

    assert booking.state == BookingState.UNKNOWN
    assert "Do not book again" in booking.failure
    assert AuditEvent.objects.get(action="book").outcome == "unknown"

    appointments_gp.fail_after_booking = False
    expire_lease(booking)
    assert tasks.recheck_bookings() == 1

    booking.refresh_from_db()
    assert booking.state == BookingState.CONFIRMED
    assert appointments_gp.bookings_posted() == 1


def test_the_same_patient_booked_from_a_second_tab_gets_the_booking_in_flight(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    first_tab = stalled_booking(
        receptionist, patient, slot, lease_until=timezone.now() + timedelta(minutes=1)
    )

    second_tab = book(receptionist, patient, session, "A20047", slot)

    assert second_tab.pk == first_tab.pk
    assert appointments_gp.bookings_posted() == 0


def test_adjacent_slots_no_longer_all_free_are_refused_rather_than_booked_shorter(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    found = service.slots_search(
        user=receptionist,
        patient=patient,
        session=session,
        practice_codes=["A20047"],
        start=appointments_gp.today() + timedelta(days=1),
        days=7,
        filters=service.SlotFilters(),
    )
    rows = [r for d in found.days for p in d.practices for r in p.rows]
    index, row = next((i, r) for i, r in enumerate(rows) if r.followers >= 1)
    follower = rows[index + 1]
    colleague = make_user("colleague", "Receptionist")
    taken = service.appointment_book(
        user=colleague,
        patient=patient_of(colleague, "placeholders", SessionStore()),
        session=SessionStore(),
        practice_ods="A20047",
        slot_id=follower.id,
        start=service.datetime.fromisoformat(follower.start_iso),
        length=1,
        description="Someone else's",
        comment="",
        token=uuid.uuid4(),
        registration_confirmed=True,
    )
    assert taken.state == BookingState.CONFIRMED

    with pytest.raises(service.AppointmentError, match="Only 1 of the 2 slots"):
        service.appointment_book(
            user=receptionist,
            patient=patient,
            session=session,
            practice_ods="A20047",
            slot_id=row.id,
            start=service.datetime.fromisoformat(row.start_iso),
            length=2,
            description="Double appointment",
            comment="",
            token=uuid.uuid4(),
            registration_confirmed=False,
        )

    assert appointments_gp.bookings_posted() == 1  # only the colleague's
    assert Booking.objects.get(user=receptionist).state == BookingState.FAILED


def test_only_our_booking_of_the_slot_with_its_description_and_time_counts_as_ours(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    booking = book(
        receptionist, patient, session, "A20047", first_free_slot(appointments_gp, "A20047")
    )
    client = service._one_client(receptionist, session, "A20047")
    assert booking.start is not None
    day = booking.start.astimezone(service.UK).date()
    made = client.search_appointments(booking.patient_logical_id, day, day).appointments
    assert service._matching(made, booking) is not None

    others = [
        replace(made[0], description="Something else"),
        replace(made[0], booking_organisation=Organisation(id="1", ods_code="Z99999")),
        replace(made[0], created=booking.created_at - timedelta(days=2)),
    ]
    assert [service._matching([other], booking) for other in others] == [None, None, None]


# Who may do what -----------------------------------------------------------------------------------


def test_a_restricted_patient_stops_at_pds_with_no_gp_connect_request(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    with pytest.raises(PatientLookupError) as raised:
        patient_of(receptionist, "sensitive", SessionStore())
    assert raised.value.reason == "restricted"
    assert not [p for p in appointments_gp.paths if "/STU3/" in p]
    assert AuditEvent.objects.get(action="search").outcome == "denied"


def test_a_clinician_sees_appointments_but_cannot_search_slots_or_book(
    appointments_gp: AppointmentSandbox, federation: Any, clinician: User
) -> None:
    session = SessionStore()
    patient = patient_of(clinician, "documents", session)
    assert service.appointments_list(user=clinician, patient=patient, session=session)
    with pytest.raises(PermissionDenied):
        service.slots_search(
            user=clinician,
            patient=patient,
            session=session,
            practice_codes=["A20047"],
            start=appointments_gp.today(),
            days=7,
            filters=service.SlotFilters(),
        )


def test_free_slot_searches_are_cut_into_windows_of_at_most_fourteen_days() -> None:
    start = service.date(2030, 1, 1)
    windows = service.slot_windows(start, start + timedelta(days=29))
    assert [(b - a).days + 1 for a, b in windows] == [14, 14, 2]
    assert windows[0][0] == start and windows[-1][1] == start + timedelta(days=29)


def test_a_practice_that_fails_is_reported_beside_the_others_slots(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    appointments_gp.sandbox.faults["C81016"] = Faults(error_rate=1.0)
    found = service.slots_search(
        user=receptionist,
        patient=patient,
        session=session,
        practice_codes=["A20047", "C81016"],
        start=appointments_gp.today(),
        days=7,
        filters=service.SlotFilters(),
    )
    assert [f.practice.ods_code for f in found.failures] == ["C81016"]
    assert found.failures[0].error.trace_id
    assert found.shown > 0
    outcomes = dict(
        AuditEvent.objects.filter(action="search_slots").values_list("detail", "outcome")
    )
    assert sorted(outcomes.values()) == ["failure", "success"]


def test_a_booking_request_whose_lease_a_check_took_over_sends_nothing(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    overdue = Booking.objects.create(
        token=uuid.uuid4(),
        user=receptionist,
        nhs_number=patient.nhs_number,
        patient_key=patient.id,
        practice_ods="A20047",
        first_slot_id=slot.id,
        slot_ids=[slot.id],
        description="Review",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    # The slow request still holds its own copy, with the lease it set (now run out).
    request_copy = Booking.objects.get(pk=overdue.pk)

    # A check takes the lease over (as _recheck's first statement does) and, before it
    # decides anything, the slow request reaches its last step before the POST.
    Booking.objects.filter(pk=overdue.pk).update(lease_until=timezone.now() + timedelta(minutes=1))

    with pytest.raises(service.AppointmentError) as raised:
        service._hold(request_copy, sent_at=timezone.now())
    assert raised.value.reason == "lease_lost"
    overdue.refresh_from_db()
    assert overdue.sent_at is None  # so nothing was sent, and "never sent" stays true


def test_a_check_does_not_fail_a_booking_the_request_has_just_sent(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    in_flight = Booking.objects.create(
        token=uuid.uuid4(),
        user=receptionist,
        nhs_number=patient.nhs_number,
        patient_key=patient.id,
        practice_ods="A20047",
        first_slot_id=slot.id,
        slot_ids=[slot.id],
        description="Review",
        lease_until=timezone.now() + timedelta(minutes=1),
    )

    service._hold(in_flight, sent_at=timezone.now())  # the request's step before POST
    service.bookings_recheck()  # the lease is the request's: the check leaves it alone

    in_flight.refresh_from_db()
    assert in_flight.state == BookingState.PENDING and in_flight.sent_at is not None


def test_the_scheduled_check_stops_asking_about_a_booking_still_unknown_a_day_after_it_settled(
    appointments_gp: AppointmentSandbox, federation: Any, receptionist: User
) -> None:
    session = SessionStore()
    patient = patient_of(receptionist, "documents", session)
    slot = first_free_slot(appointments_gp, "A20047")
    two_days_ago = timezone.now() - timedelta(days=2)
    Booking.objects.create(
        token=uuid.uuid4(),
        user=receptionist,
        nhs_number=patient.nhs_number,
        patient_key=patient.id,
        practice_ods="A20047",
        first_slot_id=slot.id,
        slot_ids=[slot.id],
        description="Review",
        start=slot.start,
        patient_logical_id="no-such-patient",
        sent_at=two_days_ago,
        settle_until=two_days_ago,
        state=BookingState.UNKNOWN,
        lease_until=None,
    )

    assert service.bookings_recheck() == 0
    assert not AuditEvent.objects.filter(action="book").exists()


def test_a_slot_can_be_booked_with_the_free_slots_straight_after_it_on_its_schedule() -> None:
    start = timezone.now() + timedelta(days=1)

    def slot(id: str, minutes: int, schedule: str, channel: str = "In-person") -> Slot:
        at = start + timedelta(minutes=minutes)
        return Slot(
            id=id,
            start=at,
            end=at + timedelta(minutes=10),
            slot_type="General GP Appointment",
            delivery_channel=channel,
            schedule=Schedule(id=schedule),
        )

    free = service._future(
        [
            slot("a1", 0, "A"),
            slot("b1", 0, "B"),
            slot("b2", 10, "B"),
            slot("a2", 10, "A"),
            slot("a3", 20, "A", channel="Telephone"),  # another channel breaks the chain
            slot("b3", 20, "B"),
            slot("b4", 30, "B"),
            slot("a5", 40, "A"),
        ]
    )
    by_id = {s.id: s for s in free}

    assert [s.id for s in service._followers(by_id["a1"], free)] == ["a2"]
    assert [s.id for s in service._followers(by_id["b1"], free)] == ["b2", "b3", "b4"]
    assert [s.id for s in service._followers(by_id["b3"], free)] == ["b4"]
    assert service._followers(by_id["a5"], free) == []
