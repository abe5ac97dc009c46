"""The board app in the browser: the built single page of ``clients/web`` served at ``/``.

The page is built with Vite (``npm ci && npm run build`` in ``clients/web``) into
``clients/web/dist``, which is committed and shipped inside the Python package, so a gateway
serves it without Node. Hashed asset names never change content, so they are cached for a
year; the page itself is revalidated on every load, so a new build shows at once.
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

from aiohttp import web

log = logging.getLogger("boardcast.gateway")

DIST = Path(__file__).resolve().parent.parent / "clients" / "web" / "dist"
# Hashed names from the build: letters, digits, '-', '_' and one extension.
_ASSET_NAME = r"[A-Za-z0-9_\-]+\.[a-z0-9]+"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Scripts and styles only from this origin; sockets to this host (any scheme).
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Boardcast</title></head>
<body><main><h1>Boardcast</h1>
<p>The board app is not built in this installation. Build it with
<code>cd clients/web &amp;&amp; npm ci &amp;&amp; npm run build</code>, or connect any Yjs
client to <code>/ws/BOARD</code>.</p></main></body></html>
"""


def add_web_app(app: web.Application, dist: Path = DIST) -> None:
    """Serve the board app at ``/`` and its assets under ``/assets/``."""

    async def index(request: web.Request) -> web.Response:
        page = dist / "index.html"
        if not page.is_file():
            return web.Response(text=NOT_BUILT, content_type="text/html", status=503)
        return web.Response(
            body=page.read_bytes(),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache", **_SECURITY_HEADERS},
        )

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = dist / "assets" / name
        if not path.is_file():
            raise web.HTTPNotFound()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.Response(
            body=path.read_bytes(),
            content_type=content_type,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )

    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_get(f"/assets/{{name:{_ASSET_NAME}}}", asset)

    async def announce(app: web.Application) -> None:
        if not (dist / "index.html").is_file():
            log.warning("board app not built: %s is missing", dist / "index.html")

    app.on_startup.append(announce)
