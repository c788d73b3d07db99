"""Signed consent links; the helpers live in `shared.consent_links`, which messaging also
uses to put one-click unsubscribe links in every marketing message."""

from __future__ import annotations

from shared.consent_links import (
    AUDIENCES,
    CONFIRM_PATH,
    CONFIRM_TTL,
    UNSUBSCRIBE_PATH,
    UNSUBSCRIBE_TTL,
    ConsentToken,
    Purpose,
    address_hash,
    confirm_url,
    issue,
    unsubscribe_url,
    verify,
)

__all__ = [
    "AUDIENCES",
    "CONFIRM_PATH",
    "CONFIRM_TTL",
    "UNSUBSCRIBE_PATH",
    "UNSUBSCRIBE_TTL",
    "ConsentToken",
    "Purpose",
    "address_hash",
    "confirm_url",
    "issue",
    "unsubscribe_url",
    "verify",
]
