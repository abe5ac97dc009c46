"""What the browser tests need is here: Playwright, Debian's Chromium, the built app.

The other modules skip (or are not collected, without Playwright) when something is missing;
this test makes sure that under ``CI=true`` a missing piece fails the run instead.
"""

from __future__ import annotations

from tests.browser.conftest import chromium_unavailable
from tests.services import service_missing


def test_the_browser_tests_can_run() -> None:
    reason = chromium_unavailable()
    if reason is not None:
        service_missing(reason)
