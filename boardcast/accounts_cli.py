"""``boardcast user ...`` and ``boardcast token ...``: accounts and tokens, for operators.

They work on the data directory's account store directly, so a server running on
the same directory honours what they do at once (a revoked token closes the
sockets using it within a second).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from auth.roles import ASSIGNABLE
from auth.service import AuthRefused, AuthService
from gateway.auth import open_auth_service
from gateway.auth.bootstrap import login_link_url
from gateway.settings import Settings

COMMANDS = frozenset({"user", "token"})


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``user`` and ``token`` to the ``boardcast`` command."""
    user = commands.add_parser("user", help="manage accounts on a data directory")
    user_commands = user.add_subparsers(dest="action", required=True)
    add = user_commands.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--email")
    add.add_argument("--admin", action="store_true", help="a server administrator")
    passwd = user_commands.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    disable = user_commands.add_parser("disable", help="disable an account (ends its sessions)")
    disable.add_argument("name")
    link = user_commands.add_parser("link", help="print a single-use login link for an account")
    link.add_argument("name")
    link.add_argument("--base-url", default="http://127.0.0.1:8000")
    user_commands.add_parser("list", help="list accounts")

    token = commands.add_parser("token", help="issue and revoke scoped tokens")
    token_commands = token.add_subparsers(dest="action", required=True)
    issue = token_commands.add_parser("issue", help="print a token for one board or project")
    issue.add_argument("--user", required=True)
    target = issue.add_mutually_exclusive_group(required=True)
    target.add_argument("--board")
    target.add_argument("--project")
    issue.add_argument("--role", required=True, choices=ASSIGNABLE)
    issue.add_argument("--ttl", type=float, default=30.0, help="days (default 30)")
    issue.add_argument("--label", default="")
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    token_commands.add_parser("rotate-key", help="start signing with a new key")
    for parser in (add, passwd, disable, link, issue, revoke):
        parser.add_argument("--data-dir", help="the server's data directory (default ./data)")
    for sub in user_commands.choices.values():
        if "--data-dir" not in sub._option_string_actions:
            sub.add_argument("--data-dir")
    for sub in token_commands.choices.values():
        if "--data-dir" not in sub._option_string_actions:
            sub.add_argument("--data-dir")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AuthRefused("weak-password", "the passwords differ")
    return first


def run_accounts(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out a ``user`` or ``token`` command; the exit status."""
    service = open_auth_service(
        settings.data_dir,
        settings.auth_settings,
        store_url=settings.store,
        mongo=settings.accounts_mongo,
    )
    try:
        return _dispatch(args, service)
    except AuthRefused as refused:
        print(f"boardcast: {refused}", file=sys.stderr)
        return 2
    finally:
        service.store.close()


def _dispatch(args: argparse.Namespace, service: AuthService) -> int:
    command, action = args.command, args.action
    if command == "user" and action == "add":
        user = service.create_user(args.name, _password(args), email=args.email, admin=args.admin)
        print(user.id)
    elif command == "user" and action == "passwd":
        service.reset_password(service.user_by_name(args.name).id, _password(args))
    elif command == "user" and action == "disable":
        service.disable_user(service.user_by_name(args.name).id)
    elif command == "user" and action == "link":
        user = service.user_by_name(args.name)
        print(login_link_url(args.base_url, service.issue_login_link(user)))
    elif command == "user" and action == "list":
        for user in service.store.users():
            flags = [
                name
                for name, on in (
                    ("admin", user.admin),
                    ("disabled", user.disabled),
                    ("mfa", user.mfa),
                )
                if on
            ]
            print(json.dumps({"id": user.id, "name": user.name, "flags": flags}))
    elif command == "token" and action == "issue":
        user = service.user_by_name(args.user)
        scope = {"board": args.board} if args.board else {"project": args.project}
        # An operator's grant: the role holds on that board whatever the user's membership.
        scope.update(role=args.role, grant="operator")
        token_id, token = service.issue_api_token(
            user, scope, ttl_seconds=args.ttl * 86400, label=args.label
        )
        print(token)
        print(f"token id: {token_id}", file=sys.stderr)
    elif command == "token" and action == "revoke":
        if not service.revoke_api_token(args.token_id):
            raise AuthRefused("unknown-token", f"no live token {args.token_id!r}")
    elif command == "token" and action == "rotate-key":
        print(service.rotate_signing_key())
    return 0
