"""Logging in to the board app: a real `boardcast serve` with accounts, real Chromium pages.

The server starts with ``--auth required`` on an empty data directory, so it creates the
administrator and prints a one-time log-in link; the administrator's page follows it and
adds the accounts the tests log in with (``POST /v1/admin/users``). Everything else is what a
person does in the page: the log-in form, projects and boards from the REST API, log-out,
a board kept open past its access token's life, a board that is not theirs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from tests.browser.conftest import ROOT, WAIT_MS, chromium_unavailable
from tests.browser.pages import add_card, card, column, expect_saved
from tests.browser.test_accessibility import assert_accessible
from tests.interop.servers import BoardcastProcess, boardcast_command
from tests.services import TIMEOUT_SCALE, free_port, service_missing

LINK = re.compile(r"https?://\S+/v1/auth/once\?code=\S+")
# A short access-token life for the test of a board left open past it.
SHORT_TOKEN_SECONDS = 4


@dataclass
class AuthServer:
    """A running server with accounts, and its administrator's logged-in page."""

    process: BoardcastProcess
    admin: Page
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}/"

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        page: Page | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """A JSON request from a logged-in page (the administrator's by default)."""
        status, text = (page or self.admin).evaluate(
            """async ([method, path, body, extra]) => {
                 const headers = body === null ? { ...extra } :
                   { 'Content-Type': 'application/json', ...extra }
                 const r = await fetch(path, { method, headers,
                   body: body === null ? undefined : JSON.stringify(body) })
                 return [r.status, await r.text()]
               }""",
            [method, path, body, headers or {}],
        )
        assert 200 <= status < 300, f"{method} {path}: {status} {text}"
        return json.loads(text) if text else None

    def add_user(self, label: str) -> Account:
        """A new account with a password of its own."""
        name = f"{label}-{uuid.uuid4().hex[:6]}"
        password = f"pw-{uuid.uuid4().hex}"
        made = self.api("POST", "/v1/admin/users", {"username": name, "password": password})
        return Account(str(made["id"]), name, password)

    def add_user_with_cli(self, label: str) -> Account:
        """A new account made as an operator does: ``boardcast user add`` on the data dir."""
        name = f"{label}-{uuid.uuid4().hex[:6]}"
        password = f"pw-{uuid.uuid4().hex}"
        command = [*boardcast_command(), "user", "add", "--data-dir", str(self.data_dir)]
        path = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        made = subprocess.run(
            [*command, "--password-stdin", name],
            input=password,
            capture_output=True,
            text=True,
            timeout=60 * TIMEOUT_SCALE,
            env={**os.environ, "PYTHONPATH": path},
        )
        assert made.returncode == 0, made.stdout + made.stderr
        return Account(made.stdout.strip().splitlines()[-1], name, password)


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    password: str


def _start(tmp_path: Path, browser: Browser, env: dict[str, str]) -> Iterator[AuthServer]:
    reason = chromium_unavailable()
    if reason is not None:
        service_missing(reason)
    process = BoardcastProcess(
        "serve",
        port=free_port(),
        extra_args=["--backend", "local", "--data-dir", str(tmp_path), "--auth", "required"],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        for key, value in env.items():
            patch.setenv(key, value)
        process.start()
    context = None
    try:
        link = _login_link(process)
        context = _context(browser)
        admin = context.new_page()
        admin.goto(link)
        expect(admin.get_by_role("heading", name="Projects and boards")).to_be_visible()
        yield AuthServer(process, admin, tmp_path)
    finally:
        if context is not None:
            context.close()
        process.stop()


def _login_link(process: BoardcastProcess) -> str:
    """The first start's one-time link, as the server printed it."""
    deadline = time.monotonic() + 20 * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        for line in process.output:
            found = LINK.search(line)
            if found:
                return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no log-in link printed:\n{process.output_tail()}")


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    return context


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[AuthServer]:
    yield from _start(tmp_path_factory.mktemp("login-data"), browser, {})


@pytest.fixture(scope="module")
def short_token_server(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> Iterator[AuthServer]:
    env = {"BOARDCAST_AUTH_ACCESS_TTL_SECONDS": str(SHORT_TOKEN_SECONDS)}
    yield from _start(tmp_path_factory.mktemp("short-token-data"), browser, env)


class Visitors:
    """Browser contexts, one per person, each with its own page; errors in pages fail."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def open(self, url: str) -> Page:
        context = _context(self.browser)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(url)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def visitors(browser: Browser) -> Iterator[Visitors]:
    crowd = Visitors(browser)
    try:
        yield crowd
    finally:
        crowd.close()
    assert not crowd.errors, f"uncaught errors in the page: {crowd.errors}"


def log_in(page: Page, account: Account, *, then: str = "Projects and boards") -> None:
    """Fill the log-in form and wait for the page behind it (the board list, or a board)."""
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    page.get_by_label("Username").fill(account.name)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name=then)).to_be_visible()


def create_project_and_board(page: Page, project: str, title: str) -> str:
    """From the board list, through the REST API: a project, a board in it; the board's id."""
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


def enrol_authenticator(server: AuthServer, page: Page, account: Account) -> Any:
    """Give a logged-in account a TOTP second factor; its pyotp generator."""
    pyotp = pytest.importorskip("pyotp")
    secret = server.api("POST", "/v1/me/mfa", {}, page=page)["secret"]
    totp = pyotp.TOTP(secret)
    enrol = {"secret": secret, "code": totp.now(), "password": account.password}
    server.api("PUT", "/v1/me/mfa", enrol, page=page)
    return totp


Shot = Callable[[Page, str], Path]


def test_wrong_password_is_refused_and_the_right_one_logs_in(
    server: AuthServer, visitors: Visitors, screenshot: Shot
) -> None:
    ann = server.add_user_with_cli("ann")
    page = visitors.open(server.base_url)
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    assert_accessible(page, "log-in page")
    screenshot(page, "login")

    page.get_by_label("Username").fill(ann.name)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Wrong username or password.")
    expect(alert).to_have_attribute("aria-live", "assertive")
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("heading", name="Projects and boards")).to_have_count(0)
    assert_accessible(page, "log-in page with an error")
    screenshot(page, "login-error")

    page.get_by_label("Password").fill(ann.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects and boards")).to_be_visible()
    # The name is the account's, not one to edit here, and there is a way out.
    expect(page.locator("#account")).to_contain_text(ann.name)
    expect(page.get_by_role("button", name=re.compile("change your display name"))).to_be_hidden()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_a_board_made_after_log_in_is_there_after_a_reload(
    server: AuthServer, visitors: Visitors, screenshot: Shot
) -> None:
    bob = server.add_user("bob")
    page = visitors.open(server.base_url)
    log_in(page, bob)
    board_id = create_project_and_board(page, "Launch", "Website")
    add_card(page, "To do", "Write the copy")
    expect_saved(page)
    expect(page.get_by_role("region", name="People on this board")).to_contain_text(bob.name)
    screenshot(page, "board")

    page.reload()
    expect(page.get_by_role("heading", level=1, name="Website")).to_be_visible()
    expect(card(page, "To do", "Write the copy")).to_be_visible()
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_have_count(0)
    assert board_id in page.url

    page.get_by_role("link", name="Boards").click()
    launch = page.get_by_role("region", name="Launch")
    expect(launch.get_by_role("link", name="Website")).to_be_visible()
    assert_accessible(page, "board list of a logged-in user")
    # Someone else sees none of it: projects are listed for their members only.
    stranger = visitors.open(server.base_url)
    log_in(stranger, server.add_user("carl"))
    expect(stranger.get_by_text("There are no projects yet.")).to_be_visible()
    expect(stranger.get_by_role("region", name="Launch")).to_have_count(0)


def test_log_out_returns_to_the_log_in_page_for_good(
    server: AuthServer, visitors: Visitors
) -> None:
    page = visitors.open(server.base_url)
    log_in(page, server.add_user("dora"))
    # A second tab of the same browser shares the session, and leaves with it.
    other_tab = page.context.new_page()
    other_tab.goto(server.base_url)
    expect(other_tab.get_by_role("heading", name="Projects and boards")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    expect(other_tab.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    # The session is over on the server too: a reload does not log back in.
    page.reload()
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    expect(page.get_by_role("heading", name="Projects and boards")).to_have_count(0)


def test_an_account_with_an_authenticator_asks_for_its_code(
    server: AuthServer, visitors: Visitors, screenshot: Shot
) -> None:
    erin = server.add_user("erin")
    page = visitors.open(server.base_url)
    log_in(page, erin)
    totp = enrol_authenticator(server, page, erin)
    page.get_by_role("button", name="Log out").click()

    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    expect(page.get_by_label("Authentication code")).to_be_hidden()
    page.get_by_label("Username").fill(erin.name)
    page.get_by_label("Password").fill(erin.password)
    page.get_by_role("button", name="Log in").click()
    code = page.get_by_label("Authentication code")
    expect(code).to_be_visible()
    expect(code).to_be_focused()
    expect(page.get_by_role("alert")).to_contain_text("code")
    assert_accessible(page, "log-in page asking for a code")
    screenshot(page, "login-code")
    code.fill("000000" if totp.now() != "000000" else "111111")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("check the code")
    expect(code).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Password").fill(erin.password)
    code.fill(totp.now())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects and boards")).to_be_visible()


def test_a_board_that_is_not_yours_says_so(server: AuthServer, visitors: Visitors) -> None:
    page = visitors.open(server.base_url)
    log_in(page, server.add_user("fay"))
    board_id = create_project_and_board(page, "Private", "Plans")

    stranger = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(stranger, server.add_user("gil"), then="You do not have access to this board")
    expect(stranger.get_by_role("heading", level=1, name="Plans")).to_have_count(0)
    expect(stranger.get_by_role("link", name="Back to the list of boards")).to_be_visible()
    assert_accessible(stranger, "a board that is not yours")


def test_a_viewer_of_the_project_gets_a_view_only_board(
    server: AuthServer, visitors: Visitors
) -> None:
    hal = server.add_user("hal")
    page = visitors.open(server.base_url)
    log_in(page, hal)
    board_id = create_project_and_board(page, "Shown", "Roadmap")
    add_card(page, "To do", "Ship it")
    expect_saved(page)
    # Changing members needs a recent second factor: the owner enrols one and logs in with it.
    totp = enrol_authenticator(server, page, hal)
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username").fill(hal.name)
    page.get_by_label("Password").fill(hal.password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Authentication code").fill(totp.now())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects and boards")).to_be_visible()
    ivy = server.add_user("ivy")
    projects = server.api("GET", "/v1/projects?limit=200", page=page)["items"]
    project = next(p for p in projects if p["name"] == "Shown")
    member = f"/v1/projects/{project['id']}/members/{ivy.id}"
    server.api("PUT", member, {"role": "viewer"}, page=page)

    watcher = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(watcher, ivy, then="Roadmap")
    expect(card(watcher, "To do", "Ship it")).to_be_visible()
    # The server says so on the socket; the page then offers nothing to edit with.
    expect(watcher.get_by_text("View only: you can read this board")).to_be_visible()
    expect(column(watcher, "To do").get_by_label("New card in To do")).to_be_hidden()
    watcher.get_by_role("link", name="Boards").click()
    shown = watcher.get_by_role("region", name="Shown")
    expect(shown.get_by_role("link", name="Roadmap")).to_be_visible()

    # An editor of the project whom this board narrows to a viewer gets the same.
    jan = server.add_user("jan")
    member = f"/v1/projects/{project['id']}/members/{jan.id}"
    server.api("PUT", member, {"role": "editor"}, page=page)
    narrowed = f"/v1/boards/{board_id}/members/{jan.id}"
    server.api("PUT", narrowed, {"role": "viewer"}, page=page)
    narrow = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(narrow, jan, then="Roadmap")
    expect(narrow.get_by_text("View only: you can read this board")).to_be_visible()


def test_a_board_open_past_its_token_s_life_keeps_saving(
    short_token_server: AuthServer, visitors: Visitors
) -> None:
    server = short_token_server
    jo = server.add_user("jo")
    page = visitors.open(server.base_url)
    log_in(page, jo)
    board_id = create_project_and_board(page, "Long", "Day")
    add_card(page, "To do", "Before")
    expect_saved(page)

    # Offline until the access cookie has expired: the socket that comes back has no token,
    # the server closes it with 4401, and the page must refresh and connect again.
    context = page.context
    expiry = next(c["expires"] for c in context.cookies() if c["name"] == "boardcast_access")
    context.set_offline(True)
    expect(page.locator("#status")).to_contain_text("Offline")
    add_card(page, "To do", "While offline")
    deadline = time.monotonic() + 60 * TIMEOUT_SCALE
    while time.time() < expiry + 1 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert not [c for c in context.cookies() if c["name"] == "boardcast_access"]
    context.set_offline(False)
    expect_saved(page)

    # Another page of the same person sees the card, so it reached the server.
    again = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(again, jo, then="Day")
    expect(card(again, "To do", "While offline")).to_be_visible()
    expect(card(again, "To do", "Before")).to_be_visible()


def test_a_project_made_elsewhere_shows_up_in_the_open_list(
    server: AuthServer, visitors: Visitors
) -> None:
    kim = server.add_user("kim")
    first = visitors.open(server.base_url)
    log_in(first, kim)
    expect(first.get_by_text("There are no projects yet.")).to_be_visible()
    second = visitors.open(server.base_url)
    log_in(second, kim)
    create_project_and_board(second, "Elsewhere", "Notes")
    # The first page is never touched: it reads the lists again by itself.
    elsewhere = first.get_by_role("region", name="Elsewhere")
    expect(elsewhere.get_by_role("link", name="Notes")).to_be_visible()


def test_a_session_ended_elsewhere_asks_to_log_in_and_keeps_the_board(
    server: AuthServer, visitors: Visitors
) -> None:
    lou = server.add_user("lou")
    page = visitors.open(server.base_url)
    log_in(page, lou)
    board_id = create_project_and_board(page, "Kept", "Desk")
    add_card(page, "To do", "Saved before")
    expect_saved(page)
    # An edit that is only in the page, then the session ends on the server behind the
    # page's back (as a log-out on another device or a revoked login would).
    page.context.set_offline(True)
    add_card(page, "To do", "Made offline")
    origin = {"Origin": server.base_url.rstrip("/")}
    ended = page.context.request.post(f"{server.base_url}v1/auth/logout", headers=origin)
    assert ended.status == 204, ended.text()
    page.context.set_offline(False)
    expect(page.get_by_text("Your session has ended.")).to_be_visible()
    log_in(page, lou, then="Desk")
    expect(card(page, "To do", "Saved before")).to_be_visible()
    expect(card(page, "To do", "Made offline")).to_be_visible()
    expect_saved(page)
    # It reached the server: another page of the same person sees it.
    again = visitors.open(f"{server.base_url}#/b/{board_id}")
    log_in(again, lou, then="Desk")
    expect(card(again, "To do", "Made offline")).to_be_visible()


def test_an_open_page_renews_its_access_before_it_ends(
    short_token_server: AuthServer, visitors: Visitors
) -> None:
    server = short_token_server
    page = visitors.open(server.base_url)
    refused: list[str] = []
    renewed: list[float] = []
    listed: list[float] = []

    def seen(response: Response) -> None:
        path = response.url.split("?")[0]
        if response.status == 401 and "/v1/auth/login" not in path and "/v1/me" not in path:
            refused.append(f"{response.request.method} {path}")
        if path.endswith("/v1/auth/refresh") and response.ok:
            renewed.append(time.monotonic())
        if path.endswith("/v1/projects") and response.ok:
            listed.append(time.monotonic())

    log_in(page, server.add_user("max"))
    page.on("response", seen)
    # Open for several token lives; then a REST call from the page works at once.
    deadline = time.monotonic() + 120 * TIMEOUT_SCALE
    while time.monotonic() < deadline and len(renewed) < 3:
        page.wait_for_timeout(250)
    assert len(renewed) >= 3, renewed
    page.get_by_label("Project name").fill("Later")
    # The new project can show up (over the list's socket) before the page has seen the
    # POST's response: wait for the response itself.
    with page.expect_response(
        lambda response: (
            response.url.split("?")[0].endswith("/v1/projects")
            and response.request.method == "POST"
        ),
        timeout=30_000 * TIMEOUT_SCALE,
    ) as created:
        page.get_by_role("button", name="Create project").click()
    assert created.value.ok, created.value.status
    expect(page.get_by_role("region", name="Later")).to_be_visible()
    assert listed and listed[-1] > renewed[1], "the project was not made with a renewed token"
    assert not refused, f"requests refused for an expired token: {refused}"
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_have_count(0)
