from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def demo_mode(request: HttpRequest) -> dict[str, bool]:
    """Expose DEMO_MODE so every page can say it shows synthetic data."""
    return {"demo_mode": settings.DEMO_MODE}


def csp_nonce(request: HttpRequest) -> dict[str, object]:
    """Expose the response's CSP nonce as `csp_nonce`, the name django-htmx's tag reads.

    The value stays lazy: a page that never prints it sends no nonce in its policy.
    """
    return {"csp_nonce": getattr(request, "csp_nonce", "")}
