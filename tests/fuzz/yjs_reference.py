"""What the real yjs package makes of some update bytes: the reference a room must converge to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "yjs_apply.mjs"
YJS_DIR = Path(__file__).resolve().parents[1] / "interop" / "js" / "node_modules" / "yjs"


def yjs_unavailable_reason() -> str | None:
    """Why yjs cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not YJS_DIR.is_dir():
        return f"yjs is missing: run `npm ci` in {YJS_DIR.parent.parent}"
    return None


def running_in_ci() -> bool:
    """CI must run what needs Node, never skip it."""
    return os.environ.get("CI", "").lower() == "true"


def yjs_converge(
    updates: list[bytes], roots: dict[str, str], *, timeout: float = 30.0
) -> dict[str, Any]:
    """Apply ``updates`` in order with ``Y.applyUpdate``; return content, state vector, pending.

    Args:
        updates: Yjs v1 updates.
        roots: root type names and kinds (``map``, ``text`` or ``array``) to read back.
    """
    request = json.dumps({"updates": [u.hex() for u in updates], "roots": roots})
    finished = subprocess.run(
        ["node", str(SCRIPT)],
        input=request,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"yjs_apply.mjs failed: {finished.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(finished.stdout)
    result["state"] = {int(client): clock for client, clock in result["state"].items()}
    return result
