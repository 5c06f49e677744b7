"""The audit trail: `record()` writes it, `events_matching()` reads it for the auditor pages.

Services call `record()` for every patient action, successful or not; sign-in, failed
sign-in and sign-out are recorded here from Django's auth signals.
"""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models import QuerySet
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from gpconnect import GPConnectError
from gpconnect import nhs_number as nhs
from viewer.models import AuditAction, AuditEvent, AuditOutcome
from viewer.request_id import current_request_id
from viewer.roles import AnyUser, profile_of, role_of

# The only actions a row may record without a signed-in user.
ANONYMOUS_ACTIONS = frozenset({AuditAction.SIGN_IN_FAILED})


class AnonymousAuditError(Exception):
    """Raised when an action that must name a user is recorded without one."""


def record(
    *,
    user: AnyUser | None,
    action: str,
    outcome: str,
    nhs_number: str = "",
    document_id: str = "",
    context_id: str = "",
    trace_id: str = "",
    detail: str = "",
    request: HttpRequest | None = None,
    username: str = "",
    request_id: str | None = None,
) -> AuditEvent:
    """Write one audit event and return it.

    Role and organisation are copied from the user's role and profile as they are now.
    `username` is only used when there is no user (a failed sign-in). `request_id`
    defaults to the current request's. Raises ValueError
    for an unknown action or outcome, and AnonymousAuditError for a patient action
    without a signed-in user.
    """
    if action not in AuditAction.values:
        raise ValueError(f"Unknown audit action {action!r}")
    if outcome not in AuditOutcome.values:
        raise ValueError(f"Unknown audit outcome {outcome!r}")
    signed_in = isinstance(user, User) and user.is_authenticated
    if not signed_in and action not in ANONYMOUS_ACTIONS:
        raise AnonymousAuditError(f"Audit action {action!r} needs a signed-in user")
    event = AuditEvent(
        action=action,
        outcome=outcome,
        nhs_number=nhs.normalise(nhs_number)[:10],
        document_id=document_id[:200],
        context_id=context_id[:64],
        trace_id=trace_id[:64],
        # Given explicitly when the row is written after the request (a streamed body).
        request_id=(request_id if request_id is not None else current_request_id() or "")[:64],
        detail=detail,
    )
    if isinstance(user, User) and signed_in:
        event.user = user
        event.username = user.get_username()
        event.role = role_of(user) or ""
        event.organisation_ods_code = _organisation_of(user)
    else:
        event.username = username[:150]
    if request is not None:
        event.ip_address = _client_ip(request)
        event.user_agent = request.headers.get("User-Agent", "")[:300]
    event.save()
    return event


def described(error: GPConnectError) -> str:
    """How an audit row names a provider's failure: its kind, then what the user was told."""
    return f"{type(error).__name__}: {error.message}"


def _organisation_of(user: User) -> str:
    profile = profile_of(user)
    return profile.organisation_ods_code if profile else ""


def _client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: a client can write any X-Forwarded-For it likes.
    address = request.META.get("REMOTE_ADDR", "")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def events_matching(
    *,
    nhs_number: str = "",
    username: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    before: int | None = None,
) -> QuerySet[AuditEvent]:
    """Return the events matching every filter given, newest first.

    Dates are whole days in UK time (TIME_ZONE), both ends included. `before` keeps only
    events with a lower sequence number, so a list can stay still while it is paged.
    """
    events = AuditEvent.objects.all()
    if before is not None:
        events = events.filter(pk__lt=before)
    if nhs_number:
        events = events.filter(nhs_number=nhs.normalise(nhs_number))
    if username:
        events = events.filter(username__iexact=username.strip())
    if date_from:
        events = events.filter(when__gte=_start_of_day(date_from))
    if date_to:
        events = events.filter(when__lt=_start_of_day(date_to + dt.timedelta(days=1)))
    return events.order_by("-when", "-id")


def _start_of_day(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


CSV_HEADER = (
    "sequence",
    "when (UTC)",
    "username",
    "role",
    "organisation ODS code",
    "NHS number",
    "action",
    "outcome",
    "document id",
    "patient context id",
    "trace id",
    "request id",
    "IP address",
    "detail",
)

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """Return `value` with a leading `'` if a spreadsheet would read it as a formula."""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def csv_row(event: AuditEvent) -> list[str]:
    """Return one event as CSV cells, each safe to open in a spreadsheet."""
    when = event.when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cells = [
        str(event.pk),
        when,
        event.username,
        event.role,
        event.organisation_ods_code,
        event.nhs_number,
        event.action,
        event.outcome,
        event.document_id,
        event.context_id,
        event.trace_id,
        event.request_id,
        event.ip_address or "",
        event.detail,
    ]
    return [csv_safe(cell) for cell in cells]


class _Echo:
    """A file-like object whose write() hands back the line, for streaming csv.writer."""

    def write(self, value: str) -> str:
        return value


def csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """Yield the CSV export of `events` line by line, header first."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for event in events:
        yield writer.writerow(csv_row(event))


@receiver(user_logged_in, dispatch_uid="viewer.audit.signed_in")
def _signed_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    record(user=user, action=AuditAction.SIGN_IN, outcome=AuditOutcome.SUCCESS, request=request)


@receiver(user_login_failed, dispatch_uid="viewer.audit.sign_in_failed")
def _sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # django-axes flags the request once the account is locked.
    locked = bool(getattr(request, "axes_locked_out", False))
    record(
        user=None,
        username=str(credentials.get("username", "")),
        action=AuditAction.SIGN_IN_FAILED,
        outcome=AuditOutcome.DENIED if locked else AuditOutcome.FAILURE,
        detail="Locked out after repeated failures" if locked else "",
        request=request,
    )


@receiver(user_logged_out, dispatch_uid="viewer.audit.signed_out")
def _signed_out(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is not None and user.is_authenticated:
        record(
            user=user, action=AuditAction.SIGN_OUT, outcome=AuditOutcome.SUCCESS, request=request
        )
