"""Comments over REST, by role: what the board app's comment box relies on.

A commenter's socket is read-only (docs/security.md), so the app posts comments over
REST; the server decides who may, names the author itself, and the comment reaches
every open socket of the board.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Map

from clients.provider import BoardClient, wait_for
from tests.auth_helpers import auth_server


async def test_a_commenters_comment_reaches_sockets_under_their_name_and_a_viewers_is_refused(
    tmp_path: Path,
) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia", mfa=True)
        for name in ("eddie", "cora", "vera"):
            await server.add_person(name)
        people = server.people
        _, board = await server.project_with(
            owner, {"eddie": "editor", "cora": "commenter", "vera": "viewer"}
        )
        status, task = await server.add_task(people["eddie"], board, "Draft the plan")
        assert status == 201, task
        comments = f"/v1/boards/{board}/tasks/{task['id']}/comments"
        token = {"token": people["eddie"].token}
        async with BoardClient(server.ws, board, params=token, ack=False) as editor:
            await editor.synced()
            tasks: Any = editor.doc.get("tasks", type=Map)

            status, body = await server.call("POST", comments, people["vera"], {"text": "me too"})
            assert status == 403, body
            # A body naming someone else as the author is refused, not believed.
            forged = {"text": "hi", "author": "olivia"}
            status, body = await server.call("POST", comments, people["cora"], forged)
            assert status == 422, body

            status, made = await server.call(
                "POST", comments, people["cora"], {"text": "Looks good"}
            )
            assert status == 201, made
            assert made["author"] == "cora"
            await wait_for(lambda: len(tasks[task["id"]].get("comments") or []) == 1)
            seen = tasks[task["id"]]["comments"][0]
            assert (seen["id"], seen["author"], seen["text"]) == (made["id"], "cora", "Looks good")
        status, listed = await server.call("GET", comments, people["vera"])
        assert [(c["author"], c["text"]) for c in listed["items"]] == [("cora", "Looks good")]
