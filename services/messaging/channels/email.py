"""Email over SMTP (aiosmtplib) through a small pool of reused sessions.

Opening an SMTP session costs a TCP (and maybe TLS) handshake, EHLO and AUTH; a campaign
sends thousands of messages, so the channel keeps `smtp_concurrency` sessions open and
hands them out one message at a time. A session that fails is dropped and reopened on
its next use.

Each message carries `Message-ID: <send id@domain>`: SMTP has no idempotency key, but
the ledger's id in the Message-ID lets a receiving system (and a human reading a bounce)
recognise a resend after a crash as the same message. The Message-ID is also the
`provider_message_id` recorded in the ledger, since SMTP replies carry no standard id.
Marketing messages carry the RFC 8058 one-click unsubscribe headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
from collections.abc import Sequence
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

import aiosmtplib

from services.messaging.channels.base import Message, Outcome, Result, classify_smtp
from shared.settings import Settings

TIMEOUT_SECONDS = 30.0


class SmtpChannel:
    """The `email` channel. `send` is safe to call from many tasks at once."""

    name = "email"

    def __init__(self, settings: Settings, *, concurrency: int | None = None) -> None:
        self.settings = settings
        self.sender = settings.smtp_from
        address = parseaddr(settings.smtp_from)[1]
        self.envelope_sender = address
        self.domain = address.rpartition("@")[2] or "localhost"
        self.concurrency = concurrency or settings.smtp_concurrency
        # None stands for a session not opened yet: they open on first use.
        self._pool: asyncio.Queue[aiosmtplib.SMTP | None] = asyncio.Queue()
        for _ in range(self.concurrency):
            self._pool.put_nowait(None)
        self._open: set[aiosmtplib.SMTP] = set()

    def message_id(self, message: Message) -> str:
        return f"<{message.send_id}@{self.domain}>"

    def build(self, message: Message) -> bytes:
        """The message as bytes: plain text, with the ledger id and unsubscribe headers."""
        return encode_message(
            sender=self.sender,
            to=message.to,
            subject=message.subject or "",
            body=message.body,
            message_id=self.message_id(message),
            extra=[("X-CRM-Send-Id", str(message.send_id))],
            unsubscribe_url=message.unsubscribe_url,
            open_pixel_url=message.open_pixel_url,
        )

    async def send(self, message: Message) -> Result:
        mail = self.build(message)
        message_id = self.message_id(message)
        sender = self.envelope_sender
        client = await self._pool.get()
        try:
            if client is None or not client.is_connected:
                client = await self._connect(client)
            await client.sendmail(sender, [message.to], mail)
            return Result(Outcome.OK, message_id)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return _failure(refused.code, refused.message, message_id)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server closes the session after a 421
                await self._discard(client)
                client = None
            return _failure(exc.code, exc.message, message_id)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._discard(client)
            client = None
            return Result(Outcome.TRANSIENT, message_id, f"smtp: {type(exc).__name__}: {exc}")
        finally:
            self._pool.put_nowait(client)

    async def _connect(self, stale: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP:
        await self._discard(stale)
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=TIMEOUT_SECONDS,
        )
        await client.connect()
        self._open.add(client)
        return client

    async def _discard(self, client: aiosmtplib.SMTP | None) -> None:
        if client is None:
            return
        self._open.discard(client)
        with contextlib.suppress(Exception):
            client.close()

    async def aclose(self) -> None:
        """Say QUIT on every open session."""
        for client in list(self._open):
            with contextlib.suppress(Exception):
                await client.quit()
            self._open.discard(client)


def _failure(code: int, text: str, message_id: str) -> Result:
    return Result(classify_smtp(code, text), message_id, f"smtp {code}: {text}"[:500])


def _address_text(value: str) -> str:
    """An address header: a non-ASCII display name is RFC 2047-encoded, the address not."""
    value = " ".join(value.splitlines())
    if value.isascii():
        return value
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8")


def _html_part(body: str, open_pixel_url: str) -> str:
    """The text as HTML (escaped, line breaks kept) with the 1x1 image that records opening."""
    return (
        '<!doctype html><html><body><div style="white-space:pre-wrap">'
        f"{html.escape(body)}</div>"
        f'<img src="{html.escape(open_pixel_url)}" width="1" height="1" alt="">'
        "</body></html>"
    )


def _base64(text: str) -> bytes:
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


def _header_text(value: str) -> str:
    """One header line's value: no line breaks (no header injection), RFC 2047 if not ASCII."""
    value = " ".join(value.splitlines())
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def encode_message(
    *,
    sender: str,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    extra: Sequence[tuple[str, str]] = (),
    unsubscribe_url: str | None = None,
    open_pixel_url: str | None = None,
) -> bytes:
    """A UTF-8 email (base64 parts) as bytes, ready for SMTP DATA: plain text, or with an
    `open_pixel_url` plain text and HTML alternatives, the HTML one carrying the pixel.

    Built by hand rather than with `email.message.EmailMessage`: the standard library's
    header registry parses and refolds every header, which cost more CPU per message than
    the SMTP exchange itself. Lines stay within RFC 5322's 998-character limit.
    """
    lines = [
        f"From: {_address_text(sender)}",
        f"To: {_address_text(to)}",
        f"Subject: {_header_text(subject)}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {message_id}",
    ]
    lines.extend(f"{name}: {_header_text(value)}" for name, value in extra)
    if unsubscribe_url:
        lines.append(f"List-Unsubscribe: <{_header_text(unsubscribe_url)}>")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    plain = 'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64'
    if open_pixel_url is None:
        lines += ["MIME-Version: 1.0", plain]
        return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + _base64(body)
    boundary = f"crm-{hashlib.sha256(message_id.encode()).hexdigest()[:24]}"
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"']
    html_head = 'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64'
    parts = [
        f"--{boundary}\r\n{plain}\r\n\r\n".encode() + _base64(body),
        f"--{boundary}\r\n{html_head}\r\n\r\n".encode() + _base64(_html_part(body, open_pixel_url)),
    ]
    return (
        "\r\n".join(lines).encode("utf-8")
        + b"\r\n\r\n"
        + b"".join(parts)
        + f"--{boundary}--\r\n".encode()
    )
