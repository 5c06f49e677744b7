"""Every format's preview, the print PDF and batch printing, in Chromium with a real worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from config.celery import app as celery_app
from tests.browser.conftest import Browsing, chromium_missing_reason, services_required
from tests.browser.test_clinician_journey import spaced
from tests.browser.test_document_preview import CANVAS_HAS_INK
from tests.viewer.conftest import RecordingSandbox, nhs_number_of
from viewer.services import document_key, preview_kind
from viewer.services.previews import conversion_kind

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.services("redis"),
    pytest.mark.skipif(
        chromium_missing_reason() is not None and not services_required(),
        reason=chromium_missing_reason() or "",
    ),
]

IMAGE_LOADED = "(image) => image.complete && image.naturalWidth > 0"


@pytest.fixture
def worker(settings: Any, tmp_path: Path) -> Iterator[None]:
    """A real Celery worker, with the encrypted blobs in a temporary folder."""
    settings.STORAGES = {
        **settings.STORAGES,
        "prefetch": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "blobs")},
        },
    }
    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=60
    ):
        yield


@pytest.fixture
def opened(worker: None, browsing: Browsing) -> Iterator[tuple[Browsing, str]]:
    # The worker starts first: Celery's Django fixup closes database connections as it
    # starts, which Django refuses inside Playwright's event loop.
    """A signed-in clinician with the `documents` patient open; yield the patient page path."""
    browsing.sign_in("browserclinician")
    browsing.search(spaced(nhs_number_of("documents")))
    dialogs: list[str] = []
    browsing.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield browsing, browsing.page.url.removeprefix(browsing.base_url)
    assert dialogs == [], "a document's script opened a dialogue"


def one_document_per_format(gp: RecordingSandbox) -> list[Any]:
    """The `documents` patient's retrievable documents, one of each content type."""
    nhs_number = nhs_number_of("documents")
    seen: dict[str, Any] = {}
    for document in gp.sandbox.record.documents:
        if document.patient_nhs == nhs_number and document.file and document.size < 1_000_000:
            seen.setdefault(document.content_type, document)
    return list(seen.values())


def check_preview(browsing: Browsing, document: Any) -> str:
    """Wait for the document page's preview and check it shows something; return its kind."""
    page = browsing.page
    direct, converted = preview_kind(document.content_type), conversion_kind(document.content_type)
    if direct == "pdf":
        page.wait_for_selector("[data-pdf-ready='true']")
        assert page.locator(".viewer-pdf canvas").evaluate(CANVAS_HAS_INK)
    elif direct == "image":
        assert page.locator(".viewer-document__preview img").evaluate(IMAGE_LOADED)
    elif direct == "text":
        frame = page.frame_locator(".viewer-document__preview iframe")
        assert frame.locator("body").inner_text(timeout=10_000).strip()
    elif direct == "audio":
        page.wait_for_function("() => document.querySelector('audio').readyState >= 1")
        assert page.evaluate("document.querySelector('audio').duration") > 0
    elif converted:
        page.wait_for_selector("#conversion[data-conversion]", timeout=90_000)
        if converted == "pages":
            image = page.locator(".viewer-pages__image")
            page.wait_for_function(
                "() => { const i = document.querySelector('.viewer-pages__image');"
                " return i.complete && i.naturalWidth > 0; }"
            )
            assert image.is_visible()
        elif converted == "pdf":
            page.wait_for_selector("[data-pdf-ready='true']")
            assert page.locator(".viewer-pdf canvas").evaluate(CANVAS_HAS_INK)
        else:
            frame = page.frame_locator("iframe.viewer-conversion__frame")
            text = frame.locator("body").inner_text(timeout=10_000)
            assert text.strip()
            if converted == "html":
                assert "Electronic discharge summary" in text
                assert frame.locator("#script-ran").count() == 0  # the document's script
                assert "SCRIPT EXECUTED" not in text
        return converted
    else:
        notice = page.locator(".viewer-document__no-preview")
        assert "This format cannot be previewed" in notice.inner_text()
        return "none"
    return direct


def test_every_format_of_the_documents_patient_previews_or_says_it_cannot(
    opened: tuple[Browsing, str], gp: RecordingSandbox
) -> None:
    browsing, patient_path = opened
    context_id = patient_path.rstrip("/").rsplit("/", 1)[1]
    kinds: dict[str, str] = {}
    documents = one_document_per_format(gp)
    assert {d.content_type for d in documents} >= {
        "application/pdf",
        "image/tiff",
        "image/bmp",
        "image/jpeg",
        "image/png",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/rtf",
        "text/html",
        "text/plain",
        "application/xml",
        "audio/wav",
        "audio/x-au",
        "application/octet-stream",
    }
    for number, document in enumerate(documents):
        key = document_key(context_id, document.id)
        browsing.page.goto(browsing.url(f"/patients/{context_id}/documents/{key}/"))
        kinds[document.content_type] = check_preview(browsing, document)
        browsing.assert_no_console_errors()
        if number % 4 == 0:
            browsing.assert_sound_page()

    assert kinds["image/tiff"] == kinds["image/bmp"] == "pages"
    assert kinds["text/html"] == "html" and kinds["application/xml"] == "text"
    assert kinds["audio/x-au"] == kinds["application/octet-stream"] == "none"


def test_a_multi_page_tiff_scan_is_shown_page_by_page_with_zoom(
    opened: tuple[Browsing, str],
) -> None:
    browsing, _ = opened
    page = browsing.page
    page.fill("#filter-keyword", "scanned")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("link", name="Scanned correspondence (old hospital letter)").click()
    page.wait_for_selector("#conversion[data-conversion='pages']", timeout=60_000)
    status = page.locator("[data-pages-status]")
    assert status.inner_text() == "Page 1 of 3, zoom 100%"
    assert page.get_by_role("button", name="Previous page").is_disabled()
    browsing.assert_sound_page()

    page.get_by_role("button", name="Next page").click()
    page.get_by_role("button", name="Next page").click()
    assert status.inner_text() == "Page 3 of 3, zoom 100%"
    page.wait_for_function(
        "() => { const i = document.querySelector('.viewer-pages__image');"
        " return i.src.endsWith('/preview/3') && i.complete && i.naturalWidth > 0; }"
    )
    assert page.get_by_role("button", name="Next page").is_disabled()
    width = page.locator(".viewer-pages__image").bounding_box()["width"]  # type: ignore[index]
    page.get_by_role("button", name="Zoom in").click()
    assert page.locator(".viewer-pages__image").bounding_box()["width"] > width  # type: ignore[index]
    browsing.assert_no_console_errors()


def ready_pages(browsing: Browsing) -> int:
    """Return the page count the print page says the PDF has ("Ready to print: 5 pages")."""
    text = browsing.page.locator(".viewer-print__ready-text").inner_text()
    found = re.search(r"Ready to print: (\d+) pages?", text)
    assert found, text
    return int(found.group(1))


def count_print_calls(browsing: Browsing) -> None:
    # The print dialogue would block a headless browser: count the calls instead.
    browsing.page.add_init_script(
        "window.print = () => { window.printCalls = (window.printCalls || 0) + 1; }"
    )


def test_print_draws_the_server_made_pdf_and_opens_the_print_dialogue(
    opened: tuple[Browsing, str],
) -> None:
    browsing, _ = opened
    page = browsing.page
    count_print_calls(browsing)
    page.fill("#filter-keyword", "DVLA")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("link", name="Letter to DVLA regarding fitness to drive").click()
    page.get_by_role("button", name="Print Letter to DVLA").click()

    page.wait_for_selector("body[data-print-ready='true']", timeout=90_000)
    pages = page.locator("canvas.viewer-print__page")
    assert pages.count() == ready_pages(browsing) >= 1
    assert all(pages.nth(i).evaluate(CANVAS_HAS_INK) for i in range(pages.count()))
    assert page.evaluate("window.printCalls") == 1
    assert page.get_by_role("button", name="Print").is_enabled()
    browsing.assert_sound_page()


def test_batch_print_selects_every_letter_and_prints_them_behind_a_cover_sheet(
    opened: tuple[Browsing, str],
) -> None:
    browsing, _ = opened
    page = browsing.page
    count_print_calls(browsing)
    page.fill("#filter-keyword", "letter")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_selector(".viewer-documents__filtered")  # the filtered table is in
    page.wait_for_selector("[data-select-letters]:not([hidden])")
    letters = page.locator("input[form='batch-print'][data-letter]").count()
    assert letters >= 3
    browsing.assert_sound_page()

    # Nothing chosen: the table comes back as it was, with what to do above it.
    page.get_by_role("button", name="Print selected").click()
    summary = page.locator(".nhsuk-error-summary")
    assert "Select at least one document to print." in summary.inner_text()
    assert page.locator(".viewer-documents__filtered").is_visible()
    browsing.assert_sound_page()

    page.locator("input[form='batch-print'][data-letter]").first.check()
    assert page.get_by_role("button", name="Print 1 selected").is_visible()
    page.get_by_role("button", name="Select all letters on this page").click()
    assert page.locator("[data-batch-print-count]").inner_text() == f"{letters} selected"
    page.get_by_role("button", name=f"Print {letters} selected").click()

    assert page.locator("h1").inner_text() == f"Print {letters} documents"
    page.wait_for_selector("body[data-print-ready='true']", timeout=120_000)
    # The cover sheet, then at least a page of each letter.
    assert page.locator("canvas.viewer-print__page").count() == ready_pages(browsing) > letters
    assert page.evaluate("window.printCalls") == 1
    browsing.assert_sound_page()


KEEP_LIVE_REGION = "window.liveRegion = document.querySelector('[role=status][data-live-status]')"
LIVE_REGION_KEPT = "() => window.liveRegion && window.liveRegion.isConnected"


def test_progress_is_read_out_by_one_live_region_that_stays_while_each_poll_replaces_the_rest(
    opened: tuple[Browsing, str],
) -> None:
    browsing, patient_path = opened
    page = browsing.page
    count_print_calls(browsing)
    page.fill("#filter-keyword", "scanned")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("link", name="Scanned correspondence (old hospital letter)").click()
    page.wait_for_url(re.compile(r".*/documents/[^/]+/$"))
    page.evaluate(KEEP_LIVE_REGION)
    page.wait_for_selector("#conversion[data-conversion='pages']", timeout=60_000)
    assert page.evaluate(LIVE_REGION_KEPT)
    page.wait_for_function("() => window.liveRegion.textContent === 'The preview is ready.'")
    assert page.locator("#conversion [role='status']:not([data-pages-status])").count() == 0
    browsing.assert_sound_page()

    page.goto(browsing.url(patient_path))
    page.fill("#filter-keyword", "DVLA")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("link", name="Letter to DVLA regarding fitness to drive").click()
    page.get_by_role("button", name="Print Letter to DVLA").click()
    page.wait_for_url(re.compile(r".*/prints/[^/]+/$"))
    page.evaluate(KEEP_LIVE_REGION)
    page.wait_for_selector("body[data-print-ready='true']", timeout=90_000)
    assert page.evaluate(LIVE_REGION_KEPT)
    assert page.evaluate("window.liveRegion.textContent").startswith("Ready to print: ")
    browsing.assert_sound_page()
