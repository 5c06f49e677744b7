from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from viewer.request_id import RequestIdLogFilter, RequestIdMiddleware, current_request_id


def run_middleware(request: HttpRequest) -> tuple[HttpResponse, str | None]:
    """Return the response and the request id the view saw."""
    seen: list[str | None] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(current_request_id())
        return HttpResponse("ok")

    response = RequestIdMiddleware(view)(request)
    return response, seen[0]


def test_each_request_gets_an_id_that_the_response_echoes() -> None:
    response, seen = run_middleware(RequestFactory().get("/"))
    assert seen is not None
    assert response["X-Request-ID"] == seen
    assert current_request_id() is None


def test_a_well_formed_incoming_request_id_is_kept() -> None:
    _, seen = run_middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="proxy-1234abcd"))
    assert seen == "proxy-1234abcd"


def test_an_incoming_request_id_that_could_forge_log_lines_is_replaced() -> None:
    _, seen = run_middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="x\nFAKE log line"))
    assert seen is not None
    assert "\n" not in seen


def test_log_records_outside_a_request_get_a_placeholder_id() -> None:
    record = logging.LogRecord("viewer", logging.INFO, __file__, 1, "hello", None, None)
    assert RequestIdLogFilter().filter(record)
    assert record.request_id == "-"
