"""A clinician's journey in a real browser, against the real app and the real sandbox."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.browser.conftest import Browsing, chromium_missing_reason, services_required
from tests.viewer.conftest import RecordingSandbox, nhs_number_of

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(
        chromium_missing_reason() is not None and not services_required(),
        reason=chromium_missing_reason() or "",
    ),
]


def spaced(nhs_number: str) -> str:
    return f"{nhs_number[:3]} {nhs_number[3:6]} {nhs_number[6:]}"


def assert_no_url_contains(urls: list[str], nhs_number: str) -> None:
    """No URL carries the NHS number, with or without spaces (however they are encoded)."""
    assert urls
    for url in urls:
        digits_only = re.sub(r"(%20|\+|%2B|\s|-)", "", url)
        assert nhs_number not in digits_only, url


def test_a_clinician_finds_sorts_pages_filters_opens_and_downloads_a_document(
    browsing: Browsing, gp: RecordingSandbox, tmp_path: Path
) -> None:
    page = browsing.page
    nhs_number = nhs_number_of("documents")

    browsing.sign_in("browserclinician")
    browsing.assert_sound_page()

    browsing.search(spaced(nhs_number))
    status = page.locator(".viewer-documents__status")
    assert "Showing 1–25 of 43 documents" in status.inner_text()
    assert page.locator(".viewer-documents__table tbody tr").count() == 25
    browsing.assert_sound_page()

    title_header = page.locator("th:has(> a:text-is('Title'))")
    assert title_header.get_attribute("aria-sort") == "none"
    title_header.get_by_role("link").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('th')].some("
        "th => th.textContent.trim() === 'Title' && th.getAttribute('aria-sort') !== 'none')"
    )
    title_header = page.locator("th:has(> a:text-is('Title'))")
    assert title_header.get_attribute("aria-sort") in ("ascending", "descending")
    assert "sort=title" in page.url
    browsing.assert_sound_page()

    page.get_by_role("link", name="Page 2").click()
    page.wait_for_function(
        "() => document.querySelector('.viewer-documents__status')"
        ".textContent.includes('Showing 26–43 of 43')"
    )
    assert page.locator(".viewer-documents__table tbody tr").count() == 18
    assert page.get_by_role("link", name="Page 2").get_attribute("aria-current") == "page"
    browsing.assert_sound_page()

    page.fill("#filter-keyword", "cardiology")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_function(
        "() => document.querySelector('.viewer-documents__status')"
        ".textContent.includes('of 2 documents')"
    )
    assert "keyword=cardiology" in page.url
    browsing.assert_sound_page()

    title = "Cardiology outpatient letter"
    page.get_by_role("link", name=title).click()
    page.wait_for_selector(f"h1:has-text('{title}')")
    browsing.assert_sound_page()

    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile(r"^Download")).click()
    saved = tmp_path / "downloaded"
    download_info.value.save_as(saved)
    expected = next(d for d in gp.sandbox.record.documents if d.title == title)
    assert expected.content_type == "application/pdf"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == expected.sha256
    browsing.assert_sound_page()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("#id_username")
    assert page.locator("#nhs_number").count() == 0
    browsing.assert_sound_page()

    assert_no_url_contains(browsing.requested, nhs_number)
    assert_no_url_contains([page.url], nhs_number)


@pytest.mark.parametrize(
    ("scenario", "heading", "message"),
    [
        (
            "no-consent",
            "The patient has not agreed to share their record",
            "The patient has asked their GP practice not to share their record.",
        ),
        (
            "sensitive",
            "This patient's record cannot be shown",
            "This patient's GP record cannot be shown through this service.",
        ),
    ],
)
def test_a_patient_whose_record_cannot_be_shared_gets_an_error_panel_with_a_trace_id(
    browsing: Browsing, scenario: str, heading: str, message: str
) -> None:
    nhs_number = nhs_number_of(scenario)
    browsing.sign_in("browserclinician")
    browsing.search(spaced(nhs_number))

    panel = browsing.page.locator(".viewer-error-panel")
    panel.wait_for()
    text = panel.inner_text()
    assert heading in text
    assert message in text
    assert panel.locator(".viewer-trace-id").inner_text().strip()
    browsing.assert_sound_page()
    assert_no_url_contains(browsing.requested, nhs_number)
