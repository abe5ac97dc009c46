"""Drive a stock JavaScript Yjs client (yjs + y-websocket in Node) from asyncio tests.

`JsClient` runs `js/driver.mjs` as a child process and speaks its line protocol: one JSON command
per line on stdin, one JSON answer per command on stdout, matched by id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

DRIVER_DIR = Path(__file__).resolve().parent / "js"
DRIVER = DRIVER_DIR / "driver.mjs"

# A 1 MiB text comes back as one JSON line; asyncio's default 64 KiB line limit is far too small.
_LINE_LIMIT = 64 * 1024 * 1024
_STDERR_KEPT = 200
# Waits for the server are bounded; generous, as a loaded 2-core CI machine also runs Ray.
DEFAULT_WAIT = 20.0 * float(os.environ.get("BOARDCAST_TEST_TIMEOUT_SCALE", "1"))


class JsClientError(RuntimeError):
    """The driver answered a command with an error, or died."""


def driver_unavailable_reason() -> str | None:
    """Why the Node driver cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    for package in ("yjs", "y-websocket", "ws"):
        if not (DRIVER_DIR / "node_modules" / package).is_dir():
            return f"{package} is missing: run `npm ci` in {DRIVER_DIR}"
    return None


class JsClient:
    """One Y.Doc with a WebsocketProvider, living in its own Node process.

    Use as `async with JsClient() as js: await js.connect(url, room)`. Every command waits at
    most `command_timeout` seconds for its answer beyond its own timeout.
    """

    def __init__(self, *, name: str = "js", command_timeout: float = 30.0) -> None:
        self.name = name
        self.command_timeout = command_timeout
        self._client_id: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.stderr_lines: list[str] = []

    @property
    def client_id(self) -> int:
        """The Yjs clientID of this client's document (also its awareness id)."""
        if self._client_id is None:
            raise JsClientError(f"{self.name}: not connected yet")
        return self._client_id

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Spawn the Node process."""
        if self._process is not None:
            raise JsClientError(f"{self.name}: already started")
        self._process = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            cwd=DRIVER_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read_answers())
        self._stderr_task = asyncio.create_task(self._read_stderr())

    async def close(self, *, timeout: float = 5.0) -> None:
        """Ask the driver to exit; kill it if it does not within `timeout` seconds."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(JsClientError, TimeoutError, ConnectionError):
                await self.request("exit", _timeout=timeout)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in (self._reader, self._stderr_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout)
        self._fail_pending(JsClientError(f"{self.name}: driver closed"))

    async def request(self, cmd: str, _timeout: float | None = None, **args: Any) -> Any:
        """Send one command and return its result; raise JsClientError on an error answer."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise JsClientError(f"{self.name}: driver is not running{self._stderr_tail()}")
        if "id" in args or "cmd" in args:
            raise ValueError("'id' and 'cmd' are reserved by the line protocol")
        request_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        try:
            process.stdin.write(line.encode())
            await process.stdin.drain()
            return await asyncio.wait_for(answer, _timeout or self.command_timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no answer to {cmd!r}{self._stderr_tail()}") from None
        finally:
            self._pending.pop(request_id, None)

    # Board-level commands. Timeouts are in seconds on this side, milliseconds in the driver.

    async def connect(
        self,
        url: str,
        room: str,
        *,
        params: dict[str, str] | None = None,
        awareness: Any = None,
        max_backoff: float = 2.5,
    ) -> int:
        """Create the provider for ws `url` + "/" + `room`; return this client's Yjs clientID."""
        args: dict[str, Any] = {"url": url, "room": room, "max_backoff_ms": int(max_backoff * 1000)}
        if params:
            args["params"] = params
        if awareness is not None:
            args["awareness"] = awareness
        result = await self.request("connect", **args)
        self._client_id = int(result["client_id"])
        return self._client_id

    async def wait_synced(self, timeout: float = DEFAULT_WAIT) -> None:
        """Wait until the provider has received the server's sync step 2."""
        await self.request("wait_synced", _timeout=timeout + 5, timeout_ms=int(timeout * 1000))

    async def status(self) -> dict[str, Any]:
        """Connection flags: connected, synced, should_connect, client_id."""
        result: dict[str, Any] = await self.request("status")
        return result

    async def set_map(self, map_name: str, key: str, value: Any) -> None:
        """Set `key` to a JSON value in the root map `map_name`."""
        await self.request("set_map", map=map_name, key=key, value=value)

    async def delete_key(self, map_name: str, key: str) -> None:
        """Delete `key` from the root map `map_name`."""
        await self.request("delete_key", map=map_name, key=key)

    async def create_task(self, task_id: str, **fields: Any) -> None:
        """Add a task as a nested Y.Map (description -> Y.Text; assignees, labels -> Y.Array)."""
        await self.request("create_task", task_id=task_id, fields=fields)

    async def create_column(self, column_id: str, **fields: Any) -> None:
        """Add a column as a nested Y.Map of plain fields (name, position)."""
        await self.request("create_column", column_id=column_id, fields=fields)

    async def update_task(self, task_id: str, **fields: Any) -> None:
        """Overwrite fields of an existing task in one transaction."""
        await self.request("update_task", task_id=task_id, fields=fields)

    async def insert_text(
        self, path: Sequence[str | int], text: str, *, index: int | None = None, repeat: int = 1
    ) -> int:
        """Insert `text` repeated `repeat` times into the Y.Text at `path`; return its length."""
        result = await self.request(
            "insert_text", path=list(path), text=text, index=index, repeat=repeat
        )
        return int(result["length"])

    async def push_array(self, path: Sequence[str | int], values: Sequence[Any]) -> int:
        """Append `values` to the Y.Array at `path`; return its length."""
        result = await self.request("push_array", path=list(path), values=list(values))
        return int(result["length"])

    async def get_json(
        self, path: Sequence[str | int] = (), *, types: dict[str, str] | None = None
    ) -> Any:
        """The document as JSON (root maps tasks, columns, meta and every other root), or a part."""
        return await self.request("get_json", path=list(path), types=types or {})

    async def wait_until(
        self, path: Sequence[str | int], equals: Any, *, timeout: float = DEFAULT_WAIT
    ) -> None:
        """Wait until the JSON value at `path` equals `equals`."""
        await self.request(
            "wait_until",
            _timeout=timeout + 5,
            path=list(path),
            equals=equals,
            timeout_ms=int(timeout * 1000),
        )

    async def set_awareness(self, state: Any) -> None:
        """Set this client's awareness state (None announces that it left)."""
        await self.request("set_awareness", state=state)

    async def get_awareness(self) -> dict[int, Any]:
        """Awareness states of the other clients, by Yjs clientID."""
        states: dict[str, Any] = await self.request("get_awareness")
        return {int(client): state for client, state in states.items()}

    async def disconnect(self) -> None:
        """Close cleanly: announce the awareness removal, then close the WebSocket."""
        await self.request("disconnect")

    async def reconnect(self) -> None:
        """Connect again after disconnect() or cut(); wait_synced() tells when it is back."""
        await self.request("reconnect")

    async def cut(self, *, reconnect: bool = False, reset: bool = False) -> None:
        """Drop the TCP connection with no close handshake (`reset`: send RST instead of FIN)."""
        await self.request("cut", reconnect=reconnect, reset=reset)

    async def state_vector(self) -> bytes:
        """Y.encodeStateVector of the document."""
        return base64.b64decode(await self.request("state_vector"))

    async def encode_state(self, state_vector: bytes | None = None) -> bytes:
        """Y.encodeStateAsUpdate of the document, against `state_vector` if given."""
        vector = base64.b64encode(state_vector).decode() if state_vector is not None else None
        return base64.b64decode(await self.request("encode_state", state_vector=vector))

    async def apply_update(self, update: bytes) -> None:
        """Apply a v1 update locally; the provider forwards it to the server."""
        await self.request("apply_update", update=base64.b64encode(update).decode())

    async def wait_for(
        self,
        predicate: Callable[[Any], bool],
        *,
        timeout: float = DEFAULT_WAIT,
        source: str = "doc",
        interval: float = 0.05,
    ) -> Any:
        """Poll the document JSON (or the others' awareness) until `predicate` holds; return it."""
        fetch: Callable[[], Awaitable[Any]] = (
            self.get_awareness if source == "awareness" else self.get_json
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = await fetch()
        while not predicate(state):
            if loop.time() >= deadline:
                shown = json.dumps(state, default=str)
                if len(shown) > 2000:
                    shown = shown[:2000] + f"... ({len(shown)} chars)"
                raise TimeoutError(
                    f"{self.name}: {source} condition not met within {timeout} s; last: {shown}"
                )
            await asyncio.sleep(interval)
            state = await fetch()
        return state

    async def _read_answers(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self.stderr_lines.append(f"(stdout) {line[:200]!r}")
                continue
            answer = self._pending.get(message.get("id"))
            if answer is None or answer.done():
                continue
            if message.get("ok"):
                answer.set_result(message.get("result"))
            else:
                answer.set_exception(JsClientError(f"{self.name}: {message.get('error')}"))
        await process.wait()
        self._fail_pending(
            JsClientError(
                f"{self.name}: driver exited with {process.returncode}{self._stderr_tail()}"
            )
        )

    async def _read_stderr(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        while line := await process.stderr.readline():
            self.stderr_lines.append(line.decode(errors="replace").rstrip())
            del self.stderr_lines[:-_STDERR_KEPT]

    def _fail_pending(self, error: Exception) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(error)
        self._pending.clear()

    def _stderr_tail(self) -> str:
        if not self.stderr_lines:
            return ""
        return "; driver stderr: " + " | ".join(self.stderr_lines[-5:])


# y-websocket logs these when a frame is not a message it knows, or the server denied access;
# the driver logs the others when something threw.
STOCK_CLIENT_COMPLAINTS = (
    "Unable to compute message",
    "Permission denied",
    "uncaught exception",
    "unhandled rejection",
)


class JsClients:
    """Starts JS clients on demand and closes them all at the end of a test."""

    def __init__(self) -> None:
        self._clients: list[JsClient] = []

    async def new(self, name: str | None = None) -> JsClient:
        """A started driver process, not yet connected."""
        client = JsClient(name=name or f"js{len(self._clients) + 1}")
        self._clients.append(client)
        await client.start()
        return client

    async def joined(self, url: str, board_id: str, name: str | None = None) -> JsClient:
        """A driver connected to `board_id` and synced."""
        client = await self.new(name)
        await client.connect(url, board_id)
        await client.wait_synced()
        return client

    async def close_all(self) -> None:
        """Stop every driver started here."""
        await asyncio.gather(*(client.close() for client in self._clients))

    def complaints(self) -> list[str]:
        """What the stock clients logged about frames they could not handle, or crashes."""
        return [
            f"{client.name}: {line}"
            for client in self._clients
            for line in client.stderr_lines
            if any(sign in line for sign in STOCK_CLIENT_COMPLAINTS)
        ]
