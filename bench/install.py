"""``python -m bench setup``: install what the comparison targets and the plots need.

Runs ``npm ci`` in bench/peers (the reference y-websocket server and Hocuspocus,
pinned by its lock file) and installs the ``bench`` extra of this project
(pycrdt-websocket and uvicorn, matplotlib, locust, psutil) into the running
interpreter. pycrdt-websocket 0.16 accepts the pycrdt version Boardcast pins, so
one virtual environment holds both.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence

from bench.paths import PEERS, ROOT


def run(command: list[str], cwd: str) -> int:
    """Run one install step, echoing it; return its exit code."""
    print(f"$ (cd {cwd} && {' '.join(command)})", flush=True)
    return subprocess.call(command, cwd=cwd)


def main(argv: Sequence[str]) -> int:
    """Install the Node peers and the Python bench extra."""
    parser = argparse.ArgumentParser(prog="python -m bench setup", description=__doc__)
    parser.add_argument("--skip-node", action="store_true", help="do not run npm")
    parser.add_argument("--skip-python", action="store_true", help="do not run pip")
    args = parser.parse_args(argv)
    if not args.skip_node:
        npm = shutil.which("npm")
        if npm is None:
            print("npm not found: install Node 20+ to compare with the Node servers")
            return 1
        if run([npm, "ci", "--no-audit", "--no-fund"], str(PEERS)) != 0:
            return 1
    if not args.skip_python:
        pip = [sys.executable, "-m", "pip", "install", "-e", f"{ROOT}[bench]"]
        if run(pip, str(ROOT)) != 0:
            return 1
    print("bench peers installed: python -m bench run hot-board --targets ... --out DIR")
    return 0
