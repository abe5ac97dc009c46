"""axe-core on the main pages: the board list, a board, a card, a viewer's board.

axe-core comes from clients/web's lock file (`npm ci` in clients/web, as ./scripts/test does).
"""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import ROOT, People
from tests.browser.pages import add_card, create_board, open_card
from tests.services import service_missing

AXE = ROOT / "clients" / "web" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """What axe-core finds against WCAG 2.2 A and AA on the page as it is now."""
    if not AXE.is_file():
        service_missing(f"axe-core is not installed ({AXE}; npm ci in clients/web)")
    if not page.evaluate("() => 'axe' in window"):
        # Evaluated, not a <script>: the page's Content-Security-Policy allows no inline script.
        page.evaluate(AXE.read_text())
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document, { runOnly: { type: 'tag', values: tags } })",
        WCAG_AA,
    )
    return [
        {
            "id": v["id"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
    ]


def assert_accessible(page: Page, where: str) -> None:
    violations = axe_violations(page)
    assert not violations, f"{where}: {json.dumps(violations, indent=1)}"


def test_main_pages_pass_axe(people: People) -> None:
    ann = people.open("Ann")
    expect(ann.get_by_role("heading", name="Projects and boards")).to_be_visible()
    assert_accessible(ann, "empty board list")
    board_id = create_board(ann, "Access", "Audit")
    add_card(ann, "To do", "Check contrast")
    assert_accessible(ann, "board")
    dialog = open_card(ann, "To do", "Check contrast")
    dialog.get_by_label("Add a label").fill("a11y")
    dialog.get_by_role("button", name="Add label").click()
    dialog.get_by_label("New checklist item").fill("Headings")
    dialog.get_by_role("button", name="Add item").click()
    expect(dialog.get_by_role("checkbox", name="Headings")).to_be_visible()
    assert_accessible(ann, "card detail")
    dialog.get_by_role("button", name="Close card").click()
    ann.get_by_role("link", name="Boards").click()
    expect(ann.get_by_role("link", name="Audit")).to_be_visible()
    assert_accessible(ann, "board list")
    vera = people.open("Vera", f"/b/{board_id}", role="viewer")
    expect(vera.get_by_text("View only: you can read this board")).to_be_visible()
    assert_accessible(vera, "viewer's board")
