"""A real local SMTP server (aiosmtpd) for messaging tests: records what it accepts.

`replies` lets a test make the server refuse a recipient with a chosen reply
(`"550 5.1.1 No such user"`, `"451 4.7.1 Rate limit exceeded"`), as real servers do.
"""

from __future__ import annotations

import email
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.processes import free_port


class Sink:
    """The aiosmtpd handler: accepts mail, keeps every message, refuses on request."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.replies: dict[str, str] = {}
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        reply = self.replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default)
        with self._lock:
            self.messages.append(message)
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]


@contextmanager
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    """A running server on a free loopback port, stopped afterwards."""
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def text_of(message: EmailMessage) -> str:
    """The plain-text body, whether the mail is plain text or has an HTML alternative."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the mail has no plain-text part"
    return str(part.get_content())
