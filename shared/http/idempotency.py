"""`Idempotency-Key` for effectful POSTs, with Stripe's semantics.

The first request with a key runs and its response is stored; a later request with the
same key and the same body gets that response again (`Idempotent-Replayed: true`); the
same key with another body is 409. While the first is still running, a second is 409 with
`Retry-After`. Keys are scoped to the caller (token subject) and expire after
`CRM_IDEMPOTENCY_TTL_SECONDS`. Server errors are not stored, so the client may retry.

A key left `processing` by a crashed process is taken over after `LOCK_SECONDS`; the
endpoint's own uniqueness rules (an order id per store, say) guard that rare case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.http.middleware import service_of
from shared.http.problems import problem_response
from shared.pipeline.tables import platform_tables

log = structlog.get_logger(__name__)

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
LOCK_SECONDS = 60
_NOT_REPLAYED = {b"content-length", b"date", b"server", b"x-request-id"}

SessionLookup = Callable[[str], tuple[async_sessionmaker[AsyncSession], str] | None]
"""Service name -> (session factory, schema), or None when the path has no service."""


class IdempotencyMiddleware:
    """Pure ASGI middleware: it must see the raw body and the whole response."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: SessionLookup,
        principal_of: Callable[[Scope], str],
        ttl_seconds: Callable[[], int],
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.principal_of = principal_of
        self.ttl_seconds = ttl_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_header = dict(scope.get("headers", [])).get(HEADER) if scope["type"] == "http" else None
        if key_header is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = key_header.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            await _send_problem(
                scope,
                receive,
                send,
                400,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            )
            return
        target = self.sessions(service_of(scope["path"]))
        if target is None:
            await self.app(scope, receive, send)
            return
        sessions, schema = target
        body = await _read_body(receive)
        fingerprint = hashlib.sha256(
            b"\n".join([scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        store = _KeyStore(sessions, schema, self.principal_of(scope), key)

        row = await store.claim(fingerprint, self.ttl_seconds())
        if row is not None:
            await self._answer_existing(scope, receive, send, row, fingerprint)
            return

        captured = _CapturedResponse()
        try:
            await self.app(scope, _replay_body(body, receive), captured.send)
        except BaseException:
            await store.release()
            raise
        if captured.status >= 500:
            await store.release()
        else:
            await store.complete(captured.status, captured.headers, captured.body)
        await captured.forward(send)

    async def _answer_existing(
        self, scope: Scope, receive: Receive, send: Send, row: Any, fingerprint: str
    ) -> None:
        if row.fingerprint != fingerprint:
            await _send_problem(
                scope,
                receive,
                send,
                409,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "This Idempotency-Key was already used with a different request.",
            )
        elif row.state != "completed":
            await _send_problem(
                scope,
                receive,
                send,
                409,
                "idempotency-request-in-progress",
                "Request in progress",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        else:
            metrics.IDEMPOTENT_REPLAYS.labels(service_of(scope["path"])).inc()
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in row.headers]
            headers.append((b"idempotent-replayed", b"true"))
            await send(
                {"type": "http.response.start", "status": row.status_code, "headers": headers}
            )
            await send({"type": "http.response.body", "body": row.body or b""})


class _KeyStore:
    """The idempotency row of one (caller, key), in the service's own schema."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], schema: str, principal: str, key: str
    ) -> None:
        self.sessions = sessions
        self.table = platform_tables(schema).idempotency_keys
        self.principal = principal
        self.key = key

    def _this(self) -> Any:
        return (self.table.c.principal == self.principal) & (self.table.c.key == self.key)

    async def claim(self, fingerprint: str, ttl: int) -> Any | None:
        """Take the key for this request; returns the existing row when it is taken."""
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            # Expired keys are forgotten, and a crashed request's lock is taken over.
            await session.execute(
                delete(self.table).where(self._this(), self.table.c.expires_at < now)
            )
            await session.execute(
                delete(self.table).where(
                    self._this(),
                    self.table.c.state == "processing",
                    self.table.c.created_at < now - timedelta(seconds=LOCK_SECONDS),
                )
            )
            inserted = await session.execute(
                insert(self.table)
                .values(
                    principal=self.principal,
                    key=self.key,
                    fingerprint=fingerprint,
                    state="processing",
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
                .on_conflict_do_nothing()
                .returning(self.table.c.key)
            )
            if inserted.first() is not None:
                return None
            return (await session.execute(select(self.table).where(self._this()))).first()

    async def complete(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Store the response for replays."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(self.table)
                .where(self._this())
                .values(state="completed", status_code=status, headers=headers, body=body)
            )

    async def release(self) -> None:
        """Forget the key, so that a retry runs the request again."""
        async with self.sessions() as session, session.begin():
            await session.execute(delete(self.table).where(self._this()))


class _CapturedResponse:
    """Holds the downstream response until it is stored, then forwards it."""

    def __init__(self) -> None:
        self.status = 500
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.raw_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in self.raw_headers
            if k.lower() not in _NOT_REPLAYED
        ]

    async def forward(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay_body(body: bytes, original: Receive) -> Receive:
    """Hand the already-read body to the app once, then listen for the disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


async def _send_problem(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    kind: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    response = problem_response(
        status, kind, title, detail, instance=scope["path"], headers=headers
    )
    await response(scope, receive, send)
