"""Request types for views, so mypy knows what the middleware has attached, and htmx checks."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AuthenticatedHtmxRequest(HttpRequest):
    """A request in a `@login_required` view: the user is real and `htmx` is set."""

    user: User
    htmx: HtmxDetails


def is_htmx(request: HttpRequest) -> bool:
    """Whether htmx sent the request (django-htmx's middleware sets `request.htmx`)."""
    return bool(getattr(request, "htmx", False))
