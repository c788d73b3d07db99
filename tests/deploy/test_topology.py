"""The production topology on one machine: every process separate, configured as deployed.

PostgreSQL (the embedded server) and a tansu Kafka-protocol broker stand in for the
managed services. `crm migrate` (twice, at once) and `crm topics ensure` run as the
migrate Job does; then five `crm serve` APIs on their own ports and a `crm worker` per
service (two for loyalty, so its consumer group splits the partitions), all with the
environment the manifests give them. Everything after that goes through HTTP only.

Day one: rules and a referral programme, signups, a referral, purchases at two stores, a
refund; every balance, reward and score lands exactly once. Then, while purchases keep
arriving, one loyalty worker is SIGKILLed and the other SIGTERMed (it must exit 0 within
its grace period), a replacement starts, and at the end the books match the purchases.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.auth import Scope, issue_token
from shared.settings import SERVICE_NAMES, Settings
from tests.support.broker import Broker
from tests.support.database import fresh_database
from tests.support.processes import (
    CRM,
    Child,
    ProcessGroup,
    free_port,
    wait_for_http,
)

pytestmark = pytest.mark.kafka

GRACE_SECONDS = 5.0
GRACE_MARGIN = 2.0  # interpreter exit and closing sockets, after the grace period
PARTITIONS = 4
LOYALTY_TOPICS = ("crm.contacts", "crm.purchases", "crm.referrals")  # its group's topics
KEYS = {"2026-06": secrets.token_urlsafe(32), "2026-12": secrets.token_urlsafe(32)}
SIGNING_KID = "2026-12"

BASE_RATE = Decimal(2)  # points per MYR 1
COFFEE_MULTIPLIER = Decimal(3)
LATTE_MINOR = 1250
RULES = {
    "rules": {
        "base_rates": {"MYR": str(BASE_RATE)},
        "category_multipliers": {"coffee": str(COFFEE_MULTIPLIER)},
        "rounding": "floor",
    }
}
REFERRER_POINTS = 300
REFEREE_POINTS = 100
QUALIFYING_MINOR = 5_000
PROGRAMME = {
    "referrer_points": REFERRER_POINTS,
    "referee_points": REFEREE_POINTS,
    "minimum_purchase_minor": QUALIFYING_MINOR,
    "currency": "MYR",
    "qualify_within_days": 30,
    "monthly_cap": None,
}
STORES = ("kl-01", "pj-02")


def expected_points(total_minor: int, cups: int) -> int:
    """The earning rules above, worked by hand: coffee lines x3, the rest at the base rate.

    Only for purchases whose lines do not exceed the total (no discounts).
    """
    assert total_minor >= cups * LATTE_MINOR
    coffee = Decimal(cups * LATTE_MINOR) / 100 * BASE_RATE * COFFEE_MULTIPLIER
    rest = Decimal(total_minor - cups * LATTE_MINOR) / 100 * BASE_RATE
    return int((coffee + rest).to_integral_value(rounding=ROUND_FLOOR))


@dataclass
class Customer:
    """What one customer should end up with, kept as the test posts things."""

    name: str
    id: str = ""
    balance: int = 0
    orders: int = 0
    spend_minor: int = 0
    stores: Counter[str] = field(default_factory=Counter)
    purchases: list[str] = field(default_factory=list)
    bonuses: int = 0


@dataclass
class Shop:
    """The running APIs, the tokens that call them, and what the test expects of them."""

    http: httpx.AsyncClient
    apis: dict[str, str]
    admin: dict[str, str]
    tills: dict[str, dict[str, str]]
    customers: dict[str, Customer] = field(default_factory=dict)

    def url(self, service: str, path: str) -> str:
        return f"{self.apis[service]}/v1/{service}{path}"

    async def call(
        self, method: str, service: str, path: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        return await self.http.request(method, self.url(service, path), headers=headers, **kwargs)

    async def sign_up(self, name: str, store: str, code: str | None = None) -> Customer:
        body: dict[str, Any] = {
            "given_name": name,
            "email": f"{name}.{uuid.uuid4().hex[:8]}@example.com",
            "source": "pos",
        }
        if code is not None:
            body["referral_code"] = code
        response = await self.call("POST", "contacts", "", self.tills[store], json=body)
        assert response.status_code == 201, response.text
        customer = Customer(name, id=response.json()["id"])
        self.customers[name] = customer
        return customer

    async def buy(self, name: str, store: str, total_minor: int, cups: int = 0) -> None:
        """Post a purchase at `store`'s till and book what it must earn."""
        customer = self.customers[name]
        latte = {"sku": "LATTE", "category": "coffee", "quantity": cups}
        lines = [{**latte, "unit_price_minor": LATTE_MINOR}]
        body = {
            "customer": {"id": customer.id},
            "order_id": uuid.uuid4().hex[:12],
            "currency": "MYR",
            "total_minor": total_minor,
            "lines": lines if cups else [],
        }
        response = await self.call("POST", "loyalty", "/purchases", self.tills[store], json=body)
        assert response.status_code == 201, response.text
        points = expected_points(total_minor, cups)
        assert response.json()["points"] == points, response.text
        customer.balance += points
        customer.orders += 1
        customer.spend_minor += total_minor
        customer.stores[store] += 1
        customer.purchases.append(response.json()["purchase_id"])


def _environment(database_url: str, broker: Broker, data_dir: Path) -> dict[str, str]:
    """What the ConfigMap and Secret give every process (the manifests' variable names)."""
    return {
        "CRM_TRANSPORT": "kafka",
        "CRM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "CRM_KAFKA_CREATE_TOPICS": "false",
        "CRM_KAFKA_PARTITIONS": str(PARTITIONS),
        # A SIGKILLed member leaves the group when its session lapses; keep that short.
        "CRM_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "CRM_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "CRM_DATABASE_URL": database_url,
        "CRM_DATABASE_POOL_SIZE": "3",
        "CRM_JWT_KEYS": json.dumps(KEYS),
        "CRM_JWT_SIGNING_KEY_ID": SIGNING_KID,
        "CRM_PUBLIC_BASE_URL": "https://crm.example.com",
        "CRM_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "CRM_DATA_DIR": str(data_dir),
        "CRM_LOG_JSON": "true",
        "CRM_RELAY_IDLE_POLL_INTERVAL_SECONDS": "0.05",
    }


def _token(scope: Scope, store: str | None = None, kid: str = SIGNING_KID) -> dict[str, str]:
    """A bearer header signed with one of the deployment's keys, as `crm token issue` does."""
    settings = Settings(jwt_keys=KEYS, jwt_signing_key_id=kid)
    token = issue_token(settings, subject=f"{scope.value}-{store}", scopes=[scope], store_id=store)
    return {"Authorization": f"Bearer {token}"}


async def eventually(check: Callable[[], Awaitable[str | None]], timeout: float, what: str) -> None:
    """Poll `check` (None when satisfied, else what is still missing) until `timeout`."""
    deadline = time.monotonic() + timeout
    while (missing := await check()) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s: {missing}")
        await asyncio.sleep(0.2)


async def _migrate_and_create_topics(group: ProcessGroup, env: dict[str, str]) -> None:
    """The migrate Job: two migrations at once (a re-run racing a roll-out), and the topics."""
    jobs = [
        group.run("migrate-1", [*CRM, "migrate"], env, timeout=60),
        group.run("migrate-2", [*CRM, "migrate"], env, timeout=60),
        group.run("topics-ensure", [*CRM, "topics", "ensure"], env, timeout=60),
    ]
    finished = await asyncio.gather(*jobs)
    for job in finished:
        assert job.process.returncode == 0, job.tail()
    listed = finished[-1].output()
    for topic in ("crm.contacts", "crm.purchases", "crm.loyalty", "crm.dead-letters"):
        assert f"created: {topic}" in listed, listed
    admin = AIOKafkaAdminClient(bootstrap_servers=env["CRM_KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        described = await admin.describe_topics(list(LOYALTY_TOPICS))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(
        LOYALTY_TOPICS, PARTITIONS
    )


@dataclass
class Worker:
    """A `crm worker` process and the probe port its pod would expose as `metrics`."""

    service: str
    child: Child
    probes: str

    async def metrics(self, http: httpx.AsyncClient) -> dict[tuple[str, str], float]:
        """Its Prometheus samples, by (name, labels as written)."""
        response = await http.get(f"{self.probes}/metrics")
        assert response.status_code == 200, response.text
        samples = {}
        for line in response.text.splitlines():
            if found := SAMPLE.fullmatch(line):
                samples[found["name"], found["labels"] or ""] = float(found["value"])
        return samples


SAMPLE = re.compile(r"(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")


async def _start_worker(
    group: ProcessGroup, env: dict[str, str], http: httpx.AsyncClient, service: str, name: str
) -> Worker:
    """Start a worker with its own probe port and wait until its liveness probe answers."""
    port = free_port()
    child = group.start(name, [*CRM, "worker", service], {**env, "CRM_METRICS_PORT": str(port)})
    worker = Worker(service, child, f"http://127.0.0.1:{port}")
    await wait_for_http(http, f"{worker.probes}/healthz", child, timeout=75)
    return worker


async def _bring_up(
    group: ProcessGroup, env: dict[str, str], http: httpx.AsyncClient
) -> tuple[dict[str, str], dict[str, list[Worker]]]:
    """Start the five APIs and six workers; answer the API base URLs and the workers."""
    apis: dict[str, str] = {}
    servers: dict[str, Child] = {}
    for service in SERVICE_NAMES:
        port = free_port()
        serve_env = {**env, "CRM_HOST": "127.0.0.1", "CRM_PORT": str(port)}
        servers[service] = group.start(f"serve-{service}", [*CRM, "serve", service], serve_env)
        apis[service] = f"http://127.0.0.1:{port}"
    names = [(s, f"worker-{s}") for s in SERVICE_NAMES] + [("loyalty", "worker-loyalty-2")]
    started, _ = await asyncio.gather(
        asyncio.gather(*(_start_worker(group, env, http, s, name) for s, name in names)),
        asyncio.gather(
            *(
                wait_for_http(http, f"{apis[s]}/v1/{s}/readyz", servers[s], timeout=75)
                for s in SERVICE_NAMES
            )
        ),
    )
    workers: dict[str, list[Worker]] = {}
    for (service, _), worker in zip(names, started, strict=True):
        workers.setdefault(service, []).append(worker)
    return apis, workers


async def _workers_drained(http: httpx.AsyncClient, workers: list[Worker]) -> str | None:
    """None when every live worker sees its outbox empty and dead-lettered nothing."""
    for worker in workers:
        if not worker.child.running():
            continue
        samples = await worker.metrics(http)
        own = f'schema="{worker.service}"'  # each service's schema is named after it
        backlog = samples.get(("crm_outbox_oldest_unpublished_age_seconds", own))
        if backlog != 0:
            return f"{worker.child.name}: oldest unpublished outbox row {backlog} s old"
        for (name, labels), value in samples.items():
            if name == "crm_events_consumed_total" and "dead_lettered" in labels and value:
                return f"{worker.child.name}: {name}{{{labels}}} {value}"
    return None


async def _group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """The state of a consumer group and how many members it has, as the broker says."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _, _, state, _, _, members = response.groups[0]
    return str(state), len(members)


async def _group_has(bootstrap: str, group: str, members: int, what: str) -> None:
    async def settled() -> str | None:
        found = await _group_members(bootstrap, group)
        return None if found == ("Stable", members) else f"{group} is {found}"

    began = time.monotonic()
    await eventually(settled, 30, what)
    print(f"{what}: {time.monotonic() - began:.1f} s")


def _no_errors_logged(group: ProcessGroup) -> None:
    """Nothing failed quietly: no process logged an error or a traceback."""
    for child in group.children:
        for line in child.output().splitlines():
            failed = '"level": "error"' in line or '"level": "critical"' in line
            assert not failed and "Traceback" not in line, f"{child.name}: {line}"


async def _books_match(shop: Shop) -> str | None:
    """None when every customer's balance and scoring state are what the test booked."""
    for customer in shop.customers.values():
        member = await shop.call("GET", "loyalty", f"/members/{customer.id}", shop.admin)
        if member.status_code != 200 or member.json()["balance"] != customer.balance:
            return f"{customer.name}: loyalty {member.status_code} {member.text[:300]}"
        if not customer.orders:
            continue
        scored = await shop.call("GET", "scoring", f"/customers/{customer.id}", shop.admin)
        if scored.status_code != 200:
            return f"{customer.name}: scoring {scored.status_code}"
        state = scored.json()["state"]
        seen = (state["orders"], state["spend_minor"], state["stores"])
        wanted = (customer.orders, customer.spend_minor, dict(customer.stores))
        if seen != wanted or scored.json()["scores"] is None:
            return f"{customer.name}: scoring has {seen}, wanted {wanted}"
    return None


async def _ledger_is_exact(shop: Shop) -> None:
    """Each purchase earned once and each referral reward was credited once, per member."""
    for customer in shop.customers.values():
        response = await shop.call(
            "GET", "loyalty", f"/members/{customer.id}/ledger", shop.admin, params={"limit": 500}
        )
        assert response.status_code == 200, response.text
        entries = response.json()
        earned = Counter(e["reference"] for e in entries if e["kind"] == "earn")
        assert earned == Counter(f"purchase:{p}" for p in customer.purchases), customer.name
        bonuses = [e for e in entries if e["kind"] == "bonus"]
        assert len(bonuses) == customer.bonuses, (customer.name, bonuses)
        assert len({e["reference"] for e in bonuses}) == len(bonuses), bonuses
        assert sum(e["points"] for e in entries) == customer.balance, (customer.name, entries)


async def _referral_code(shop: Shop, customer: Customer) -> str:
    async def issued() -> str | None:
        response = await shop.call("GET", "referrals", f"/codes/{customer.id}", shop.admin)
        return None if response.status_code == 200 else response.text

    await eventually(issued, 30, f"referral code of {customer.name}")
    response = await shop.call("GET", "referrals", f"/codes/{customer.id}", shop.admin)
    return str(response.json()["display"])


async def _referral_status(shop: Shop, friend: Customer) -> str | None:
    response = await shop.call("GET", "referrals", "", shop.admin, params={"referee_id": friend.id})
    items = response.json()["items"] if response.status_code == 200 else []
    return str(items[0]["status"]) if items else None


async def _referred(shop: Shop, referrer: Customer, friend_name: str, store: str) -> Customer:
    """Sign a friend up with the referrer's code; wait until referrals attributed it."""
    friend = await shop.sign_up(friend_name, store, await _referral_code(shop, referrer))

    async def attributed() -> str | None:
        status = await _referral_status(shop, friend)
        return None if status == "pending" else f"status {status}"

    await eventually(attributed, 30, f"referral of {friend_name}")
    return friend


def _rewarded(referrer: Customer, friend: Customer) -> None:
    """Book the two bonuses a qualified referral pays."""
    referrer.balance += REFERRER_POINTS
    referrer.bonuses += 1
    friend.balance += REFEREE_POINTS
    friend.bonuses += 1


async def _configure(shop: Shop) -> None:
    rules = await shop.call("POST", "loyalty", "/rules", shop.admin, json=RULES)
    assert rules.status_code == 201, rules.text
    starts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    programme = await shop.call(
        "POST",
        "referrals",
        "/programmes",
        shop.admin,
        json={"starts_at": starts, "rules": PROGRAMME},
    )
    assert programme.status_code == 201, programme.text


async def _first_day(shop: Shop) -> None:
    """Signups, a referral, purchases at both stores and a refund; all lands exactly once."""
    await _configure(shop)
    aisyah = await shop.sign_up("aisyah", "kl-01")
    await shop.sign_up("ben", "pj-02")
    await shop.sign_up("chen", "kl-01")
    mei = await _referred(shop, aisyah, "mei", "kl-01")

    await shop.buy("aisyah", "kl-01", 3_075, cups=2)
    await shop.buy("aisyah", "pj-02", 1_999)
    await shop.buy("ben", "pj-02", 4_250, cups=1)
    await shop.buy("chen", "kl-01", 10_010, cups=3)
    await shop.buy("chen", "pj-02", 899)
    await shop.buy("mei", "kl-01", 6_000, cups=2)  # her first purchase qualifies
    _rewarded(aisyah, mei)

    chen = shop.customers["chen"]
    refund = await shop.call(
        "POST",
        "loyalty",
        f"/purchases/{chen.purchases[0]}/refunds",
        shop.tills["kl-01"],
        json={"amount_minor": 2_500},
    )
    assert refund.status_code == 201, refund.text
    reversed_points = expected_points(10_010, 3) * 2_500 // 10_010
    assert refund.json()["points_reversed"] == reversed_points, refund.text
    chen.balance -= reversed_points
    chen.spend_minor -= 2_500

    await eventually(lambda: _books_match(shop), 40, "day one's balances and scores")
    assert await _referral_status(shop, mei) == "qualified"
    await _ledger_is_exact(shop)
    # A token signed before the last rotation still works in every process that holds the ring.
    older = _token(Scope.READ, kid="2026-06")
    for service, path in [("loyalty", f"/members/{mei.id}"), ("scoring", f"/customers/{mei.id}")]:
        assert (await shop.call("GET", service, path, older)).status_code == 200


@dataclass
class Stream:
    """A known list of purchases, posted one by one; the tail waits for the replacement."""

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


async def _worker_churn(
    shop: Shop, group: ProcessGroup, env: dict[str, str], loyalty: list[Worker]
) -> None:
    """Kill and stop both loyalty workers mid-stream; a replacement catches up, exactly."""
    aisyah = shop.customers["aisyah"]
    friends = [await _referred(shop, aisyah, f"friend{i}", STORES[i % 2]) for i in range(3)]
    regulars = ["aisyah", "ben", "chen", "mei"]
    purchases = [
        (regulars[i % 4], STORES[i % 2], LATTE_MINOR * (i % 3) + 300 + 137 * i, i % 3)
        for i in range(60)
    ]
    for i, friend in enumerate(friends):  # first purchases: before, during and after
        purchases.insert(10 + 18 * i, (friend.name, STORES[i % 2], QUALIFYING_MINOR + 500, 1))
    stream = Stream(purchases, tail=15)
    poster = asyncio.create_task(stream.post(shop))
    try:
        while stream.posted < 15:  # mid-stream: the workers have events in hand
            assert not poster.done(), poster
            await asyncio.sleep(0.02)
        killed, stopped = (worker.child for worker in loyalty)
        killed.send(signal.SIGKILL)
        started = time.monotonic()
        stopped.send(signal.SIGTERM)
        code = await stopped.exit_code(GRACE_SECONDS + GRACE_MARGIN + 5)
        took = time.monotonic() - started
        print(f"SIGTERM'd loyalty worker exited {code} after {took:.2f} s")
        assert code == 0, stopped.tail()
        assert took <= GRACE_SECONDS + GRACE_MARGIN, f"SIGTERM'd worker took {took:.1f} s"
        assert await killed.exit_code(5) == -signal.SIGKILL
        loyalty.append(await _start_worker(group, env, shop.http, "loyalty", "worker-loyalty-3"))
        stream.replaced.set()
        await poster
    finally:
        poster.cancel()
    for friend in friends:
        _rewarded(aisyah, friend)

    await eventually(lambda: _books_match(shop), 45, "balances and scores after the churn")
    for friend in friends:
        assert await _referral_status(shop, friend) == "qualified", friend.name
    await _ledger_is_exact(shop)
    consumed = await loyalty[-1].metrics(shop.http)
    print(
        "replacement consumed:",
        {k[1]: v for k, v in consumed.items() if k[0] == "crm_events_consumed_total"},
    )


async def test_production_topology(
    postgres_server: str, kafka_broker: Broker, tmp_path: Path
) -> None:
    group = ProcessGroup(tmp_path / "logs")
    async with fresh_database(postgres_server) as database_url:
        env = _environment(database_url, kafka_broker, tmp_path / "data")
        try:
            await _migrate_and_create_topics(group, env)
            async with httpx.AsyncClient(timeout=10) as http:
                apis, workers = await _bring_up(group, env, http)
                bootstrap = kafka_broker.bootstrap
                await _group_has(bootstrap, "crm.loyalty", 2, "both loyalty workers in the group")
                tills = {store: _token(Scope.POS, store) for store in STORES}
                shop = Shop(http, apis, _token(Scope.ADMIN), tills)
                await _first_day(shop)
                await _worker_churn(shop, group, env, workers["loyalty"])
                # The SIGKILLed member's session lapsed; the SIGTERMed one left at once.
                await _group_has(bootstrap, "crm.loyalty", 1, "only the replacement left")
                every = [worker for running in workers.values() for worker in running]
                await eventually(lambda: _workers_drained(http, every), 15, "outboxes drained")
                assert await _books_match(shop) is None, "something landed twice, late"
                _no_errors_logged(group)
        except BaseException:
            print(group.report())
            raise
        finally:
            group.stop_all()
