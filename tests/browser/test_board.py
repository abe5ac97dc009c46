"""The board app end to end: real Chromium pages on a real `boardcast serve`.

Each test is what people do with their hands, and asserts what they see.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import People
from tests.browser.pages import (
    add_card,
    card,
    card_titles,
    column,
    create_board,
    expect_saved,
    open_card,
)

Shot = Callable[[Page, str], Path]


def test_a_new_user_creates_a_project_and_a_board(people: People, screenshot: Shot) -> None:
    ann = people.open("Ann")
    expect(ann.get_by_role("heading", name="Projects and boards")).to_be_visible()
    screenshot(ann, "home-empty")
    create_board(ann, "Launch", "Website")
    for name in ("To do", "Doing", "Done"):
        expect(column(ann, name)).to_be_visible()
    add_card(ann, "To do", "Write the copy")
    expect_saved(ann)
    screenshot(ann, "board")
    ann.get_by_role("link", name="Boards").click()
    launch = ann.get_by_role("region", name="Launch")
    expect(launch.get_by_role("link", name="Website")).to_be_visible()
    screenshot(ann, "home")


def test_two_people_see_each_others_cards_moves_and_edits(people: People, screenshot: Shot) -> None:
    ann = people.open("Ann")
    board_id = create_board(ann, "Shared", "Sprint")
    bob = people.open("Bob", f"/b/{board_id}")
    expect(bob.get_by_role("heading", level=1, name="Sprint")).to_be_visible()

    # Presence: each sees both people.
    for page in (ann, bob):
        presence = page.get_by_role("region", name="People on this board")
        expect(presence).to_contain_text("Ann")
        expect(presence).to_contain_text("Bob")

    add_card(ann, "To do", "Fix the login bug")
    expect(card(bob, "To do", "Fix the login bug")).to_be_visible()

    # Drag it to Doing in Ann's page; Bob sees it there.
    card(ann, "To do", "Fix the login bug").drag_to(column(ann, "Doing").locator("ol.cards"))
    expect(card(ann, "Doing", "Fix the login bug")).to_be_visible()
    expect(card(bob, "Doing", "Fix the login bug")).to_be_visible()
    expect(card(bob, "To do", "Fix the login bug")).to_have_count(0)

    # Both open the card; each sees where the other is.
    dialog_a = open_card(ann, "Doing", "Fix the login bug")
    dialog_b = open_card(bob, "Doing", "Fix the login bug")
    expect(dialog_a).to_contain_text("Also here: Bob")
    expect(dialog_b).to_contain_text("Also here: Ann")

    # Both type in the description at once; the texts merge.
    description_a = dialog_a.get_by_label("Description")
    description_b = dialog_b.get_by_label("Description")
    description_a.press_sequentially("Steps: open the page.")
    expect(description_b).to_have_value("Steps: open the page.")
    description_b.press("End")
    description_b.press_sequentially(" Then log in.")
    description_a.press("Home")
    description_a.press_sequentially("Bug. ")
    merged = "Bug. Steps: open the page. Then log in."
    expect(description_a).to_have_value(merged)
    expect(description_b).to_have_value(merged)

    # The other fields.
    dialog_a.get_by_label("Assign someone").fill("Ann")
    dialog_a.get_by_role("button", name="Assign").click()
    dialog_a.get_by_label("Add a label").fill("bug")
    dialog_a.get_by_role("button", name="Add label").click()
    dialog_a.get_by_label("Due date").fill("2027-01-15")
    dialog_a.get_by_label("New checklist item").fill("Reproduce")
    dialog_a.get_by_role("button", name="Add item").click()
    dialog_b.get_by_label("Add a comment").fill("I can reproduce it.")
    dialog_b.get_by_role("button", name="Comment").click()
    expect(dialog_b.get_by_role("list", name="Assignees")).to_contain_text("Ann")
    expect(dialog_b.get_by_role("list", name="Labels")).to_contain_text("bug")
    expect(dialog_b.get_by_label("Due date")).to_have_value("2027-01-15")
    dialog_b.get_by_role("checkbox", name="Reproduce").check()
    expect(dialog_a.get_by_role("checkbox", name="Reproduce")).to_be_checked()
    expect(dialog_a.get_by_role("list", name="Comments")).to_contain_text("I can reproduce it.")
    expect(dialog_a.get_by_role("list", name="Comments")).to_contain_text("Bob")
    dialog_a.get_by_label("Title").fill("Fix the log-in bug")
    expect(dialog_b.get_by_label("Title")).to_have_value("Fix the log-in bug")
    screenshot(ann, "card")

    dialog_a.get_by_role("button", name="Close card").click()
    dialog_b.get_by_role("button", name="Close card").click()
    summary = card(bob, "Doing", "Fix the log-in bug")
    expect(summary).to_contain_text("bug")
    expect(summary).to_contain_text("1/1")
    expect(summary).to_contain_text("1 comment")
    expect_saved(ann)
    expect_saved(bob)
    screenshot(bob, "board")


def test_offline_edits_merge_when_back_online(people: People, screenshot: Shot) -> None:
    ann = people.open("Ann")
    board_id = create_board(ann, "Travel", "Trip")
    bob = people.open("Bob", f"/b/{board_id}")
    add_card(ann, "To do", "Book the train")
    expect(card(bob, "To do", "Book the train")).to_be_visible()

    ann.context.set_offline(True)
    status = ann.locator("#status")
    expect(status).to_contain_text("Offline")
    add_card(ann, "Doing", "Pack (offline)")
    card(ann, "To do", "Book the train").drag_to(column(ann, "Done").locator("ol.cards"))
    expect(status).to_contain_text("not saved yet")
    add_card(bob, "To do", "Buy tickets (online)")
    screenshot(ann, "offline")
    # Nothing of Ann's reaches Bob while she is offline.
    expect(card(bob, "Doing", "Pack (offline)")).to_have_count(0)
    expect(card(ann, "To do", "Buy tickets (online)")).to_have_count(0)

    ann.context.set_offline(False)
    for page in (ann, bob):
        expect(card(page, "Doing", "Pack (offline)")).to_be_visible()
        expect(card(page, "Done", "Book the train")).to_be_visible()
        expect(card(page, "To do", "Buy tickets (online)")).to_be_visible()
        expect_saved(page)
    assert card_titles(ann, "To do") == card_titles(bob, "To do")
    assert card_titles(ann, "Done") == card_titles(bob, "Done")


def test_a_viewer_cannot_edit(people: People, screenshot: Shot) -> None:
    ann = people.open("Ann")
    board_id = create_board(ann, "Finance", "Budget")
    add_card(ann, "To do", "Quarterly report")
    vera = people.open("Vera", f"/b/{board_id}", role="viewer")
    expect(card(vera, "To do", "Quarterly report")).to_be_visible()
    expect(vera.get_by_text("View only: you can read this board")).to_be_visible()
    # No controls to edit with.
    expect(vera.get_by_role("button", name="Add card")).to_have_count(0)
    expect(vera.get_by_role("button", name="Add column")).to_have_count(0)
    expect(vera.get_by_role("button", name="Undo")).to_be_disabled()
    assert card(vera, "To do", "Quarterly report").get_attribute("draggable") == "false"
    dialog = open_card(vera, "To do", "Quarterly report")
    expect(dialog.get_by_label("Title")).not_to_be_editable()
    expect(dialog.get_by_label("Description")).not_to_be_editable()
    expect(dialog.get_by_label("Due date")).to_be_disabled()
    expect(dialog.get_by_role("button", name="Delete card")).to_have_count(0)
    screenshot(vera, "viewer-card")
    dialog.get_by_role("button", name="Close card").click()
    # Presence still works for a viewer.
    expect(ann.get_by_role("region", name="People on this board")).to_contain_text("Vera")

    # An edit that bypasses the page's controls is refused by the server.
    vera.evaluate(
        "() => { const b = window.boardcast.board; b.addTask(b.columnList()[0].id, 'Sneaky edit') }"
    )
    expect(vera.get_by_role("alert")).to_contain_text("read-only")
    add_card(ann, "To do", "After the sneaky edit")
    expect(card(vera, "To do", "After the sneaky edit")).to_be_visible()
    expect(card(ann, "To do", "Sneaky edit")).to_have_count(0)
    # Nor is it stored: a new visitor does not see it.
    carl = people.open("Carl", f"/b/{board_id}")
    expect(card(carl, "To do", "After the sneaky edit")).to_be_visible()
    expect(card(carl, "To do", "Sneaky edit")).to_have_count(0)


def test_undo_and_redo_own_changes_only(people: People) -> None:
    ann = people.open("Ann")
    board_id = create_board(ann, "Home", "Chores")
    bob = people.open("Bob", f"/b/{board_id}")
    add_card(ann, "To do", "Water the plants")
    add_card(bob, "To do", "Take out the bins")
    expect(card(ann, "To do", "Take out the bins")).to_be_visible()
    # The page groups one person's edits less than 400 ms apart into one undo step
    # (captureTimeout in clients/web/src/model.js): keep the move a step of its own.
    ann.wait_for_timeout(500)
    card(ann, "To do", "Water the plants").drag_to(column(ann, "Done").locator("ol.cards"))
    expect(card(bob, "Done", "Water the plants")).to_be_visible()

    undo = ann.get_by_role("button", name="Undo")
    undo.click()  # the move
    expect(card(ann, "To do", "Water the plants")).to_be_visible()
    expect(card(bob, "To do", "Water the plants")).to_be_visible()
    ann.locator("main").click(position={"x": 5, "y": 5})
    ann.keyboard.press("Control+z")  # the creation
    expect(card(ann, "To do", "Water the plants")).to_have_count(0)
    expect(card(bob, "To do", "Water the plants")).to_have_count(0)
    # Bob's card is not Ann's to undo.
    expect(undo).to_be_disabled()
    expect(card(ann, "To do", "Take out the bins")).to_be_visible()

    ann.get_by_role("button", name="Redo").click()
    expect(card(bob, "To do", "Water the plants")).to_be_visible()
    ann.keyboard.press("Control+Shift+z")
    expect(card(bob, "Done", "Water the plants")).to_be_visible()
    expect_saved(ann)


def test_cards_move_with_the_keyboard(people: People) -> None:
    ann = people.open("Ann")
    board_id = create_board(ann, "Keys", "Keyboard only")
    bob = people.open("Bob", f"/b/{board_id}")
    add_card(ann, "To do", "First")
    add_card(ann, "To do", "Second")
    first = card(ann, "To do", "First").get_by_role("button")
    first.focus()
    ann.keyboard.press("Shift+ArrowDown")
    expect(bob.locator("section.column").first.locator(".card-title")).to_have_text(
        ["Second", "First"]
    )
    ann.keyboard.press("Shift+ArrowRight")
    expect(card(bob, "Doing", "First")).to_be_visible()
    # The focus moved with the card, so the next key press moves it again.
    ann.keyboard.press("Shift+ArrowRight")
    expect(card(bob, "Done", "First")).to_be_visible()
    ann.keyboard.press("Enter")
    expect(ann.get_by_role("dialog").get_by_label("Title")).to_have_value("First")
    ann.keyboard.press("Escape")
    expect(ann.get_by_role("dialog")).to_be_hidden()
    expect(card(ann, "Done", "First").get_by_role("button")).to_be_focused()
