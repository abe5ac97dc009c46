"""Fixtures for the browser tests: a real `boardcast serve`, headless Chromium, helpers.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright for Python; Playwright's own
browser download is never used. Without Chromium or Playwright the tests skip, and fail under
``CI=true`` (tests/services.py). Screenshots go to ``artifacts/browser/`` (gitignored; set
``BOARDCAST_ARTIFACTS`` to move it).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.servers import BoardcastProcess
from tests.services import TIMEOUT_SCALE, free_port, service_missing

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "clients" / "web" / "dist"
ARTIFACTS = Path(os.environ.get("BOARDCAST_ARTIFACTS", ROOT / "artifacts")) / "browser"
CHROMIUM = os.environ.get("BOARDCAST_CHROMIUM", "/usr/bin/chromium")
# Playwright's waits, in milliseconds.
WAIT_MS = int(15_000 * TIMEOUT_SCALE)

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Page,
        Playwright,
        expect,
        sync_playwright,
    )

    # A loaded 2-core machine can take more than Playwright's 5 s to show a change.
    expect.set_options(timeout=WAIT_MS)
    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - reported by the fixtures
    HAVE_PLAYWRIGHT = False


# Without Playwright the modules that import it are not collected; test_requirements.py
# still reports why (and fails under CI=true).
collect_ignore = [] if HAVE_PLAYWRIGHT else ["pages.py", "test_board.py", "test_accessibility.py"]


def chromium_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not HAVE_PLAYWRIGHT:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if shutil.which(CHROMIUM) is None:
        return f"chromium is not installed ({CHROMIUM}; apt-get install -y chromium)"
    if not (DIST / "index.html").is_file():
        return "the board app is unavailable: clients/web/dist is not built"
    return None


@pytest.fixture(scope="package")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardcastProcess]:
    """`boardcast serve` with boards in-process and the viewer extension."""
    reason = chromium_unavailable()
    if reason is not None:
        service_missing(reason)
    server = BoardcastProcess(
        "serve",
        port=free_port(),
        extra_args=[
            "--backend",
            "local",
            "--data-dir",
            str(tmp_path_factory.mktemp("browser-data")),
            "--extension",
            "tests.browser.extensions:ViewersReadOnly",
        ],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def base_url(web_server: BoardcastProcess) -> str:
    return f"http://127.0.0.1:{web_server.port}/"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    reason = chromium_unavailable()
    if reason is not None:
        service_missing(reason)
    with sync_playwright() as playwright:
        launched = _launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    )


class People:
    """Browser contexts, one per person, each with its own page; closed at the end."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def open(self, name: str, path: str = "", *, role: str | None = None, **options: Any) -> Page:
        """A new person named ``name`` with the app open at ``#`` + path."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 800}, **options)
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{name}: {error}"))
        query = f"?name={name}" + (f"&role={role}" if role else "")
        page.goto(f"{self.base_url}{query}#{path}")
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def people(browser: Browser, base_url: str) -> Iterator[People]:
    crowd = People(browser, base_url)
    try:
        yield crowd
    finally:
        crowd.close()
    assert not crowd.errors, f"uncaught errors in the page: {crowd.errors}"


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """Save a screenshot of a page under artifacts/browser/<test>-<label>.png."""

    def take(page: Page, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        test = re.sub(r"[^\w-]+", "-", request.node.name).strip("-")
        path = ARTIFACTS / f"{test}-{label}.png"
        page.screenshot(path=str(path))
        return path

    return take


def new_board_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"
