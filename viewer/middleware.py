"""Session time-outs (ASVS V7.3.1, V7.3.2), and htmx requests whose session has ended.

Idle: a session expires SESSION_COOKIE_AGE after it was last saved, and requests save it
at most once every SESSION_REFRESH_SECONDS, so one left alone ends between that long
before the idle time-out and the time-out itself; never later. Absolute: a user is
signed out N hours after signing in, however active they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect

from viewer import audit
from viewer.http import is_htmx
from viewer.models import AuditAction, AuditOutcome

SIGNED_IN_AT = "viewer_signed_in_at"
REFRESHED_AT = "viewer_refreshed_at"


@receiver(user_logged_in, dispatch_uid="viewer.middleware.stamp_sign_in")
def _stamp_sign_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    # login() has already given the session a new key, so the stamp belongs to this sign-in.
    if request is not None and hasattr(request, "session"):
        request.session[SIGNED_IN_AT] = time.time()


class IdleTimeoutMiddleware:
    """Move a session's expiry on, at most once every SESSION_REFRESH_SECONDS.

    Saving the session on every request (SESSION_SAVE_EVERY_REQUEST) would do the same
    with a database write per request, a document download's included; a minute's
    precision in a 15-minute time-out is not worth that.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        session = request.session
        if session.session_key is None:
            return response  # no session cookie
        refreshed_at = session.get(REFRESHED_AT)  # loads it, and drops an unknown key
        if session.session_key is None:
            return response  # an ended session (expired, or flushed at sign-out): leave it
        now = time.time()
        if not isinstance(refreshed_at, int | float) or not (
            0 <= now - refreshed_at < settings.SESSION_REFRESH_SECONDS
        ):
            session[REFRESHED_AT] = now  # a change, which SessionMiddleware saves
        return response


class AbsoluteSessionTimeoutMiddleware:
    """Sign the user out once the session is older than SESSION_ABSOLUTE_TIMEOUT_HOURS."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            signed_in_at = request.session.get(SIGNED_IN_AT)
            limit = settings.SESSION_ABSOLUTE_TIMEOUT_HOURS * 3600
            if not isinstance(signed_in_at, int | float):
                # A session from before this middleware: its clock starts now.
                request.session[SIGNED_IN_AT] = time.time()
            elif time.time() - signed_in_at > limit:
                audit.record(
                    user=request.user,
                    action=AuditAction.SESSION_EXPIRED,
                    outcome=AuditOutcome.SUCCESS,
                    detail=f"Signed out: {settings.SESSION_ABSOLUTE_TIMEOUT_HOURS} hours after sign-in",
                    request=request,
                )
                logout(request)
        return self.get_response(request)


class HtmxSignInRedirectMiddleware:
    """Send an htmx request whose session has ended to the sign-in page as a whole page.

    The browser's fetch follows a redirect silently, so without this htmx would swap the
    sign-in page into the documents table. HX-Redirect makes htmx navigate instead.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if is_htmx(request) and response.status_code in (301, 302):
            location = response.get("Location", "")
            if location.startswith(resolve_url(settings.LOGIN_URL)):
                return HttpResponseClientRedirect(location)
        return response
