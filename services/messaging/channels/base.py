"""The one interface every channel implements, and the classification of provider answers.

A channel answers every send with a `Result`: ok with the provider's message id, or a
failure classified as
* transient: try again later with back-off (a 4xx SMTP reply, a timeout, a 5xx HTTP);
* permanent: this address will never work (5xx SMTP, an HTTP 4xx about the recipient);
  the dispatcher marks the address undeliverable and stops using it;
* rate-limited: the provider asks us to slow down (HTTP 429, SMTP 421/451 with rate
  wording); the dispatcher backs off and requeues without counting an attempt.
Channels never raise for a provider's answer; only programming errors escape.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    RATE_LIMITED = "rate-limited"


@dataclass(frozen=True)
class Message:
    """One rendered message to one address. `send_id` doubles as the idempotency key."""

    send_id: uuid.UUID
    customer_id: uuid.UUID
    channel: str
    to: str
    body: str
    subject: str | None = None
    unsubscribe_url: str | None = None
    open_pixel_url: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    provider_message_id: str | None = None
    error: str | None = None


class Channel(Protocol):
    """A way to reach a customer. Implementations are safe to call concurrently."""

    name: str

    async def send(self, message: Message) -> Result:
        """Deliver `message` to the provider and classify its answer."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


_RATE_WORDS = re.compile(r"rate|too many|throttl|slow down|limit", re.IGNORECASE)


def classify_smtp(code: int, text: str) -> Outcome:
    """SMTP reply code (and text) to an outcome: 2xx ok, 4xx transient, 5xx permanent."""
    if 200 <= code < 300:
        return Outcome.OK
    if code in (421, 451) and _RATE_WORDS.search(text):
        return Outcome.RATE_LIMITED
    if 500 <= code < 600:
        return Outcome.PERMANENT
    return Outcome.TRANSIENT


def classify_http(status: int) -> Outcome:
    """HTTP status to an outcome.

    401/403 say our credentials are wrong, not the recipient's address, so they are
    transient (retried, then failed) rather than marking a customer undeliverable.
    """
    if 200 <= status < 300:
        return Outcome.OK
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403, 408, 409, 425) or status >= 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT
