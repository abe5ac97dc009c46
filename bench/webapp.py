"""The board app on a big board: load time and responsiveness in headless Chromium.

``python -m bench.webapp [--cards 2000] [--columns 4] [--repeat 20] [--out FILE]`` starts a
``boardcast serve`` (boards in-process) on a free loopback port, writes a board of ``--cards``
cards with the Python client, opens it in Debian's Chromium (Playwright, ``/usr/bin/chromium``)
and measures, writing JSON:

- ``load_ms``: navigation start to every card in the page (the board synced and drawn);
- ``keyboard_move_ms``: a real Shift+ArrowDown on a card to the next frame (the card moved);
- ``typing_ms``: a key typed in a card's description to the next frame;
- ``remote_rename_ms``, ``remote_move_ms``: another client's edit sent from Python to the
  frame that shows it (wall clock; both ends on this machine);
- ``long_tasks``: main-thread tasks over 50 ms after the board loaded (what makes a page feel
  stuck), and the JS heap and DOM size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clients.provider import BoardClient
from crdt.board import Board
from crdt.positions import position_between

CHROMIUM = os.environ.get("BOARDCAST_CHROMIUM", "/usr/bin/chromium")
READY = re.compile(r"ready: ws://")

# In the page: every keydown's time to the frame after its handler ran.
TRACK_INPUT = """() => {
  window.__latency = []
  document.addEventListener('keydown', (event) => {
    if (['Shift', 'Control', 'Alt', 'Meta'].includes(event.key)) return
    const t0 = event.timeStamp
    requestAnimationFrame(() => setTimeout(() => window.__latency.push(performance.now() - t0)))
  }, true)
  window.__longTasks = []
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push(entry.duration)
  }).observe({ type: 'longtask' })
}"""

# In the page: resolve with Date.now() at the first frame where the card shows `expected`
# (title) or sits in column `column`.
WATCH_CARD = """([id, expected, column]) => {
  const seen = () => {
    const el = document.querySelector(`li.card[data-id="${id}"]`)
    if (!el) return false
    if (expected !== null) return el.querySelector('.card-title')?.textContent === expected
    return el.closest('ol.cards')?.dataset.column === column
  }
  window.__seen = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (!seen()) return
      observer.disconnect()
      requestAnimationFrame(() => resolve(Date.now()))
    })
    observer.observe(document.querySelector('.columns'),
      { subtree: true, childList: true, characterData: true })
  })
}"""


def progress(message: str) -> None:
    print(f"bench.webapp: {message}", file=sys.stderr, flush=True)


async def seen_at(page: Any) -> float:
    """When the page showed what WATCH_CARD waits for (Date.now() there)."""
    return float(await asyncio.wait_for(page.evaluate("() => window.__seen"), 30))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
        "max": round(ordered[-1], 2),
    }


def start_server(port: int, data_dir: str) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("boardcast")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "boardcast"]
    process = subprocess.Popen(
        [
            *command,
            *("serve", "--backend", "local", "--port", str(port)),
            *("--data-dir", data_dir, "--auth", "none"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if READY.search(line):
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("boardcast serve did not start")


def stop_server(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


async def seed(url: str, board_id: str, cards: int, columns: int) -> tuple[Board, BoardClient]:
    """Write the big board in one transaction; return a live client on it."""
    client = BoardClient(url, board_id)
    await client.connect()
    await client.synced()
    board = Board(client.doc)
    board.set_meta(title=f"{cards} cards")
    ids = [board.add_column(f"Column {c + 1}") for c in range(columns)]
    # Positions computed here: Board.add_task would look up the column's last card each time.
    last: dict[str, str | None] = dict.fromkeys(ids)
    # In batches: one update per 200 cards keeps every frame far below the frame size limit.
    for start in range(0, cards, 200):
        with client.doc.transaction():
            for n in range(start, min(cards, start + 200)):
                column = ids[n % columns]
                last[column] = position_between(last[column], None)
                board.add_task(
                    f"Card {n + 1}",
                    column,
                    position=last[column],
                    description=f"Description of card {n + 1}",
                    labels=["bench"] if n % 3 == 0 else [],
                    assignees=["ann"] if n % 5 == 0 else [],
                )
    await client.persisted(timeout=60)
    return board, client


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="bench-webapp-")
    server = start_server(port, data_dir)
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        board_id = f"bench-{os.getpid()}"
        board, client = await seed(url, board_id, args.cards, args.columns)
        columns = [c.id for c in board.columns()]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            loads = []
            for _ in range(args.loads):
                await page.goto(f"http://127.0.0.1:{port}/?name=Bench#/b/{board_id}")
                handle = await page.wait_for_function(
                    "(n) => document.querySelectorAll('li.card').length >= n && performance.now()",
                    arg=args.cards,
                    polling="raf",
                )
                loads.append(float(await handle.json_value()))
            progress(f"loaded in {loads} ms")
            await page.evaluate(TRACK_INPUT)

            # Keyboard moves of a card in the middle of the first column.
            first = board.tasks_in_column(columns[0])
            button = page.locator(f'li.card[data-id="{first[len(first) // 2].id}"] button')
            await button.focus()
            for i in range(args.repeat):
                await page.keyboard.press("Shift+ArrowDown" if i % 2 == 0 else "Shift+ArrowUp")
                await page.wait_for_timeout(50)
            await page.wait_for_timeout(200)
            keyboard = await page.evaluate("() => window.__latency.splice(0)")
            progress(f"{len(keyboard)} keyboard moves")

            # Typing in a card's description.
            await page.keyboard.press("Enter")
            description = page.get_by_label("Description")
            await description.focus()
            await description.press("End")
            await page.wait_for_timeout(200)
            await page.evaluate("() => window.__latency.splice(0)")
            for _ in range(args.repeat):
                await page.keyboard.type("x")
                await page.wait_for_timeout(30)
            await page.wait_for_timeout(200)
            typing = await page.evaluate("() => window.__latency.splice(0)")
            progress(f"{len(typing)} keys typed")
            await page.keyboard.press("Escape")

            # Another client's edits, as they reach this page.
            renames, moves = [], []
            for i in range(args.repeat):
                task = first[i]
                title = f"Renamed {i}"
                await page.evaluate(WATCH_CARD, [task.id, title, None])
                t0 = time.time() * 1000
                board.update_task(task.id, title=title)
                renames.append(await seen_at(page) - t0)
                target = columns[1 + i % (len(columns) - 1)]
                await page.evaluate(WATCH_CARD, [task.id, None, target])
                position = board.position_at(target, 0, moving=task.id)
                t0 = time.time() * 1000
                board.move_task(task.id, target, position)
                moves.append(await seen_at(page) - t0)
            long_tasks = await page.evaluate("() => window.__longTasks")
            page_stats = await page.evaluate(
                "() => ({ heap: performance.memory.usedJSHeapSize,"
                " nodes: document.getElementsByTagName('*').length })"
            )
            version = browser.version
            await browser.close()
        await client.close()
    finally:
        stop_server(server)
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "bench": "webapp-big-board",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "chromium": version,
        "cards": args.cards,
        "columns": args.columns,
        "load_ms": summary(loads),
        "keyboard_move_ms": summary(keyboard),
        "typing_ms": summary(typing),
        "remote_rename_ms": summary(renames),
        "remote_move_ms": summary(moves),
        "long_tasks_after_load": {
            "count": len(long_tasks),
            "max_ms": round(max(long_tasks, default=0.0), 1),
        },
        "js_heap_mb": round(page_stats["heap"] / 2**20, 1),
        "dom_elements": page_stats["nodes"],
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webapp", description=__doc__)
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=20, help="samples per interaction")
    parser.add_argument("--loads", type=int, default=3, help="page loads to time")
    parser.add_argument("--out", type=Path, help="JSON file (default: print only)")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
