"""The bell in the board app: a real `boardcast serve` with accounts, real Chromium.

Bob has the board list open; an administrator assigns him to a task over REST. His bell
counts it without a reload (the page's EventSource on the notification stream), its list
says what happened, and "Mark all read" brings the count back to 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, expect

from tests.browser import test_login
from tests.browser.test_login import AuthServer, Visitors, _start, log_in

visitors = test_login.visitors


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[AuthServer]:
    env = {
        "BOARDCAST_WORKER_POLL_SECONDS": "0.05",
        "BOARDCAST_NOTIFICATION_PUSH_POLL_SECONDS": "0.05",
    }
    yield from _start(tmp_path_factory.mktemp("bell-data"), browser, env)


def test_the_bell_counts_a_new_assignment_live_and_marks_all_read(
    server: AuthServer, visitors: Visitors
) -> None:
    bob = server.add_user("bob")
    page = visitors.open(server.base_url)
    log_in(page, bob)
    expect(page.get_by_role("button", name="Notifications: 0 unread")).to_be_visible()

    project = server.api("POST", "/v1/projects", {"name": "Bells"})
    board = server.api("POST", f"/v1/projects/{project['id']}/boards", {"name": "Ring"})
    columns = server.api("GET", f"/v1/boards/{board['id']}/columns")["items"]
    task = server.api(
        "POST", f"/v1/boards/{board['id']}/tasks", {"title": "Ring", "column": columns[0]["id"]}
    )
    server.api("PATCH", f"/v1/boards/{board['id']}/tasks/{task['id']}", {"assignees": [bob.id]})

    bell = page.get_by_role("button", name="Notifications: 1 unread")
    expect(bell).to_be_visible(timeout=20_000)
    bell.click()
    panel = page.get_by_role("region", name="Notifications")
    expect(panel).to_contain_text("assigned you to a task on board")
    panel.get_by_role("button", name="Mark all read").click()
    expect(page.get_by_role("button", name="Notifications: 0 unread")).to_be_visible()
