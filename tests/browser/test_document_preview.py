"""PDF previews drawn by pdf.js, in a real browser under our CSP (printing: test_previews_and_printing.py)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import Browsing, chromium_missing_reason, services_required
from tests.browser.test_clinician_journey import spaced
from tests.viewer.conftest import nhs_number_of

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(
        chromium_missing_reason() is not None and not services_required(),
        reason=chromium_missing_reason() or "",
    ),
]

TWO_PAGE_LETTER = "Cardiology outpatient letter"

# True when the canvas holds something other than one flat colour: a page was drawn.
CANVAS_HAS_INK = """(canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const first = data.slice(0, 4).join();
  for (let i = 4; i < data.length; i += 4 * 97) {
    if (data.slice(i, i + 4).join() !== first) return true;
  }
  return false;
}"""


def open_letter(browsing: Browsing) -> None:
    browsing.sign_in("browserclinician")
    browsing.search(spaced(nhs_number_of("documents")))
    page = browsing.page
    page.fill("#filter-keyword", "cardiology")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("link", name=TWO_PAGE_LETTER).click()
    page.wait_for_selector(f"h1:has-text('{TWO_PAGE_LETTER}')")


def test_a_pdf_is_drawn_page_by_page_with_navigation_and_zoom(browsing: Browsing) -> None:
    open_letter(browsing)
    page = browsing.page
    page.wait_for_selector("[data-pdf-ready='true']")
    status = page.locator("[data-pdf-status]")
    assert status.inner_text() == "Page 1 of 2, zoom 100%"
    canvas = page.locator(".viewer-pdf canvas")
    assert canvas.evaluate(CANVAS_HAS_INK)
    assert page.get_by_role("button", name="Previous page").is_disabled()
    browsing.assert_sound_page()

    page.get_by_role("button", name="Next page").click()
    page.wait_for_function(
        "() => document.querySelector('[data-pdf-page]').dataset.pdfPage === '2'"
    )
    assert status.inner_text() == "Page 2 of 2, zoom 100%"
    assert page.get_by_role("button", name="Next page").is_disabled()
    assert canvas.get_attribute("aria-label") == f"Page 2 of 2 of {TWO_PAGE_LETTER}"

    width = canvas.bounding_box()["width"]  # type: ignore[index]
    page.get_by_role("button", name="Zoom in").click()
    page.wait_for_function(
        "() => document.querySelector('[data-pdf-status]').textContent.includes('125%')"
    )
    assert canvas.bounding_box()["width"] > width  # type: ignore[index]
    browsing.assert_no_console_errors()
