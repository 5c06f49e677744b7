from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def demo_mode(request: HttpRequest) -> dict[str, bool]:
    """Expose DEMO_MODE so every page can say it shows synthetic data."""
    return {"demo_mode": settings.DEMO_MODE}
