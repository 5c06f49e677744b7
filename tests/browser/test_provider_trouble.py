"""The `slow` and `faulty` sandbox scenarios in a real browser: the right panel, and recovery."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpconnect.sandbox.catalogue import Faults
from tests.browser.conftest import Browsing, chromium_missing_reason, services_required
from tests.browser.test_clinician_journey import assert_no_url_contains, spaced
from tests.viewer.conftest import RecordingSandbox, nhs_number_of

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(
        chromium_missing_reason() is not None and not services_required(),
        reason=chromium_missing_reason() or "",
    ),
]


def test_a_practice_slower_than_our_time_out_gets_a_try_again_panel(
    browsing: Browsing, settings: Any
) -> None:
    # The `slow` practice answers after 4 seconds; give up after 1 (and the retries).
    settings.GPCONNECT_READ_TIMEOUT = 1
    nhs_number = nhs_number_of("slow")
    browsing.sign_in("browserclinician")
    browsing.search(spaced(nhs_number))

    panel = browsing.page.locator(".viewer-error-panel")
    panel.wait_for()
    text = panel.inner_text()
    assert "The GP practice's system is not responding" in text
    assert "trying again in a few minutes may work" in text
    assert panel.locator(".viewer-trace-id").inner_text().strip()
    # The number is still in the form, ready to try again.
    assert browsing.page.input_value("#nhs_number").replace(" ", "") == nhs_number
    browsing.assert_sound_page()
    assert_no_url_contains(browsing.requested, nhs_number)


def test_a_failing_practice_gets_a_panel_and_try_again_recovers_the_list(
    browsing: Browsing, gp: RecordingSandbox
) -> None:
    nhs_number = nhs_number_of("faulty")
    page = browsing.page
    browsing.sign_in("browserclinician")
    browsing.search(spaced(nhs_number))
    page.wait_for_selector(".viewer-documents__status")

    # The practice now fails every request (the scenario's own rate is 30%, too random
    # for a test); the list is asked for again with a filter, which the cache cannot answer.
    gp.sandbox.faults[nhs_number] = Faults(error_rate=1.0)
    try:
        page.get_by_label("Last year").check()
        page.get_by_role("button", name="Apply filters").click()
        panel = page.locator(".viewer-error-panel")
        panel.wait_for()
        assert "The GP practice's system is not responding" in panel.inner_text()
        assert panel.locator(".viewer-trace-id").inner_text().strip()
        browsing.assert_sound_page()
    finally:
        gp.sandbox.faults[nhs_number] = Faults()

    page.get_by_role("link", name="Try again").click()
    page.wait_for_selector(".viewer-documents__status")
    assert "filtered: last year" in page.locator(".viewer-documents__status").inner_text()
    browsing.assert_sound_page()


def test_a_document_the_practice_sends_broken_gives_a_failed_download_not_a_wrong_file(
    browsing: Browsing, gp: RecordingSandbox
) -> None:
    nhs_number = nhs_number_of("faulty")
    gp.sandbox.faults[nhs_number] = Faults()  # only the documents' own faults
    try:
        page = browsing.page
        browsing.sign_in("browserclinician")
        browsing.search(spaced(nhs_number))
        page.get_by_role("link", name="Letter (not JSON)").click()
        page.wait_for_selector("h1:has-text('Letter (not JSON)')")

        # Not JSON at all: refused before the first byte, so an error page, not a file.
        page.get_by_role("link", name=re.compile(r"^Download")).click()
        panel = page.locator(".viewer-error-panel")
        panel.wait_for()
        assert "could not be read" in panel.inner_text()
        assert panel.locator(".viewer-trace-id").inner_text().strip()
        browsing.assert_sound_page(error_status_expected=True)
    finally:
        del gp.sandbox.faults[nhs_number]
