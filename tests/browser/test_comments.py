"""Comments in the board app, by role: a real `boardcast serve` with accounts, real Chromium.

A commenter's socket is read-only, so the app posts comments over REST; the comment shows
at once in the commenter's card, reaches an editor's open card live over the board's
socket, and a refusal is said. A viewer has no comment box.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, Page, Route, expect

from tests.browser import test_login
from tests.browser.pages import add_card, expect_saved, open_card
from tests.browser.test_accessibility import assert_accessible
from tests.browser.test_login import (
    Account,
    AuthServer,
    Shot,
    Visitors,
    _start,
    create_project_and_board,
    enrol_authenticator,
    log_in,
)

visitors = test_login.visitors


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[AuthServer]:
    yield from _start(tmp_path_factory.mktemp("comments-data"), browser, {})


def _owner_with_second_factor(server: AuthServer, page: Page, owner: Account) -> None:
    """Log in again with a second factor: changing members needs a fresh one."""
    totp = enrol_authenticator(server, page, owner)
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username").fill(owner.name)
    page.get_by_label("Password").fill(owner.password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Authentication code").fill(totp.now())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects and boards")).to_be_visible()


def test_a_commenter_comments_an_editor_sees_it_live_and_a_viewer_cannot(
    server: AuthServer, visitors: Visitors, screenshot: Shot
) -> None:
    owner = server.add_user("olga")
    page = visitors.open(server.base_url)
    log_in(page, owner)
    board_id = create_project_and_board(page, "Review", "Launch plan")
    add_card(page, "To do", "Write the copy")
    expect_saved(page)
    _owner_with_second_factor(server, page, owner)
    cora, vera = server.add_user("cora"), server.add_user("vera")
    projects = server.api("GET", "/v1/projects?limit=200", page=page)["items"]
    project = next(p for p in projects if p["name"] == "Review")
    members = f"/v1/projects/{project['id']}/members"
    server.api("PUT", f"{members}/{cora.id}", {"role": "commenter"}, page=page)
    server.api("PUT", f"{members}/{vera.id}", {"role": "viewer"}, page=page)

    # The owner (an editor and more) has the card open.
    page.goto(f"{server.base_url}#/b/{board_id}")
    editor_card = open_card(page, "To do", "Write the copy")
    editor_comments = editor_card.get_by_role("list", name="Comments")
    expect(editor_comments).to_contain_text("No comments yet.")

    commenter = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(commenter, cora, then="Launch plan")
    expect(commenter.get_by_text("comment on its cards")).to_be_visible()
    expect(commenter.get_by_label("New card in To do")).to_be_hidden()
    card = open_card(commenter, "To do", "Write the copy")
    box = card.get_by_label("Add a comment")
    expect(box).to_be_visible()
    expect(card.get_by_label("Title")).not_to_be_editable()

    # The comment shows at once, before the server has answered.
    held: list[Route] = []
    comments_path = "**/v1/boards/*/tasks/*/comments"
    commenter.route(comments_path, lambda route: held.append(route))
    box.fill("Looks good, ship it")
    card.get_by_role("button", name="Comment").click()
    mine = card.get_by_role("list", name="Comments")
    expect(mine).to_contain_text("Looks good, ship it")
    expect(mine).to_contain_text("Sending…")
    expect(box).to_have_value("")
    assert len(held) == 1 and held[0].request.method == "POST"
    screenshot(commenter, "comment-sending")
    held[0].continue_()
    commenter.unroute(comments_path)

    # The editor's open card shows it live, under the commenter's name.
    expect(editor_comments).to_contain_text("Looks good, ship it")
    expect(editor_comments).to_contain_text(cora.name)
    # The commenter's own copy gives way to the stored one: exactly one, no longer sending.
    expect(mine.get_by_text("Looks good, ship it")).to_have_count(1)
    expect(mine).not_to_contain_text("Sending…")
    expect(mine).to_contain_text(cora.name)
    assert_accessible(commenter, "a commenter's card")

    # Taken down to a viewer while the card is open: the next comment is refused, and said.
    server.api("PUT", f"{members}/{cora.id}", {"role": "viewer"}, page=page)
    box.fill("One more thing")
    card.get_by_role("button", name="Comment").click()
    expect(card.get_by_role("alert")).to_have_text("You may read this board but not comment on it.")
    expect(box).to_have_value("One more thing")
    expect(mine.get_by_text("One more thing")).to_have_count(0)
    expect(editor_comments).not_to_contain_text("One more thing")
    screenshot(commenter, "comment-refused")

    # A viewer reads the comments and has no box to write one.
    viewer = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(viewer, vera, then="Launch plan")
    expect(
        viewer.get_by_text("View only: you can read this board but not change it.")
    ).to_be_visible()
    viewer_card = open_card(viewer, "To do", "Write the copy")
    expect(viewer_card.get_by_role("list", name="Comments")).to_contain_text("Looks good, ship it")
    expect(viewer_card.get_by_label("Add a comment")).to_be_hidden()
    expect(viewer_card.get_by_role("button", name="Comment")).to_be_hidden()


def test_an_editor_comments_over_rest_too(server: AuthServer, visitors: Visitors) -> None:
    owner = server.add_user("ed")
    page = visitors.open(server.base_url)
    log_in(page, owner)
    board_id = create_project_and_board(page, "Solo", "Notes")
    add_card(page, "To do", "Idea")
    expect_saved(page)
    posted: list[str] = []
    page.on(
        "request",
        lambda request: (
            posted.append(request.method) if request.url.endswith("/comments") else None
        ),
    )
    card = open_card(page, "To do", "Idea")
    card.get_by_label("Add a comment").fill("First thought")
    card.get_by_role("button", name="Comment").click()
    comments = card.get_by_role("list", name="Comments")
    expect(comments).to_contain_text("First thought")
    expect(comments).not_to_contain_text("Sending…")
    assert posted == ["POST"]
    # Stored on the server: another page of the same person sees it.
    again = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(again, owner, then="Notes")
    expect(open_card(again, "To do", "Idea").get_by_role("list", name="Comments")).to_contain_text(
        "First thought"
    )
