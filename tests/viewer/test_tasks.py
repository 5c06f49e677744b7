from __future__ import annotations

from config.celery import app
from viewer.tasks import ping


def test_ping_answers_pong() -> None:
    assert ping.apply().get() == "pong"


def test_the_celery_app_finds_the_viewer_tasks() -> None:
    app.loader.import_default_modules()
    assert "viewer.tasks.ping" in app.tasks
