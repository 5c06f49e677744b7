"""Sign-out housekeeping: nothing a session fetched about a patient outlives it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from viewer import services
from viewer.services import prefetch, previews, printing


@receiver(user_logged_out, dispatch_uid="viewer.signals.purge_patient_data")
def _purge_patient_data(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    # Runs before Django flushes the session, so the session still lists what it cached.
    if request is not None and hasattr(request, "session"):
        services.purge_cached_patient_data(request.session)
        prefetch.purge_session(request.session.session_key)
        previews.purge_session(request.session.session_key)
        printing.purge_session(request.session.session_key)
