"""The production topology on one machine: every process separate, configured as deployed.

PostgreSQL (the embedded server) and a tansu Kafka-protocol broker stand in for the
managed services. `crm migrate` (twice, at once) and `crm topics ensure` run as the
migrate Job does; then five `crm serve` APIs on their own ports and a `crm worker` per
service (two for loyalty, so its consumer group splits the partitions), all with the
environment the manifests give them. Everything after that goes through HTTP, except
what a web shop publishes straight onto `crm.purchases`, as outside systems may.

Day one: rules and a referral programme, signups, a referral, purchases at two stores, a
refund; every balance, reward and score lands exactly once. Then, while till purchases
keep arriving and the web shop keeps publishing orders, one loyalty worker is SIGKILLed
and the other SIGTERMed (it must exit 0 within its grace period), a replacement starts,
and at the end the books match. The till credits its purchases itself, but only the
loyalty workers' consumer group credits the web shop's, so those show that the consumer
path lost nothing and applied nothing twice across the churn, a repeated delivery
included.

The processes are in `topology_processes`, the shop and its books in `topology_shop`,
the web shop in `topology_webshop`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared.auth import Scope
from tests.deploy.topology_processes import (
    GRACE_MARGIN,
    GRACE_SECONDS,
    Worker,
    bring_up,
    environment,
    group_has,
    migrate_and_create_topics,
    no_errors_logged,
    start_worker,
    token,
    workers_drained,
)
from tests.deploy.topology_shop import (
    LATTE_MINOR,
    QUALIFYING_MINOR,
    STORES,
    Shop,
    books_match,
    expected_points,
    ledger_is_exact,
    refunded_points,
    rewarded,
)
from tests.deploy.topology_webshop import WebShop
from tests.support.broker import Broker
from tests.support.database import fresh_database
from tests.support.processes import ProcessGroup, eventually

pytestmark = pytest.mark.kafka

REGULARS = ("aisyah", "ben", "chen", "mei")


async def _first_day(shop: Shop) -> None:
    """Signups, a referral, purchases at both stores and a refund; all lands exactly once."""
    await shop.configure()
    aisyah = await shop.sign_up("aisyah", "kl-01")
    await shop.sign_up("ben", "pj-02")
    await shop.sign_up("chen", "kl-01")
    mei = await shop.referred(aisyah, "mei", "kl-01")

    await shop.buy("aisyah", "kl-01", 3_075, cups=2)
    await shop.buy("aisyah", "pj-02", 1_999)
    await shop.buy("ben", "pj-02", 4_250, cups=1)
    big = await shop.buy("chen", "kl-01", 10_010, cups=3)
    await shop.buy("chen", "pj-02", 899)
    await shop.buy("mei", "kl-01", 6_000, cups=2)  # her first purchase qualifies
    rewarded(aisyah, mei)
    taken_back = refunded_points(expected_points(10_010, 3 * LATTE_MINOR), 10_010, 2_500)
    await shop.refund("chen", "kl-01", big, 2_500, taken_back)

    await eventually(lambda: books_match(shop), 40, "day one's balances and scores")
    assert await shop.referral_status(mei) == "qualified"
    await ledger_is_exact(shop)
    # A token signed before the last rotation still works in every process that holds the ring.
    older = token(Scope.READ, kid="2026-06")
    for service, path in [("loyalty", f"/members/{mei.id}"), ("scoring", f"/customers/{mei.id}")]:
        assert (await shop.call("GET", service, path, older)).status_code == 200


@dataclass
class Stream:
    """A known list of till purchases, posted one by one; the tail waits for the replacement."""

    purchases: list[tuple[str, str, int, int]]
    tail: int
    posted: int = 0
    replaced: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, shop: Shop) -> None:
        for index, (name, store, total, cups) in enumerate(self.purchases):
            if index == len(self.purchases) - self.tail:
                await self.replaced.wait()  # so some purchases surely meet the new worker
            await shop.buy(name, store, total, cups)
            self.posted += 1
            await asyncio.sleep(0.05)


async def _web_orders(web: WebShop, first: int, count: int) -> list[str]:
    """`count` web orders from the regulars, varied; their event ids."""
    return [
        await web.order(REGULARS[i % 4], bags=i % 3, other_minor=173 * i)
        for i in range(first, first + count)
    ]


async def _worker_churn(
    shop: Shop, web: WebShop, group: ProcessGroup, env: dict[str, str], loyalty: list[Worker]
) -> None:
    """Kill and stop both loyalty workers mid-stream; a replacement catches up, exactly."""
    aisyah = shop.customers["aisyah"]
    friends = [await shop.referred(aisyah, f"friend{i}", STORES[i % 2]) for i in range(3)]
    purchases = [
        (REGULARS[i % 4], STORES[i % 2], LATTE_MINOR * (i % 3) + 300 + 137 * i, i % 3)
        for i in range(60)
    ]
    for i, friend in enumerate(friends):  # first purchases: before, during and after
        purchases.insert(10 + 18 * i, (friend.name, STORES[i % 2], QUALIFYING_MINOR + 500, 1))
    stream = Stream(purchases, tail=15)
    poster = asyncio.create_task(stream.post(shop))
    try:
        # Web orders reach the loyalty workers' partitions while they run...
        before = await _web_orders(web, 0, 6)
        while stream.posted < 15:  # mid-stream: the workers have events in hand
            assert not poster.done(), poster
            await asyncio.sleep(0.02)
        killed, stopped = (worker.child for worker in loyalty)
        killed.send(signal.SIGKILL)
        started = time.monotonic()
        stopped.send(signal.SIGTERM)
        # ...while no member is left to take them (only the replacement can credit these)...
        await _web_orders(web, 6, 5)
        await web.refund(web.orders[1], 1_000)
        code = await stopped.exit_code(GRACE_SECONDS + GRACE_MARGIN + 5)
        took = time.monotonic() - started
        print(f"SIGTERM'd loyalty worker exited {code} after {took:.2f} s")
        assert code == 0, stopped.tail()
        assert took <= GRACE_SECONDS + GRACE_MARGIN, f"SIGTERM'd worker took {took:.1f} s"
        assert await killed.exit_code(5) == -signal.SIGKILL
        await _web_orders(web, 11, 3)
        loyalty.append(await start_worker(group, env, shop.http, "loyalty", "worker-loyalty-3"))
        stream.replaced.set()
        # ...and after the replacement joined; one event arrives a second time, as a
        # producer's retry after a lost acknowledgement would send it.
        await _web_orders(web, 14, 4)
        await web.redeliver(before[0])
        await poster
    finally:
        poster.cancel()
    for friend in friends:
        rewarded(aisyah, friend)

    await eventually(lambda: books_match(shop), 45, "balances and scores after the churn")
    for friend in friends:
        assert await shop.referral_status(friend) == "qualified", friend.name
    await ledger_is_exact(shop)
    consumed = await loyalty[-1].metrics(shop.http)
    print(
        f"web shop: {len(web.orders)} orders, 1 refund, 1 repeat; replacement consumed:",
        {k[1]: v for k, v in consumed.items() if k[0] == "crm_events_consumed_total"},
    )


async def test_production_topology(
    postgres_server: str, kafka_broker: Broker, tmp_path: Path
) -> None:
    group = ProcessGroup(tmp_path / "logs")
    async with fresh_database(postgres_server) as database_url:
        env = environment(database_url, kafka_broker, tmp_path / "data")
        try:
            await migrate_and_create_topics(group, env)
            async with httpx.AsyncClient(timeout=10) as http:
                apis, workers = await bring_up(group, env, http)
                bootstrap = kafka_broker.bootstrap
                await group_has(bootstrap, "crm.loyalty", 2, "both loyalty workers in the group")
                tills = {store: token(Scope.POS, store) for store in STORES}
                shop = Shop(http, apis, token(Scope.ADMIN), tills)
                await _first_day(shop)
                async with WebShop.connected(bootstrap, shop) as web:
                    await _worker_churn(shop, web, group, env, workers["loyalty"])
                # The SIGKILLed member's session lapsed; the SIGTERMed one left at once.
                await group_has(bootstrap, "crm.loyalty", 1, "only the replacement left")
                every = [worker for running in workers.values() for worker in running]
                await eventually(lambda: workers_drained(http, every), 15, "outboxes drained")
                assert await books_match(shop) is None, "something landed twice, late"
                no_errors_logged(group)
        except BaseException:
            print(group.report())
            raise
        finally:
            group.stop_all()
