"""A Trello board export becomes a Boardcast board: what maps, maps; the rest is reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Map

from clients.provider import BoardClient
from crdt.board import Board
from gateway.rest.inputs import RestLimits
from gateway.rest.problems import Problem
from gateway.rest.trello import plan_trello_import
from tests.conftest import serve

EXPORT = Path(__file__).parents[1] / "fixtures" / "trello-export.json"


async def test_a_trello_export_becomes_a_board_of_the_project(tmp_path: Path) -> None:
    export = json.loads(EXPORT.read_text())
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            async with http.post("/v1/projects", json={"name": "Marketing"}) as response:
                project = await response.json()
            async with http.post(
                f"/v1/projects/{project['id']}/imports/trello",
                json=export,
                headers={"Idempotency-Key": "relaunch"},
            ) as response:
                assert response.status == 201, await response.text()
                result = await response.json()
            async with http.post(
                f"/v1/projects/{project['id']}/imports/trello",
                json=export,
                headers={"Idempotency-Key": "relaunch"},
            ) as response:
                again = await response.json()
            assert again["board"] == result["board"], "a retried import makes one board"
            async with http.get(f"/v1/projects/{project['id']}/boards") as response:
                assert len((await response.json())["items"]) == 1

        assert result["board"]["name"] == "Website relaunch"
        assert result["imported"] == {
            "columns": 3,
            "tasks": 4,
            "checklist_items": 3,
            "comments": 2,
        }
        assert result["skipped"] == {
            "archived lists": 1,
            "archived cards": 1,
            "cards in archived or unknown lists": 1,
            "attachments": 1,
            "custom field values": 1,
            "stickers": 1,
            "votes": 1,
        }

        async with BoardClient(server.url, result["board"]["id"], ack=False) as reader:
            await reader.synced()
            board = Board(reader.doc)
            assert board.get_meta().project == project["id"]
            columns = {column.id: column.name for column in board.columns()}
            assert list(columns.values()) == ["Backlog", "In progress", "Done"]
            by_column: dict[str, list[str]] = {}
            for name in columns.values():
                column_id = next(k for k, v in columns.items() if v == name)
                by_column[name] = [task.title for task in board.tasks_in_column(column_id)]
            # Cards keep their order within each list.
            assert by_column == {
                "Backlog": ["Rewrite the About page", "Fix broken links on /pricing"],
                "In progress": ["New hero image"],
                "Done": ["Set up redirects"],
            }
            tasks = {task.title: task for task in board.tasks()}
            links = tasks["Fix broken links on /pricing"]
            assert links.due == "2026-12-15" and links.labels == ("bug",)
            assert links.assignees == ("annlee",)
            assert links.description == "Three links 404 since the CMS move."
            about = tasks["Rewrite the About page"]
            assert about.labels == ("copy", "green") and about.assignees == ("annlee", "bobk")
            raw: Any = reader.doc.get("tasks", type=Map)[links.id]
            checklist = raw["checklist"]
            assert isinstance(checklist, Array)
            assert [(item["text"], item["done"]) for item in checklist] == [
                ("Plans table", "true"),
                ("FAQ section", "false"),
            ]
            comments = [(c["author"], c["text"]) for c in raw["comments"]]
            assert comments == [
                ("annlee", "Found three so far."),
                ("bobk", "The FAQ links are fine on staging."),
            ]


async def test_what_is_not_a_trello_export_is_refused(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            async with http.post("/v1/projects", json={"name": "p"}) as response:
                project = await response.json()
            for body in ({"cards": []}, [], {"lists": "no"}):
                async with http.post(
                    f"/v1/projects/{project['id']}/imports/trello", json=body
                ) as response:
                    assert response.status == 422, await response.text()
            async with http.post(
                "/v1/projects/nope/imports/trello", json={"lists": []}
            ) as response:
                assert response.status == 404


trello_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
record = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "name",
            "closed",
            "idList",
            "pos",
            "due",
            "idLabels",
            "idMembers",
            "desc",
            "attachments",
            "idCard",
            "checkItems",
            "state",
            "type",
            "data",
            "memberCreator",
        ]
    ),
    trello_values,
    max_size=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    export=st.fixed_dictionaries(
        {"lists": st.lists(record, max_size=4)},
        optional={
            "cards": st.lists(record, max_size=6) | trello_values,
            "labels": st.lists(record, max_size=3),
            "members": st.lists(record, max_size=3),
            "checklists": st.lists(record, max_size=3),
            "actions": st.lists(record, max_size=4),
            "name": trello_values,
        },
    )
)
def test_any_export_shaped_json_plans_or_is_refused_by_name(export: dict[str, Any]) -> None:
    try:
        plan = plan_trello_import(export, RestLimits())
    except Problem as problem:
        assert problem.status in (413, 422)
        return
    open_lists = {column_id for column_id, _ in plan.columns}
    assert all(task.column in open_lists for task in plan.tasks)
    json.dumps(plan.plain())  # plain values only: it travels to the board's actor
