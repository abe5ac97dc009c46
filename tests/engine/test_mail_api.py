"""E-mail over REST on a real server: a person's own preferences, validated and bounded, and
the administrators' dead letters and counts; a dead letter retried through the API reaches
the real SMTP server. Hypothesis sends arbitrary preference bodies without a server error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from persistence.mail_store_factory import open_mail_store
from persistence.notification_store import Notification
from persistence.notification_store_sqlite import FILENAME as NOTIFICATIONS_FILE
from persistence.notification_store_sqlite import SqliteNotificationStore
from tests.auth_helpers import auth_server
from tests.conftest import serve
from tests.smtp_server import smtp_server
from workers.mail import MailSettings, MailWorker
from workers.mail_smtp import SmtpSender, SmtpSettings

PREFERENCES = "/v1/me/notification-preferences"
DEAD = "/v1/admin/mail/dead-letters"


async def test_each_person_reads_and_replaces_their_own_preferences(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        ada = await server.add_person("ada")
        bob = await server.add_person("bob")
        assert (await server.call("GET", PREFERENCES, None))[0] == 401
        status, defaults = await server.call("GET", PREFERENCES, ada)
        assert status == 200
        assert defaults["email"] is True and defaults["mode"] == "immediate"
        assert defaults["quiet_hours"] is None and "assigned" in defaults["kinds"]
        chosen = {
            "kinds": ["mentioned", "assigned", "mentioned"],
            "mode": "daily",
            "digest_hour": 9,
            "quiet_hours": {"start": 22, "end": 7},
            "time_zone": "Europe/Paris",
        }
        status, saved = await server.call("PUT", PREFERENCES, ada, chosen)
        assert status == 200, saved
        assert saved["kinds"] == ["assigned", "mentioned"]  # known order, no repeats
        assert (await server.call("GET", PREFERENCES, ada))[1] == saved
        assert (await server.call("GET", PREFERENCES, bob))[1]["mode"] == "immediate"
        status, saved = await server.call(
            "PUT", PREFERENCES, ada, {"quiet_hours": {"start": 5, "end": 5}}
        )
        assert status == 200 and saved["quiet_hours"] is None  # the same hour twice: none
        # PUT replaces: what is left out goes back to its default.
        status, saved = await server.call("PUT", PREFERENCES, ada, {"email": False})
        assert status == 200 and saved["email"] is False and saved["mode"] == "immediate"


async def test_preferences_are_validated_and_bounded(tmp_path: Path) -> None:
    async with (
        serve("local", tmp_path, mail_max_preferences_bytes=512) as server,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{server.port}{PREFERENCES}"
        refusals: list[Any] = [
            [],
            {"email": "yes"},
            {"kinds": ["assigned", "exploded"]},
            {"kinds": "assigned"},
            {"kinds": ["moved"] * 20},
            {"mode": "weekly"},
            {"digest_hour": 24},
            {"digest_hour": True},
            {"quiet_hours": {"start": 22}},
            {"quiet_hours": {"start": -1, "end": 5}},
            {"quiet_hours": {"start": 1, "end": 5, "x": 1}},
            {"time_zone": "Mars/Olympus"},
            {"time_zone": "../../etc/passwd"},
            {"time_zone": "Europe/" + "x" * 100},
            {"colour": "blue"},
        ]
        for body in refusals:
            async with http.put(url, json=body) as response:
                problem = await response.json(content_type=None)
                assert response.status == 422, (body, problem)
                assert problem["type"] == "urn:boardcast:problem:validation"
        async with http.put(url, json={"kinds": ["assigned"], "pad": "x" * 600}) as response:
            assert response.status == 413
            assert (await response.json())["type"] == "urn:boardcast:problem:too-large"
        async with http.put(url, data=b"{", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400


async def test_dead_letters_are_for_administrators_and_a_retry_sends_the_email(
    tmp_path: Path,
) -> None:
    async with auth_server(tmp_path) as server:
        root = await server.add_person("root", admin=True)
        ada = await server.add_person("ada")
        for path in (DEAD, "/v1/admin/mail/stats"):
            assert (await server.call("GET", path, ada))[0] == 403
            assert (await server.call("GET", path, None))[0] == 401
        assert (await server.call("POST", f"{DEAD}/x/retry", ada))[0] == 403

        data_dir = server.server.settings.data_dir
        notifications = SqliteNotificationStore(str(Path(data_dir) / NOTIFICATIONS_FILE))
        store = open_mail_store(server.server.settings.store, data_dir=data_dir)
        with smtp_server() as sink:
            sink.answers = ["550 5.1.1 Mailbox unavailable"] * 3
            worker = MailWorker(
                notifications,
                store,
                SmtpSender(SmtpSettings(host="127.0.0.1", port=sink.port, timeout_seconds=5)),
                lambda user: _address(user, {ada.user_id: "ada@example.com"}),
                MailSettings(retry_jitter=0.0),
            )
            try:
                await notifications.add(
                    [
                        Notification(f"n{n}", ada.user_id, "assigned", f"task {n}", time.time())
                        for n in range(3)
                    ]
                )
                await worker.run_once()
                assert sink.messages() == []

                status, stats = await server.call("GET", "/v1/admin/mail/stats", root)
                assert status == 200 and stats["jobs"]["dead"] == 3 and stats["cursor"] == 3
                status, first = await server.call("GET", f"{DEAD}?limit=2", root)
                assert status == 200 and len(first["items"]) == 2 and first["next_cursor"]
                status, rest = await server.call(
                    "GET", f"{DEAD}?limit=2&cursor={first['next_cursor']}", root
                )
                assert status == 200 and len(rest["items"]) == 1 and rest["next_cursor"] is None
                letters = first["items"] + rest["items"]
                assert {letter["user"] for letter in letters} == {ada.user_id}
                assert all(letter["attempts"][0]["code"] == 550 for letter in letters)
                for bad in ("?limit=0", "?limit=201", "?limit=x", "?cursor=%%%", "?cursor=WzFd"):
                    assert (await server.call("GET", DEAD + bad, root))[0] == 400, bad

                chosen = letters[0]
                status, retried = await server.call("POST", f"{DEAD}/{chosen['id']}/retry", root)
                assert status == 202 and retried["status"] == "pending"
                assert (await server.call("POST", f"{DEAD}/{chosen['id']}/retry", root))[0] == 404
                assert (await server.call("POST", f"{DEAD}/nope/retry", root))[0] == 404
                await worker.run_once()
                (mail,) = sink.messages()
                assert mail.recipients == ["ada@example.com"]
                assert mail.message_id == f"<{chosen['id']}@boardcast>"
                status, stats = await server.call("GET", "/v1/admin/mail/stats", root)
                assert stats["jobs"]["dead"] == 2 and stats["jobs"]["sent"] == 1
            finally:
                await store.close()
                await notifications.close()


async def _address(user: str, book: dict[str, str]) -> str | None:
    return book.get(user)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
_hours = st.one_of(st.integers(-2, 26), _json)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "email": _json,
            "kinds": st.one_of(_json, st.lists(st.sampled_from(["assigned", "moved", "x", ""]))),
            "mode": st.one_of(_json, st.sampled_from(["immediate", "hourly", "daily"])),
            "digest_hour": _hours,
            "quiet_hours": st.one_of(
                _json, st.fixed_dictionaries({}, optional={"start": _hours, "end": _hours})
            ),
            "time_zone": st.one_of(
                _json, st.sampled_from(["UTC", "Asia/Tokyo", "Etc/GMT+5", "utc", "", "/"])
            ),
        },
    ),
)


async def test_hostile_preferences_never_make_a_server_error(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}{PREFERENCES}"
        seen: list[str] = []

        @settings(
            max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(body=_bodies)
        @example(body={"quiet_hours": {"start": 0, "end": 0}})
        @example(body={"time_zone": "\x00"})
        @example(body={"quiet_hours": {"end": 3.0, "start": 11}, "digest_hour": 14.0})
        def fuzz(body: Any) -> None:
            seen.append(json.dumps(body))

        fuzz()
        for raw in seen:
            async with http.put(
                url, data=raw, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status in {200, 400, 422}, (raw, response.status)
                if raw == '{"quiet_hours": {"end": 3.0, "start": 11}, "digest_hour": 14.0}':
                    assert response.status == 200  # schemathesis found 3.0 refused
                answer = await response.json(content_type=None)
                if response.status >= 400:
                    assert answer["type"].startswith("urn:boardcast:problem:")
                else:
                    assert set(answer) >= {"email", "kinds", "mode", "time_zone"}
        async with http.get(url) as response:
            assert response.status == 200
