"""The board app's list of projects follows membership live: no reload, no polling.

A real server with accounts (``--auth required``), real Chromium. One person owns a
project and changes who is in it through the REST API; the other person's open page
must show the project appear, change with their role and its name, and disappear when
they are taken out, with nobody touching that page.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.test_login import (  # noqa: F401 (fixtures)
    Account,
    AuthServer,
    Visitors,
    create_project_and_board,
    enrol_authenticator,
    log_in,
    server,
    visitors,
)


def _log_in_with_code(page: Page, account: Account, code: str) -> None:
    """Log in again with a second factor, which sensitive actions (members) need."""
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username").fill(account.name)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Authentication code").fill(code)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects and boards")).to_be_visible()


def test_being_added_renamed_and_removed_shows_in_the_open_list(
    server: AuthServer,  # noqa: F811
    visitors: Visitors,  # noqa: F811
) -> None:
    lee = server.add_user("lee")
    mo = server.add_user("mo")
    owner = visitors.open(server.base_url)
    log_in(owner, lee)
    create_project_and_board(owner, "Shared", "Tasks")
    owner.get_by_role("link", name="Boards").click()
    totp = enrol_authenticator(server, owner, lee)
    _log_in_with_code(owner, lee, totp.now())
    projects = server.api("GET", "/v1/projects?limit=200", page=owner)["items"]
    project = next(p for p in projects if p["name"] == "Shared")
    member = f"/v1/projects/{project['id']}/members/{mo.id}"

    page = visitors.open(server.base_url)
    log_in(page, mo)
    expect(page.get_by_text("There are no projects yet.")).to_be_visible()

    server.api("PUT", member, {"role": "viewer"}, page=owner)
    shared = page.get_by_role("region", name="Shared")
    expect(shared.get_by_role("link", name="Tasks")).to_be_visible()
    expect(shared.get_by_label("New board in Shared")).to_have_count(0)  # a viewer's

    server.api("PUT", member, {"role": "editor"}, page=owner)
    expect(shared.get_by_label("New board in Shared")).to_be_visible()

    server.api("PATCH", f"/v1/projects/{project['id']}", {"name": "Shared work"}, page=owner)
    renamed = page.get_by_role("region", name="Shared work")
    expect(renamed.get_by_role("link", name="Tasks")).to_be_visible()

    server.api("DELETE", member, page=owner)
    expect(renamed).to_have_count(0)
    expect(page.get_by_text("There are no projects yet.")).to_be_visible()
