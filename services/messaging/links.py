"""Links inside messages: the one-click unsubscribe link of a marketing message.

The link is contacts' (`/v1/contacts/unsubscribe?token=...`): following it, or POSTing to
it as RFC 8058 mail clients do, revokes the consent in contacts, whose
`consent.changed` event then reaches the recipient projection here. The token names one
customer and one channel; it is signed with the deployment key by `shared.consent_links`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast, get_args

from shared import consent_links
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
