"""Signing keys rotate without logging anyone out; personal fields never reach the disk in clear."""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt
import pytest

from boardcast.cli import main as boardcast_main
from tests.auth_helpers import auth_server


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_rotated_keys_keep_old_tokens_working_until_retired(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        first = await server.add_person("kim")
        old_kid = _kid(first.token)
        # Rotated by another process (the CLI) while the server runs.
        with pytest.raises(SystemExit):
            boardcast_main(["token", "rotate-key", "--data-dir", str(tmp_path)])
        new_kid = server.service.store.signing_keys()[-1][0]
        assert new_kid != old_kid
        # The server picks the new key up from the feed; old tokens still work.
        async with asyncio.timeout(10):
            while server.service.signer.active_key_id != new_kid:
                await asyncio.sleep(0.05)
        assert (await server.call("GET", "/v1/me", first))[0] == 200
        second = await server.add_person("lee")
        assert _kid(second.token) == new_kid
        # Two rotations later the first key is retired: tokens signed with it end.
        for _ in range(2):
            server.service.rotate_signing_key()
        assert (await server.call("GET", "/v1/me", first))[0] == 401
        kinds = [entry.kind for entry in server.service.store.audit_log()]
        assert kinds.count("key-rotated") >= 3


def _files_containing(root: Path, needle: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if needle.encode() in data or needle.encode("utf-16-le") in data:
                found.append(str(path.relative_to(root)))
    return found


async def test_email_addresses_and_totp_secrets_are_not_stored_in_clear(tmp_path: Path) -> None:
    email = "ursula.quartermaine@example.org"
    async with auth_server(tmp_path) as server:
        admin = await server.add_person("root", admin=True)
        status, created = await server.call(
            "POST",
            "/v1/admin/users",
            admin,
            {"username": "ursula", "password": "a long enough password", "email": email},
        )
        assert status == 201, created
        user = server.service.store.get_user(created["id"])
        assert user is not None and user.email == email  # readable through the store
        server.service.store.set_totp(user.id, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
        for _ in range(3):
            await asyncio.sleep(0)
    assert _files_containing(tmp_path, email) == []
    assert _files_containing(tmp_path, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP") == []


async def test_the_admin_reads_the_audit_log_and_nobody_else_does(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        admin = await server.add_person("root", admin=True)
        other = await server.add_person("pat")
        await server.call(
            "POST", "/v1/auth/login", None, {"username": "pat", "password": "wrong password!"}
        )
        assert (await server.call("GET", "/v1/admin/audit", other))[0] == 403
        status, log = await server.call("GET", "/v1/admin/audit", admin)
        assert status == 200
        kinds = [entry["kind"] for entry in log["items"]]
        assert {"login", "login-failed", "user-created", "key-rotated"} <= set(kinds)
