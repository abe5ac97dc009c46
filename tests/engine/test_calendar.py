"""Calendar feeds: a secret URL per project or person, parsed as a calendar app would."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import icalendar

from tests.conftest import serve


async def test_a_project_feed_lists_due_tasks_and_stops_when_revoked(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            async with http.post("/v1/projects", json={"name": "Launch"}) as response:
                project = await response.json()
            async with http.post(
                f"/v1/projects/{project['id']}/boards", json={"name": "Sprint"}
            ) as response:
                board = await response.json()
            tasks = [
                {"title": "Ship, finally; v2", "column": "To do", "due": "2026-12-24",
                 "description": "line one\nline two", "assignees": ["ann"], "labels": ["ops"]},
                {"title": "Write the notes", "column": "To do", "due": "2026-12-20",
                 "assignees": ["bob"]},
                {"title": "Someday", "column": "To do"},
            ]  # fmt: skip
            async with http.post(
                f"/v1/boards/{board['id']}/tasks/bulk", json={"tasks": tasks}
            ) as response:
                version = (await response.json())["version"]
            async with http.get(
                "/v1/tasks", params={"board": board["id"], "min_version": str(version)}
            ):
                pass

            async with http.post(f"/v1/projects/{project['id']}/feeds") as response:
                assert response.status == 201, await response.text()
                feed = await response.json()
            assert feed["url"].startswith("/v1/feeds/") and feed["url"].endswith(".ics")
            async with http.get(feed["url"]) as response:
                assert response.status == 200
                assert response.content_type == "text/calendar"
                parsed = icalendar.Calendar.from_ical(await response.read())
            events = sorted(parsed.walk("VEVENT"), key=lambda event: str(event["SUMMARY"]))
            assert [str(event["SUMMARY"]) for event in events] == [
                "Ship, finally; v2",
                "Write the notes",
            ]
            assert [event.decoded("DTSTART").isoformat() for event in events] == [
                "2026-12-24",
                "2026-12-20",
            ]
            assert str(events[0]["DESCRIPTION"]) == "line one\nline two"
            assert len({str(event["UID"]) for event in events}) == 2

            async with http.post("/v1/users/ann/feeds") as response:
                mine = await response.json()
            async with http.get(mine["url"]) as response:
                parsed = icalendar.Calendar.from_ical(await response.read())
            assert [str(e["SUMMARY"]) for e in parsed.walk("VEVENT")] == ["Ship, finally; v2"]

            async with http.delete(f"/v1/feeds/{feed['id']}") as response:
                assert response.status == 204
            async with http.get(feed["url"]) as response:
                assert response.status == 404
            async with http.get(mine["url"]) as response:
                assert response.status == 200, "revoking one feed leaves the others"
            async with http.get("/v1/feeds/" + "x" * 43 + ".ics") as response:
                assert response.status == 404
            async with http.delete(f"/v1/feeds/{feed['id']}") as response:
                assert response.status == 404


async def test_the_feeds_document_is_never_served_to_a_client(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            async with http.get(f"{server.url}/boardcast.feeds") as response:
                assert response.status == 403
            async with http.get("/v1/boards/boardcast.feeds/ydoc") as response:
                assert response.status == 403
