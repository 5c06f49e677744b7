"""A large document is fetched ahead while the clinician looks at the list, in a real browser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from config.celery import app as celery_app
from tests.browser.conftest import Browsing, chromium_missing_reason, services_required
from tests.viewer.conftest import RecordingSandbox, nhs_number_of

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.services("redis"),
    pytest.mark.skipif(
        chromium_missing_reason() is not None and not services_required(),
        reason=chromium_missing_reason() or "",
    ),
]

WOUND_PHOTOS_TITLE = "Wound clinic photographs"


@pytest.fixture
def worker(settings: Any, tmp_path: Path) -> Iterator[None]:
    settings.PREFETCH_ENABLED = True
    settings.PREFETCH_MIN_MB = 1
    settings.STORAGES = {
        **settings.STORAGES,
        "prefetch": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "prefetch")},
        },
    }
    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ):
        yield


def status_polls(browsing: Browsing) -> int:
    return sum("/prefetch-status" in url for url in browsing.requested)


def test_the_row_of_a_large_document_shows_it_being_fetched_then_ready_and_the_poll_stops(
    browsing: Browsing, gp: RecordingSandbox, worker: None
) -> None:
    page = browsing.page
    browsing.sign_in("browserclinician")
    browsing.search(nhs_number_of("documents"))
    page.goto(page.url + f"?keyword={WOUND_PHOTOS_TITLE.replace(' ', '+')}")
    row = page.locator("tbody tr", has_text=WOUND_PHOTOS_TITLE)
    assert row.locator(".viewer-prefetch").count() == 1

    # The poll swaps the row's status in place, without reloading the page.
    row.locator(".viewer-prefetch--ready").wait_for(timeout=30_000)
    assert "Ready" in row.locator(".viewer-prefetch").inner_text()
    browsing.assert_sound_page()

    polls = status_polls(browsing)
    time.sleep(4.5)  # two more poll intervals
    assert status_polls(browsing) == polls  # HTTP 286 stopped it

    with page.expect_download() as download:
        row.get_by_role("link").click()
        page.get_by_role("link", name="Download").click()
    assert Path(download.value.path()).stat().st_size == 4_846_593
