"""The Standard Webhooks format and the retry schedule, checked without sockets.

Signatures are verified with the ``standardwebhooks`` library receivers use (not with our
own code), including both signatures of a rotation; a changed body, id or timestamp fails.
"""

from __future__ import annotations

import base64
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from persistence.event_log import LoggedEvent
from workers.webhooks_retry import Outcome, RetryPolicy, classify, parse_schedule
from workers.webhooks_signing import (
    encode_body,
    message_id,
    new_secret,
    payload,
    secret_key,
    signed_headers,
)


def test_secrets_are_whsec_and_at_least_24_random_bytes() -> None:
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_") and len(secret_key(secret)) >= 24


@given(
    body=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
    event_id=st.text(min_size=1, max_size=60),
)
def test_the_library_accepts_our_signature_and_refuses_any_change(
    body: dict[str, str], event_id: str
) -> None:
    secret = new_secret()
    msg_id = message_id("wh_1", event_id)
    text = encode_body(body)
    now = int(time.time())
    headers = signed_headers([secret], msg_id, now, text)
    assert Webhook(secret).verify(text, headers) == body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(text + " ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(text, {**headers, "webhook-id": msg_id + "x"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(text, {**headers, "webhook-timestamp": str(now - 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(text, headers)


def test_an_old_timestamp_is_refused_by_receivers() -> None:
    secret = new_secret()
    stale = int(time.time()) - 3600
    headers = signed_headers([secret], "msg_x", stale, "{}")
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify("{}", headers)


def test_during_a_rotation_either_secret_verifies() -> None:
    new, old = new_secret(), new_secret()
    headers = signed_headers([new, old], "msg_x", int(time.time()), '{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify('{"a":1}', headers)


def test_the_webhook_id_is_stable_per_event_and_endpoint() -> None:
    assert message_id("wh_1", "b:1:0") == message_id("wh_1", "b:1:0")
    assert message_id("wh_1", "b:1:0") != message_id("wh_2", "b:1:0")
    assert message_id("wh_1", "b:1:0") != message_id("wh_1", "b:1:1")
    assert "b:1:0" not in message_id("wh_1", "b:1:0")


def test_the_payload_has_type_timestamp_and_the_event_with_its_board_and_project() -> None:
    event = LoggedEvent(
        offset=7,
        id="b1:3:0",
        board_id="b1",
        project="p1",
        type="task.moved",
        data={"board_id": "b1", "task_id": "t1", "from_column": "a", "to_column": "b"},
        actor=None,
        at=0.0,
    )
    assert payload(event) == {
        "type": "task.moved",
        "timestamp": "1970-01-01T00:00:00Z",
        "data": {
            "board_id": "b1",
            "project_id": "p1",
            "task_id": "t1",
            "from_column": "a",
            "to_column": "b",
        },
    }


def test_the_default_schedule_spans_about_a_day() -> None:
    policy = RetryPolicy()
    assert policy.schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert 24 * 3600 < sum(policy.schedule) < 30 * 3600


@given(made=st.integers(0, 10), seed=st.integers(0, 2**32))
def test_jitter_stays_within_its_share_and_the_schedule_ends(made: int, seed: int) -> None:
    policy = RetryPolicy(jitter=0.1)
    wait = policy.next_wait(made, random.Random(seed))
    if made >= policy.attempts:
        assert wait is None
    else:
        base = policy.schedule[made]
        assert wait is not None and base * 0.9 <= wait <= base * 1.1


def test_outcomes() -> None:
    assert classify(200) is Outcome.DELIVERED and classify(299) is Outcome.DELIVERED
    assert classify(410) is Outcome.GONE
    for status in (None, 199, 301, 400, 404, 429, 500, 503):
        assert classify(status) is Outcome.RETRY


@pytest.mark.parametrize("spec", ["", "a,b", "-1", ",".join(["1"] * 101)])
def test_a_bad_schedule_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(spec)


def test_secret_key_refuses_other_formats() -> None:
    with pytest.raises(ValueError):
        secret_key("sk_" + base64.b64encode(b"x" * 24).decode())


def test_the_verification_recipe_in_the_docs_accepts_our_calls() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    (recipe,) = re.findall(r"```python\n(import base64.*?)```", doc, re.S)
    namespace: dict[str, Any] = {}
    exec(recipe, namespace)
    secret, body = new_secret(), '{"type":"task.created"}'
    headers = signed_headers([secret, new_secret()], "msg_1", int(time.time()), body)
    assert namespace["verify"](secret, headers, body.encode())
    assert not namespace["verify"](new_secret(), headers, body.encode())
    assert not namespace["verify"](secret, headers, body.encode() + b" ")
    stale = signed_headers([secret], "msg_1", int(time.time()) - 600, body)
    assert not namespace["verify"](secret, stale, body.encode())
