"""pycrdt-websocket as it ships: ``WebsocketServer`` behind its ``ASGIServer``, on uvicorn.

Documents live in memory; the room is the URL path. One setting differs from the
defaults: an exception handler that logs and keeps serving. Without it, a client
that closes while its room is sending to it raises out of the server's task group
and stops the whole server (seen in the large-board scenario). Usage:
``python bench/peers/pycrdt_server.py --port 1234`` (prints one line when it listens).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer

log = logging.getLogger("pycrdt-bench")
_handled: list[int] = [0]


def keep_serving(exception: Exception, logger: logging.Logger) -> bool:
    """Log the first few exceptions of a client session; never stop the server for one."""
    _handled[0] += 1
    if _handled[0] <= 5:
        log.warning("client session failed (kept serving): %r", exception)
    return True


async def serve(port: int) -> None:
    """Run the server until the process is stopped."""
    websocket_server = WebsocketServer(exception_handler=keep_serving)
    app = ASGIServer(websocket_server)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    async with websocket_server:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        print(f"pycrdt-websocket ready on 127.0.0.1:{port}", flush=True)
        await task


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1234)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
