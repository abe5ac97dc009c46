"""Accounts and tokens on a real server: forged tokens, refresh rotation, tickets, CLI tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth.tokens import TOKEN_TYPE, new_private_key_pem
from boardcast.cli import main as boardcast_main
from clients.provider import socket_url
from tests.auth_helpers import AuthServer, auth_server, socket_fate


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _real_key(server: AuthServer) -> tuple[str, ec.EllipticCurvePrivateKey]:
    kid, pem, _created, _retired = server.service.store.signing_keys()[-1]
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return kid, key


def _claims(server: AuthServer, user_id: str, **changes: Any) -> dict[str, Any]:
    """The claims of a real access token of alice's login, with ``changes``."""
    now = int(time.time())
    claims = {
        "iss": "boardcast",
        "aud": "boardcast",
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "forged",
        "sid": _family_of(server, "alice"),
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def _family_of(server: AuthServer, name: str) -> str:
    sid = jwt.decode(server.people[name].token, options={"verify_signature": False})["sid"]
    return str(sid)


def forgeries(server: AuthServer, user_id: str) -> dict[str, str]:
    """Tokens an attacker could make, each of which must be refused."""
    kid, key = _real_key(server)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = _claims(server, user_id)
    header = {"kid": kid, "typ": TOKEN_TYPE}

    def signed(claims: dict[str, Any], **extra_headers: Any) -> str:
        return jwt.encode(claims, key, algorithm="ES256", headers={**header, **extra_headers})

    body = _b64(json.dumps(good).encode())
    hs_header = _b64(json.dumps({"alg": "HS256", **header}).encode())
    hs_signature = hmac.new(public_pem, f"{hs_header}.{body}".encode(), hashlib.sha256).digest()
    attacker = serialization.load_pem_private_key(new_private_key_pem(), password=None)
    return {
        "alg-none": f"{_b64(json.dumps({'alg': 'none', **header}).encode())}.{body}.",
        "hs256-with-public-key": f"{hs_header}.{body}.{_b64(hs_signature)}",
        "wrong-key": jwt.encode(good, attacker, algorithm="ES256", headers=header),  # type: ignore[arg-type]
        "wrong-issuer": signed(_claims(server, user_id, iss="https://evil.example")),
        "wrong-audience": signed(_claims(server, user_id, aud="another-service")),
        "expired": signed(_claims(server, user_id, iat=1, nbf=1, exp=1000)),
        "not-yet-valid": signed(_claims(server, user_id, nbf=int(time.time()) + 3600)),
        "no-subject": signed(_claims(server, user_id, sub=None)),
        "unknown-login": signed(_claims(server, user_id, sid="f" * 32)),
        "jku-header": jwt.encode(
            good,
            attacker,  # type: ignore[arg-type]
            algorithm="ES256",
            headers={**header, "jku": "http://127.0.0.1:9/jwks.json"},
        ),
        "embedded-jwk": signed(good, jwk={"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        "wrong-type": jwt.encode(good, key, algorithm="ES256", headers={"kid": kid}),
        "tampered": signed(good)[:-6] + "AAAAAA",
        "garbage": "not.a.token",
    }


async def test_forged_tokens_are_refused_on_sockets_and_rest(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        alice = await server.add_person("alice", admin=True)
        # The real token works on both paths, so each refusal below is the forgery's.
        assert await socket_fate(socket_url(server.ws, "b1", {"token": alice.token})) == "open"
        assert (await server.call("GET", "/v1/me", alice))[0] == 200
        for name, token in forgeries(server, alice.user_id).items():
            fate = await socket_fate(socket_url(server.ws, "b1", {"token": token}))
            assert fate == 4401, name
            status, body = await server.call("GET", "/v1/me", None, Authorization=f"Bearer {token}")
            assert status == 401, (name, body)
            assert body["type"] == "urn:boardcast:problem:unauthorized"
        # No credentials at all: the same answers.
        assert await socket_fate(socket_url(server.ws, "b1")) == 4401
        assert (await server.call("GET", "/v1/projects", None))[0] == 401


async def test_refresh_rotates_and_a_reused_token_ends_the_whole_login(tmp_path: Path) -> None:
    async with auth_server(tmp_path, auth_refresh_grace_seconds=0.0) as server:
        bob = await server.add_person("bob")
        first = bob.refresh
        status, grant = await server.call(
            "POST", "/v1/auth/refresh", None, {"refresh_token": first}
        )
        assert status == 200
        second = grant["refresh_token"]
        assert second != first
        # The newest access token works...
        newest = {"Authorization": f"Bearer {grant['access_token']}"}
        assert (await server.call("GET", "/v1/me", None, **newest))[0] == 200
        # ...until the spent refresh token is presented again: the family is revoked.
        time.sleep(0.01)
        status, body = await server.call("POST", "/v1/auth/refresh", None, {"refresh_token": first})
        assert status == 401, body
        status, _ = await server.call("POST", "/v1/auth/refresh", None, {"refresh_token": second})
        assert status == 401
        assert (await server.call("GET", "/v1/me", None, **newest))[0] == 401
        assert (await server.call("GET", "/v1/me", bob))[0] == 401
        kinds = [entry.kind for entry in server.service.store.audit_log()]
        assert "token-reuse" in kinds


async def test_two_tabs_refreshing_at_once_both_succeed_within_the_grace(tmp_path: Path) -> None:
    async with auth_server(tmp_path, auth_refresh_grace_seconds=10.0) as server:
        carol = await server.add_person("carol")
        answers = [
            await server.call("POST", "/v1/auth/refresh", None, {"refresh_token": carol.refresh})
            for _ in range(2)
        ]
        assert [status for status, _ in answers] == [200, 200]


async def test_logout_ends_the_login_everywhere(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        dave = await server.add_person("dave", admin=True)
        assert (await server.call("POST", "/v1/auth/logout", dave))[0] == 204
        assert (await server.call("GET", "/v1/me", dave))[0] == 401
        status, _ = await server.call(
            "POST", "/v1/auth/refresh", None, {"refresh_token": dave.refresh}
        )
        assert status == 401
        assert await socket_fate(socket_url(server.ws, "b1", {"token": dave.token})) == 4401


async def test_wrong_passwords_are_refused_the_same_way_as_unknown_users(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        await server.add_person("erin")
        wrong = await server.call(
            "POST", "/v1/auth/login", None, {"username": "erin", "password": "not the password"}
        )
        unknown = await server.call(
            "POST", "/v1/auth/login", None, {"username": "nobody", "password": "not the password"}
        )
        assert wrong[0] == unknown[0] == 401
        assert wrong[1]["detail"] == unknown[1]["detail"]
        failed = [e for e in server.service.store.audit_log() if e.kind == "login-failed"]
        assert len(failed) == 2


async def test_a_second_factor_is_needed_to_log_in_once_enrolled(tmp_path: Path) -> None:
    import pyotp

    async with auth_server(tmp_path) as server:
        frank = await server.add_person("frank")
        status, begun = await server.call("POST", "/v1/me/mfa", frank)
        assert status == 200 and begun["uri"].startswith("otpauth://totp/")
        secret = begun["secret"]
        code = pyotp.TOTP(secret).now()
        bad = await server.call(
            "PUT", "/v1/me/mfa", frank, {"secret": secret, "code": code, "password": "wrong one!"}
        )
        assert bad[0] == 401  # re-authentication before changing MFA
        ok = await server.call(
            "PUT",
            "/v1/me/mfa",
            frank,
            {"secret": secret, "code": code, "password": "a long enough password"},
        )
        assert ok[0] == 204
        login = {"username": "frank", "password": "a long enough password"}
        status, body = await server.call("POST", "/v1/auth/login", None, login)
        assert status == 401 and body["type"] == "urn:boardcast:problem:mfa-required"
        status, body = await server.call(
            "POST", "/v1/auth/login", None, {**login, "totp": "000000"}
        )
        assert status == 401 and body["type"] == "urn:boardcast:problem:invalid-credentials"


async def test_a_ticket_opens_one_socket_once(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        gina = await server.add_person("gina", admin=True)
        status, answer = await server.call("POST", "/v1/auth/tickets", gina, {"board": "b1"})
        assert status == 200
        ticket = answer["ticket"]
        assert await socket_fate(socket_url(server.ws, "b2", {"ticket": ticket})) == 4401
        status, answer = await server.call("POST", "/v1/auth/tickets", gina, {"board": "b1"})
        ticket = answer["ticket"]
        assert await socket_fate(socket_url(server.ws, "b1", {"ticket": ticket})) == "open"
        assert await socket_fate(socket_url(server.ws, "b1", {"ticket": ticket})) == 4401


async def test_the_access_cookie_opens_sockets_and_is_http_only(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        await server.add_person("hana", admin=True)
        login = {"username": "hana", "password": "a long enough password"}
        async with server.http.post(f"{server.base}/v1/auth/login", json=login) as response:
            cookies = response.headers.getall("Set-Cookie")
        assert all("HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
        access = next(c for c in cookies if c.startswith("boardcast_access="))
        value = access.split(";")[0]
        fate = await socket_fate(socket_url(server.ws, "b1"), headers={"Cookie": value})
        assert fate == "open"
        # A change sent with the cookie from another site's page is refused (CSRF).
        status, body = await server.call(
            "POST", "/v1/projects", None, {"name": "x"}, Cookie=value, Origin="https://evil.example"
        )
        assert status == 403, body


async def test_a_cli_token_opens_its_board_with_its_role_until_revoked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with auth_server(tmp_path) as server:
        await server.add_person("ivan")
        with pytest.raises(SystemExit) as done:
            boardcast_main(
                [
                    "token",
                    "issue",
                    "--data-dir",
                    str(tmp_path),
                    "--user",
                    "ivan",
                    "--board",
                    "ops",
                    "--role",
                    "viewer",
                ]
            )
        assert done.value.code == 0
        captured = capsys.readouterr()
        token = captured.out.strip()
        token_id = captured.err.strip().rsplit(" ", 1)[-1]
        assert await socket_fate(socket_url(server.ws, "ops", {"token": token})) == "open"
        assert await socket_fate(socket_url(server.ws, "other", {"token": token})) == 4403
        with pytest.raises(SystemExit):
            boardcast_main(["token", "revoke", "--data-dir", str(tmp_path), token_id])
        assert await socket_fate(socket_url(server.ws, "ops", {"token": token})) == 4401


async def test_readiness_and_session_lists_tell_anonymous_callers_nothing(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        admin = await server.add_person("judy", admin=True)
        status, anonymous = await server.call("GET", "/readyz", None)
        assert status == 200 and not isinstance(anonymous["hosts"], list)
        status, detailed = await server.call("GET", "/readyz", admin)
        assert status == 200 and isinstance(detailed["hosts"], list)
        assert (await server.call("GET", "/boards/b1/sessions", None))[0] == 404
        assert (await server.call("GET", "/boards/b1/sessions", admin))[0] == 200


async def test_logout_with_only_the_refresh_cookie_ends_the_login(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        mia = await server.add_person("mia")
        status, _ = await server.call(
            "POST", "/v1/auth/logout", None, Cookie=f"boardcast_refresh={mia.refresh}"
        )
        assert status == 204
        assert (await server.call("GET", "/v1/me", mia))[0] == 401
        status, _ = await server.call(
            "POST", "/v1/auth/logout", None, Cookie="boardcast_refresh=brt_unknown"
        )
        assert status == 401


async def test_a_users_own_scoped_token_needs_a_second_factor_and_is_capped(
    tmp_path: Path,
) -> None:
    async with auth_server(tmp_path) as server:
        plain = await server.add_person("nora")
        status, body = await server.call(
            "POST", "/v1/me/tokens", plain, {"board": "b1", "role": "editor"}
        )
        assert status == 401 and body["type"] == "urn:boardcast:problem:mfa-required"
        owen = await server.add_person("owen", mfa=True)  # logged in with a code just now
        status, body = await server.call(
            "POST", "/v1/me/tokens", owen, {"board": "b1", "role": "owner"}
        )
        assert status == 201, body
        # Owen is no member of b1: his own token grants nothing there.
        fate = await socket_fate(socket_url(server.ws, "b1", {"token": body["token"]}))
        assert fate == 4403
        assert (await server.call("DELETE", f"/v1/me/tokens/{body['id']}", owen))[0] == 204
        fate = await socket_fate(socket_url(server.ws, "b1", {"token": body["token"]}))
        assert fate == 4401
