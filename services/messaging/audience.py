"""Who a campaign is for: a scoring segment, or a saved filter over recipients' attributes.

An audience is stored on the campaign as JSON, either `{"segment_id": "<uuid>"}` (the
members of a segment as scoring last reported them) or `{"filter": {"tier": ["gold"],
"churn_band": ["high"], "locale": ["ms-MY"]}}` (every listed attribute must match one
of its values). Either way only active recipients are selected: merged and erased
customers never receive a campaign. Consent is not checked here; the send ledger
records a `skipped` row for whoever cannot be reached, so progress accounts for everyone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import recipients, segment_members

FILTERABLE = {
    "tier": recipients.c.tier,
    "churn_band": recipients.c.churn_band,
    "locale": recipients.c.locale,
    "rfm_segment": recipients.c.rfm_segment,
    "time_zone": recipients.c.time_zone,
}
"""The attributes a saved filter may name."""


class AudienceInvalid(ValueError):
    """The audience JSON names something that cannot be selected; `field` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate(audience: Mapping[str, Any]) -> dict[str, Any]:
    """The audience in its stored form, or `AudienceInvalid`."""
    if set(audience) == {"segment_id"}:
        try:
            return {"segment_id": str(uuid.UUID(str(audience["segment_id"])))}
        except ValueError as exc:
            raise AudienceInvalid("audience.segment_id", "not a UUID") from exc
    if set(audience) == {"filter"} and isinstance(audience["filter"], Mapping):
        clean: dict[str, list[str]] = {}
        for key, values in audience["filter"].items():
            if key not in FILTERABLE:
                allowed = ", ".join(sorted(FILTERABLE))
                raise AudienceInvalid(f"audience.filter.{key}", f"unknown; use {allowed}")
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str) and v for v in values)
            ):
                raise AudienceInvalid(
                    f"audience.filter.{key}", "must be a non-empty list of strings"
                )
            clean[key] = sorted(set(values))
        if not clean:
            raise AudienceInvalid("audience.filter", "name at least one attribute")
        return {"filter": clean}
    raise AudienceInvalid("audience", 'give either {"segment_id": ...} or {"filter": {...}}')


COLUMNS = (
    recipients.c.customer_id,
    recipients.c.time_zone,
    recipients.c.status,
    recipients.c.email,
    recipients.c.phone,
    recipients.c.consents,
    recipients.c.undeliverable,
)
"""What materialising needs: the zone for the schedule, the rest to tell reachability."""


def select(audience: Mapping[str, Any]) -> sa.Select[Any]:
    """The recipients (`COLUMNS`), ordered by id for chunked reading."""
    query = sa.select(*COLUMNS).where(recipients.c.status == "active")
    if "segment_id" in audience:
        query = query.join(
            segment_members, segment_members.c.customer_id == recipients.c.customer_id
        ).where(segment_members.c.segment_id == uuid.UUID(str(audience["segment_id"])))
    else:
        for key, values in audience["filter"].items():
            query = query.where(FILTERABLE[key].in_(values))
    return query.order_by(recipients.c.customer_id)


async def members(
    session: AsyncSession, audience: Mapping[str, Any], *, chunk: int = 5000
) -> AsyncIterator[list[RowMapping]]:
    """The audience in chunks of `chunk`, by keyset on the customer id."""
    after: uuid.UUID | None = None
    while True:
        query = select(audience)
        if after is not None:
            query = query.where(recipients.c.customer_id > after)
        rows = list((await session.execute(query.limit(chunk))).mappings())
        if not rows:
            return
        yield rows
        after = rows[-1]["customer_id"]


async def count(session: AsyncSession, audience: Mapping[str, Any]) -> int:
    """How many recipients the audience selects right now (for previews)."""
    query = sa.select(sa.func.count()).select_from(select(audience).order_by(None).subquery())
    return int((await session.execute(query)).scalar_one())
