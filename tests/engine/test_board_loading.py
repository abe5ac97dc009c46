"""Messages that reach a board while it is still loading wait in order, whatever loading awaits.

Loading a board ends with work that awaits (catching the read model up, delivering
again what a crash left undelivered). A client's Open is queued while the board
loads; its first frame may arrive during that work. The frame must wait behind
the Open, not be handled (and dropped, the client not being on the board yet).
"""

from __future__ import annotations

import asyncio

from pycrdt import Doc

from actors.host import BoardHost
from actors.messages import PROTOCOL_VERSION, Frame, Hello, Open, Send, from_host
from actors.stream import open_stream
from crdt.protocol import SyncStep2, decode_frame, sync_step1
from persistence.memory import MemoryStore
from persistence.read_model import MemoryTaskIndex, TaskIndex


class SlowIndex(MemoryTaskIndex):
    """A read model that takes its time to answer."""

    async def board_version(self, board_id: str) -> int:
        await asyncio.sleep(0.5)
        return await super().board_version(board_id)


class SlowIndexStore(MemoryStore):
    def task_index(self) -> TaskIndex:
        return SlowIndex()


async def test_a_frame_sent_while_its_board_loads_is_answered_after_its_open() -> None:
    host = BoardHost("loading", SlowIndexStore())
    address, port = await host.start()
    try:
        link = await open_stream(address, port, secret=host.settings.cluster_secret or b"")
        link.send(Hello(PROTOCOL_VERSION, "gateway"))
        link.send(Open("b", 1))
        await asyncio.sleep(0.1)  # the board is loaded; its read model is still answering
        link.send(Frame("b", 1, sync_step1(Doc().get_state())))

        async def step2() -> None:
            while (batch := await link.read_batches()) is not None:
                for raw in batch:
                    message = from_host(raw)
                    if isinstance(message, Send) and any(
                        isinstance(item, SyncStep2) for item in decode_frame(message.data)
                    ):
                        return
            raise AssertionError("the host closed the stream")

        await asyncio.wait_for(step2(), 5)
        await link.close()
    finally:
        await host.stop()
