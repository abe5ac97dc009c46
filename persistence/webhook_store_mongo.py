"""Webhook endpoints and deliveries in MongoDB, beside the boards (``webhook_*`` collections).

Writes are journaled (``j: true``) so a recorded delivery survives the server's crash. A
claim is one ``find_one_and_update`` per delivery, atomic on the server, so any number of
delivery loops share the collection without sending one attempt twice. The endpoint count
per project is checked before the insert: two gateways adding at the same moment may pass
the bound by one each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    ReplaceOne,
    ReturnDocument,
    WriteConcern,
)
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from persistence.webhook_store import Delivery, Endpoint, Sealer
from persistence.webhook_store_sqlite import (
    delivery_document,
    delivery_from,
    endpoint_document,
    endpoint_from,
)

Document = dict[str, Any]
DEFAULT_DATABASE = "boardcast"


class MongoWebhookStore:
    """The webhook store on MongoDB (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        sealer: Sealer | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        milliseconds = int(timeout_seconds * 1000)
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            connect=False,
            serverSelectionTimeoutMS=milliseconds,
            connectTimeoutMS=milliseconds,
            socketTimeoutMS=milliseconds,
        )
        database = self._client.get_default_database(DEFAULT_DATABASE).with_options(
            write_concern=WriteConcern(j=True)
        )
        self._endpoints: AsyncCollection[Document] = database["webhook_endpoints"]
        self._deliveries: AsyncCollection[Document] = database["webhook_deliveries"]
        self._sealer = sealer or Sealer()
        self._indexed = False

    async def _ready(self) -> None:
        if self._indexed:
            return
        await self._endpoints.create_index([("project", ASCENDING), ("created_at", ASCENDING)])
        await self._deliveries.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self._deliveries.create_index(
            [("endpoint_id", ASCENDING), ("created_at", DESCENDING)]
        )
        self._indexed = True

    def _endpoint_doc(self, endpoint: Endpoint) -> Document:
        doc = endpoint_document(endpoint, self._sealer)
        doc["_id"] = endpoint.id
        return doc

    def _delivery_doc(self, delivery: Delivery) -> Document:
        doc = delivery_document(delivery, self._sealer)
        doc["_id"] = delivery.id
        return doc

    def _endpoint(self, doc: Document) -> Endpoint:
        return endpoint_from(doc, self._sealer)

    def _delivery(self, doc: Document) -> Delivery:
        return delivery_from(doc, self._sealer)

    # -- endpoints -------------------------------------------------------------------------

    async def add_endpoint(self, endpoint: Endpoint, *, max_per_project: int) -> bool:
        """Store a new endpoint unless its project is full."""
        await self._ready()
        count = await self._endpoints.count_documents({"project": endpoint.project})
        if count >= max_per_project:
            return False
        await self._endpoints.insert_one(self._endpoint_doc(endpoint))
        return True

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None."""
        doc = await self._endpoints.find_one({"_id": str(endpoint_id)})
        return self._endpoint(doc) if doc else None

    async def list_endpoints(self, project: str) -> list[Endpoint]:
        """A project's endpoints, oldest first."""
        cursor = self._endpoints.find({"project": str(project)}).sort(
            [("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [self._endpoint(doc) async for doc in cursor]

    async def endpoints_for(self, projects: Sequence[str]) -> list[Endpoint]:
        """The enabled endpoints of these projects."""
        wanted = sorted({str(project) for project in projects})
        if not wanted:
            return []
        cursor = self._endpoints.find({"project": {"$in": wanted}, "enabled": True})
        return [self._endpoint(doc) async for doc in cursor]

    async def save_endpoint(self, endpoint: Endpoint) -> None:
        """Replace the endpoint; pause or resume its deliveries with it."""
        await self._endpoints.replace_one({"_id": endpoint.id}, self._endpoint_doc(endpoint))
        if endpoint.enabled:
            await self._deliveries.update_many(
                {"endpoint_id": endpoint.id, "status": "paused"},
                {"$set": {"status": "pending", "next_attempt_at": endpoint.updated_at}},
            )
        else:
            await self._deliveries.update_many(
                {"endpoint_id": endpoint.id, "status": "pending"}, {"$set": {"status": "paused"}}
            )

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint and its deliveries."""
        gone = await self._endpoints.delete_one({"_id": str(endpoint_id)})
        await self._deliveries.delete_many({"endpoint_id": str(endpoint_id)})
        return gone.deleted_count > 0

    async def record_health(
        self, endpoint_id: str, *, ok: bool, at: float, delivery_failed: bool = False
    ) -> Endpoint | None:
        """Note an attempt's outcome on the endpoint (one atomic update each)."""
        key = {"_id": str(endpoint_id)}
        if ok:
            doc = await self._endpoints.find_one_and_update(
                key,
                {"$set": {"failing_since": None, "failed_in_row": 0}},
                return_document=ReturnDocument.AFTER,
            )
            return self._endpoint(doc) if doc else None
        await self._endpoints.update_one(
            {**key, "failing_since": None}, {"$set": {"failing_since": at}}
        )
        doc = await self._endpoints.find_one_and_update(
            key,
            {"$inc": {"failed_in_row": 1 if delivery_failed else 0}},
            return_document=ReturnDocument.AFTER,
        )
        return self._endpoint(doc) if doc else None

    async def disable_endpoint(self, endpoint_id: str, *, reason: str, at: float) -> bool:
        """Disable the endpoint if enabled, pausing its deliveries."""
        found = await self._endpoints.update_one(
            {"_id": str(endpoint_id), "enabled": True},
            {"$set": {"enabled": False, "disabled_reason": reason, "updated_at": at}},
        )
        if not found.modified_count:
            return False
        await self._deliveries.update_many(
            {"endpoint_id": str(endpoint_id), "status": "pending"}, {"$set": {"status": "paused"}}
        )
        return True

    # -- deliveries ------------------------------------------------------------------------

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Record the deliveries not recorded yet."""
        if not deliveries:
            return 0
        await self._ready()
        try:
            result = await self._deliveries.insert_many(
                [self._delivery_doc(d) for d in deliveries], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != 11000 for error in errors):
                raise
            return int(exc.details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def claim_due(self, now: float, *, lease: float, limit: int) -> list[Delivery]:
        """Take due pending deliveries, postponing each by ``lease``."""
        claimed: list[Delivery] = []
        for _ in range(limit):
            doc = await self._deliveries.find_one_and_update(
                {"status": "pending", "next_attempt_at": {"$lte": now}},
                {"$set": {"next_attempt_at": now + lease}},
                sort=[("next_attempt_at", ASCENDING), ("created_at", ASCENDING)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claimed.append(self._delivery(doc))
        return sorted(claimed, key=lambda d: (d.created_at, d.id))

    async def save_delivery(self, delivery: Delivery) -> None:
        """Replace the delivery."""
        await self._deliveries.replace_one({"_id": delivery.id}, self._delivery_doc(delivery))

    async def save_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Replace the deliveries, in one bulk write."""
        if deliveries:
            await self._deliveries.bulk_write(
                [ReplaceOne({"_id": d.id}, self._delivery_doc(d)) for d in deliveries],
                ordered=False,
            )

    async def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None:
        """One delivery of the endpoint."""
        doc = await self._deliveries.find_one(
            {"_id": str(delivery_id), "endpoint_id": str(endpoint_id)}
        )
        return self._delivery(doc) if doc else None

    async def list_deliveries(
        self, endpoint_id: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[Delivery]:
        """The endpoint's deliveries, newest first."""
        query: Document = {"endpoint_id": str(endpoint_id)}
        if before is not None:
            at, last = float(before[0]), str(before[1])
            query["$or"] = [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": last}}]
        cursor = (
            self._deliveries.find(query)
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [self._delivery(doc) async for doc in cursor]

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()
