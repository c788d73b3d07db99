"""Campaigns: an audience, an offer, channels, a template and a schedule, sent once each.

Life cycle: `draft` -> (start) `scheduled` or `running` -> `completed`; `paused` and back
by pause / resume; `cancelled` from any state before completion.

* Starting materialises the audience into the send ledger through `sends.enqueue_many`,
  in chunks read by keyset, one statement per chunk. The ledger is unique on (source,
  customer, channel), so starting again, or re-running after a crash, adds nobody twice.
  Each row's `not_before` carries the schedule: now, a time in the business zone, or a
  wall-clock time in the recipient's own zone.
* A/B/n tests (see `services.messaging.experiments`) assign each recipient an arm by hash;
  the holdout (drawn among the reachable, see `_reachable`) is recorded as `held_out`
  ledger rows on the first channel: never sent, but they say who the control group is,
  so its purchases can be measured. These rows are written here directly (set-wise, ON
  CONFLICT DO NOTHING) because they are not sends: no channel or policy decision.
* Pausing sets the status; the dispatcher leaves a paused campaign's rows queued.
  Cancelling turns queued rows into `cancelled`.
* Completion, results and a test's roll-out are in `services.messaging.campaign_outcomes`.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging import audience, experiments, policy, sends
from services.messaging.models import SCHEMA, campaigns
from services.messaging.models import sends as ledger
from shared.settings import Settings

SOURCE = "messaging"
ACTIVE = ("scheduled", "running")
OPEN = ("queued", "reserved")
STARTABLE = ("draft",)
CANCELLABLE = ("draft", "scheduled", "running", "paused")
REST = "rest"
"""The variant of recipients kept back for the winner of a test with `auto_rollout`."""


class CampaignRefused(Exception):
    """A request the campaign's state refuses: `status` and `kind` become the problem."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail


def source_of(campaign_id: uuid.UUID) -> str:
    """The ledger's `source` for a campaign's rows."""
    return f"campaign:{campaign_id}"


def send_time(
    schedule: Mapping[str, Any], recipient_zone: ZoneInfo, business: ZoneInfo, now: datetime
) -> datetime:
    """When a recipient's message falls due, in UTC; never earlier than `now`.

    `now`: at once. `at`: a moment, read in the business zone unless it carries an offset.
    `local`: a wall-clock time read in the recipient's own zone (10:00 in Bangkok and
    10:00 in Kuala Lumpur are an hour apart).
    """
    kind = schedule.get("kind", "now")
    if kind == "now":
        return now
    at = datetime.fromisoformat(str(schedule["at"]))
    if at.tzinfo is None:
        at = at.replace(tzinfo=recipient_zone if kind == "local" else business)
    return max(now, at.astimezone(UTC))


def voucher_code(offer: Mapping[str, Any], campaign_id: uuid.UUID, customer_id: uuid.UUID) -> str:
    """The recipient's code: the fixed `code`, or `code_template` with `{code}` filled in.

    The filled-in part is derived from (campaign, customer), so a re-run gives the same
    code, and is unguessable from another customer's code without the campaign id.
    """
    if "code" in offer:
        return str(offer["code"])
    digest = hashlib.sha256(f"voucher:{campaign_id}:{customer_id}".encode()).digest()
    unique = base64.b32encode(digest[:5]).decode()
    return str(offer["code_template"]).replace("{code}", unique)


def resolved_offer(
    offer: Mapping[str, Any] | None, campaign_id: uuid.UUID, customer_id: uuid.UUID
) -> dict[str, Any] | None:
    """The offer as the template reads it: a voucher's code becomes `voucher_code`."""
    if not offer:
        return None
    out = {k: v for k, v in offer.items() if k not in ("code", "code_template")}
    if offer.get("kind") == "voucher":
        out["voucher_code"] = voucher_code(offer, campaign_id, customer_id)
    return out


async def get(session: AsyncSession, campaign_id: uuid.UUID) -> sa.Row[Any] | None:
    return (
        await session.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id))
    ).first()


async def create(
    session: AsyncSession, values: Mapping[str, Any], *, created_by: str | None, now: datetime
) -> sa.Row[Any]:
    """A new draft campaign; `values` were validated by the API."""
    row = {
        "id": uuid.uuid4(),
        "status": "draft",
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
        **values,
        "audience": audience.validate(values["audience"]),
    }
    created: sa.Row[Any] = (
        await session.execute(insert(campaigns).values(row).returning(campaigns))
    ).one()
    return created


async def list_campaigns(
    session: AsyncSession, *, status: str | None, after: uuid.UUID | None, limit: int
) -> list[sa.Row[Any]]:
    query = sa.select(campaigns).order_by(campaigns.c.id).limit(limit)
    if status is not None:
        query = query.where(campaigns.c.status == status)
    if after is not None:
        query = query.where(campaigns.c.id > after)
    return list((await session.execute(query)).all())


async def _lock(session: AsyncSession, campaign_id: uuid.UUID) -> sa.Row[Any]:
    found = (
        await session.execute(
            sa.select(campaigns).where(campaigns.c.id == campaign_id).with_for_update()
        )
    ).first()
    if found is None:
        raise CampaignRefused(404, "campaign-not-found", f"No campaign {campaign_id}.")
    return found


def _refuse_unless(campaign: sa.Row[Any], allowed: tuple[str, ...], action: str) -> None:
    if campaign.status not in allowed:
        raise CampaignRefused(
            409, "campaign-state", f"Cannot {action} a campaign that is {campaign.status}."
        )


async def _set_status(
    session: AsyncSession, campaign_id: uuid.UUID, now: datetime, **values: Any
) -> sa.Row[Any]:
    updated: sa.Row[Any] = (
        await session.execute(
            sa.update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(updated_at=now, **values)
            .returning(campaigns)
        )
    ).one()
    return updated


def _arms(experiment: Mapping[str, Any] | None) -> list[experiments.Arm]:
    if not experiment:
        return []
    arms = [experiments.Arm(a["name"], float(a["weight"])) for a in experiment["arms"]]
    holdout = float(experiment.get("holdout", 0))
    if holdout > 0:
        # Weights are relative: the holdout is `holdout` of everyone.
        total = sum(a.weight for a in arms)
        arms.append(experiments.Arm(experiments.HOLDOUT, total * holdout / (1 - holdout)))
    return arms


async def start(
    session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime, settings: Settings
) -> sa.Row[Any]:
    """Materialise the audience into the ledger and set the campaign going."""
    campaign = await _lock(session, campaign_id)
    _refuse_unless(campaign, STARTABLE, "start")
    business = ZoneInfo(settings.messaging_time_zone)
    first_due = await materialise(session, campaign, now=now, business=business)
    status = "scheduled" if first_due is not None and first_due > now else "running"
    return await _set_status(session, campaign_id, now, status=status, started_at=now)


async def materialise(
    session: AsyncSession, campaign: sa.Row[Any], *, now: datetime, business: ZoneInfo
) -> datetime | None:
    """Enqueue every audience member once; returns the earliest `not_before` written."""
    source = source_of(campaign.id)
    experiment: Mapping[str, Any] | None = campaign.experiment
    arms = _arms(experiment)
    by_name = {a["name"]: a for a in (experiment or {}).get("arms", [])}
    first_arm: Mapping[str, Any] = next(iter(by_name.values()), {})
    test_fraction = float((experiment or {}).get("test_fraction", 1.0))
    rollout_delay = timedelta(hours=float((experiment or {}).get("rollout_after_hours", 24)))
    rest_key = uuid.uuid5(campaign.id, "rollout")
    earliest: datetime | None = None
    async for chunk in audience.members(session, campaign.audience):
        rows: list[sends.EnqueueRow] = []
        held: list[tuple[uuid.UUID, datetime]] = []
        for member in chunk:
            customer_id, zone_name = member["customer_id"], member["time_zone"]
            variant = experiments.assign(campaign.id, customer_id, arms) if arms else None
            held_back = (
                variant not in (None, experiments.HOLDOUT)
                and test_fraction < 1
                and experiments.bucket(rest_key, customer_id) >= test_fraction
            )
            if held_back:
                # Kept back for the winner; sent with the first arm's content if no
                # decision came by then.
                variant = REST
            arm: Mapping[str, Any] = by_name.get(variant or "", first_arm)
            schedule = arm.get("schedule") or campaign.schedule
            due = send_time(schedule, policy.zone(zone_name, business.key), business, now)
            if variant == experiments.HOLDOUT and _reachable(member, campaign.channels):
                held.append((customer_id, due))
                continue
            if held_back:
                due += rollout_delay
            earliest = due if earliest is None else min(earliest, due)
            rows.append(
                sends.EnqueueRow(
                    source=source,
                    customer_id=customer_id,
                    channels=list(campaign.channels),
                    template=str(arm.get("template") or campaign.template),
                    payload=payload_for(campaign, arm, customer_id),
                    not_before=due,
                    variant=variant,
                    marketing=True,
                )
            )
        if rows:
            await sends.enqueue_many(session, rows)
        if held:
            await session.execute(
                _HOLD_OUT,
                {
                    "source": source,
                    "channel": campaign.channels[0],
                    "now": now,
                    "customers": [customer_id for customer_id, _ in held],
                    "due": [due for _, due in held],
                },
            )
    return earliest


def _reachable(member: Mapping[Any, Any], channels: list[str]) -> bool:
    """Whether the customer could have been sent to now.

    Only such customers join the holdout as `held_out`: the arms are measured over the
    customers actually sent to, so the control group must be drawn from the reachable
    too. An unreachable holdout member is enqueued like anyone else and is recorded as
    `skipped` with the reason, which keeps them out of both sides of the comparison.
    """
    return any(policy.unreachable(member, c, marketing=True) is None for c in channels)


def payload_for(
    campaign: sa.Row[Any], arm: Mapping[str, Any], customer_id: uuid.UUID
) -> dict[str, Any]:
    offer = arm.get("offer") if "offer" in arm else campaign.offer
    return {
        "campaign_id": str(campaign.id),
        "offer": resolved_offer(offer, campaign.id, customer_id),
    }


_HOLD_OUT = sa.text(
    f"""
    INSERT INTO "{SCHEMA}".sends
        (id, source, customer_id, channel, variant, status, reason, not_before, attempts,
         created_at)
    SELECT gen_random_uuid(), :source, u.customer_id, :channel, 'holdout', 'held_out',
           'holdout', u.due, 0, :now
    FROM unnest(CAST(:customers AS uuid[]), CAST(:due AS timestamptz[])) AS u(customer_id, due)
    ON CONFLICT (source, customer_id, channel) DO NOTHING
    """
)
"""The holdout's rows, a chunk per statement. `not_before` records when the message would
have gone: the start of the holdout's attribution window."""


async def pause(session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime) -> sa.Row[Any]:
    """Stop sending; queued rows stay queued for `resume`."""
    campaign = await _lock(session, campaign_id)
    _refuse_unless(campaign, ACTIVE, "pause")
    return await _set_status(session, campaign_id, now, status="paused")


async def resume(session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime) -> sa.Row[Any]:
    """Carry on sending; the completion check then decides whether it is done."""
    campaign = await _lock(session, campaign_id)
    _refuse_unless(campaign, ("paused",), "resume")
    return await _set_status(session, campaign_id, now, status="running")


async def cancel(session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime) -> sa.Row[Any]:
    """Stop for good: queued rows become `cancelled` (a row already reserved may still go)."""
    campaign = await _lock(session, campaign_id)
    _refuse_unless(campaign, CANCELLABLE, "cancel")
    await session.execute(
        sa.update(ledger)
        .where(ledger.c.source == source_of(campaign_id), ledger.c.status == "queued")
        .values(status="cancelled", reason="campaign-cancelled")
    )
    return await _set_status(session, campaign_id, now, status="cancelled", completed_at=now)


async def progress(
    session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """Live counts: queued (due), deferred (due later), reserved, sent, skipped by reason…"""
    query = (
        sa.select(
            ledger.c.status,
            ledger.c.reason,
            (ledger.c.not_before > now).label("later"),
            sa.func.count(),
        )
        .where(ledger.c.source == source_of(campaign_id))
        .group_by(ledger.c.status, ledger.c.reason, sa.text("3"))
    )
    out: dict[str, Any] = {
        "queued": 0,
        "deferred": 0,
        "reserved": 0,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "held_out": 0,
        "cancelled": 0,
        "skipped": {},
    }
    for status, reason, later, n in await session.execute(query):
        if status == "skipped":
            out["skipped"][reason or "unknown"] = out["skipped"].get(reason or "unknown", 0) + n
        elif status == "queued":
            out["deferred" if later else "queued"] += n
        else:
            out[status] += n
    # Delivered messages were sent too; "sent" counts both.
    out["sent"] += out["delivered"]
    out["total"] = sum(v for k, v in out.items() if k not in ("skipped", "delivered")) + sum(
        out["skipped"].values()
    )
    return out
