"""The list filters shared by `GET /v1/contacts` and the CSV export, as one dependency.

Both endpoints promise the same filters; reading them in one place keeps that promise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, get_args

from fastapi import Depends, Query

from services.contacts import errors
from services.contacts.repository import ContactFilter
from shared.events.contacts import Channel, ConsentStatus


def _contact_filter(
    q: Annotated[
        str | None, Query(max_length=100, description="Text in name, email, phone or card")
    ] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    consent: Annotated[
        str | None, Query(description="channel or channel:status, e.g. `email:granted`")
    ] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> ContactFilter:
    channel, _, status = (consent or "").partition(":")
    if consent and channel not in get_args(Channel):
        raise errors.invalid("query.consent", f"unknown channel {channel!r}")
    if status and status not in get_args(ConsentStatus):
        raise errors.invalid("query.consent", f"unknown status {status!r}")
    return ContactFilter(
        text=q,
        tag=tag,
        consent_channel=channel or None,
        consent_status=status or None,
        created_from=created_from,
        created_to=created_to,
    )


ContactQuery = Annotated[ContactFilter, Depends(_contact_filter)]
