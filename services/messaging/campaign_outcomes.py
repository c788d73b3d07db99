"""What came of a campaign: completion, results per arm, and the winner's roll-out.

`check_campaigns` is the scheduled job. For each scheduled or running campaign, in a
transaction of its own, it:
* moves a scheduled campaign to running once its first send falls due (the dispatcher
  only sends for running campaigns);
* for a test with `auto_rollout`, applies the decision rule and, once there is a winner,
  rewrites the recipients kept back (`rest`, still queued) to the winning arm;
* completes the campaign when none of its ledger rows is queued or reserved, publishing
  `CampaignCompleted` exactly once: the status change is a conditional UPDATE, so two
  runs (or two workers) cannot both complete it, and a paused campaign never completes.

Results are computed from the ledger and `conversions`: a recipient converted when they
bought within `attribution_days` of the send (for the holdout, of when the send would
have gone). Rates get Wilson intervals, revenue per recipient a normal interval; see
`services.messaging.experiments`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.messaging import experiments, policy, sends
from services.messaging.campaigns import (
    ACTIVE,
    OPEN,
    REST,
    SOURCE,
    payload_for,
    progress,
    send_time,
    source_of,
)
from services.messaging.models import SCHEMA, campaigns, conversions, recipients
from services.messaging.models import sends as ledger
from shared.events.messaging import CampaignCompleted
from shared.jobs import ScheduledJob
from shared.pipeline.outbox import add_event
from shared.settings import Settings


async def campaigns_to_check(session: AsyncSession) -> list[sa.Row[Any]]:
    return list(
        (await session.execute(sa.select(campaigns).where(campaigns.c.status.in_(ACTIVE)))).all()
    )


async def complete_if_done(session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime) -> bool:
    """Complete the campaign if nothing of it is queued or reserved; True when it did."""
    source = source_of(campaign_id)
    open_rows = sa.exists().where(ledger.c.source == source, ledger.c.status.in_(OPEN))
    done = (
        await session.execute(
            sa.update(campaigns)
            .where(campaigns.c.id == campaign_id, campaigns.c.status.in_(ACTIVE), ~open_rows)
            .values(status="completed", completed_at=now, updated_at=now)
            .returning(campaigns.c.id)
        )
    ).first()
    if done is None:
        return False
    counts = await progress(session, campaign_id, now=now)
    await add_event(
        session,
        SCHEMA,
        CampaignCompleted(
            campaign_id=campaign_id,
            sent=counts["sent"],
            skipped=sum(counts["skipped"].values()),
            failed=counts["failed"],
            completed_at=now,
        ),
        source=SOURCE,
    )
    return True


async def check_campaigns(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime | None = None
) -> int:
    """The scheduled job: start due campaigns, roll out winners, complete finished ones."""
    handled = 0
    business = ZoneInfo(settings.messaging_time_zone)
    async with sessions() as session, session.begin():
        active = await campaigns_to_check(session)
    for campaign in active:
        moment = now or datetime.now(UTC)
        async with sessions() as session, session.begin():
            if campaign.status == "scheduled":
                await _run_when_due(session, campaign.id, moment)
            if campaign.experiment and campaign.experiment.get("auto_rollout"):
                await apply_winner(session, campaign, now=moment, business=business)
            handled += await complete_if_done(session, campaign.id, now=moment)
    return handled


async def _run_when_due(session: AsyncSession, campaign_id: uuid.UUID, now: datetime) -> None:
    due = sa.exists().where(
        ledger.c.source == source_of(campaign_id),
        ledger.c.status.in_(OPEN),
        ledger.c.not_before <= now,
    )
    await session.execute(
        sa.update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.status == "scheduled", due)
        .values(status="running", updated_at=now)
    )


def _exposed() -> sa.ColumnElement[bool]:
    """Rows whose customer was sent to, or deliberately not (the holdout)."""
    return ledger.c.status.in_(("sent", "delivered", "held_out"))


async def arm_counts(
    session: AsyncSession, campaign: sa.Row[Any]
) -> tuple[dict[str, experiments.ArmCounts], dict[str, dict[str, int]]]:
    """Per variant: recipients exposed, converters and revenue; and revenue by currency.

    A recipient converted when they bought within `attribution_days` of the send (for the
    holdout, of when the send would have gone), whatever the conversions' `send_id` says,
    so sent and held-out customers are measured the same way. Revenue statistics use the
    campaign's main currency (the one with most revenue); every currency is reported.
    """
    source = source_of(campaign.id)
    variant = sa.func.coalesce(ledger.c.variant, "all")
    exposed: dict[str, int] = {
        name: n
        for name, n in await session.execute(
            sa.select(variant, sa.func.count())
            .where(ledger.c.source == source, _exposed())
            .group_by(variant)
        )
    }
    start = sa.func.coalesce(ledger.c.sent_at, ledger.c.not_before)
    per_row = (
        sa.select(
            variant.label("variant"),
            ledger.c.id,
            conversions.c.currency,
            # Net of refunds (see `conversions`).
            sa.func.sum(conversions.c.total_minor - conversions.c.refunded_minor).label("revenue"),
        )
        .join(conversions, conversions.c.customer_id == ledger.c.customer_id)
        .where(
            ledger.c.source == source,
            _exposed(),
            conversions.c.purchased_at >= start,
            conversions.c.purchased_at
            < start + sa.func.make_interval(0, 0, 0, int(campaign.attribution_days)),
        )
        .group_by(variant, ledger.c.id, conversions.c.currency)
        .subquery()
    )
    rows = (
        await session.execute(
            sa.select(
                per_row.c.variant,
                per_row.c.currency,
                sa.func.count(sa.distinct(per_row.c.id)),
                sa.func.sum(per_row.c.revenue),
                sa.func.sum(per_row.c.revenue * per_row.c.revenue),
            ).group_by(per_row.c.variant, per_row.c.currency)
        )
    ).all()
    converters: dict[str, int] = {
        name: n
        for name, n in await session.execute(
            sa.select(per_row.c.variant, sa.func.count(sa.distinct(per_row.c.id))).group_by(
                per_row.c.variant
            )
        )
    }
    revenue: dict[str, dict[str, int]] = {}
    for name, currency, _, total, _ in rows:
        revenue.setdefault(name, {})[currency] = int(total)
    totals: dict[str, int] = {}
    for by_currency in revenue.values():
        for currency, total in by_currency.items():
            totals[currency] = totals.get(currency, 0) + total
    main = max(totals, key=lambda c: totals[c]) if totals else None
    squares = {name: float(sq) for name, currency, _, _, sq in rows if currency == main}
    counts = {
        name: experiments.ArmCounts(
            recipients=int(n),
            conversions=int(converters.get(name, 0)),
            revenue_minor=revenue.get(name, {}).get(main or "", 0),
            revenue_squares=squares.get(name, 0.0),
        )
        for name, n in exposed.items()
    }
    return counts, revenue


async def results(session: AsyncSession, campaign: sa.Row[Any]) -> dict[str, Any]:
    """Sent, delivered, bounced, opened, clicked, converted and revenue; per arm if a test."""
    source = source_of(campaign.id)
    funnel = (
        await session.execute(
            sa.select(
                sa.func.count().filter(ledger.c.status.in_(("sent", "delivered"))),
                sa.func.count(ledger.c.delivered_at),
                sa.func.count().filter(ledger.c.status == "failed"),
                sa.func.count(ledger.c.opened_at),
                sa.func.count(ledger.c.clicked_at),
            ).where(ledger.c.source == source)
        )
    ).one()
    counts, revenue = await arm_counts(session, campaign)
    total_revenue: dict[str, int] = {}
    for name, by_currency in revenue.items():
        if name == experiments.HOLDOUT:
            continue
        for currency, amount in by_currency.items():
            total_revenue[currency] = total_revenue.get(currency, 0) + amount
    out: dict[str, Any] = {
        "sent": funnel[0],
        "delivered": funnel[1],
        "bounced": funnel[2],
        "opened": funnel[3],
        "clicked": funnel[4],
        "converted": sum(c.conversions for n, c in counts.items() if n != experiments.HOLDOUT),
        "revenue_minor": total_revenue,
        "arms": [],
        "decision": None,
    }
    for name, c in sorted(counts.items()):
        rate = experiments.wilson(c.conversions, c.recipients)
        per = experiments.mean_interval(c.revenue_minor, c.revenue_squares, c.recipients)
        out["arms"].append(
            {
                "variant": name,
                "recipients": c.recipients,
                "converted": c.conversions,
                "conversion_rate": _interval(rate),
                "revenue_minor": revenue.get(name, {}),
                "revenue_per_recipient_minor": _interval(per),
            }
        )
    experiment: Mapping[str, Any] | None = campaign.experiment
    if experiment:
        decision = experiments.decide(
            {k: v for k, v in counts.items() if k != REST},
            min_sample=int(experiment.get("min_sample", 1000)),
            threshold=float(experiment.get("threshold", 0.95)),
        )
        out["decision"] = {
            "winner": decision.winner,
            "reason": decision.reason,
            "probability_best": decision.probability_best,
            "rolled_out": experiment.get("winner"),
        }
    return out


_ROLLOUT = sa.text(
    f"""
    UPDATE "{SCHEMA}".sends AS s
    SET payload = u.payload, not_before = u.due
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:payloads AS jsonb[]), CAST(:due AS timestamptz[])
    ) AS u(id, payload, due)
    WHERE s.id = u.id AND s.status = 'queued'
    """
)
"""Rewrites held-back rows for the winner, a chunk per statement; a row the dispatcher
claimed meanwhile is no longer queued and keeps what it was sent with."""


def _interval(interval: experiments.Interval) -> dict[str, float]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high}


async def apply_winner(
    session: AsyncSession, campaign: sa.Row[Any], *, now: datetime, business: ZoneInfo
) -> bool:
    """Give the recipients kept back (`rest`, not yet sent) the winning arm; True if it did.

    Only the held-back rows change, so the test's own arms stay clean for measuring. They
    were queued `rollout_after_hours` late to wait for a decision; with one, they fall due
    when the winner's schedule says (a send-time variant may win), or now if that passed.
    """
    experiment: Mapping[str, Any] = campaign.experiment
    if experiment.get("winner"):
        return False
    counts, _ = await arm_counts(session, campaign)
    decision = experiments.decide(
        {k: v for k, v in counts.items() if k != REST},
        min_sample=int(experiment.get("min_sample", 1000)),
        threshold=float(experiment.get("threshold", 0.95)),
    )
    if decision.winner is None:
        return False
    arm = next(a for a in experiment["arms"] if a["name"] == decision.winner)
    schedule = arm.get("schedule") or campaign.schedule
    queued = (
        await session.execute(
            sa.select(ledger.c.id, ledger.c.customer_id, recipients.c.time_zone)
            .outerjoin(recipients, recipients.c.customer_id == ledger.c.customer_id)
            .where(
                ledger.c.source == source_of(campaign.id),
                ledger.c.variant == REST,
                ledger.c.status == "queued",
            )
        )
    ).all()
    template = str(arm.get("template") or campaign.template)
    for first in range(0, len(queued), sends.CHUNK):
        chunk = queued[first : first + sends.CHUNK]
        await session.execute(
            _ROLLOUT,
            {
                "ids": [send_id for send_id, _, _ in chunk],
                "payloads": [
                    json.dumps(
                        {
                            "template": template,
                            "marketing": True,
                            "data": payload_for(campaign, arm, customer_id),
                        }
                    )
                    for _, customer_id, _ in chunk
                ],
                "due": [
                    send_time(schedule, policy.zone(zone_name, business.key), business, now)
                    for _, _, zone_name in chunk
                ],
            },
        )
    await session.execute(
        sa.update(campaigns)
        .where(campaigns.c.id == campaign.id)
        .values(
            experiment={**experiment, "winner": decision.winner, "decided_at": now.isoformat()},
            updated_at=now,
        )
    )
    return True


JOB = ScheduledJob("check-campaigns", 15, check_campaigns)
"""Registered in `services.messaging.SERVICE.jobs`; every 15 s is soon enough to notice."""
