"""First start: an administrator and a one-time login link, printed like a notebook's token URL."""

from __future__ import annotations

import logging

from auth.service import AuthRefused, AuthService

log = logging.getLogger("boardcast.auth")

ADMIN_NAME = "admin"


def first_start_link(service: AuthService, base_url: str) -> str | None:
    """If no account exists, create ``admin`` and return a single-use login URL for it.

    The administrator has no password yet; the link logs them in once (within
    ``login_link_ttl_seconds``), and ``boardcast user passwd`` or the app sets one.
    Later starts print nothing: ``boardcast user link --user admin`` makes a new link.
    """
    if service.store.count_users() > 0:
        return None
    try:
        user = service.create_user(ADMIN_NAME, None, admin=True)
    except AuthRefused:
        return None  # another gateway on this data directory made it first
    return login_link_url(base_url, service.issue_login_link(user))


def login_link_url(base_url: str, code: str) -> str:
    """The URL that spends a login-link code."""
    return f"{base_url.rstrip('/')}/v1/auth/once?code={code}"
