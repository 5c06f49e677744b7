from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from viewer import health


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "viewer/home.html")


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    # Plain text for load balancers and humans alike; failures are logged, never shown.
    checks = {"database": health.database_ok(), "cache": health.cache_ok()}
    healthy = all(checks.values())
    lines = [f"status: {'ok' if healthy else 'error'}"]
    lines += [f"{name}: {'ok' if ok else 'error'}" for name, ok in checks.items()]
    return HttpResponse(
        "\n".join(lines) + "\n",
        content_type="text/plain; charset=utf-8",
        status=200 if healthy else 503,
    )
