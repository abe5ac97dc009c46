"""What a person does and sees in the board app, in Playwright terms."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect


def create_board(page: Page, project: str, title: str) -> str:
    """From the board list: a new project, a board in it; returns the open board's id."""
    page.get_by_label("Project name").fill(project)
    page.get_by_role("button", name="Create project").click()
    section = page.get_by_role("region", name=project)
    section.get_by_label(f"New board in {project}").fill(title)
    section.get_by_role("button", name="Create board").click()
    expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
    expect(column(page, "To do")).to_be_visible()
    match = re.search(r"#/b/(.+)$", page.url)
    assert match is not None, page.url
    return match.group(1)


def column(page: Page, name: str) -> Locator:
    heading = page.get_by_role("heading", name=name, exact=True)
    return page.locator("section.column").filter(has=heading)


def card(page: Page, column_name: str, title: str) -> Locator:
    exact = re.compile(f"^{re.escape(title)}$")
    return (
        column(page, column_name)
        .locator("li.card")
        .filter(has=page.locator(".card-title", has_text=exact))
    )


def card_titles(page: Page, column_name: str) -> list[str]:
    return column(page, column_name).locator(".card-title").all_inner_texts()


def add_card(page: Page, column_name: str, title: str) -> None:
    col = column(page, column_name)
    col.get_by_label(f"New card in {column_name}").fill(title)
    col.get_by_role("button", name="Add card").click()
    expect(card(page, column_name, title)).to_be_visible()


def open_card(page: Page, column_name: str, title: str) -> Locator:
    card(page, column_name, title).get_by_role("button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    return dialog


def expect_saved(page: Page) -> None:
    expect(page.locator("#status")).to_contain_text("Connected")
    expect(page.locator("#status")).to_contain_text("All changes saved")
