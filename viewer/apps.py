from __future__ import annotations

from django.apps import AppConfig


class ViewerConfig(AppConfig):
    name = "viewer"
    verbose_name = "GP Connect document viewer"

    def ready(self) -> None:
        # Connect the auth signal receivers: audit of sign-in/out, the sign-in time stamp,
        # the purge of cached patient data at sign-out.
        from viewer import audit, middleware, signals  # noqa: F401
