"""Signed links a customer follows without logging in: confirm a consent, unsubscribe.

Shared because contacts verifies these tokens and messaging issues unsubscribe links in
every marketing message (RFC 8058 headers), and no service imports another.

The tokens are JWTs signed with the deployment's key (`shared.auth.signing_key`), each kind
with its own audience, so a confirmation token cannot unsubscribe, neither kind is a bearer
token (audience `crm`), and a bearer token is neither. Each names one contact and one
channel. A confirmation token also carries a hash of the address it was sent to: when the
customer's address changes before they click, the old link proves nothing about the new
address. Claim names are short because the links also travel by SMS.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlencode

import jwt

from shared.auth import key_ring
from shared.events.contacts import Channel
from shared.http.problems import Problem
from shared.settings import Settings

Purpose = Literal["confirm", "unsubscribe"]

AUDIENCES: dict[Purpose, str] = {
    "confirm": "crm:consent-confirm",
    "unsubscribe": "crm:consent-unsubscribe",
}
CONFIRM_TTL = timedelta(days=7)
"""How long a double opt-in link works; after that the customer asks for a new one."""
UNSUBSCRIBE_TTL = timedelta(days=400)
"""Unsubscribe links sit in old messages; they must keep working well beyond a year."""

CONFIRM_PATH = "/v1/contacts/consents/confirm"
UNSUBSCRIBE_PATH = "/v1/contacts/unsubscribe"


@dataclass(frozen=True)
class ConsentToken:
    """The verified content of a confirmation or unsubscribe token."""

    purpose: Purpose
    contact_id: uuid.UUID
    channel: Channel
    token_id: str
    expires_at: datetime
    address_hash: str | None = None


def address_hash(address: str) -> str:
    """A short digest of an address, so the token does not carry it in clear text."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]


def issue(
    settings: Settings,
    purpose: Purpose,
    contact_id: uuid.UUID,
    channel: Channel,
    *,
    address: str | None = None,
    now: datetime | None = None,
    ttl: timedelta | None = None,
) -> tuple[str, ConsentToken]:
    """A signed token for `purpose` on one contact's channel, and what it says."""
    now = now or datetime.now(UTC)
    expires_at = now + (ttl if ttl is not None else _default_ttl(purpose))
    content = ConsentToken(
        purpose=purpose,
        contact_id=contact_id,
        channel=channel,
        token_id=secrets.token_urlsafe(12),
        expires_at=expires_at,
        address_hash=address_hash(address) if address is not None else None,
    )
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": AUDIENCES[purpose],
        "sub": str(contact_id),
        "ch": channel,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": content.token_id,
    }
    if content.address_hash is not None:
        claims["adr"] = content.address_hash
    return key_ring(settings).encode(claims), content


def verify(settings: Settings, purpose: Purpose, token: str) -> ConsentToken:
    """The content of a valid token for `purpose`; a 400 problem otherwise."""
    try:
        claims = key_ring(settings).decode(
            token,
            audience=AUDIENCES[purpose],
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "aud", "iss", "jti", "ch"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise _invalid(
            "consent-token-expired", "Link expired", f"This {_noun(purpose)} link has expired."
        ) from exc
    except jwt.PyJWTError as exc:
        raise _invalid(
            "consent-token-invalid",
            "Invalid link",
            f"This is not a valid {_noun(purpose)} link ({exc}).",
        ) from exc
    channel = claims["ch"]
    try:
        contact_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise _invalid("consent-token-invalid", "Invalid link", "Malformed subject.") from exc
    if channel not in get_args(Channel):
        raise _invalid("consent-token-invalid", "Invalid link", "Unknown channel in the link.")
    adr = claims.get("adr")
    return ConsentToken(
        purpose=purpose,
        contact_id=contact_id,
        channel=channel,
        token_id=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        address_hash=str(adr) if adr is not None else None,
    )


def confirm_url(settings: Settings, token: str) -> str:
    """The public link that confirms a pending consent (a page with a button; POST acts)."""
    return _public(settings, CONFIRM_PATH, token)


def unsubscribe_url(settings: Settings, token: str) -> str:
    """The public one-click unsubscribe link (RFC 8058: the `List-Unsubscribe` URL)."""
    return _public(settings, UNSUBSCRIBE_PATH, token)


def _public(settings: Settings, path: str, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}{path}?{urlencode({'token': token})}"


def _default_ttl(purpose: Purpose) -> timedelta:
    return CONFIRM_TTL if purpose == "confirm" else UNSUBSCRIBE_TTL


def _noun(purpose: Purpose) -> str:
    return "confirmation" if purpose == "confirm" else "unsubscribe"


def _invalid(kind: str, title: str, detail: str) -> Problem:
    # 400, not 401: these links are not credentials of a login scheme to retry with.
    return Problem(400, kind, title, detail)
