"""Signed webhooks: the message is POSTed to the business's own system.

The receiver checks `X-CRM-Signature: sha256=<hex>`, an HMAC-SHA256 with the shared
secret over `<timestamp>.<body>`, where the timestamp (Unix seconds) is sent in
`X-CRM-Timestamp`. Signing the timestamp with the body lets the receiver reject replays
older than a few minutes. `Idempotency-Key` carries the send id, as for HTTP providers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from services.messaging.channels.base import Message, Outcome, Result
from services.messaging.channels.http_provider import TIMEOUT, result_of

TIMESTAMP_HEADER = "X-CRM-Timestamp"
SIGNATURE_HEADER = "X-CRM-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, header: str, *, now: float, tolerance: float = 300
) -> bool:
    """What a receiver does: a matching signature on a recent timestamp."""
    try:
        fresh = abs(now - float(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), header)


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.secret = secret
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT)

    async def send(self, message: Message) -> Result:
        body = json.dumps(
            {
                "id": str(message.send_id),
                "customer_id": str(message.customer_id),
                "to": message.to,
                "subject": message.subject,
                "body": message.body,
                "metadata": message.metadata,
            },
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": str(message.send_id),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self.secret, timestamp, body),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Result(Outcome.TRANSIENT, None, f"webhook: {type(exc).__name__}: {exc}")
        return result_of(self.name, response)

    async def aclose(self) -> None:
        await self._client.aclose()
