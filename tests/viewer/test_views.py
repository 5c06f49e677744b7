from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_home_page_sends_an_anonymous_user_to_sign_in(client: Client) -> None:
    response = client.get(reverse("viewer:home"))
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_the_base_page_renders_for_an_anonymous_user(client: Client) -> None:
    # The sign-in page is the one page an anonymous user sees; it extends base.html.
    response = client.get(reverse("login"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "GP Connect document viewer" in html
    assert 'href="/static/nhsuk/nhsuk-frontend.min.css"' in html
    assert 'id="maincontent"' in html
    assert 'href="#maincontent"' in html


def test_the_base_page_loads_htmx_from_our_own_static_files(client: Client) -> None:
    html = client.get(reverse("login")).content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js"' in html
    assert finders.find("django_htmx/htmx-2.min.js")


def test_the_nhs_frontend_assets_are_served_from_node_modules() -> None:
    # Filled by `npm ci` (make install); nothing from nhsuk-frontend is copied into git.
    assert finders.find("nhsuk/nhsuk-frontend.min.css")
    assert finders.find("nhsuk/nhsuk-frontend.min.js")


def test_every_htmx_request_from_the_page_carries_the_csrf_token(client: Client) -> None:
    html = client.get(reverse("login")).content.decode()
    assert """<body hx-headers='{"x-csrftoken": \"""" in html


def test_responses_carry_the_security_headers_and_a_request_id(client: Client) -> None:
    response = client.get(reverse("login"))
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert len(response["X-Request-ID"]) == 32


def test_the_sign_in_page_renders(client: Client) -> None:
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert "<h1>Sign in</h1>" in response.content.decode()


def test_a_failed_sign_in_shows_the_nhs_error_summary(client: Client) -> None:
    response = client.post(reverse("login"), {"username": "nobody", "password": "wrong"})
    assert response.status_code == 200
    assert "There is a problem" in response.content.decode()


def test_healthz_answers_200_when_the_database_and_cache_answer(client: Client) -> None:
    response = client.get(reverse("viewer:healthz"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == "status: ok\ndatabase: ok\ncache: ok\n"
    assert "no-cache" in response["Cache-Control"]


def test_healthz_answers_503_when_the_cache_fails(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_set(*args: object, **kwargs: object) -> None:
        raise ConnectionError("cache is down")

    monkeypatch.setattr("viewer.health.cache.set", broken_set)
    response = client.get(reverse("viewer:healthz"))
    assert response.status_code == 503
    assert "cache: error" in response.content.decode()
    assert "cache is down" not in response.content.decode()
