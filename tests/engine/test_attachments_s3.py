"""Task attachments on S3: moto's server on a loopback port, boto3's pre-signed URLs, real clamd.

moto checks neither the signature nor the expiry of a pre-signed URL (real S3 does): those
checks are tested on the embedded store (test_attachments.py). What is tested here is what
Boardcast does with S3: a versioned bucket, uploads and downloads through pre-signed URLs,
every version kept and listed, quarantine out of the attachment's key, and the size check
when an upload is completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest

from tests.conftest import RunningServer, serve
from tests.engine.attachment_flow import attach, base, fetch, new_task, send, start_upload
from tests.engine.attachment_flow import wait_for_state as wait
from tests.file_services import ClamdServer, MotoServer, eicar

BUCKET = "boardcast-attachments"
CREDENTIALS = {"files_s3_access_key_id": "testing", "files_s3_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    server = ClamdServer(tmp_path_factory.mktemp("clamd-s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def server(
    tmp_path: Path, moto: MotoServer, clamd: ClamdServer
) -> AsyncIterator[RunningServer]:
    async with serve(
        "local",
        tmp_path,
        files_store="s3",
        files_s3_bucket=BUCKET,
        files_s3_endpoint_url=moto.url,
        files_clamd=f"127.0.0.1:{clamd.port}",
        files_scan_poll_seconds=0.05,
        **CREDENTIALS,
    ) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


def bucket_client(moto: MotoServer) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def stored_versions(moto: MotoServer, key: str) -> list[dict[str, Any]]:
    client = bucket_client(moto)
    page = await asyncio.to_thread(client.list_object_versions, Bucket=BUCKET, Prefix=key)
    return [v for v in page.get("Versions", []) if v["Key"] == key]


async def test_upload_then_download_through_presigned_urls_on_a_versioned_bucket(
    http: aiohttp.ClientSession, server: RunningServer, moto: MotoServer
) -> None:
    client = bucket_client(moto)
    versioning = await asyncio.to_thread(client.get_bucket_versioning, Bucket=BUCKET)
    assert versioning["Status"] == "Enabled"

    task = await new_task(http, "b1")
    created = await attach(http, "b1", task, "diagram.png", b"\x89PNG not really", "image/png")
    assert created["upload"]["url"].startswith(moto.url)  # straight to S3, not the gateway
    found = await wait(http, "b1", task, created["id"], {"clean", "infected", "error"})
    assert found["state"] == "clean", found
    status, body, _ = await fetch(found["download"]["url"])
    assert status == 200 and body == b"\x89PNG not really"


async def test_two_uploads_of_one_name_are_two_listed_versions(
    http: aiohttp.ClientSession, server: RunningServer, moto: MotoServer
) -> None:
    task = await new_task(http, "b1")
    first = await attach(http, "b1", task, "spec.txt", b"version one")
    await wait(http, "b1", task, first["id"], {"clean"})
    second = await attach(http, "b1", task, "spec.txt", b"version two, longer")
    assert second["id"] == first["id"]  # the same name is the same attachment
    found = await wait(http, "b1", task, first["id"], {"clean"})
    async with http.get(f"{base('b1', task)}/{first['id']}/versions") as response:
        listed = (await response.json())["items"]
    assert [v["size"] for v in listed] == [len(b"version one"), len(b"version two, longer")]
    assert len({v["version"] for v in listed}) == 2
    # The bucket holds both, and the download is of the newest.
    in_bucket = await stored_versions(moto, f"attachments/{first['id']}")
    assert {v["VersionId"] for v in in_bucket} == {v["version"] for v in listed}
    status, body, _ = await fetch(found["download"]["url"])
    assert status == 200 and body == b"version two, longer"


async def test_an_infected_version_leaves_the_attachment_key(
    http: aiohttp.ClientSession, server: RunningServer, moto: MotoServer
) -> None:
    task = await new_task(http, "b1")
    created = await attach(http, "b1", task, "tool.zip", eicar(), "application/zip")
    found = await wait(http, "b1", task, created["id"], {"clean", "infected", "error"})
    assert found["state"] == "infected" and "download" not in found
    # Marked infected first (no URL is handed out from then on), then moved: wait for it.
    key = f"attachments/{created['id']}"
    for _ in range(200):
        if not await stored_versions(moto, key):
            break
        await asyncio.sleep(0.05)
    assert await stored_versions(moto, key) == []
    quarantined = await stored_versions(moto, f"quarantine/attachments/{created['id']}")
    assert len(quarantined) == 1


async def test_an_upload_larger_than_declared_is_refused_when_completed(
    http: aiohttp.ClientSession, server: RunningServer, moto: MotoServer
) -> None:
    task = await new_task(http, "b1")
    response = await start_upload(http, "b1", task, "short.txt", 5)
    created = await response.json()
    status, _ = await send(created["upload"], b"more than five bytes")  # moto stores it
    assert status == 200
    async with http.post(f"{base('b1', task)}/{created['id']}/complete") as done:
        body = await done.json()
        assert (done.status, body["type"]) == (422, "urn:boardcast:problem:size-mismatch")
    # The oversized bytes are gone, and nothing became downloadable.
    assert await stored_versions(moto, f"attachments/{created['id']}") == []
    async with http.get(f"{base('b1', task)}/{created['id']}") as response:
        shown = await response.json()
    assert shown["state"] == "uploading" and "download" not in shown
