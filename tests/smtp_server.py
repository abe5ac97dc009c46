"""A real SMTP server for the e-mail tests: aiosmtpd on a free loopback port.

It keeps every message it accepted (parsed, with the envelope's recipients) and answers
``DATA`` as scripted: the replies in ``answers`` in turn (``"451 4.3.0 Try again later"``),
then ``default_answer``. It runs in a thread of its own (aiosmtpd's ``Controller``), so a
test's event loop and the server's never wait on each other; :func:`smtp_server` starts it
as a context manager, and ``port=`` lets a test bring it back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.services import TIMEOUT_SCALE, free_port


@dataclass
class Received:
    """One message the server accepted."""

    recipients: list[str]
    message: EmailMessage
    at: float

    @property
    def message_id(self) -> str:
        """Its Message-ID header."""
        return str(self.message["Message-ID"])

    def text(self) -> str:
        """Its plain-text body."""
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())


@dataclass
class SmtpSink:
    """What the server got and what it answers (shared with the server's thread)."""

    answers: list[str] = field(default_factory=list)
    default_answer: str = "250 OK"
    delay_seconds: float = 0.0  # after keeping a message, before answering (crash tests)
    received: list[Received] = field(default_factory=list)
    refused: list[tuple[float, str]] = field(default_factory=list)  # when, and the reply
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message or refuse it as scripted."""
        with self._lock:
            answer = self.answers.pop(0) if self.answers else self.default_answer
            if not answer.startswith("250"):
                self.refused.append((time.time(), answer))
                return answer
            parsed = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self.received.append(Received(list(envelope.rcpt_tos), parsed, time.time()))
        if self.delay_seconds:
            # Kept, not yet acknowledged: a sender killed now will send it again.
            await asyncio.sleep(self.delay_seconds)
        return answer

    def messages(self) -> list[Received]:
        """The accepted messages so far (a copy)."""
        with self._lock:
            return list(self.received)

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` messages arrived (bounded); the messages."""
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while len(self.messages()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.messages())} of {count} e-mails arrived")
            await asyncio.sleep(0.02)
        return self.messages()


@contextlib.contextmanager
def smtp_server(sink: SmtpSink | None = None, *, port: int | None = None) -> Iterator[SmtpSink]:
    """Run an SMTP server on 127.0.0.1 (a free port unless given) while the block runs."""
    chosen = sink if sink is not None else SmtpSink()
    chosen.port = port or free_port()
    controller = Controller(chosen, hostname="127.0.0.1", port=chosen.port, ready_timeout=10)
    controller.start()
    try:
        yield chosen
    finally:
        controller.stop()
