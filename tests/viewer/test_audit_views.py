from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from viewer import audit
from viewer.models import AuditEvent
from viewer.roles import AUDITOR, CLINICIAN, RECEPTIONIST, grant_role

pytestmark = pytest.mark.django_db

AUDIT_URLS = ["viewer:audit", "viewer:audit_export"]


def signed_in(client: Client, username: str, role: str | None) -> User:
    user = User.objects.create_user(username)
    if role:
        grant_role(user, role)
    client.force_login(user)
    return user


@pytest.fixture
def auditor(client: Client) -> User:
    return signed_in(client, "auditor", AUDITOR)


def csv_of(response: object) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.reader(io.StringIO(body)))


@pytest.mark.parametrize("name", AUDIT_URLS)
def test_anonymous_users_are_sent_to_sign_in(client: Client, name: str) -> None:
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", AUDIT_URLS)
@pytest.mark.parametrize("role", [CLINICIAN, RECEPTIONIST, None])
def test_users_without_the_auditor_role_get_403_and_the_refusal_is_audited(
    client: Client, name: str, role: str | None
) -> None:
    signed_in(client, "someone", role)
    response = client.get(reverse(name))
    assert response.status_code == 403
    denied = AuditEvent.objects.get(action="access_denied")
    assert (denied.username, denied.outcome) == ("someone", "denied")


@pytest.mark.parametrize("name", AUDIT_URLS)
def test_an_auditor_gets_the_page_and_it_is_never_cached(
    client: Client, auditor: User, name: str
) -> None:
    response = client.get(reverse(name))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_the_audit_link_shows_in_the_header_for_auditors_only(client: Client) -> None:
    signed_in(client, "clin", CLINICIAN)
    assert reverse("viewer:audit") not in client.get(reverse("viewer:home")).content.decode()
    signed_in(client, "auditor", AUDITOR)
    assert reverse("viewer:audit") in client.get(reverse("viewer:home")).content.decode()


def test_the_audit_page_filters_by_nhs_number_typed_with_spaces(
    client: Client, auditor: User
) -> None:
    clin = User.objects.create_user("dr.who")
    grant_role(clin, CLINICIAN)
    audit.record(
        user=clin,
        action="download",
        outcome="success",
        nhs_number="9434765919",
        document_id="wanted-doc",
    )
    audit.record(
        user=clin,
        action="download",
        outcome="success",
        nhs_number="9990000018",
        document_id="other-doc",
    )
    html = client.get(reverse("viewer:audit"), {"nhs_number": "943 476 5919"}).content.decode()
    assert "wanted-doc" in html and "other-doc" not in html
    assert "943 476 5919" in html
    assert "Showing 1–1 of 1 event" in html


def test_the_audit_page_filters_by_user_and_date(client: Client, auditor: User) -> None:
    clin = User.objects.create_user("dr.who")
    grant_role(clin, CLINICIAN)
    audit.record(user=clin, action="view", outcome="success", document_id="by-dr-who")
    audit.record(user=auditor, action="audit_search", outcome="success", detail="by-auditor")
    today = timezone.localdate().isoformat()
    html = client.get(
        reverse("viewer:audit"), {"username": "dr.who", "date_from": today, "date_to": today}
    ).content.decode()
    assert "by-dr-who" in html and "by-auditor" not in html
    yesterday = (timezone.localdate() - dt.timedelta(days=1)).isoformat()
    html = client.get(reverse("viewer:audit"), {"date_to": yesterday}).content.decode()
    assert "No events match these filters" in html


def test_the_audit_page_shows_errors_for_bad_filters(client: Client, auditor: User) -> None:
    response = client.get(
        reverse("viewer:audit"),
        {"nhs_number": "12345", "date_from": "2025-02-01", "date_to": "2025-01-01"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "There is a problem" in html
    assert "NHS number must be 10 digits" in html
    assert "must be the same as or after" in html
    assert not AuditEvent.objects.filter(action="audit_search").exists()


def test_the_audit_page_shows_50_events_a_page_newest_first(client: Client, auditor: User) -> None:
    for n in range(50):
        audit.record(user=auditor, action="audit_search", outcome="success", detail=f"event-{n}.")
    first = client.get(reverse("viewer:audit")).content.decode()
    # 50 events and the auditor's own sign-in, the oldest.
    assert "Showing 1–50 of 51 events" in first
    assert first.index("event-49.") < first.index("event-0.")
    assert "Signed in" not in first
    next_link = re.search(r'href="(\?[^"]*)" rel="next"', first)
    assert next_link
    second = client.get(reverse("viewer:audit") + html.unescape(next_link.group(1)))
    # The first page's own audit row did not push event-0 onto the second page.
    assert "Showing 51–51 of 51 events" in second.content.decode()
    assert "Signed in" in second.content.decode()
    assert "event-0." not in second.content.decode()


def test_searching_the_audit_trail_is_itself_audited(client: Client, auditor: User) -> None:
    client.get(reverse("viewer:audit"), {"nhs_number": "943 476 5919"})
    event = AuditEvent.objects.get(action="audit_search")
    assert (event.username, event.role, event.nhs_number) == ("auditor", "Auditor", "9434765919")


def test_the_csv_export_contains_only_the_filtered_rows_and_escapes_formulas(
    client: Client, auditor: User
) -> None:
    clin = User.objects.create_user("=cmd|' /C calc'!A0")
    grant_role(clin, CLINICIAN)
    audit.record(
        user=clin,
        action="view",
        outcome="success",
        nhs_number="9434765919",
        detail='=HYPERLINK("http://evil.example")',
    )
    audit.record(user=clin, action="view", outcome="success", nhs_number="9990000018")
    response = client.get(reverse("viewer:audit_export"), {"nhs_number": "943-476-5919"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = csv_of(response)
    assert rows[0][:3] == ["sequence", "when (UTC)", "username"]
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["NHS number"] == "9434765919"
    assert row["username"] == "'=cmd|' /C calc'!A0"
    assert row["detail"].startswith("'=HYPERLINK")
    assert row["when (UTC)"].endswith("Z")


def test_exporting_the_audit_trail_is_itself_audited(client: Client, auditor: User) -> None:
    csv_of(client.get(reverse("viewer:audit_export"), {"username": "dr.who"}))
    event = AuditEvent.objects.get(action="audit_export")
    assert event.username == "auditor"
    assert "username=dr.who" in event.detail


def test_the_export_refuses_bad_filters(client: Client, auditor: User) -> None:
    response = client.get(reverse("viewer:audit_export"), {"date_from": "not a date"})
    assert response.status_code == 400
