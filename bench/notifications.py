"""Notifications and e-mail against a real server: ``python -m bench notifications``.

Starts ``boardcast serve`` with auth required (Ray board hosts, the worker actor running
the notification and e-mail workers, the embedded SQLite store) on a free loopback port,
with an SMTP server (aiosmtpd) in this process for the e-mail. Two accounts: ``owner``
(with TOTP, as a change of members needs a fresh second factor) and ``member``, who has
an address, keeps a notification stream open and is assigned to tasks by ``owner`` (nobody
is told of their own change). It reports, as JSON:

- ``latency``: from an assignment acknowledged by REST (``PATCH .../tasks/{id}`` with
  ``assignees``, the change durable) until ``member``'s stream carried the ``assigned``
  notification (``stream``) and until the SMTP server accepted its e-mail (``email``):
  p50/p99/max over ``--events`` assignments made one at a time, after ``--warmup``, each
  after a random pause of up to ``--spread`` seconds (else each would start just after the
  previous e-mail, in step with the e-mail worker's poll, and measure one phase of it);
- ``throughput``: ``--burst`` tasks created assigned to ``member`` by one bulk request (one
  update, that many ``task.created`` events, that many notifications and e-mails):
  notifications per second from the bulk's answer until the stream carried them all, and
  e-mails per second until the SMTP server had them all; median of ``--repeat`` runs.

The path measured: the host's group commit, the event log, the worker runtime's poll
(``BOARDCAST_WORKER_POLL_SECONDS``, 0.1 s), the notification worker's rules and store
write, the gateway's push poll (``BOARDCAST_NOTIFICATION_PUSH_POLL_SECONDS``, 0.2 s) to
the stream; for e-mail, the e-mail worker's poll (``BOARDCAST_MAIL_POLL_SECONDS``, 1 s) and
one SMTP session per e-mail (``BOARDCAST_MAIL_CONCURRENCY`` at once). The polls are the
floors of the latencies; the settings are the defaults unless ``--env`` changes them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
from aiosmtpd.controller import Controller

from bench.targets import TARGETS, ServerProcess, Target, free_port

PASSWORD = "bench-password-not-secret-1"
# The stream holds this many notifications for a slow reader before it is ended.
STREAM_QUEUE_ITEMS = 256


def auth_target(base: Target) -> Target:
    """``base`` with auth required (the bench targets run with ``--auth none``)."""

    def command(port: int, data_dir: str) -> list[str]:
        return [*base.command(port, data_dir), "--auth", "required"]

    return dataclasses.replace(base, name=f"{base.name}-auth", command=command)


class Arrivals:
    """When each key was first seen, with a wake-up for waiters (thread-safe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self.at: dict[str, float] = {}
        self.failed: BaseException | None = None
        self._changed = asyncio.Event()

    def note(self, key: str, when: float) -> None:
        """Record ``key`` (from any thread)."""
        with self._lock:
            self.at.setdefault(key, when)
        self._loop.call_soon_threadsafe(self._changed.set)

    def fail(self, error: BaseException) -> None:
        """What feeds these arrivals stopped: waiters raise ``error`` (loop thread)."""
        self.failed = error
        self._changed.set()

    def seen(self, keys: set[str]) -> bool:
        if self.failed is not None:
            raise RuntimeError(f"stopped: {self.failed}") from self.failed
        with self._lock:
            return keys <= self.at.keys()

    def when(self, key: str) -> float:
        with self._lock:
            return self.at[key]

    async def wait_for(self, keys: set[str], what: str, timeout: float = 300.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not self.seen(keys):
                    self._changed.clear()
                    if self.seen(keys):
                        return
                    await self._changed.wait()
        except TimeoutError:
            with self._lock:
                missing = len(keys - self.at.keys())
            raise RuntimeError(f"{missing} of {len(keys)} {what} never arrived") from None


class MailSink:
    """aiosmtpd's handler: notes when the e-mail for each notification id arrived."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.perf_counter()
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages += 1
        for notification_id in str(message.get("Boardcast-Notifications", "")).split(","):
            if notification_id.strip():
                self.arrivals.note(notification_id.strip(), now)
        return "250 OK"


def make_accounts(data_dir: str) -> str:
    """Create ``owner`` (with TOTP) and ``member`` in the server's account store; the secret."""
    from gateway.auth import open_auth_service
    from gateway.settings import Settings

    settings = Settings.load({"data_dir": data_dir})
    service = open_auth_service(
        settings.data_dir,
        settings.auth_settings,
        store_url=settings.store,
        mongo=settings.accounts_mongo,
    )
    try:
        owner = service.create_user("owner", PASSWORD, email="owner@bench.invalid")
        secret = pyotp.random_base32()
        service.store.set_totp(owner.id, secret)
        service.create_user("member", PASSWORD, email="member@bench.invalid")
    finally:
        service.store.close()
    return secret


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
        "samples": len(ordered),
    }


async def _read_stream(
    http: aiohttp.ClientSession,
    token: str,
    on_notification: Callable[[dict[str, Any], float], None],
    opened: asyncio.Event,
) -> None:
    """Follow ``GET /v1/notifications/stream``, calling back for each notification."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with http.get("/v1/notifications/stream", headers=headers, timeout=timeout) as answer:
        if answer.status != 200:
            raise RuntimeError(f"stream: {answer.status} {await answer.text()}")
        opened.set()
        data: list[str] = []
        async for raw in answer.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                on_notification(json.loads("".join(data)), time.perf_counter())
                data = []
    raise RuntimeError("the notification stream ended (it fell behind, or the server stopped)")


async def measure(args: argparse.Namespace, server: ServerProcess, secret: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    streamed = Arrivals(loop)  # by task id, the first `assigned` notification of it
    mailed = Arrivals(loop)  # by notification id
    notification_of: dict[str, str] = {}  # task id -> notification id
    sink = MailSink(mailed)
    controller = Controller(sink, hostname="127.0.0.1", port=args.smtp_port, ready_timeout=10)
    controller.start()
    reader: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession(
            server.http_url, timeout=aiohttp.ClientTimeout(total=300)
        ) as http:

            async def login(name: str, totp: str | None = None) -> str:
                body = {"username": name, "password": PASSWORD}
                if totp:
                    body["totp"] = totp
                async with http.post("/v1/auth/login", json=body) as answer:
                    if answer.status != 200:
                        raise RuntimeError(f"login {name}: {answer.status} {await answer.text()}")
                    return str((await answer.json())["access_token"])

            owner = await login("owner", pyotp.TOTP(secret).now())
            member = await login("member")

            async def call(method: str, path: str, body: Any, token: str = owner) -> Any:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.request(method, path, json=body, headers=headers) as answer:
                    if answer.status >= 300:
                        text = await answer.text()
                        raise RuntimeError(f"{method} {path}: {answer.status} {text}")
                    return await answer.json()

            member_id = (await call("GET", "/v1/me", None, member))["id"]
            project = await call("POST", "/v1/projects", {"name": "bench"})
            members = f"/v1/projects/{project['id']}/members"
            await call("PUT", f"{members}/{member_id}", {"role": "editor"})
            board = await call("POST", f"/v1/projects/{project['id']}/boards", {"name": "b"})
            tasks = f"/v1/boards/{board['id']}/tasks"
            columns = await call("GET", f"/v1/boards/{board['id']}/columns", None)
            column = columns["items"][0]["id"]

            def on_notification(item: dict[str, Any], when: float) -> None:
                if item.get("kind") == "assigned" and item.get("task_id"):
                    notification_of.setdefault(item["task_id"], item["id"])
                    streamed.note(item["task_id"], when)

            opened = asyncio.Event()
            reader = asyncio.create_task(_read_stream(http, member, on_notification, opened))

            def stream_ended(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    streamed.fail(task.exception() or RuntimeError("stream"))

            reader.add_done_callback(stream_ended)
            async with asyncio.timeout(30):
                await opened.wait()

            async def arrived(task_ids: set[str]) -> None:
                await streamed.wait_for(task_ids, "stream notifications")

            stream_ms: list[float] = []
            email_ms: list[float] = []
            pace = random.Random(args.seed)
            for n in range(args.warmup + args.events):
                task = await call("POST", tasks, {"title": f"t{n}", "column": column})
                # Not in step with the workers' polls: each waits a random part of a cycle.
                await asyncio.sleep(pace.uniform(0, args.spread))
                await call("PATCH", f"{tasks}/{task['id']}", {"assignees": [member_id]})
                acknowledged = time.perf_counter()
                await arrived({task["id"]})
                notification = notification_of[task["id"]]
                await mailed.wait_for({notification}, "e-mails")
                if n >= args.warmup:
                    stream_ms.append((streamed.when(task["id"]) - acknowledged) * 1000)
                    email_ms.append((mailed.when(notification) - acknowledged) * 1000)

            pushed: list[float] = []
            sent: list[float] = []
            for run in range(args.repeat):
                bulk = {
                    "tasks": [
                        {"title": f"b{run}-{n}", "column": column, "assignees": [member_id]}
                        for n in range(args.burst)
                    ]
                }
                answer = await call("POST", f"{tasks}/bulk", bulk)
                acknowledged = time.perf_counter()
                made = set(answer["created"])
                await arrived(made)
                last_pushed = max(streamed.when(task_id) for task_id in made)
                ids = {notification_of[task_id] for task_id in made}
                await mailed.wait_for(ids, "e-mails")
                last_sent = max(mailed.when(notification_id) for notification_id in ids)
                pushed.append(len(made) / (last_pushed - acknowledged))
                sent.append(len(made) / (last_sent - acknowledged))
    finally:
        if reader is not None:
            reader.cancel()
        controller.stop()
    return {
        "target": server.target.name,
        "latency": {"stream": _percentiles(stream_ms), "email": _percentiles(email_ms)},
        "throughput": {
            "burst": args.burst,
            "notifications_per_s_median": round(statistics.median(pushed), 1),
            "emails_per_s_median": round(statistics.median(sent), 1),
            "notification_runs": [round(rate, 1) for rate in pushed],
            "email_runs": [round(rate, 1) for rate in sent],
        },
        "emails_received": sink.messages,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench notifications", description=__doc__)
    parser.add_argument("--target", choices=["boardcast", "boardcast-memory"], default="boardcast")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="seconds: each assignment waits a random 0..spread first, so the samples fall "
        "anywhere in the workers' poll cycles (default 1, the e-mail poll)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server (repeatable), e.g. BOARDCAST_MAIL_POLL_SECONDS=0.2",
    )
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    if not 0 < args.burst <= STREAM_QUEUE_ITEMS:
        parser.error(f"--burst must be 1..{STREAM_QUEUE_ITEMS} (a stream's queue)")
    args.smtp_port = free_port()
    env = {
        "BOARDCAST_SMTP_HOST": "127.0.0.1",
        "BOARDCAST_SMTP_PORT": str(args.smtp_port),
    }
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    log = Path(tempfile.mkdtemp(prefix="bench-notifications-")) / "server.log"
    server = ServerProcess(auth_target(TARGETS[args.target]), log, extra_env=env)
    secret = make_accounts(server.data_dir)
    server.start()
    try:
        result = asyncio.run(measure(args, server, secret))
    finally:
        server.stop()
        server.cleanup()
    report = {"command": "python -m bench notifications " + " ".join(argv), **result}
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
