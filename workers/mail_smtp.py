"""E-mail out: composing a job's message, and handing it to the SMTP server (aiosmtplib).

:func:`compose` writes a plain-text body (and a simple HTML one) telling of the job's
notifications, with a link to each board when ``public_url`` is set, under the job's stable
``Message-ID``. :class:`SmtpSender` sends one message per connection, every step bounded by
``timeout_seconds`` and the whole attempt by twice it, and says what the answer means:
sent, a permanent refusal (a 5xx reply: the job is dead-lettered at once) or a failure
worth retrying (a 4xx reply, a refused or dropped connection, a timeout).
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from persistence.mail_store import MailJob
from persistence.notification_store import Notification
from workers.mail_rules import message_id

#: The longest title or error text put in a message or a job's log.
MAX_LINE_CHARS = 300


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how e-mail is sent (``BOARDCAST_SMTP_*``, docs/settings.md)."""

    host: str = ""  # "": no e-mail is sent
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    sender: str = "boardcast@localhost"  # the From address
    timeout_seconds: float = 30.0  # each step: connect, each command, the data


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt came to."""

    sent: bool
    code: int | None = None  # the SMTP reply code, if there was one
    error: str | None = None
    permanent: bool = False  # a 5xx refusal: trying again will not help

    @classmethod
    def failed(cls, code: int | None, error: str) -> SendResult:
        """A failure; permanent for a 5xx code."""
        return cls(False, code, error[:MAX_LINE_CHARS], code is not None and 500 <= code < 600)


def board_link(public_url: str, notification: Notification) -> str:
    """Where a person reads what a notification is about ("" without a public URL)."""
    if not public_url:
        return ""
    base = public_url.rstrip("/")
    if notification.board_id:
        return f"{base}/boards/{notification.board_id}"
    return base + "/"


def subject_of(job: MailJob, notifications: Sequence[Notification]) -> str:
    """One notification's title, or how many a digest holds."""
    if len(notifications) == 1 and job.kind == "immediate":
        return _line(notifications[0].title)
    return f"Boardcast: {len(notifications)} notifications"


def compose(
    job: MailJob,
    notifications: Sequence[Notification],
    *,
    to: str,
    sender: str,
    public_url: str = "",
) -> EmailMessage:
    """The e-mail telling ``to`` of ``notifications`` under the job's Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject_of(job, notifications)
    message["Message-ID"] = message_id(job)
    message["Date"] = formatdate(job.created_at or time.time(), usegmt=True)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    # Which notifications it tells of, for mail filters and for tracing one to its cause.
    message["Boardcast-Notifications"] = ", ".join(n.id for n in notifications)
    lines: list[str] = []
    items: list[str] = []
    for notification in notifications:
        link = board_link(public_url, notification)
        title = _line(notification.title)
        lines.append(f"- {title}" + (f"\n  {link}" if link else ""))
        shown = html.escape(title)
        items.append(
            f'<li><a href="{html.escape(link, quote=True)}">{shown}</a></li>'
            if link
            else f"<li>{shown}</li>"
        )
    footer = "You get these e-mails because of your Boardcast notification preferences."
    message.set_content("\n".join(lines) + "\n\n-- \n" + footer + "\n")
    message.add_alternative(
        "<html><body><ul>" + "".join(items) + f"</ul><p><small>{footer}</small></p></body></html>",
        subtype="html",
    )
    return message


class SmtpSender:
    """Hands messages to the configured SMTP server, one connection each."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> SendResult:
        """Send ``message``; never raises for what the server or the network did."""
        chosen = self.settings
        try:
            # Each step within the timeout, and the whole attempt within twice it: a server
            # answering every command just in time cannot hold a claim past its lease.
            refused, _ = await asyncio.wait_for(
                aiosmtplib.send(
                    message,
                    hostname=chosen.host,
                    port=chosen.port,
                    username=chosen.username or None,
                    password=chosen.password or None,
                    start_tls=chosen.starttls,
                    timeout=chosen.timeout_seconds,
                ),
                2 * chosen.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [error.code for error in exc.recipients]
            return SendResult.failed(min(codes) if codes else None, str(exc))
        except aiosmtplib.SMTPResponseException as exc:
            return SendResult.failed(exc.code, f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return SendResult.failed(None, f"{type(exc).__name__}: {exc}")
        if refused:
            code = min(response.code for response in refused.values())
            return SendResult.failed(code, "; ".join(str(r) for r in refused.values()))
        return SendResult(True, 250)


def _line(text: str) -> str:
    # One header-safe line: no newlines a title could smuggle into headers.
    return " ".join(text.split())[:MAX_LINE_CHARS]
