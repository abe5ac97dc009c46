"""The ``boardcast`` command: ``serve`` (Ray, board hosts and a gateway), ``gateway``, and the
offline board commands of :mod:`boardcast.admin`.

Every command reads one :class:`Settings`: flags, then ``BOARDCAST_*`` variables, then defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from actors.cluster import Cluster
from boardcast import accounts_cli
from boardcast.admin import add_commands, run_admin
from boardcast.backup import add_backup_commands, run_backup_commands
from boardcast.deployment import build_cluster, join_cluster
from boardcast.events_cli import add_event_commands, run_events_command
from boardcast.keys import add_key_commands, run_keys_command, run_reencrypt_command
from gateway.app import GUARD, create_app
from gateway.auth.bootstrap import first_start_link
from gateway.limits_middleware import app_limits, runner_options
from gateway.settings import Settings
from shared.logs import configure_logging

log = logging.getLogger("boardcast")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="boardcast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start (or join) Ray, board hosts and a gateway")
    _common_flags(serve)
    serve.add_argument("--data-dir", help="embedded store directory (default ./data)")
    serve.add_argument("--store", help="store URL: sqlite (default), sqlite:///FILE, memory")
    serve.add_argument("--hosts", type=int, help="shared board hosts to run (default 2)")
    serve.add_argument(
        "--hosts-in-gateway",
        action="store_const",
        const=True,
        help="run this node's shared board hosts in the gateway's process, not as Ray actors",
    )
    serve.add_argument(
        "--backend", choices=["ray", "local"], help="ray (default) or local: hosts in-process"
    )
    serve.add_argument("--dedicated", help="comma-separated board ids given a host of their own")
    serve.add_argument("--idle-seconds", type=float, help="passivate boards idle this long")
    serve.add_argument(
        "--host-bind", help="where board hosts listen: auto (default), node, 0.0.0.0, or an IP"
    )
    serve.add_argument("--advertise-host", help="the address gateways dial to reach these hosts")

    gateway = commands.add_parser("gateway", help="run one more gateway on a running cluster")
    _common_flags(gateway)
    add_commands(commands)
    add_key_commands(commands)
    add_event_commands(commands)
    add_backup_commands(commands)
    accounts_cli.add_commands(commands)
    return parser


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--address", help="Ray cluster address to join (default: start one)")
    parser.add_argument("--node-ip", help="the Ray node to attach to (default: Ray's choice)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--cluster-name", help="deployment name on the Ray cluster (boardcast)")
    parser.add_argument("--redis", help="Redis URL for state shared by gateways (default: none)")
    parser.add_argument(
        "--extension",
        action="append",
        metavar="MODULE:FACTORY",
        help="load an extension (repeatable; see docs/extensions.md)",
    )
    parser.add_argument(
        "--auth",
        choices=["required", "none"],
        help="required (default): accounts and tokens; none: no checks (development only)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve https and wss")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")


# Settings that some subcommand takes as a flag of the same name.
_FLAG_SETTINGS = (
    *("host", "port", "address", "log_level", "cluster_name", "redis"),
    *("data_dir", "store", "hosts", "hosts_in_gateway", "backend", "idle_seconds"),
    *("host_bind", "advertise_host", "node_ip", "auth", "tls_cert", "tls_key"),
)


def settings_from(args: argparse.Namespace) -> Settings:
    """Merge the flags a subcommand was given over ``BOARDCAST_*`` variables."""
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in _FLAG_SETTINGS}
    dedicated = getattr(args, "dedicated", None)
    if dedicated:
        flags["dedicated_boards"] = tuple(dedicated.split(","))
    extensions = getattr(args, "extension", None)
    if extensions:
        flags["extensions"] = tuple(extensions)
    return Settings.load(flags)


async def run(command: str, settings: Settings) -> None:
    """Start everything, print the URL, serve until SIGINT/SIGTERM, then stop cleanly."""
    ray_address = None
    if command == "gateway" or settings.backend == "ray":
        # Connected here for the address the ready line shows; the cluster reuses the connection.
        from actors import ray_backend

        ray_address = ray_backend.init_ray(settings.address, node_ip=settings.node_ip or None)
    cluster: Cluster = (
        await build_cluster(settings) if command == "serve" else await join_cluster(settings)
    )
    app = create_app(settings, cluster, own_cluster=command == "serve")
    # A request head (a WebSocket upgrade's too) must arrive in time: slow clients are closed.
    options = runner_options(app_limits(app))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5, **options)
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        reuse_address=True,
        ssl_context=_tls(settings),
        backlog=settings.listen_backlog,
    )
    await site.start()
    port = settings.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    # Before the ready line: whoever waits for it may send SIGTERM at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    suffix = f" (ray {ray_address})" if ray_address else ""
    scheme = "https" if settings.tls_cert else "http"
    # The WebSocket base for Yjs clients, then the page a person opens.
    print(
        f"Boardcast {command} ready: {scheme.replace('http', 'ws')}://{settings.host}:{port}/ws,"
        f" board app {scheme}://{settings.host}:{port}/{suffix}",
        flush=True,
    )
    _announce_auth(app, settings, f"{scheme}://{_loopback(settings.host)}:{port}")

    await stop.wait()
    started = time.monotonic()
    log.info("shutting down: draining, closing sockets, flushing boards")
    timed_out = False
    try:
        await asyncio.wait_for(_stop(runner, cluster), settings.stop_timeout_seconds)
    except TimeoutError:
        log.error("stop not done after %.0f s; exiting anyway", settings.stop_timeout_seconds)
        timed_out = True
    if timed_out or getattr(cluster, "ray_lost", False):
        # Ray's processes are gone (every process of the deployment got SIGTERM at once):
        # ray.shutdown() would wait for them; what had to be saved is saved by now.
        print(f"Boardcast stopped in {time.monotonic() - started:.1f} s (Ray gone)", flush=True)
        os._exit(0)
    if ray_address is not None and not _disconnect_ray(timeout=5.0):
        # Ray's own shutdown hangs when its processes are already gone (every process of
        # the deployment got SIGTERM at once): what had to be saved is saved by now.
        print("Boardcast stopped (Ray did not disconnect)", flush=True)
        os._exit(0)
    print(f"Boardcast stopped in {time.monotonic() - started:.1f} s", flush=True)


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host


def _announce_auth(app: web.Application, settings: Settings, base_url: str) -> None:
    """Say loudly when auth is off; on a first start, print the administrator's login link."""
    if settings.auth == "none":
        log.warning(
            "AUTH IS OFF (--auth none): anyone who reaches this port reads and changes every"
            " board. Use it for development and benchmarks only."
        )
        print("WARNING: auth is off (--auth none): every caller is the administrator", flush=True)
        return
    service = app[GUARD].service
    if service is None:
        return
    link = first_start_link(service, base_url)
    if link is not None:
        # Only on loopback addresses: the link is a credential.
        print(f"First start: log in as the administrator (once, within 15 min): {link}", flush=True)


async def _stop(runner: web.AppRunner, cluster: Cluster) -> None:
    moved = await cluster.drain()
    if moved:
        log.info("handed %d boards over to the other nodes", moved)
    started = time.monotonic()
    await runner.cleanup()
    log.info("gateway and hosts stopped in %.1f s", time.monotonic() - started)
    await cluster.close()  # done already if the app owned it; a gateway stops its watch


def _disconnect_ray(*, timeout: float) -> bool:
    """``ray.shutdown()`` on a daemon thread; False if it did not return within ``timeout``."""
    from actors import ray_backend

    done = threading.Thread(target=ray_backend.shutdown_ray, daemon=True)
    done.start()
    done.join(timeout)
    return not done.is_alive()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop cuts the gateway's CPU per frame noticeably; plain asyncio works too.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``boardcast`` command."""
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    if args.command in {"history", "export", "import", "reindex"}:
        sys.exit(asyncio.run(run_admin(args, settings)))
    if args.command == "events":
        sys.exit(run_events_command(args, settings))
    if args.command == "keys":
        key_file = args.key_file
        sys.exit(
            run_keys_command(args.action, settings.data_dir, key_id=args.key_id, key_file=key_file)
        )
    if args.command in {"backup", "restore"}:
        sys.exit(run_backup_commands(args, settings.store, settings.data_dir))
    if args.command == "reencrypt":
        sys.exit(run_reencrypt_command(settings.data_dir, settings.store, key_file=args.key_file))
    if args.command in accounts_cli.COMMANDS:
        sys.exit(accounts_cli.run_accounts(args, settings))
    configure_logging(settings.log_level, settings.log_format)
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        runner.run(run(args.command, settings))
    sys.exit(0)


if __name__ == "__main__":
    main()
