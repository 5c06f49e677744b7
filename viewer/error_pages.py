"""NHS-styled error pages, each with the request id the service desk can search the logs for.

htmx requests get a short message at the top of the page instead (HX-Retarget), because
swapping a whole error page into a table would make no sense.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template import loader

from viewer.http import is_htmx
from viewer.request_id import current_request_id

logger = logging.getLogger(__name__)

_PAGES: dict[int, tuple[str, list[str]]] = {
    400: (
        "Sorry, the request could not be understood",
        ["Go back and try again. If it happens again, contact the service desk."],
    ),
    403: (
        "You do not have access to this page",
        [
            "Your role does not allow this. If you think it should, ask your system "
            "administrator to check your role."
        ],
    ),
    404: (
        "Page not found",
        [
            "The page may have expired: patients and documents can only be opened from the "
            "search in the session where you found them.",
            "Search for the patient again from the start page.",
        ],
    ),
}

CSRF_PAGE = (
    "Your form could not be sent",
    [
        "This usually means the page was open for a long time, or you signed in again in "
        "another tab. Nothing was changed.",
        "Go back, reload the page and try again.",
    ],
)


def _respond(request: HttpRequest, status: int, heading: str, lines: list[str]) -> HttpResponse:
    context = {"heading": heading, "lines": lines, "request_id": current_request_id()}
    if is_htmx(request):
        response = render(request, "errors/_htmx.html", context, status=status)
        response["HX-Retarget"] = "#maincontent"
        response["HX-Reswap"] = "afterbegin"
        return response
    return render(request, "errors/_page.html", context, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _respond(request, 400, *_PAGES[400])


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _respond(request, 403, *_PAGES[403])


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _respond(request, 404, *_PAGES[404])


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    logger.warning("CSRF check failed: %s", reason)
    return _respond(request, 403, *CSRF_PAGE)


def server_error(request: HttpRequest) -> HttpResponse:
    # No context processors, no session, no database: only the request id.
    html = loader.get_template("500.html").render({"request_id": current_request_id()})
    response = HttpResponse(html, status=500)
    if is_htmx(request):
        response = HttpResponse(
            loader.get_template("errors/_htmx.html").render(
                {
                    "heading": "Sorry, there is a problem with the service",
                    "lines": ["Try again later. What you were doing has not been completed."],
                    "request_id": current_request_id(),
                }
            ),
            status=500,
        )
        response["HX-Retarget"] = "#maincontent"
        response["HX-Reswap"] = "afterbegin"
    return response
