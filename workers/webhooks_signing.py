"""Standard Webhooks signing: secrets, message ids, the payload and the signed headers.

Sans-I/O: every function here is pure (the clock and the random bytes are arguments or
come from :mod:`secrets`), so the format is unit-tested against the ``standardwebhooks``
library receivers use. The format (https://www.standardwebhooks.com):

* secret: ``whsec_<base64 of 32 random bytes>``; the HMAC key is the decoded bytes;
* ``webhook-id``: the same on every attempt of one event to one endpoint;
* ``webhook-timestamp``: unix seconds of this attempt (receivers refuse old ones: replays);
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, several
  separated by spaces while a rotated secret is still honoured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from persistence.event_log import LoggedEvent

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh endpoint secret, ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def message_id(endpoint_id: str, event_id: str) -> str:
    """The ``webhook-id`` of one event sent to one endpoint: stable, opaque, and unique.

    Derived, not drawn, so recording the same (endpoint, event) twice finds the same
    delivery; hashed, so it does not show board ids to the receiver.
    """
    digest = hashlib.sha256(f"{endpoint_id}\x00{event_id}".encode()).digest()[:18]
    return "msg_" + base64.urlsafe_b64encode(digest).decode("ascii")


def payload(event: LoggedEvent) -> dict[str, Any]:
    """The JSON body of an event: its type, when it happened, and its fields."""
    data = {**event.data, "board_id": event.board_id, "project_id": event.project}
    if event.actor is not None:
        data.setdefault("actor", event.actor)
    return {
        "type": event.type,
        "timestamp": datetime.fromtimestamp(event.at, UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def encode_body(body: Mapping[str, Any]) -> str:
    """The body as sent (and signed): compact JSON, keys in a fixed order."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One ``v1,<base64>`` signature of ``body`` under ``secret``."""
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secrets_in_use: Iterable[str], msg_id: str, timestamp: int, body: str
) -> dict[str, str]:
    """The headers of one attempt, signed with every secret still in use (newest first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, msg_id, timestamp, body) for secret in secrets_in_use
        ),
        "content-type": "application/json",
        "user-agent": "Boardcast-Webhooks/1",
    }
