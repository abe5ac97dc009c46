"""Attachment versions in an S3 bucket with versioning on, through boto3.

Each attachment is one key (``attachments/<id>``); every upload of it is a new S3 version,
all kept and listable. An upload is tied to the version it made by a metadata header the
pre-signed PUT requires (``x-amz-meta-upload``), so completing one upload never picks up
another's bytes. Quarantine copies the version under ``quarantine/`` and deletes that
version from the attachment's key, so no URL for the key reaches it any more.

boto3 is synchronous: every call runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from persistence.files import PresignedRequest, StoredObject, content_disposition

T = TypeVar("T")
QUARANTINE_PREFIX = "quarantine/"
UPLOAD_METADATA = "upload"
READ_CHUNK_BYTES = 64 * 1024
_MISSING = {"404", "NoSuchKey", "NoSuchVersion", "NotFound"}


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where the bucket is and how to reach it (docs/settings.md, ``files_s3_*``)."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0


class S3FileStore:
    """A :class:`~persistence.files.FileStore` on S3 (or anything speaking its API)."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id or None,
            aws_secret_access_key=settings.secret_access_key or None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=settings.timeout_seconds,
                read_timeout=settings.timeout_seconds,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    async def _call(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        return await asyncio.to_thread(function, **kwargs)

    async def setup(self) -> None:
        """Create the bucket if it is not there, and turn versioning on."""
        try:
            await self._call(self._client.head_bucket, Bucket=self.bucket)
        except ClientError as error:
            if _code(error) not in _MISSING:
                raise
            options: dict[str, Any] = {"Bucket": self.bucket}
            if self.settings.region != "us-east-1":
                options["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
            await self._call(self._client.create_bucket, **options)
        await self._call(
            self._client.put_bucket_versioning,
            Bucket=self.bucket,
            VersioningConfiguration={"Status": "Enabled"},
        )

    async def close(self) -> None:
        """Close the client's connection pool."""
        await asyncio.to_thread(self._client.close)

    async def presign_upload(
        self, key: str, upload: str, *, size: int, content_type: str, expires_in: float
    ) -> PresignedRequest:
        """A pre-signed PUT of ``key``; the client sends the headers given with it."""
        headers = {"Content-Type": content_type, f"x-amz-meta-{UPLOAD_METADATA}": upload}
        url = await self._call(
            self._client.generate_presigned_url,
            ClientMethod="put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ContentType": content_type,
                "ContentLength": size,
                "Metadata": {UPLOAD_METADATA: upload},
            },
            ExpiresIn=int(expires_in),
        )
        return PresignedRequest("PUT", url, headers, _expiry(expires_in))

    async def presign_download(
        self, key: str, version: str, *, filename: str, expires_in: float
    ) -> PresignedRequest:
        """A pre-signed GET of that one version, saved under ``filename``."""
        url = await self._call(
            self._client.generate_presigned_url,
            ClientMethod="get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "VersionId": version,
                "ResponseContentDisposition": content_disposition(filename),
            },
            ExpiresIn=int(expires_in),
        )
        return PresignedRequest("GET", url, {}, _expiry(expires_in))

    async def stat(self, key: str, upload: str) -> StoredObject | None:
        """The version whose upload header names ``upload``, newest first."""
        for stored in reversed(await self.versions(key)):
            try:
                head = await self._call(
                    self._client.head_object, Bucket=self.bucket, Key=key, VersionId=stored.version
                )
            except ClientError as error:
                if _code(error) in _MISSING:
                    continue
                raise
            if head.get("Metadata", {}).get(UPLOAD_METADATA) == upload:
                return StoredObject(
                    key, stored.version, int(head["ContentLength"]), stored.modified_at
                )
        return None

    async def read(self, key: str, version: str) -> AsyncIterator[bytes]:
        """The version's bytes, read from the response body in chunks."""
        found = await self._call(
            self._client.get_object, Bucket=self.bucket, Key=key, VersionId=version
        )
        body = found["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(body.close)

    async def versions(self, key: str) -> list[StoredObject]:
        """Every version of ``key`` (no delete markers), oldest first."""
        found: list[StoredObject] = []
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key}
        for _page in range(10_000):  # a bound: 10 million versions of one attachment
            page = await self._call(self._client.list_object_versions, **options)
            for version in page.get("Versions", []):
                if version["Key"] == key:
                    found.append(
                        StoredObject(
                            key,
                            version["VersionId"],
                            int(version["Size"]),
                            version["LastModified"].timestamp(),
                        )
                    )
            if not page.get("IsTruncated"):
                break
            options["KeyMarker"] = page["NextKeyMarker"]
            options["VersionIdMarker"] = page["NextVersionIdMarker"]
        return sorted(found, key=lambda item: item.modified_at)

    async def quarantine(self, key: str, version: str) -> None:
        """Copy the version under ``quarantine/``, then delete it from ``key`` for good."""
        await self._call(
            self._client.copy_object,
            Bucket=self.bucket,
            Key=QUARANTINE_PREFIX + key,
            CopySource={"Bucket": self.bucket, "Key": key, "VersionId": version},
            MetadataDirective="COPY",
        )
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=key, VersionId=version)

    async def discard(self, key: str, version: str) -> None:
        """Delete one version of ``key`` for good."""
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=key, VersionId=version)

    async def delete(self, key: str) -> None:
        """Delete every version (and delete marker) of ``key``."""
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key}
        for _page in range(10_000):
            page = await self._call(self._client.list_object_versions, **options)
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
                if item["Key"] == key
            ]
            for start in range(0, len(doomed), 1000):
                await self._call(
                    self._client.delete_objects,
                    Bucket=self.bucket,
                    Delete={"Objects": doomed[start : start + 1000], "Quiet": True},
                )
            if not page.get("IsTruncated"):
                break
            options["KeyMarker"] = page["NextKeyMarker"]
            options["VersionIdMarker"] = page["NextVersionIdMarker"]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _expiry(expires_in: float) -> float:
    return float(int(time.time() + expires_in))
