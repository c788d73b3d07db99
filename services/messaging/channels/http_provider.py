"""SMS, WhatsApp and LINE through configurable HTTP providers (httpx).

The provider contract is deliberately small, so a thin adapter can front any gateway:
`POST <url>` with a JSON body `{id, channel, to, customer_id, subject, body}`, a bearer
token, and `Idempotency-Key: <send id>`. A provider that honours the key makes a resend
after a crash harmless: the dispatcher reconciles a reserved send by sending it again
with the same key. The answer's `message_id` (or `id`) becomes the ledger's
`provider_message_id`; its status is classified by `base.classify_http`.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.messaging.channels.base import Message, Outcome, Result, classify_http

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class HttpProviderChannel:
    """One HTTP provider serving one channel."""

    def __init__(
        self, name: str, url: str, token: str | None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.name = name
        self.url = url
        self.token = token
        self._client = client or httpx.AsyncClient(
            timeout=TIMEOUT, limits=httpx.Limits(max_connections=32)
        )

    def headers(self, message: Message) -> dict[str, str]:
        headers = {"Idempotency-Key": str(message.send_id)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def body(self, message: Message) -> dict[str, Any]:
        return {
            "id": str(message.send_id),
            "channel": message.channel,
            "to": message.to,
            "customer_id": str(message.customer_id),
            "subject": message.subject,
            "body": message.body,
        }

    async def send(self, message: Message) -> Result:
        try:
            response = await self._client.post(
                self.url, json=self.body(message), headers=self.headers(message)
            )
        except httpx.HTTPError as exc:
            return Result(Outcome.TRANSIENT, None, f"{self.name}: {type(exc).__name__}: {exc}")
        return result_of(self.name, response)

    async def aclose(self) -> None:
        await self._client.aclose()


def result_of(name: str, response: httpx.Response) -> Result:
    """Classify a provider's answer and read its message id."""
    outcome = classify_http(response.status_code)
    provider_id: str | None = None
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        found = data.get("message_id", data.get("id"))
        provider_id = str(found) if found is not None else None
    provider_id = provider_id or response.headers.get("x-message-id")
    if outcome is Outcome.OK:
        return Result(outcome, provider_id)
    return Result(outcome, provider_id, f"{name} {response.status_code}: {response.text[:300]}")
