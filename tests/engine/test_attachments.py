"""Task attachments on the embedded store, scanned by a real clamd: the whole flow, end to end.

A file is uploaded through the gateway's own signed URL, completed, scanned by clamd
(started here on a loopback port with a database that knows the EICAR test file), and
downloaded through a signed URL only once it is clean. The signature and expiry checks
are tested here, on the embedded store (moto does not check S3's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from pycrdt import Map

from clients.provider import BoardClient
from gateway.rest.attachment_commands import shown_attachments
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from persistence.file_signing import load_or_create_key, signed_query
from tests.conftest import RunningServer, serve, wait_until
from tests.engine.attachment_flow import (
    attach,
    attachment,
    base,
    fetch,
    new_task,
    send,
    start_upload,
    wait_for_state,
)
from tests.file_services import EICAR_SIGNATURE, ClamdServer, eicar
from tests.services import free_port

PROBLEM = "application/problem+json"
FAST_SCANS = {
    "files_scan_poll_seconds": 0.05,
    "files_scan_retry_seconds": 0.1,
    "files_scan_max_retry_seconds": 0.3,
}


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    server = ClamdServer(tmp_path_factory.mktemp("clamd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def server(tmp_path: Path, clamd: ClamdServer) -> AsyncIterator[RunningServer]:
    async with serve(
        "local",
        tmp_path,
        files_clamd=f"127.0.0.1:{clamd.port}",
        files_max_bytes=4096,
        files_max_per_task=3,
        **FAST_SCANS,
    ) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


def problem_name(body: dict[str, object]) -> str:
    return str(body.get("type", "")).removeprefix("urn:boardcast:problem:")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_clean_file_is_scanned_then_downloadable_and_shown_on_the_task(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    task = await new_task(http, "b1")
    data = b"meeting notes\n" * 20
    created = await attach(http, "b1", task, "notes.txt", data)
    assert created["state"] == "uploading" and "download" not in created
    found = await wait_for_state(http, "b1", task, created["id"], {"clean", "infected", "error"})
    assert found["state"] == "clean", found
    status, body, headers = await fetch(found["download"]["url"])
    assert status == 200 and body == data
    assert "notes.txt" in headers["Content-Disposition"]
    assert headers["X-Content-Type-Options"] == "nosniff"

    # Everyone on the board sees the attachment on the task, with its state.
    outcome = await server.cluster.run("b1", partial(shown_attachments, task_id=task))
    [entry] = outcome.value or []
    assert (entry["name"], entry["size"], entry["state"]) == ("notes.txt", len(data), "clean")

    async with http.get(base("b1", task)) as response:
        listed = await response.json()
    assert [(a["name"], a["state"]) for a in listed["items"]] == [("notes.txt", "clean")]

    # The event log has attachment.added once, though the upload was completed twice.
    again = {"upload_id": created["upload_id"]}
    async with http.post(f"{base('b1', task)}/{created['id']}/complete", json=again) as response:
        assert response.status == 200
    log = event_log_for(open_store("sqlite", data_dir=str(server.settings.data_dir)))
    try:
        added = [e for e in await log.read(0, 10_000) if e.type == "attachment.added"]
    finally:
        await log.close()
    assert [(e.board_id, e.data["attachment"], e.data["size"]) for e in added] == [
        ("b1", created["id"], len(data))
    ]

    # Deleting it removes the bytes: the old download URL fetches nothing.
    async with http.delete(f"{base('b1', task)}/{created['id']}") as response:
        assert response.status == 204
    status, _, _ = await fetch(found["download"]["url"])
    assert status == 404
    outcome = await server.cluster.run("b1", partial(shown_attachments, task_id=task))
    assert outcome.value == []


async def test_an_infected_upload_is_quarantined_and_never_downloadable(
    http: aiohttp.ClientSession, server: RunningServer, tmp_path: Path
) -> None:
    task = await new_task(http, "b1")
    created = await attach(http, "b1", task, "invoice.pdf", eicar(), "application/pdf")
    found = await wait_for_state(http, "b1", task, created["id"], {"clean", "infected", "error"})
    assert found["state"] == "infected", found
    assert "download" not in found
    async with http.get(f"{base('b1', task)}/{created['id']}/versions") as response:
        [version] = (await response.json())["items"]
    assert version["state"] == "infected"

    # Moved out of reach: not among the stored objects, kept in the quarantine directory.
    files = tmp_path / "files"
    # Marked infected first (no URL is handed out from then on), then moved: wait for it.
    moved = files / "quarantine" / created["id"] / created["upload_id"]
    await wait_until(moved.exists, 10, "the move to quarantine")
    assert not (files / "objects" / created["id"] / created["upload_id"]).exists()
    assert (files / "quarantine" / created["id"] / created["upload_id"]).read_bytes() == eicar()

    # Even a correctly signed URL (as one handed out earlier would be) fetches nothing.
    key = load_or_create_key(tmp_path / "keys" / "files-url.key")
    path = f"/v1/files/{created['id']}/{created['upload_id']}"
    query = signed_query(key, "GET", path, expires=int(time.time()) + 60, size=len(eicar()))
    status, body, _ = await fetch(f"http://127.0.0.1:{server.port}{path}?{query}")
    assert status == 404 and eicar() not in body

    outcome = await server.cluster.run("b1", partial(shown_attachments, task_id=task))
    assert [entry["state"] for entry in outcome.value or []] == ["infected"]
    assert EICAR_SIGNATURE  # the signature the test database names


async def test_signed_urls_refuse_tampering_and_expiry(
    http: aiohttp.ClientSession, server: RunningServer, tmp_path: Path
) -> None:
    task = await new_task(http, "b1")
    response = await start_upload(http, "b1", task, "a.txt", 5)
    created = await response.json()
    upload = created["upload"]
    url = upload["url"]
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    other_upload = "0" * 32
    refusals = {
        "a flipped signature": with_query(url, sig=flipped),
        "no signature": with_query(url, sig=""),
        "a larger size": with_query(url, size="4000"),
        "a later expiry": with_query(url, expires=str(int(upload["expires_at"]) + 3600)),
        "another upload's path": url.replace(created["upload_id"], other_upload),
    }
    for what, tampered in refusals.items():
        status, body = await send(upload, b"hello", url=tampered)
        assert (status, problem_name(body)) == (403, "signature-invalid"), what
    # An upload URL is no download URL.
    status, _, _ = await fetch(url)
    assert status == 403

    # A URL past its expiry is refused even though its signature holds.
    key = load_or_create_key(tmp_path / "keys" / "files-url.key")
    path = urlsplit(url).path
    expired = signed_query(key, "PUT", path, expires=int(time.time()) - 1, size=5)
    status, body = await send(
        upload, b"hello", url=f"http://127.0.0.1:{server.port}{path}?{expired}"
    )
    assert (status, problem_name(body)) == (403, "url-expired")

    # Nothing arrived through any of those: the upload cannot be completed.
    async with http.post(f"{base('b1', task)}/{created['id']}/complete") as response:
        assert response.status == 409 and problem_name(await response.json()) == "not-uploaded"
    # The untouched URL works, once.
    assert (await send(upload, b"hello"))[0] == 201
    async with http.post(f"{base('b1', task)}/{created['id']}/complete") as response:
        assert response.status == 200
    status, body = await send(upload, b"HELLO")
    assert status == 409, body  # completed: the URL cannot replace the file


async def test_the_upload_stops_at_the_signed_size_and_limits_hold(
    http: aiohttp.ClientSession, server: RunningServer, tmp_path: Path
) -> None:
    task = await new_task(http, "b1")
    created = await (await start_upload(http, "b1", task, "small.txt", 10)).json()

    async def eleven_bytes() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"x"

    # Streamed without a length: cut off past the signed size, nothing kept.
    async with aiohttp.ClientSession() as raw:
        async with raw.put(created["upload"]["url"], data=eleven_bytes()) as response:
            body = await response.json(content_type=None)
            assert (response.status, problem_name(body)) == (413, "file-too-large")
    status, body = await send(created["upload"], b"y" * 11)  # with a Content-Length
    assert (status, problem_name(body)) == (413, "file-too-large")
    directory = tmp_path / "files" / "objects" / created["id"]
    assert not directory.exists() or not any(directory.iterdir())
    async with http.post(f"{base('b1', task)}/{created['id']}/complete") as response:
        assert response.status == 409

    # A declared size over files_max_bytes, a type not allowed, a name with a path in it.
    too_big = await start_upload(http, "b1", task, "big.bin", 4097, "application/octet-stream")
    assert (too_big.status, problem_name(await too_big.json())) == (413, "file-too-large")
    html = await start_upload(http, "b1", task, "page.html", 5, "text/html")
    assert (html.status, problem_name(await html.json())) == (415, "unsupported-media-type")
    sneaky = await start_upload(http, "b1", task, "../../etc/passwd", 5)
    assert sneaky.status == 201
    name = (await sneaky.json())["name"]
    assert "/" not in name and not name.startswith(".") and name.endswith("passwd")

    # Attachments per task: small.txt and the sneaky one are two; a third fits, a fourth not.
    assert (await start_upload(http, "b1", task, "third.txt", 5)).status == 201
    fourth = await start_upload(http, "b1", task, "fourth.txt", 5)
    assert (fourth.status, problem_name(await fourth.json())) == (409, "too-many-attachments")
    # A new version of a name the task has already does not count again.
    assert (await start_upload(http, "b1", task, "third.txt", 6)).status == 201


async def test_a_scan_that_cannot_run_leaves_the_file_out_of_reach_until_clamd_answers(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here yet: clamd is down
    async with serve(
        "local", tmp_path / "data", files_clamd=f"127.0.0.1:{port}", **FAST_SCANS
    ) as running:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{running.port}") as http:
            task = await new_task(http, "b1")
            created = await attach(http, "b1", task, "report.txt", b"quarterly figures")
            found = await wait_for_state(http, "b1", task, created["id"], {"error", "clean"})
            assert found["state"] == "error" and "download" not in found
            await asyncio.sleep(0.5)  # several retries, all failing
            found = await attachment(http, "b1", task, created["id"])
            assert found["state"] == "error" and "download" not in found
            async with http.get(f"{base('b1', task)}/{created['id']}/versions") as response:
                [version] = (await response.json())["items"]
            assert version["scan_attempts"] >= 2
            # The bytes are there, but unscanned: even a correctly signed URL gets nothing.
            key = load_or_create_key(tmp_path / "data" / "keys" / "files-url.key")
            path = f"/v1/files/{created['id']}/{created['upload_id']}"
            query = signed_query(key, "GET", path, expires=int(time.time()) + 60, size=17)
            status, body, _ = await fetch(f"http://127.0.0.1:{running.port}{path}?{query}")
            assert status == 404 and b"quarterly" not in body

            clamd = ClamdServer(tmp_path / "clamd", port)
            clamd.start()
            try:
                found = await wait_for_state(http, "b1", task, created["id"], {"clean"})
                status, body, _ = await fetch(found["download"]["url"])
                assert status == 200 and body == b"quarterly figures"
            finally:
                clamd.stop()


async def test_scans_left_pending_are_found_again_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    slow = {
        **FAST_SCANS,
        "files_scan_retry_seconds": 3600.0,
        "files_scan_max_retry_seconds": 3600.0,
    }
    async with serve("local", data, files_clamd=f"127.0.0.1:{port}", **slow) as running:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{running.port}") as http:
            task = await new_task(http, "b1")
            created = await attach(http, "b1", task, "plan.txt", b"the plan")
            found = await wait_for_state(http, "b1", task, created["id"], {"error", "clean"})
            assert found["state"] == "error"
    clamd = ClamdServer(tmp_path / "clamd", port)
    clamd.start()
    try:
        # A gateway that starts scans at once what an earlier one left (not in an hour).
        async with serve("local", data, files_clamd=f"127.0.0.1:{port}", **FAST_SCANS) as again:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{again.port}") as http:
                found = await wait_for_state(http, "b1", task, created["id"], {"clean"})
                assert found["state"] == "clean"
    finally:
        clamd.stop()


async def test_collaborators_see_the_attachment_arrive_and_get_scanned(
    backend: str, tmp_path: Path, cluster_name: str, clamd: ClamdServer
) -> None:
    """In-process and on real Ray: the task's entry changes as the scan decides."""
    async with serve(
        backend,
        tmp_path,
        cluster_name=cluster_name,
        files_clamd=f"127.0.0.1:{clamd.port}",
        **FAST_SCANS,
    ) as running:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{running.port}") as http:
            task = await new_task(http, "b2")
            async with BoardClient(running.url, "b2", ack=False) as watcher:
                await watcher.synced()
                created = await attach(http, "b2", task, "photo.png", b"\x89PNG", "image/png")

                def shown() -> list[str]:
                    value = watcher.doc.get("tasks", type=Map).get(task)
                    entries = value.get("attachments") if isinstance(value, Map) else None
                    return [str(e.get("state")) for e in entries] if entries is not None else []

                await wait_until(lambda: shown() == ["clean"], 30, "the clean state on the task")
                found = await attachment(http, "b2", task, created["id"])
                assert found["state"] == "clean" and "download" in found
