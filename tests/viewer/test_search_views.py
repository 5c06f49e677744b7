"""The home page: the NHS number form, its errors, and the redirect to an opaque URL."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.viewer.conftest import RecordingSandbox, nhs_number_of
from viewer.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_a_clinician_sees_the_nhs_number_question(clinician_client: Client) -> None:
    response = clinician_client.get(reverse("viewer:home"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "What is the patient&#x27;s NHS number?" in html
    assert 'name="nhs_number"' in html and 'inputmode="numeric"' in html
    assert "no-store" in response["Cache-Control"]


def test_an_auditor_sees_no_search_form_and_cannot_post_one(auditor: User) -> None:
    client = Client()
    client.force_login(auditor)
    page = client.get(reverse("viewer:home")).content.decode()
    assert 'name="nhs_number"' not in page
    response = client.post(reverse("viewer:home"), {"nhs_number": nhs_number_of("documents")})
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="search").exists()


def test_an_anonymous_post_is_sent_to_sign_in(client: Client) -> None:
    response = client.post(reverse("viewer:home"), {"nhs_number": nhs_number_of("documents")})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Enter the patient&#x27;s NHS number"),
        ("12345", "NHS number must be 10 digits"),
        ("485 777 3456", "Enter a valid NHS number"),
    ],
)
def test_an_invalid_number_shows_the_error_summary_and_the_message_by_the_field(
    clinician_client: Client, typed: str, message: str
) -> None:
    html = clinician_client.post(reverse("viewer:home"), {"nhs_number": typed}).content.decode()
    assert "There is a problem" in html
    assert f'<a href="#nhs_number">{message}</a>' in html
    assert 'id="nhs_number-error"' in html and "nhsuk-input--error" in html


def test_a_found_patient_redirects_to_an_opaque_url_without_the_nhs_number(
    gp: RecordingSandbox, clinician_client: Client
) -> None:
    response = clinician_client.post(reverse("viewer:home"), {"nhs_number": "999-000-0018"})
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/patients/")
    assert "9990000018" not in location and "999 000 0018" not in location
    page = clinician_client.get(location)
    assert page.status_code == 200
    # The home page then lists the patient under "Recently viewed".
    home = clinician_client.get(reverse("viewer:home")).content.decode()
    assert "Recently viewed in this session" in home and location in home


@pytest.mark.parametrize(
    ("scenario", "heading"),
    [
        ("sensitive", "This patient&#x27;s record cannot be shown"),
        ("not-registered", "The patient&#x27;s record is not available at their GP practice"),
        ("access-denied", "This GP practice does not share documents"),
    ],
)
def test_a_search_that_stops_shows_an_error_panel_not_a_500(
    gp: RecordingSandbox, clinician_client: Client, scenario: str, heading: str
) -> None:
    response = clinician_client.post(
        reverse("viewer:home"), {"nhs_number": nhs_number_of(scenario)}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "viewer-error-panel" in html and heading in html
    assert "Trying again will not change this." in html
    assert "give them this trace ID" in html
    assert "no-store" in response["Cache-Control"]


def test_an_unreachable_spine_says_trying_again_may_help(
    gp: RecordingSandbox, clinician_client: Client, settings: object
) -> None:
    settings.GPCONNECT_PDS_URL = "http://127.0.0.1:9/personal-demographics/FHIR/R4"  # type: ignore[attr-defined]
    settings.GPCONNECT_READ_TIMEOUT = 1  # type: ignore[attr-defined]
    html = clinician_client.post(
        reverse("viewer:home"), {"nhs_number": nhs_number_of("documents")}
    ).content.decode()
    assert "trying again in a few minutes may work" in html


def test_demo_mode_lists_the_sandbox_patients_with_a_button_each(
    clinician_client: Client, settings: object
) -> None:
    settings.DEMO_MODE = True  # type: ignore[attr-defined]
    html = clinician_client.get(reverse("viewer:home")).content.decode()
    assert "Demo patients" in html
    assert 'value="9990000018"' in html and "no-consent" in html
    settings.DEMO_MODE = False  # type: ignore[attr-defined]
    assert "Demo patients" not in clinician_client.get(reverse("viewer:home")).content.decode()
