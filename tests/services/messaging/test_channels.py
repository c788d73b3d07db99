"""Channels: classification of provider answers, HTTP providers and signed webhooks against a
real local HTTP server, and exactly-once across a crash where the provider honours keys."""

from __future__ import annotations

import asyncio
import email
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.policy import default

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging.channels import HttpProviderChannel, Message, Outcome, WebhookChannel
from services.messaging.channels.base import classify_http, classify_smtp
from services.messaging.channels.email import encode_message
from services.messaging.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from services.messaging.dispatcher import Dispatcher
from shared.settings import Settings
from tests.services.messaging.send_factories import enqueue, ledger, make_recipient, make_template
from tests.support.smtp_sink import text_of

SECRET = "webhook-secret"


def test_smtp_classification() -> None:
    assert classify_smtp(250, "OK") is Outcome.OK
    assert classify_smtp(450, "Mailbox busy") is Outcome.TRANSIENT
    assert classify_smtp(421, "Service not available, closing") is Outcome.TRANSIENT
    assert classify_smtp(421, "Too many connections, slow down") is Outcome.RATE_LIMITED
    assert classify_smtp(451, "4.7.1 Rate limited") is Outcome.RATE_LIMITED
    assert classify_smtp(550, "5.1.1 No such user") is Outcome.PERMANENT
    assert classify_smtp(552, "Mailbox full") is Outcome.PERMANENT


def test_http_classification() -> None:
    assert classify_http(202) is Outcome.OK
    assert classify_http(429) is Outcome.RATE_LIMITED
    assert classify_http(503) is Outcome.TRANSIENT
    assert classify_http(401) is Outcome.TRANSIENT  # our credentials, not their number
    assert classify_http(400) is Outcome.PERMANENT
    assert classify_http(410) is Outcome.PERMANENT


@dataclass
class Provider:
    """A tiny real HTTP provider: honours Idempotency-Key, can answer a fixed status."""

    port: int = 0
    status: int = 202
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request_line = await reader.readline()
            if not request_line:
                break
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            key = headers.get("idempotency-key", str(uuid.uuid4()))
            if self.status < 300:
                message_id = self.accepted.setdefault(key, f"prov-{len(self.accepted) + 1}")
                answer = json.dumps({"message_id": message_id}).encode()
            else:
                answer = b'{"error": "no"}'
            writer.write(
                f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        writer.close()


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    state = Provider()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()


def message(channel: str = "sms") -> Message:
    return Message(uuid.uuid4(), uuid.uuid4(), channel, "+60123456789", "Hai!", None)


async def test_http_provider_sends_with_key_and_token(provider: Provider) -> None:
    channel = HttpProviderChannel("sms", provider.url, "tok")
    sent = message()
    result = await channel.send(sent)
    assert (result.outcome, result.provider_message_id) == (Outcome.OK, "prov-1")
    headers, body = provider.requests[0]
    assert headers["idempotency-key"] == str(sent.send_id)
    assert headers["authorization"] == "Bearer tok"
    assert json.loads(body)["to"] == "+60123456789"

    provider.status = 400
    assert (await channel.send(message())).outcome is Outcome.PERMANENT
    provider.status = 429
    assert (await channel.send(message())).outcome is Outcome.RATE_LIMITED
    await channel.aclose()
    closed = HttpProviderChannel("sms", "http://127.0.0.1:1/send", None)
    assert (await closed.send(message())).outcome is Outcome.TRANSIENT
    await closed.aclose()


async def test_webhooks_are_signed_over_timestamp_and_body(provider: Provider) -> None:
    channel = WebhookChannel(provider.url, SECRET)
    assert (await channel.send(message("webhook"))).outcome is Outcome.OK
    headers, body = provider.requests[0]
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    signature = headers[SIGNATURE_HEADER.lower()]
    assert verify(SECRET, timestamp, body, signature, now=time.time())
    assert not verify(SECRET, timestamp, body + b" ", signature, now=time.time())
    assert not verify("other", timestamp, body, signature, now=time.time())
    assert not verify(SECRET, timestamp, body, signature, now=time.time() + 3600)
    await channel.aclose()


async def test_a_crash_after_the_provider_took_it_sends_once_with_idempotency_keys(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, provider: Provider
) -> None:
    config = settings.model_copy(
        update={"messaging_quiet_hours": (0, 0), "messaging_frequency_caps": {}}
    )
    await make_template(sessions, channel="sms", subject=None, body="Hai {{ name }}")
    sid = await enqueue(sessions, await make_recipient(sessions), channels=["sms"])

    crashed = Dispatcher(
        sessions, config, channels={"sms": HttpProviderChannel("sms", provider.url, None)}
    )
    claim = await crashed.claim(10)
    await crashed.deliver(claim.jobs)  # the provider has it; the record never happens
    await crashed.aclose()

    restarted = Dispatcher(
        sessions,
        config,
        channels={"sms": HttpProviderChannel("sms", provider.url, None)},
        reserve_timeout=timedelta(0),
    )
    await restarted.run(until_idle=True)
    await restarted.aclose()

    assert len(provider.requests) == 2  # sent again after the crash ...
    assert provider.accepted == {str(sid): "prov-1"}  # ... but the provider delivered once
    [row] = await ledger(sessions)
    assert (row["status"], row["provider_message_id"]) == ("sent", "prov-1")


def test_non_ascii_display_names_are_encoded_and_addresses_kept() -> None:
    raw = encode_message(
        sender="Kedai Kopi Pak Mat <hello@example.my>",
        to="สมชาย ใจดี <somchai@example.th>",
        subject="Hi",
        body="Hi",
        message_id="<abc@example.my>",
    )
    parsed = email.message_from_bytes(raw, policy=default)
    assert parsed["To"].addresses[0].display_name == "สมชาย ใจดี"
    assert parsed["To"].addresses[0].addr_spec == "somchai@example.th"
    assert b"somchai@example.th" in raw  # the address itself is never encoded


def test_encoded_email_round_trips_thai_and_refuses_header_injection() -> None:
    raw = encode_message(
        sender="Kedai Kopi <hello@example.my>",
        to="somchai@example.th",
        subject="สุขสันต์วันเกิด Somchai\r\nBcc: victim@example.com",
        body="สวัสดีครับ\nรหัส: HBD-1",
        message_id="<abc@example.my>",
        unsubscribe_url="https://crm.example.my/v1/contacts/unsubscribe?token=t",
    )
    parsed = email.message_from_bytes(raw, policy=default)
    assert parsed["Subject"] == "สุขสันต์วันเกิด Somchai Bcc: victim@example.com"
    assert parsed["Bcc"] is None
    assert text_of(parsed) == "สวัสดีครับ\nรหัส: HBD-1"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
