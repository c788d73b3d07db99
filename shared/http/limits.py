"""Refuse oversize request bodies with 413 before they reach a route.

JSON bodies are parsed whole, so an unbounded one is a memory hazard; streamed uploads
(`text/csv`, read chunk by chunk by their endpoint) are exempt and bound themselves.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http.problems import problem_response

STREAMED_TYPES = (b"text/csv",)


class _TooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Pure ASGI: checks Content-Length up front and counts chunked bodies as they come."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        if headers.get(b"content-type", b"").split(b";")[0].strip() in STREAMED_TYPES:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        too_large = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Frameworks may turn our exception into their own error response (a 400
            # "could not parse the body"); once the limit is crossed, ours replaces it.
            nonlocal started
            if too_large:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        if too_large and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "payload-too-large",
            "Payload too large",
            f"Request bodies are limited to {self.max_bytes} bytes.",
            instance=scope["path"],
        )
        await response(scope, receive, send)
