"""Server-Timing: how long the app took to produce a response, for measuring, not for users.

On only with SERVER_TIMING=1 (bench/download_view.py sets it): the header tells a client
how long each request spent in Django, from the first middleware until the response, with
its headers and, for a streamed document, its first chunk ready to send. That is the
server's share of the time to first byte, whatever the network and the client add.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class ServerTimingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        response["Server-Timing"] = f"app;dur={elapsed_ms:.1f}"
        return response
