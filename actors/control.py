"""Control calls over the frame stream, for board hosts that have no Ray actor.

A board host running inside a gateway's process (``BOARDCAST_HOSTS_IN_GATEWAY``)
serves clients like any other, but the cluster's other processes cannot reach
it with a Ray actor handle: a gateway on another node still needs to run a REST
transaction on one of its boards, and an operator's ``boardcast`` command its
stats. Such a host answers *control links* instead: a frame stream opened with
the same handshake (only holders of the cluster secret get in) whose hello has
the role ``control``, and that carries :class:`~actors.messages.Call` and
:class:`~actors.messages.Answer` messages rather than board frames.

Arguments and results travel pickled with Ray's own cloudpickle, so a change
function sent to such a host is exactly what Ray would have sent to an actor;
the trust model is Ray's too (any peer holding the cluster secret may run a
pickled function). Ray is imported only when a call is (de)serialized: the
in-process backend never does.

Both ends offer the shape of a Ray actor handle, ``handle.method.remote(*args)``
returning an awaitable, so :class:`actors.ray_backend.RayCluster` treats an
actor, a host in its own process (:class:`InProcessHandle`) and a host in
another gateway's process (:class:`ControlHandle`) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from actors.memory_link import AnyLink
from actors.messages import PROTOCOL_VERSION, Answer, Call, Hello, Message, StreamProtocolError
from actors.stream import StreamLink, open_stream

log = logging.getLogger("boardcast.control")

#: The role a control link's hello carries.
CONTROL_ROLE = "control"

#: The host methods a control link may call; anything else is answered with an error.
CONTROL_METHODS = frozenset({"endpoint", "stats", "transact", "run", "release", "drain"})

#: Calls one control link may have running on a host at once; past it the link is dropped.
MAX_CALLS_IN_FLIGHT = 256


class ControlCallFailed(RuntimeError):
    """A host raised an exception that could not travel back as itself."""


def _dumps(value: object) -> bytes:
    from ray import cloudpickle

    return bytes(cloudpickle.dumps(value))  # type: ignore[no-untyped-call]


def _loads(data: bytes) -> Any:
    from ray import cloudpickle

    return cloudpickle.loads(data)


def is_control_hello(message: Message) -> bool:
    """Whether ``message`` opens a control link rather than a board link."""
    return isinstance(message, Hello) and message.role == CONTROL_ROLE


async def serve_control(link: AnyLink, first: Iterable[Message], target: object) -> None:
    """Answer the calls of one control link until it closes; ``first`` arrived with its hello.

    Each call runs as its own task, so a slow transaction does not hold up a
    stats call behind it. A peer that sends anything but calls, or more than
    :data:`MAX_CALLS_IN_FLIGHT` at once, loses the link.
    """
    link.send(Hello(PROTOCOL_VERSION, "host"))
    running: set[asyncio.Task[None]] = set()

    def take(messages: Iterable[Message]) -> None:
        for message in messages:
            if not isinstance(message, Call):
                raise StreamProtocolError(f"a control link may not send {type(message).__name__}")
            if len(running) >= MAX_CALLS_IN_FLIGHT:
                raise StreamProtocolError(f"more than {MAX_CALLS_IN_FLIGHT} calls in flight")
            task = asyncio.create_task(_answer(link, target, message))
            running.add(task)
            task.add_done_callback(running.discard)

    try:
        take(first)
        while (batch := await link.read_batches()) is not None:
            take(batch)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _answer(link: AnyLink, target: object, call: Call) -> None:
    try:
        if call.method not in CONTROL_METHODS:
            raise AttributeError(f"{call.method!r} is not a control method")
        args = _loads(call.args)
        if not isinstance(args, tuple):
            raise TypeError("control call arguments must be a tuple")
        result = await getattr(target, call.method)(*args)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        link.send(Answer(call.call_id, False, _dump_error(exc)))
        return
    try:
        link.send(Answer(call.call_id, True, _dumps(result)))
    except Exception as exc:
        link.send(Answer(call.call_id, False, _dump_error(exc)))


def _dump_error(exc: Exception) -> bytes:
    """``exc`` pickled, if it unpickles as itself; else a :class:`ControlCallFailed` naming it."""
    try:
        data = _dumps(exc)
        _loads(data)
    except Exception:
        return _dumps(ControlCallFailed(f"{type(exc).__name__}: {exc}"))
    return data


class _Method:
    """``handle.name``: its ``remote(*args)`` starts the call, like a Ray actor method's."""

    __slots__ = ("_call", "_name")

    def __init__(self, call: Callable[..., Awaitable[Any]], name: str) -> None:
        self._call = call
        self._name = name

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._call(self._name, *args))


class InProcessHandle:
    """A host object of this process behind the shape of a Ray actor handle."""

    def __init__(self, target: object) -> None:
        self.target = target

    async def _call(self, name: str, *args: Any) -> Any:
        return await getattr(self.target, name)(*args)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self._call, name)


class ControlHandle:
    """A host in another process, reached over a control link (opened on first call)."""

    def __init__(
        self, endpoint: tuple[str, int], secret: bytes, *, connect_timeout: float = 5.0
    ) -> None:
        self.endpoint = endpoint
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._link: StreamLink | None = None
        self._reading: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self._call, name)

    async def _call(self, name: str, *args: Any) -> Any:
        link = await self._open()
        call_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = answer
        try:
            link.send(Call(call_id, name, _dumps(args)))
            return await answer
        finally:
            self._pending.pop(call_id, None)

    async def _open(self) -> StreamLink:
        async with self._opening:
            if self._link is not None and not self._link.closed:
                return self._link
            host, port = self.endpoint
            link = await open_stream(
                host,
                port,
                secret=self._secret,
                connect_timeout=self._connect_timeout,
                handshake_timeout=self._connect_timeout,
            )
            link.send(Hello(PROTOCOL_VERSION, CONTROL_ROLE))
            self._link = link
            self._reading = asyncio.create_task(self._read(link))
            return link

    async def _read(self, link: StreamLink) -> None:
        lost: BaseException = ConnectionError(
            f"control link to {self.endpoint[0]}:{self.endpoint[1]} closed"
        )
        try:
            while (batch := await link.read_batches()) is not None:
                for message in batch:
                    if isinstance(message, Hello):
                        continue
                    if not isinstance(message, Answer):
                        raise StreamProtocolError(f"unexpected {type(message).__name__}")
                    future = self._pending.get(message.call_id)
                    if future is None or future.done():
                        continue
                    try:
                        value = _loads(message.value)
                    except Exception as exc:
                        future.set_exception(ControlCallFailed(f"unreadable answer: {exc!r}"))
                        continue
                    if message.ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        except (ConnectionError, OSError, StreamProtocolError) as exc:
            lost = ConnectionError(f"control link to {self.endpoint[0]}:{self.endpoint[1]}: {exc}")
        finally:
            link.abort()
            if self._link is link:
                self._link = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)

    async def close(self) -> None:
        """Drop the link; calls in flight fail with :class:`ConnectionError`."""
        if self._link is not None:
            self._link.abort()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
