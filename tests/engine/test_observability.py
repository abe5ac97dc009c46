"""What operators see: request ids, JSON log lines, traces across processes, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared.logs import JsonFormatter
from shared.tracing import flush_tracing, shutdown_tracing
from tests.conftest import serve
from tests.persistence_servers import MongoServer, require_secantus


async def post_task(port: int, board: str, headers: dict[str, str] | None = None) -> str:
    """Create a task over REST; return the response's request id."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{port}/v1/boards/{board}/tasks",
            json={"title": "observed", "column": "To do"},
            headers=headers or {},
        ) as reply:
            assert reply.status == 201, await reply.text()
            return reply.headers["X-Request-Id"]


async def test_every_response_carries_a_request_id_and_a_sane_inbound_one_is_kept(
    tmp_path: Path,
) -> None:
    async with serve("local", tmp_path) as server:
        assert await post_task(server.port, "ids", {"X-Request-Id": "client-42.a:b_c"}) == (
            "client-42.a:b_c"
        )
        for hostile in ("a b", "x" * 129, "line\u2028break", "semi;colon"):
            made = await post_task(server.port, "ids", {"X-Request-Id": hostile})
            assert made != hostile and len(made) == 32 and made.isalnum()
        async with aiohttp.ClientSession() as http:
            # Errors and the operational endpoints too.
            for path in ("/v1/boards/ids/tasks/nope", "/healthz", "/no/such/route"):
                async with http.get(f"http://127.0.0.1:{server.port}{path}") as reply:
                    assert len(reply.headers.get("X-Request-Id", "")) == 32, path


@contextlib.contextmanager
def json_log_lines() -> Any:
    """Collect what the process logs, formatted as the ``json`` log format writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


async def test_json_log_lines_carry_the_ids_in_context(tmp_path: Path) -> None:
    with json_log_lines() as lines:
        async with serve("local", tmp_path) as server:
            request_id = await post_task(server.port, "logged", {"X-Request-Id": "trace-me-1"})
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"{server.url}/logged") as ws,
            ):
                await ws.receive(timeout=5)
    assert request_id == "trace-me-1"
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line)
    # The board load a REST request caused is logged with that request's id.
    activated = [
        line
        for line in lines
        if "activated" in line["message"] and line.get("board_id") == "logged"
    ]
    assert [line.get("request_id") for line in activated] == ["trace-me-1"]
    opened = [line for line in lines if line["message"].startswith("session opened")]
    closed = [line for line in lines if line["message"].startswith("session closed")]
    assert len(opened) == len(closed) == 1
    assert opened[0]["board_id"] == closed[0]["board_id"] == "logged"
    assert opened[0]["connection_id"] == closed[0]["connection_id"]
    # One line per event, never per frame: the whole session logged a handful.
    assert len(lines) < 40


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint on loopback, keeping every span it was sent."""

    url: str
    spans: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """Serve ``POST /v1/traces``, decoding each protobuf export request."""
    receiver = Receiver("")

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource in export.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource.scope_spans:
                for span in scope.spans:
                    receiver.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "service": service,
                        }
                    )
        return web.Response(
            body=b"", content_type="application/x-protobuf"
        )  # an empty ExportTraceServiceResponse

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.mark.timeout(120)
async def test_a_rest_write_is_one_trace_across_gateway_host_and_store(
    tmp_path: Path, backend: str, cluster_name: str
) -> None:
    async with otlp_receiver() as receiver:
        try:
            async with serve(
                backend,
                tmp_path,
                trace_endpoint=receiver.url,
                cluster_name=cluster_name,
                hosts=1,
            ) as server:
                await post_task(server.port, "traced")

                def spans_named(name: str) -> list[dict[str, Any]]:
                    return [s for s in receiver.spans if s["name"] == name]

                async def arrived() -> bool:
                    flush_tracing()
                    return bool(spans_named("store commit")) and bool(
                        spans_named("POST /v1/boards/{board_id}/tasks")
                    )

                for _ in range(200):  # the host's spans leave in batches (every few seconds)
                    if await arrived():
                        break
                    await asyncio.sleep(0.1)
                request = spans_named("POST /v1/boards/{board_id}/tasks")
                assert len(request) == 1, receiver.spans
                trace_id = request[0]["trace"]
                in_trace = [s for s in receiver.spans if s["trace"] == trace_id]
                by_name = {s["name"]: s for s in in_trace}
                assert set(by_name) >= {"board transaction", "board load", "store commit"}
                assert request[0]["parent"] == ""
                transaction = by_name["board transaction"]
                assert transaction["parent"] == request[0]["id"]
                assert by_name["board load"]["parent"] == transaction["id"]
                assert by_name["store commit"]["parent"] == transaction["id"]
                if backend == "ray":
                    # The host's spans came from the host's own process.
                    assert transaction["service"] == "boardcast-host"
        finally:
            shutdown_tracing()


@pytest.mark.timeout(120)
async def test_readiness_fails_with_a_reason_when_the_store_is_unreachable(
    tmp_path: Path,
) -> None:
    require_secantus()
    mongo = MongoServer(tmp_path / "mongo")
    mongo.start()
    try:
        async with serve(
            "local", tmp_path, store=f"{mongo.url}/boardcast", encryption="off", hosts=1
        ) as server:
            await post_task(server.port, "ready")
            ready_url = f"http://127.0.0.1:{server.port}/readyz"
            async with aiohttp.ClientSession() as http:
                async with http.get(ready_url) as reply:
                    assert reply.status == 200, await reply.text()
                mongo.kill()
                answers: list[tuple[int, dict[str, Any]]] = []

                async def unready() -> bool:
                    async with http.get(ready_url) as reply:
                        answers.append((reply.status, await reply.json()))
                    return answers[-1][0] == 503

                for _ in range(60):  # a host checks its store every sweep (5 s)
                    if await unready():
                        break
                    await asyncio.sleep(0.5)
                assert answers[-1] == (
                    503,
                    {"status": "unavailable", "reason": "store unreachable"},
                )
                # The store back (same port, same data): ready again, and the server stops cleanly.
                mongo = MongoServer(tmp_path / "mongo", port=mongo.port)
                mongo.start()
                for _ in range(60):
                    async with http.get(ready_url) as reply:
                        if reply.status == 200:
                            break
                    await asyncio.sleep(0.5)
                assert reply.status == 200
    finally:
        mongo.stop()
