"""A real browser (Debian's Chromium, driven by Playwright) against the real app and sandbox.

The app runs in pytest-django's `live_server` thread with its Spine settings pointed at the
sandbox (the `gp` fixture from tests/viewer), which runs in a thread on a loopback port. The
browser records every URL it requests and every console error, so a test can check both.
Without /usr/bin/chromium the tests skip with a reason; REQUIRE_SERVICES=1 makes that a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.viewer.conftest import gp, make_user, recording_sandbox  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a-browser-test-password"
OFFLINE_FONTS = "https://assets.nhs.uk/fonts/"
# axe-core from npm (package.json's devDependencies; `make test` runs npm ci first).
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
AXE_SERIOUS_VIOLATIONS = """async () => {
  const results = await axe.run(document);
  return results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}"""


def chromium_missing_reason() -> str | None:
    """Return why the browser tests cannot run here, or None if they can."""
    if CHROMIUM.exists():
        return None
    return f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium; `make test` does it)"


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "").strip() == "1"


@dataclass
class Browsing:
    """A signed-out browser page on the live server, with what it requested and logged."""

    page: Any  # playwright.sync_api.Page
    base_url: str
    requested: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path

    def sign_in(self, username: str) -> None:
        self.page.goto(self.url("/"))
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_selector("#nhs_number")

    def search(self, nhs_number: str) -> None:
        self.page.fill("#nhs_number", nhs_number)
        self.page.get_by_role("button", name="Find documents").click()
        self.page.wait_for_load_state("networkidle")

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        # The NHS.UK frontend's CSS asks for its web fonts from assets.nhs.uk, which the
        # loopback-only browser refuses; the page falls back to Arial by design.
        if message.location.get("url", "").startswith(OFFLINE_FONTS):
            return
        self.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def assert_no_console_errors(self, *, error_status_expected: bool = False) -> None:
        """No console errors; `error_status_expected` allows the one for the page's own status.

        Chromium logs "Failed to load resource" for any page served with a 4xx or 5xx,
        even one that renders our error page exactly as intended.
        """
        errors = self.console_errors
        if error_status_expected:
            own = f"({self.page.url})"
            errors = [e for e in errors if not (e.startswith("Failed to load") and e.endswith(own))]
        assert errors == [], f"console errors on {self.page.url}"

    def assert_sound_page(self, *, error_status_expected: bool = False) -> None:
        """No console errors, and no serious or critical axe-core accessibility violations."""
        self.assert_no_console_errors(error_status_expected=error_status_expected)
        assert AXE.exists(), f"{AXE} is missing: run `npm ci` (or `make install`)"
        # Evaluated through the DevTools protocol, which the page's CSP does not govern: a
        # <script> tag would need the page to allow inline scripts, which it must not.
        self.page.evaluate(AXE.read_text())
        violations = self.page.evaluate(AXE_SERIOUS_VIOLATIONS)
        assert violations == [], f"accessibility violations on {self.page.url}"


def _refuse(route: Any) -> None:
    route.abort("internetdisconnected")


@pytest.fixture
def browser_clinician(transactional_db: None) -> User:
    user = make_user("browserclinician", "Clinician")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def browsing(
    live_server: Any,
    gp: Any,  # noqa: F811
    settings: Any,
    browser_clinician: User,
) -> Iterator[Browsing]:
    problem = chromium_missing_reason()
    if problem:
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but the browser tests {problem}")
        pytest.skip(problem)
    # The live server speaks plain HTTP, and browsers refuse `__Host-` cookies without Secure.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_NAME = "sessionid"
    settings.CSRF_COOKIE_NAME = "csrftoken"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(accept_downloads=True)
        # Only loopback: anything else (NHS.UK frontend's web fonts) is refused at once.
        context.route(re.compile(r"^(https?|wss?)://(?!(localhost|127\.0\.0\.1)[:/])"), _refuse)
        context.set_default_timeout(20_000)
        page = context.new_page()
        browsing = Browsing(page, live_server.url)
        page.on("request", lambda request: browsing.requested.append(request.url))
        page.on("console", browsing.on_console)
        page.on("pageerror", lambda exc: browsing.console_errors.append(str(exc)))
        try:
            yield browsing
        finally:
            context.close()
            browser.close()
