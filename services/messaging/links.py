"""Links inside messages: the one-click unsubscribe link, and the tracked links.

The unsubscribe link is contacts' (`/v1/contacts/unsubscribe?token=...`): following it, or
POSTing to it as RFC 8058 mail clients do, revokes the consent in contacts, whose
`consent.changed` event then reaches the recipient projection here. The token names one
customer and one channel; it is signed with the deployment key by `shared.consent_links`.

Tracked links (`tracked_url`, `open_pixel_url`) lead to messaging's own `/t/c` (click:
record, then redirect) and `/t/o` (open pixel); see `services.messaging.tracking`. Their
token is an HMAC-SHA256, with the same deployment key, over a purpose label, the send id
and (for a click) the destination, rather than a JWT like the consent links:
* it never expires: a link in an old message must still take the customer where it said;
* it is deterministic and short (no header, no claim names, a 128-bit tag), which
  matters in SMS, where every character counts;
* only a destination we signed can be redirected to, so `/t/c` is no open redirect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Literal, cast, get_args
from urllib.parse import urlencode, urlsplit

from shared import consent_links
from shared.auth import key_ring
from shared.events.contacts import Channel
from shared.settings import Settings


def unsubscribe_url(
    settings: Settings, customer_id: uuid.UUID, channel: str, *, now: datetime | None = None
) -> str | None:
    """The one-click unsubscribe link for `channel`, or None for channels without consent."""
    if channel not in get_args(Channel):
        return None
    token, _ = consent_links.issue(
        settings, "unsubscribe", customer_id, cast(Channel, channel), now=now
    )
    return consent_links.unsubscribe_url(settings, token)


CLICK_PATH = "/v1/messaging/t/c"
OPEN_PATH = "/v1/messaging/t/o"
TRACKED_SCHEMES = ("http", "https")
"""Only web links are wrapped; `mailto:`, `tel:` and the like are left as they are."""
_TAG_BYTES = 16
_Purpose = Literal["click", "open"]


class InvalidTrackingToken(ValueError):
    """A tracking token that was not issued by this deployment, or was altered."""


def tracked_url(settings: Settings, send_id: uuid.UUID, url: str) -> str:
    """A signed link that records the click on `send_id`, then redirects to `url`.

    Deterministic: the same send and destination always give the same link.
    """
    if urlsplit(url).scheme.lower() not in TRACKED_SCHEMES:
        return url
    return _public(settings, CLICK_PATH, _sign(settings, "click", send_id.bytes + url.encode()))


def open_pixel_url(settings: Settings, send_id: uuid.UUID) -> str:
    """The 1x1 image that records the opening of `send_id` (only an HTML mail can show it)."""
    return _public(settings, OPEN_PATH, _sign(settings, "open", send_id.bytes))


def verify_click(settings: Settings, token: str) -> tuple[uuid.UUID, str]:
    """The send id and destination a click token names; `InvalidTrackingToken` otherwise."""
    data = _verified(settings, "click", token)
    if len(data) <= 16:
        raise InvalidTrackingToken("The link names no destination.")
    try:
        url = data[16:].decode()
    except UnicodeDecodeError as exc:
        raise InvalidTrackingToken("The link's destination is not text.") from exc
    if urlsplit(url).scheme.lower() not in TRACKED_SCHEMES:
        raise InvalidTrackingToken("The link's destination is not a web address.")
    return uuid.UUID(bytes=data[:16]), url


def verify_open(settings: Settings, token: str) -> uuid.UUID:
    """The send id an open token names; `InvalidTrackingToken` otherwise."""
    data = _verified(settings, "open", token)
    if len(data) != 16:
        raise InvalidTrackingToken("Malformed tracking token.")
    return uuid.UUID(bytes=data)


def _mac(key: str, purpose: _Purpose, data: bytes) -> bytes:
    # The purpose label keeps a click token from passing as an open token and vice versa.
    label = f"crm:message-{purpose}".encode() + b"\0"
    return hmac.new(key.encode(), label + data, hashlib.sha256).digest()[:_TAG_BYTES]


def _sign(settings: Settings, purpose: _Purpose, data: bytes) -> str:
    key = key_ring(settings).signing_secret
    return f"{_b64(data)}.{_b64(_mac(key, purpose, data))}"


def _verified(settings: Settings, purpose: _Purpose, token: str) -> bytes:
    body, dot, tag = token.partition(".")
    if not dot:
        raise InvalidTrackingToken("Malformed tracking token.")
    try:
        data, mac = _unb64(body), _unb64(tag)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTrackingToken("Malformed tracking token.") from exc
    # Links in mail already sent must keep working after a key rotation: any key of the
    # ring may have signed them (the tag is too short to carry a key id).
    for key in key_ring(settings).secrets():
        if hmac.compare_digest(mac, _mac(key, purpose, data)):
            return data
    raise InvalidTrackingToken("The tracking token's signature does not match.")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public(settings: Settings, path: str, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}{path}?{urlencode({'token': token})}"
