"""Gateways on separate machines share their accounts through the MongoDB store.

Each gateway here has a data directory of its own, so no accounts file is shared: a login,
a refresh and a logout reach the other gateway only through the ``accounts_*`` collections.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from clients.provider import BoardClient, wait_for
from gateway.app import GUARD, create_app
from persistence.keyring import KEY_FILE_SETTING
from tests.auth_helpers import AuthServer, auth_server
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures


async def _gateway_elsewhere(server: AuthServer, data_dir: Path) -> tuple[web.AppRunner, str]:
    """A gateway on the same cluster and store URL, but with another data directory."""
    settings = dataclasses.replace(server.server.settings, data_dir=str(data_dir))
    app = create_app(settings, server.server.cluster, own_cluster=False)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


async def test_a_logout_on_one_gateway_closes_a_socket_on_another_machine(
    tmp_path: Path,
    mongo_url: str,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every machine of a deployment is given the same at-rest key file.
    monkeypatch.setenv(KEY_FILE_SETTING, str(tmp_path / "shared-keys" / "at-rest.json"))
    async with auth_server(tmp_path / "machine-1", store=mongo_url) as server:
        eddie = await server.add_person("eddie")
        owner = await server.add_person("olivia", mfa=True)
        _project, board = await server.project_with(owner, {"eddie": "editor"})
        runner, other = await _gateway_elsewhere(server, tmp_path / "machine-2")
        try:
            assert not (tmp_path / "machine-2" / "accounts.sqlite3").exists()
            assert runner.app[GUARD].service is not None
            # The refresh token of a login on the first gateway works on the second.
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://{other}/v1/auth/refresh", json={"refresh_token": owner.refresh}
                ) as response:
                    assert response.status == 200, await response.text()
            client = BoardClient(f"ws://{other}/ws", board, params={"token": eddie.token})
            async with client:
                await client.synced()
                assert client.close_code is None
                assert (await server.call("POST", "/v1/auth/logout", eddie))[0] == 204
                await wait_for(lambda: client.close_code is not None, timeout=10)
                assert client.close_code == 4401
        finally:
            await runner.cleanup()
