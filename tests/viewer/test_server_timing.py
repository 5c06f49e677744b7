"""The Server-Timing header the benchmarks read: on only when SERVER_TIMING=1."""

from __future__ import annotations

import re

from django.http import HttpResponse
from django.test import Client, RequestFactory

from viewer.server_timing import ServerTimingMiddleware


def test_the_middleware_reports_the_apps_time_in_milliseconds() -> None:
    middleware = ServerTimingMiddleware(lambda request: HttpResponse("ok"))

    response = middleware(RequestFactory().get("/"))

    assert re.fullmatch(r"app;dur=\d+\.\d", response["Server-Timing"])


def test_responses_carry_no_timing_by_default(db: None) -> None:
    assert "Server-Timing" not in Client().get("/healthz")
