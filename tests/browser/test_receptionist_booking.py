"""A receptionist's whole booking flow in a real browser, against the app and a real sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.browser.conftest import PASSWORD, Browsing, chromium_missing_reason, services_required
from tests.viewer import appointment_sandbox
from tests.viewer.appointment_sandbox import AppointmentSandbox, point_settings_at
from tests.viewer.conftest import make_user, nhs_number_of

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(
        chromium_missing_reason() is not None and not services_required(),
        reason=chromium_missing_reason() or "",
    ),
]

appointments_gp = appointment_sandbox.appointments_gp
federation = appointment_sandbox.federation


@pytest.fixture
def browser_receptionist(transactional_db: None) -> User:
    user = make_user("browserreceptionist", "Receptionist")
    user.set_password(PASSWORD)
    user.save()
    return user


def test_a_receptionist_registers_books_copies_the_summary_and_cancels_in_a_browser(
    federation: Any,
    browser_receptionist: User,
    appointments_gp: AppointmentSandbox,
    settings: Any,
    browsing: Browsing,
) -> None:
    # The database is set up before the browser starts (Playwright runs an event loop);
    # then the Spine settings `browsing` pointed at the shared sandbox come back to ours.
    point_settings_at(appointments_gp, settings)
    page = browsing.page
    nhs_number = nhs_number_of("not-registered")
    browsing.sign_in("browserreceptionist")

    page.get_by_role("link", name="Book appointments").click()
    page.wait_for_selector("#nhs_number")
    browsing.assert_sound_page()

    page.fill("#nhs_number", f"{nhs_number[:3]} {nhs_number[3:6]} {nhs_number[6:]}")
    page.get_by_role("button", name="Find patient").click()
    page.wait_for_selector("text=Find a free slot")
    assert nhs_number not in page.url
    browsing.assert_sound_page()

    page.get_by_role("button", name="Search for free slots").click()
    page.wait_for_selector("#slot-results")
    assert "practice=A20047" in page.url  # htmx pushed the search to the address bar
    assert page.locator(".viewer-slots__day").count() >= 3
    browsing.assert_sound_page()

    page.select_option("#id_channel", "Telephone")
    page.get_by_role("button", name="Search for free slots").click()
    page.wait_for_function("() => location.search.includes('channel=Telephone')")
    page.wait_for_selector("#slot-results")
    channels = page.locator(".viewer-slots td strong.nhsuk-tag").all_inner_texts()
    assert channels and set(channels) == {"Telephone"}

    page.locator("a.viewer-slots__book").first.click()
    page.wait_for_selector("text=The practice has no record of this patient")
    browsing.assert_sound_page()

    page.fill("#id_description", "Telephone review of medication")
    page.wait_for_selector("text=You have 70 characters remaining")
    # Not ticking the confirmation is an error on the checkbox, and the form keeps what
    # was typed; the summary's link takes the receptionist to the box.
    page.get_by_role("button", name="Book appointment").click()
    page.wait_for_selector(".nhsuk-error-summary")
    assert page.title().startswith("Error: ")
    assert page.input_value("#id_description") == "Telephone review of medication"
    browsing.assert_sound_page()
    page.get_by_role(
        "link", name="Confirm that you have checked these details with the patient"
    ).click()
    page.wait_for_function("() => document.activeElement.id === 'id_confirm_registration'")
    assert appointments_gp.bookings_posted() == 0
    page.check("#id_confirm_registration")
    page.get_by_role("button", name="Book appointment").click()
    page.wait_for_selector("text=Appointment booked")
    summary = page.locator("#booking-summary").inner_text()
    assert "Telephone review of medication" in summary and "999 000 0093" in summary
    browsing.assert_sound_page()

    page.get_by_role("button", name="Copy summary").click()
    page.wait_for_function(
        "() => document.querySelector('.viewer-copy-status').textContent.trim() !== ''"
    )
    assert appointments_gp.bookings_posted() == 1

    page.get_by_role("link", name="The patient's booked appointments").click()
    page.wait_for_selector("text=Booked appointments")
    assert page.locator(".viewer-appointments tbody tr").count() == 1
    browsing.assert_sound_page()

    page.locator(".viewer-appointments a", has_text="Cancel").first.click()
    page.wait_for_selector("#id_reason")
    browsing.assert_sound_page()
    page.fill("#id_reason", "Patient asked to cancel")
    page.get_by_role("button", name="Cancel appointment").click()
    page.wait_for_selector("text=The appointment has been cancelled.")
    assert "Cancelled" in page.locator(".viewer-appointments").inner_text()
    browsing.assert_sound_page()
