"""Logging in through an external OpenID Connect issuer, against a real local issuer."""

from __future__ import annotations

from pathlib import Path

from clients.provider import socket_url
from tests.auth_helpers import auth_server, socket_fate
from tests.oidc_issuer import LocalIssuer, mint_hmac


async def test_an_issuers_users_log_in_and_keep_working_across_a_key_rollover(
    tmp_path: Path,
) -> None:
    async with LocalIssuer() as issuer:
        async with auth_server(
            tmp_path,
            oidc_issuer=issuer.url,
            oidc_audience=issuer.audience,
            oidc_min_refetch_seconds=0.0,
        ) as server:
            status, config = await server.call("GET", "/v1/auth/config", None)
            assert config["oidc"] == {"issuer": issuer.url, "client_id": issuer.audience}
            token = issuer.mint(sub="ext-42", name="Nadia", email="nadia@example.org")
            status, grant = await server.call("POST", "/v1/auth/oidc", None, {"id_token": token})
            assert status == 200, grant
            assert grant["user"]["name"] == "Nadia"
            mine = {"Authorization": f"Bearer {grant['access_token']}"}
            status, me = await server.call("GET", "/v1/me", None, **mine)
            assert status == 200 and me["id"] == grant["user"]["id"]
            # The same person again: the same account.
            again = issuer.mint(sub="ext-42", name="Nadia")
            status, second = await server.call("POST", "/v1/auth/oidc", None, {"id_token": again})
            assert second["user"]["id"] == grant["user"]["id"]
            # The issuer's own access tokens work as bearer tokens, before and after rollover.
            bearer = {"Authorization": f"Bearer {issuer.access_token(sub='ext-42')}"}
            assert (await server.call("GET", "/v1/me", None, **bearer))[0] == 200
            issuer.rotate()
            bearer = {"Authorization": f"Bearer {issuer.access_token(sub='ext-42')}"}
            assert (await server.call("GET", "/v1/me", None, **bearer))[0] == 200
            # A project of Nadia's opens to the issuer's token on a socket.
            status, project = await server.call(
                "POST", "/v1/projects", None, {"name": "Ext"}, **bearer
            )
            assert status == 201, project
            status, board = await server.call(
                "POST", f"/v1/projects/{project['id']}/boards", None, {"name": "B"}, **bearer
            )
            token = issuer.access_token(sub="ext-42")
            assert await socket_fate(socket_url(server.ws, board["id"], {"token": token})) == "open"


async def test_forged_and_foreign_issuer_tokens_are_refused(tmp_path: Path) -> None:
    async with LocalIssuer() as issuer, LocalIssuer() as attacker:
        async with auth_server(
            tmp_path, oidc_issuer=issuer.url, oidc_audience=issuer.audience
        ) as server:
            public_pem = issuer.key("RS256").public_pem()
            forged = {
                "hs256-with-public-key": mint_hmac(
                    issuer.claims(sub="ext-1"), public_pem, {"kid": issuer.key().kid}
                ),
                "attackers-key": attacker.mint(
                    issuer.claims(sub="ext-1"), headers={"kid": issuer.key().kid}
                ),
                "jku-to-attacker": attacker.mint(
                    issuer.claims(sub="ext-1"), headers={"jku": attacker.jwks_url}
                ),
                "wrong-audience": issuer.mint(sub="ext-1", aud="someone-else"),
                "expired": issuer.mint(sub="ext-1", iat=1000, exp=2000),
            }
            for name, token in forged.items():
                status, body = await server.call("POST", "/v1/auth/oidc", None, {"id_token": token})
                assert status == 401, (name, body)
            assert attacker.paths.get("/jwks", 0) == 0
            # A valid token of a person who never logged in through /v1/auth/oidc: no account.
            bearer = {"Authorization": f"Bearer {issuer.access_token(sub='stranger')}"}
            assert (await server.call("GET", "/v1/me", None, **bearer))[0] == 401
            assert server.service.store.count_users() == 0
