"""NHS-styled error pages with a reference, full page or as an htmx message."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_an_unknown_page_is_an_nhs_styled_404_with_a_reference(clinician_client: Client) -> None:
    response = clinician_client.get("/no-such-page/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in html
    assert "nhsuk-header" in html
    assert response["X-Request-ID"] in html


def test_an_expired_patient_link_says_to_search_again(clinician_client: Client) -> None:
    response = clinician_client.get(reverse("viewer:patient", kwargs={"context_id": "gone"}))
    assert response.status_code == 404
    assert "Search for the patient again" in response.content.decode()


def test_a_wrong_role_gets_an_nhs_styled_403(auditor: User) -> None:
    client = Client()
    client.force_login(auditor)
    response = client.get(reverse("viewer:patient", kwargs={"context_id": "any"}))
    html = response.content.decode()
    assert response.status_code == 403
    assert "<h1>You do not have access to this page</h1>" in html
    assert response["X-Request-ID"] in html


def test_an_htmx_request_gets_a_message_at_the_top_of_the_page_not_a_whole_page(
    clinician_client: Client,
) -> None:
    response = clinician_client.get(
        reverse("viewer:patient", kwargs={"context_id": "gone"}), **HTMX
    )
    html = response.content.decode()
    assert response.status_code == 404
    assert "<html" not in html
    assert 'class="nhsuk-error-summary viewer-htmx-error"' in html
    assert response["HX-Retarget"] == "#maincontent"
    assert response["HX-Reswap"] == "afterbegin"


def test_an_htmx_request_after_the_session_ended_navigates_to_sign_in(client: Client) -> None:
    response = client.get(reverse("viewer:patient", kwargs={"context_id": "any"}), **HTMX)
    assert response["HX-Redirect"].startswith("/accounts/login/?next=")


def test_a_form_with_a_stale_csrf_token_gets_a_plain_explanation(clinician: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    response = client.post(reverse("viewer:home"), {"nhs_number": "9990000018"})
    html = response.content.decode()
    assert response.status_code == 403
    assert "Your form could not be sent" in html
    assert "Nothing was changed." in html


def test_a_server_error_is_an_nhs_styled_500_that_needs_no_database(
    clinician_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("viewer.services.patient_recent", broken)
    clinician_client.raise_request_exception = False
    response = clinician_client.get(reverse("viewer:home"))
    html = response.content.decode()
    assert response.status_code == 500
    assert "Sorry, there is a problem with the service" in html
    assert response["X-Request-ID"] in html
    assert "boom" not in html


def test_a_locked_out_username_gets_an_nhs_styled_page(client: Client, clinician: User) -> None:
    for _ in range(5):
        client.post(reverse("login"), {"username": "clinician", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "clinician", "password": "wrong"})
    html = response.content.decode()
    assert response.status_code == 429
    assert "<h1>Too many sign-in attempts</h1>" in html
    assert "locked for 15 minutes after 5 failed attempts" in html
