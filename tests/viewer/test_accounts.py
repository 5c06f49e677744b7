from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from axes.utils import reset as axes_reset
from django.conf import settings as django_settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from viewer.middleware import REFRESHED_AT, SIGNED_IN_AT
from viewer.models import AuditEvent, UserProfile
from viewer.roles import AUDITOR, CLINICIAN, RECEPTIONIST, grant_role, requesting_user, role_of

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def no_lockouts() -> Iterator[None]:
    axes_reset()
    yield
    axes_reset()


@pytest.fixture
def auditor() -> User:
    user = User.objects.create_user("auditor", password=PASSWORD)
    grant_role(user, AUDITOR)
    return user


def sign_in(client: Client, password: str = PASSWORD) -> int:
    response = client.post(reverse("login"), {"username": "auditor", "password": password})
    return response.status_code


def test_a_user_signs_in_with_the_right_password_and_reaches_the_audit_page(
    client: Client, auditor: User
) -> None:
    assert sign_in(client) == 302
    assert client.get(reverse("viewer:audit")).status_code == 200


def test_the_account_is_locked_after_5_failed_sign_ins_even_with_the_right_password(
    client: Client, auditor: User
) -> None:
    for _ in range(4):
        assert sign_in(client, "wrong") == 200  # the form again, with its error
    assert sign_in(client, "wrong") == 429
    assert sign_in(client) == 429
    assert client.get(reverse("viewer:audit")).status_code == 302
    last = AuditEvent.objects.filter(action="sign_in_failed").order_by("id").last()
    assert last and (last.outcome, last.detail) == ("denied", "Locked out after repeated failures")


def test_a_lock_out_ends_after_15_minutes(client: Client, auditor: User) -> None:
    for _ in range(5):
        sign_in(client, "wrong")
    assert sign_in(client) == 429
    from axes.models import AccessAttempt

    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=16))
    assert sign_in(client) == 302


def test_fewer_than_5_failures_then_a_success_start_the_count_again(
    client: Client, auditor: User
) -> None:
    for _ in range(4):
        sign_in(client, "wrong")
    assert sign_in(client) == 302
    client.post(reverse("logout"))
    for _ in range(4):
        assert sign_in(client, "wrong") == 200
    assert sign_in(client) == 302


def test_signing_in_needs_a_request_so_axes_can_watch_it(auditor: User) -> None:
    request = RequestFactory().post(reverse("login"))
    assert authenticate(request, username="auditor", password=PASSWORD) == auditor


def test_an_idle_session_expires_after_the_idle_time_out(client: Client, auditor: User) -> None:
    sign_in(client)
    Session.objects.update(expire_date=timezone.now() - dt.timedelta(seconds=1))
    response = client.get(reverse("viewer:audit"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_request_a_minute_after_the_last_moves_the_idle_time_out_on(
    client: Client, auditor: User, settings: Any
) -> None:
    sign_in(client)
    session = client.session
    session[REFRESHED_AT] = time.time() - settings.SESSION_REFRESH_SECONDS - 1
    session.save()
    soon = timezone.now() + dt.timedelta(minutes=1)
    Session.objects.update(expire_date=soon)
    assert client.get(reverse("viewer:audit")).status_code == 200
    expiry = Session.objects.get().expire_date
    assert expiry > soon
    assert expiry <= timezone.now() + dt.timedelta(seconds=settings.SESSION_COOKIE_AGE)


def test_requests_within_a_minute_of_the_last_refresh_write_nothing(
    client: Client, auditor: User
) -> None:
    sign_in(client)
    soon = timezone.now() + dt.timedelta(minutes=1)
    Session.objects.update(expire_date=soon)
    assert client.get(reverse("viewer:audit")).status_code == 200
    assert Session.objects.get().expire_date == soon


def test_a_stale_session_cookie_does_not_start_a_session(client: Client) -> None:
    client.cookies[django_settings.SESSION_COOKIE_NAME] = "no-such-session-key"
    assert client.get(reverse("login")).status_code == 200
    assert not Session.objects.exists()


def test_a_session_older_than_the_absolute_time_out_is_signed_out(
    client: Client, auditor: User, settings: Any
) -> None:
    settings.SESSION_ABSOLUTE_TIMEOUT_HOURS = 8
    sign_in(client)
    session = client.session
    session[SIGNED_IN_AT] = time.time() - 8 * 3600 - 1
    session.save()
    response = client.get(reverse("viewer:audit"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["session_expired", "sign_out"]
    assert client.get(reverse("viewer:audit")).status_code == 302


def test_an_active_session_younger_than_the_absolute_time_out_stays_signed_in(
    client: Client, auditor: User
) -> None:
    sign_in(client)
    session = client.session
    session[SIGNED_IN_AT] = time.time() - 7 * 3600
    session.save()
    assert client.get(reverse("viewer:audit")).status_code == 200


def test_demo_users_refuses_to_run_outside_demo_mode(settings: Any) -> None:
    settings.DEMO_MODE = False
    with pytest.raises(CommandError, match="DEMO_MODE=1"):
        call_command("demo_users")
    assert not User.objects.exists()


def test_demo_users_creates_the_three_users_with_roles_and_profiles(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DEMO_MODE = True
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    out = io.StringIO()
    call_command("demo_users", stdout=out)
    users = {user.username: user for user in User.objects.all()}
    assert {name: role_of(user) for name, user in users.items()} == {
        "clinician": CLINICIAN,
        "receptionist": RECEPTIONIST,
        "auditor": AUDITOR,
    }
    assert all(user.check_password("gpconnect-demo") for user in users.values())
    assert requesting_user(users["clinician"]).sds_user_id != "UNK"
    assert UserProfile.objects.count() == 3
    printed = out.getvalue()
    assert "clinician" in printed and "gpconnect-demo" in printed and "Auditor" in printed
    assert (
        client.post(
            reverse("login"), {"username": "auditor", "password": "gpconnect-demo"}
        ).status_code
        == 302
    )


def test_demo_users_takes_the_password_from_demo_password_and_can_run_twice(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DEMO_MODE = True
    call_command("demo_users", stdout=io.StringIO())
    local_id = UserProfile.objects.get(user__username="clinician").local_id
    monkeypatch.setenv("DEMO_PASSWORD", "another-demo-password")
    call_command("demo_users", stdout=io.StringIO())
    clinician = User.objects.get(username="clinician")
    assert clinician.check_password("another-demo-password")
    assert UserProfile.objects.get(user=clinician).local_id == local_id
    assert User.objects.count() == 3


def test_an_admin_edits_the_profile_on_the_users_own_admin_page(
    admin_client: Client, auditor: User
) -> None:
    page = admin_client.get(reverse("admin:auth_user_change", args=[auditor.pk]))
    assert page.status_code == 200
    assert 'name="profile-0-sds_user_id"' in page.content.decode()
