"""The appointment pages through Django's test client, against a real sandbox per test."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from gpconnect.sandbox.catalogue import Faults
from tests.viewer import appointment_sandbox
from tests.viewer.appointment_sandbox import AppointmentSandbox, first_free_slot
from tests.viewer.conftest import make_user, nhs_number_of
from viewer.models import AuditEvent, Booking, BookingState

pytestmark = pytest.mark.django_db

appointments_gp = appointment_sandbox.appointments_gp
federation = appointment_sandbox.federation


@pytest.fixture
def desk(receptionist: User) -> Client:
    client = Client()
    client.force_login(receptionist)
    return client


def open_patient(client: Client, scenario: str) -> str:
    """Find the patient as the receptionist does; return the patient page's URL."""
    response = client.post(reverse("viewer:appointments"), {"nhs_number": nhs_number_of(scenario)})
    assert response.status_code == 302, response.content.decode()[:500]
    return str(response["Location"])


def patient_id_of(url: str) -> str:
    match = re.search(r"/appointments/patients/([^/]+)/", url)
    assert match
    return match.group(1)


def booking_form(client: Client, patient_id: str, ods: str, slot: Any) -> tuple[str, str]:
    """GET the booking form; return its HTML and its idempotency token."""
    query = urlencode({"practice": ods, "slot": slot.id, "start": slot.start.isoformat()})
    page = client.get(reverse("viewer:appointment_book", args=[patient_id]) + "?" + query)
    assert page.status_code == 200, page.content.decode()[:500]
    html = page.content.decode()
    token = re.search(r'name="token" value="([0-9a-f-]{36})"', html)
    assert token
    return html, token.group(1)


def post_booking(client: Client, patient_id: str, ods: str, slot: Any, token: str, **extra: Any):
    data = {
        "token": token,
        "practice": ods,
        "slot": slot.id,
        "start": slot.start.isoformat(),
        "length": "1",
        "description": "Review of repeat medication",
        "comment": "",
        **extra,
    }
    return client.post(reverse("viewer:appointment_book", args=[patient_id]), data)


def test_a_receptionist_finds_a_patient_searches_books_and_sees_the_confirmation(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    url = open_patient(desk, "documents")
    assert "9990000018" not in url
    patient_id = patient_id_of(url)
    start = (appointments_gp.today() + timedelta(days=1)).isoformat()

    page = desk.get(url, {"practice": ["A20047", "B82617"], "start": start, "days": "7"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "Riverside Medical Practice" in html and "Hillcrest Surgery" in html
    assert 'class="nhsuk-heading-s viewer-slots__day"' in html
    assert "Book<span" in html

    slot = first_free_slot(appointments_gp, "A20047")
    form, token = booking_form(desk, patient_id, "A20047", slot)
    assert "No clinical information" in form and 'data-maxlength="100"' in form
    assert 'data-maxlength="500"' in form
    assert "has no record of this patient" not in form

    response = post_booking(desk, patient_id, "A20047", slot, token)
    assert response.status_code == 302
    confirmation = desk.get(response["Location"])
    html = confirmation.content.decode()
    assert "Appointment booked" in html
    assert "Booking summary" in html and "Review of repeat medication" in html
    assert "Copy summary" in html and "Print summary" in html
    assert "Riverside Medical Practice" in html and "999 000 0018" in html


def test_the_free_slots_region_is_a_partial_for_htmx_and_varies_on_it(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    url = open_patient(desk, "documents")
    query = {"practice": "C81016", "days": "7", "channel": "Video"}
    full = desk.get(url, query)
    partial = desk.get(url, query, headers={"HX-Request": "true"})
    assert full.status_code == partial.status_code == 200
    assert "<html" in full.content.decode() and "<html" not in partial.content.decode()
    assert 'id="slot-search"' in partial.content.decode()
    assert "HX-Request" in partial["Vary"]
    cells = re.findall(r'nhsuk-tag--\w+">([^<]+)<', partial.content.decode())
    assert cells and set(cells) == {"Video"}


def test_the_same_booking_form_posted_twice_books_once_and_shows_the_same_booking(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)

    first = post_booking(desk, patient_id, "A20047", slot, token)
    second = post_booking(desk, patient_id, "A20047", slot, token)

    assert first["Location"] == second["Location"]
    assert appointments_gp.bookings_posted() == 1
    assert Booking.objects.count() == 1


def test_a_booking_whose_patient_has_left_the_session_still_shows_their_nhs_number(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)
    booked = post_booking(desk, patient_id, "A20047", slot, token)
    session = desk.session
    session["viewer_appointment_patients"] = {}  # the patient's trace is gone
    session.save()

    html = desk.get(booked["Location"]).content.decode()

    number = nhs_number_of("documents")
    assert f"{number[:3]} {number[3:6]} {number[6:]}" in html


def test_a_patient_unknown_at_the_practice_is_registered_only_after_confirming_pds_details(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "not-registered"))
    slot = first_free_slot(appointments_gp, "A20047")
    form, token = booking_form(desk, patient_id, "A20047", slot)
    assert "has no record of this patient" in form and "NOWAK, Tomasz (Mr)" in form

    refused = post_booking(desk, patient_id, "A20047", slot, token)
    assert refused.status_code == 200
    page = refused.content.decode()
    assert "<title>Error: " in page
    assert (
        '<a href="#id_confirm_registration">Confirm that you have checked these details '
        "with the patient</a>" in page
    )
    assert 'aria-describedby="id_confirm_registration-error"' in page
    assert "nhsuk-form-group--error" in page
    assert appointments_gp.bookings_posted() == 0
    new_token = re.search(r'name="token" value="([0-9a-f-]{36})"', refused.content.decode())
    assert new_token and new_token.group(1) != token

    booked = post_booking(
        desk, patient_id, "A20047", slot, new_token.group(1), confirm_registration="on"
    )
    html = desk.get(booked["Location"]).content.decode()
    assert "Appointment booked" in html and "registered the patient temporarily" in html


# Real transactions: each thread has its own connection; the role groups are kept.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_receptionists_booking_one_slot_at_once_get_one_booking_and_one_slot_taken_page(
    appointments_gp: AppointmentSandbox, federation: Any
) -> None:
    slot = first_free_slot(appointments_gp, "B82617")
    desks = []
    for n, scenario in ((1, "no-documents"), (2, "many-documents")):
        client = Client()
        client.force_login(make_user(f"desk{n}", "Receptionist"))
        patient_id = patient_id_of(open_patient(client, scenario))
        _, token = booking_form(client, patient_id, "B82617", slot)
        desks.append((client, patient_id, token))
    go = threading.Barrier(2)
    responses: list[Any] = [None, None]

    def submit(index: int) -> None:
        client, patient_id, token = desks[index]
        go.wait()
        try:
            responses[index] = post_booking(client, patient_id, "B82617", slot, token)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    redirected = [r for r in responses if r.status_code == 302]
    taken = [r for r in responses if r.status_code == 200]
    assert len(redirected) == 1 and len(taken) == 1
    html = taken[0].content.decode()
    assert "This slot has just been taken" in html
    assert "Nearest free slots at Hillcrest Surgery" in html and "Book<span" in html
    assert Booking.objects.filter(state=BookingState.CONFIRMED).count() == 1
    assert AuditEvent.objects.filter(action="book", outcome="success").count() == 1


def test_a_booking_answered_too_late_shows_as_booked_once(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client, settings: Any
) -> None:
    settings.GPCONNECT_READ_TIMEOUT = 1
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)
    appointments_gp.sandbox.faults["A20047"] = Faults(write_reply_delay_seconds=3)

    response = post_booking(desk, patient_id, "A20047", slot, token)

    html = desk.get(response["Location"]).content.decode()
    assert "Appointment booked" in html
    del appointments_gp.sandbox.faults["A20047"]
    listed = desk.get(reverse("viewer:appointments_booked", args=[patient_id])).content.decode()
    assert listed.count("Review of repeat medication") == 1
    assert appointments_gp.bookings_posted() == 1


def test_amend_then_cancel_from_the_patients_booked_appointments(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)
    post_booking(desk, patient_id, "A20047", slot, token)
    listed = desk.get(reverse("viewer:appointments_booked", args=[patient_id])).content.decode()
    amend_url = re.search(r'href="([^"]+/amend/)"', listed)
    cancel_url = re.search(r'href="([^"]+/cancel/)"', listed)
    assert amend_url and cancel_url

    form = desk.get(amend_url.group(1)).content.decode()
    version = re.search(r'name="version" value="([^"]+)"', form)
    assert version and "Review of repeat medication" in form
    saved = desk.post(
        amend_url.group(1),
        {"version": version.group(1), "description": "Annual review", "comment": ""},
        follow=True,
    )
    assert "The appointment has been amended." in saved.content.decode()
    assert "Annual review" in saved.content.decode()

    form = desk.get(cancel_url.group(1)).content.decode()
    version = re.search(r'name="version" value="([^"]+)"', form)
    assert version
    missing_reason = desk.post(cancel_url.group(1), {"version": version.group(1), "reason": " "})
    assert "Enter the reason for cancelling" in missing_reason.content.decode()
    cancelled = desk.post(
        cancel_url.group(1),
        {"version": version.group(1), "reason": "Patient asked to cancel"},
        follow=True,
    )
    html = cancelled.content.decode()
    assert "The appointment has been cancelled." in html and "Patient asked to cancel" in html
    assert slot.id not in appointments_gp.booked_slot_ids("A20047")
    assert {e.action for e in AuditEvent.objects.filter(outcome="success")} >= {
        "book",
        "amend",
        "cancel",
    }


def test_a_description_over_100_characters_is_refused_before_anything_is_sent(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)

    response = post_booking(desk, patient_id, "A20047", slot, token, description="x" * 101)

    assert response.status_code == 200
    assert "Description must be 100 characters or fewer" in response.content.decode()
    assert appointments_gp.bookings_posted() == 0 and not Booking.objects.exists()


def test_nonsense_in_the_booking_query_is_a_400_and_an_unknown_practice_a_404(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    url = reverse("viewer:appointment_book", args=[patient_id])
    assert desk.get(url, {"practice": "A20047", "slot": "x", "start": "soon"}).status_code == 400
    tomorrow = f"{appointments_gp.today() + timedelta(days=1)}T09:00:00+00:00"
    unknown = {"practice": "ZZZ999", "slot": "x", "start": tomorrow}
    assert desk.get(url, unknown).status_code == 404


@pytest.mark.parametrize(
    "start", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2001-01-01T09:00:00Z"]
)
def test_a_slot_time_out_of_range_is_refused_and_locks_nothing(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client, start: str
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)

    response = post_booking(desk, patient_id, "A20047", slot, token, start=start)

    assert response.status_code == 400
    assert "Choose a slot from the list of free slots" in response.content.decode()
    assert not Booking.objects.exists() and appointments_gp.bookings_posted() == 0


def test_a_practice_that_is_down_shows_its_error_with_a_trace_id_and_never_a_500(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    url = open_patient(desk, "documents")
    appointments_gp.sandbox.faults["B82617"] = Faults(error_rate=1.0)
    page = desk.get(url, {"practice": ["A20047", "B82617"], "days": "7"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "Hillcrest Surgery: The GP practice&#x27;s system is not responding" in html
    assert "Trace ID for the service desk" in html
    assert "Riverside Medical Practice" in html


def test_who_may_use_the_appointment_pages(
    appointments_gp: AppointmentSandbox, federation: Any, client: Client, clinician: User
) -> None:
    assert client.get(reverse("viewer:appointments")).status_code == 302  # sign in first
    auditor = make_user("auditor2", "Auditor")
    client.force_login(auditor)
    assert client.get(reverse("viewer:appointments")).status_code == 403
    assert "Book appointments" not in client.get(reverse("viewer:home")).content.decode()

    client.force_login(clinician)
    url = open_patient(client, "documents")
    assert "/booked/" in url  # a clinician sees appointments, never the free slots
    assert client.get(url).status_code == 200
    assert client.get(url.replace("/booked/", "/")).status_code == 403
    assert ">Appointments</a>" in client.get(reverse("viewer:home")).content.decode()


def test_the_header_offers_booking_to_receptionists(desk: Client) -> None:
    html = desk.get(reverse("viewer:home")).content.decode()
    assert f'href="{reverse("viewer:appointments")}">Book appointments</a>' in html


def test_another_users_patient_and_booking_are_404s(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)
    booking_url = post_booking(desk, patient_id, "A20047", slot, token)["Location"]
    other = Client()
    other.force_login(make_user("otherdesk", "Receptionist"))
    assert other.get(reverse("viewer:appointment_slots", args=[patient_id])).status_code == 404
    assert other.get(booking_url).status_code == 404


def test_a_booking_whose_answer_was_lost_shows_unknown_and_keeps_checking(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")
    _, token = booking_form(desk, patient_id, "A20047", slot)
    appointments_gp.refuse_bookings = True  # a gateway's 503: the practice may have it

    response = post_booking(desk, patient_id, "A20047", slot, token)

    html = desk.get(response["Location"]).content.decode()
    assert "We do not know yet whether the appointment was booked" in html
    assert "Do not book again" in html and 'hx-trigger="every 15s"' in html
    assert "Nothing was booked" not in html


def test_a_tampered_hidden_field_is_reported_without_a_link_to_nowhere(
    appointments_gp: AppointmentSandbox, federation: Any, desk: Client
) -> None:
    patient_id = patient_id_of(open_patient(desk, "documents"))
    slot = first_free_slot(appointments_gp, "A20047")

    response = post_booking(desk, patient_id, "A20047", slot, "not-a-token")

    html = response.content.decode()
    assert response.status_code == 200 and "There is a problem" in html
    assert 'href="#id_token"' not in html
    assert not Booking.objects.exists()
