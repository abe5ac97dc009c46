"""What the board app does when the server closes a board's socket with a code of its own.

The stock y-websocket provider takes every 44xx code as final; Boardcast's 4408 (slow
consumer) and 4409 (out of sync) ask the client to reconnect and resync, so the app does.
Other codes leave the board in the page and say why it is not connected.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import ROOT, People, chromium_unavailable
from tests.browser.pages import add_card, expect_saved
from tests.interop.servers import BoardcastProcess
from tests.services import free_port, service_missing


@pytest.fixture(scope="module")
def closing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardcastProcess]:
    reason = chromium_unavailable()
    if reason is not None:
        service_missing(reason)
    server = BoardcastProcess(
        "serve",
        port=free_port(),
        extra_args=[
            *("--backend", "local", "--auth", "none"),
            *("--data-dir", str(tmp_path_factory.mktemp("closing-data"))),
            *("--extension", "tests.browser.closing_extension:ClosesFirstSockets"),
        ],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def crowd(browser: Browser, closing_server: BoardcastProcess) -> Iterator[People]:
    people = People(browser, f"http://127.0.0.1:{closing_server.port}/")
    try:
        yield people
    finally:
        people.close()
    assert not people.errors, f"uncaught errors in the page: {people.errors}"


@pytest.mark.parametrize("code", [4408, 4409])
def test_a_resync_close_connects_again(crowd: People, code: int) -> None:
    page = crowd.open("Ann", f"/b/close-{code}-{uuid.uuid4().hex[:8]}")
    expect(page.locator("#status")).to_contain_text("Connected")
    page.get_by_role("textbox", name="New column name").fill("Ideas")
    page.get_by_role("button", name="Add column").click()
    add_card(page, "Ideas", "Kept")
    expect_saved(page)


def test_a_final_close_says_why_and_keeps_the_board(crowd: People) -> None:
    page = crowd.open("Ann", f"/b/close-4430-{uuid.uuid4().hex[:8]}")
    expect(page.get_by_role("alert")).to_contain_text("the most boards open")
    expect(page.locator("#status")).to_contain_text("Not connected")
    expect(page.get_by_role("button", name="Add column")).to_be_visible()
