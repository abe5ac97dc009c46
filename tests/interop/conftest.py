"""Fixtures for the interop tests: Boardcast server processes on loopback, JS clients in Node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.interop.jsclient import JsClients, driver_unavailable_reason
from tests.interop.servers import SERVE_ARGS, BoardcastProcess, gateway_process, serve_process


@pytest.fixture(scope="module")
def boardcast_module_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BoardcastProcess]:
    """One server shared by a test module (starting Ray per test would dominate the run)."""
    if driver_unavailable_reason() is None:
        server = serve_process(tmp_path_factory.mktemp("boardcast-data"))
        server.start()
    else:
        # Tests skip before they use it; do not pay for a Ray start.
        server = serve_process(tmp_path_factory.mktemp("boardcast-unused"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def boardcast_server(boardcast_module_server: BoardcastProcess) -> BoardcastProcess:
    """The shared server, started again on the same data dir if an earlier test left it dead."""
    reason = driver_unavailable_reason()
    if reason is not None:
        pytest.skip(f"JavaScript Yjs client unavailable: {reason}")
    if not boardcast_module_server.running:
        boardcast_module_server.start()
    return boardcast_module_server


@pytest.fixture
def second_gateway(boardcast_server: BoardcastProcess) -> Iterator[BoardcastProcess]:
    """Another gateway process on the shared server's Ray cluster."""
    if boardcast_server.ray_address is None:
        if "local" in SERVE_ARGS:
            pytest.skip("the server runs its boards in-process: no cluster for a second gateway")
        pytest.fail(f"the server printed no Ray address:\n{boardcast_server.output_tail()}")
    gateway = gateway_process(boardcast_server.ray_address)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
async def js_clients() -> AsyncIterator[JsClients]:
    """A factory of JS clients, all closed after the test."""
    reason = driver_unavailable_reason()
    if reason is not None:
        pytest.skip(f"JavaScript Yjs client unavailable: {reason}")
    clients = JsClients()
    try:
        yield clients
    finally:
        await clients.close_all()
    complaints = clients.complaints()
    if complaints:
        pytest.fail("the JavaScript clients complained:\n" + "\n".join(complaints[:20]))
