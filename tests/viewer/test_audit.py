from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from viewer import audit
from viewer.models import AuditEvent, AuditEventImmutable, UserProfile
from viewer.roles import AUDITOR, CLINICIAN, grant_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinician() -> User:
    user = User.objects.create_user("clinician", password="correct-horse-battery")
    grant_role(user, CLINICIAN)
    UserProfile.objects.create(
        user=user, family_name="Clinician", organisation_ods_code="A12345", organisation_name="X"
    )
    return user


def an_event(user: User, **fields: str) -> AuditEvent:
    return audit.record(user=user, action="view", outcome="success", **fields)


def test_record_fills_the_role_and_organisation_from_the_profile(clinician: User) -> None:
    event = an_event(clinician, nhs_number="943 476 5919", document_id="doc-1", trace_id="t-1")
    event.refresh_from_db()
    assert (event.username, event.role, event.organisation_ods_code) == (
        "clinician",
        "Clinician",
        "A12345",
    )
    assert event.nhs_number == "9434765919"
    assert (event.document_id, event.trace_id, event.outcome) == ("doc-1", "t-1", "success")
    assert event.when.tzinfo is not None


def test_record_keeps_the_role_at_the_time_of_the_event(clinician: User) -> None:
    before = an_event(clinician)
    grant_role(clinician, AUDITOR)
    before.refresh_from_db()
    assert before.role == "Clinician"


def test_record_takes_the_device_from_the_request(clinician: User) -> None:
    request = RequestFactory().get("/", HTTP_USER_AGENT="TestBrowser/1.0", REMOTE_ADDR="10.0.0.7")
    event = audit.record(user=clinician, action="search", outcome="failure", request=request)
    assert (event.ip_address, event.user_agent) == ("10.0.0.7", "TestBrowser/1.0")


def test_record_refuses_a_patient_action_without_a_signed_in_user() -> None:
    with pytest.raises(audit.AnonymousAuditError):
        audit.record(user=AnonymousUser(), action="view", outcome="success")
    with pytest.raises(audit.AnonymousAuditError):
        audit.record(user=None, action="download", outcome="failure")
    assert not AuditEvent.objects.exists()


def test_record_refuses_an_unknown_action_or_outcome(clinician: User) -> None:
    with pytest.raises(ValueError, match="action"):
        audit.record(user=clinician, action="peek", outcome="success")
    with pytest.raises(ValueError, match="outcome"):
        audit.record(user=clinician, action="view", outcome="maybe")


def test_an_audit_event_cannot_be_updated(clinician: User) -> None:
    event = an_event(clinician)
    event.detail = "rewritten"
    with pytest.raises(AuditEventImmutable):
        event.save()
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(detail="rewritten")
    # bulk_update runs in a transaction without a savepoint; this one keeps the test's alive.
    with pytest.raises(AuditEventImmutable), transaction.atomic():
        AuditEvent.objects.bulk_update([event], ["detail"])
    event.refresh_from_db()
    assert event.detail == ""


def test_an_audit_event_cannot_be_deleted(clinician: User) -> None:
    event = an_event(clinician)
    with pytest.raises(AuditEventImmutable):
        event.delete()
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1


def test_a_user_with_an_audit_trail_cannot_be_deleted(clinician: User) -> None:
    from django.db.models import ProtectedError

    an_event(clinician)
    with pytest.raises(ProtectedError):
        clinician.delete()


def test_the_admin_lists_audit_events_but_offers_no_add_change_or_delete(
    admin_client: Client, clinician: User
) -> None:
    event = an_event(clinician, document_id="doc-42")
    listing = admin_client.get(reverse("admin:viewer_auditevent_changelist"))
    assert listing.status_code == 200
    assert "doc-42" in listing.content.decode()
    assert reverse("admin:viewer_auditevent_add") not in listing.content.decode()
    assert 'name="action"' not in listing.content.decode()  # no bulk "delete selected"
    assert admin_client.get(reverse("admin:viewer_auditevent_add")).status_code == 403
    change_url = reverse("admin:viewer_auditevent_change", args=[event.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change_url, {"detail": "x"}).status_code == 403
    delete_url = reverse("admin:viewer_auditevent_delete", args=[event.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).detail == ""


def test_events_matching_filters_by_nhs_number_with_spaces_user_and_uk_dates(
    clinician: User,
) -> None:
    other = User.objects.create_user("other")
    grant_role(other, CLINICIAN)
    wanted = an_event(clinician, nhs_number="9434765919")
    an_event(clinician, nhs_number="9990000018")
    an_event(other, nhs_number="9434765919")
    assert list(audit.events_matching(nhs_number="943 476 5919", username="CLINICIAN")) == [wanted]
    today = timezone.localdate()
    assert wanted in audit.events_matching(date_from=today, date_to=today)
    assert not audit.events_matching(date_to=today - dt.timedelta(days=1)).exists()
    assert not audit.events_matching(date_from=today + dt.timedelta(days=1)).exists()


def test_events_matching_lists_the_newest_first(clinician: User) -> None:
    first, second = an_event(clinician), an_event(clinician)
    assert list(audit.events_matching()) == [second, first]


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_escaped() -> None:
    assert audit.csv_safe('=HYPERLINK("http://evil")') == '\'=HYPERLINK("http://evil")'
    assert [audit.csv_safe(v) for v in ("+1", "-1", "@SUM(A1)", "\tx", "plain")] == [
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "plain",
    ]


def test_signing_in_and_out_is_audited(client: Client, clinician: User) -> None:
    client.post(reverse("login"), {"username": "clinician", "password": "correct-horse-battery"})
    client.post(reverse("logout"))
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "username", "role"))
    assert actions == [
        ("sign_in", "clinician", "Clinician"),
        ("sign_out", "clinician", "Clinician"),
    ]


def test_a_failed_sign_in_is_audited_with_the_username_tried(
    client: Client, clinician: User
) -> None:
    client.post(
        reverse("login"),
        {"username": "clinician", "password": "wrong"},
        REMOTE_ADDR="192.0.2.1",
    )
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.username, event.user) == (
        "sign_in_failed",
        "failure",
        "clinician",
        None,
    )
    assert event.ip_address == "192.0.2.1"
    assert "wrong" not in event.detail
