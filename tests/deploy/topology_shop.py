"""The coffee chain the topology test runs, and the books it keeps by hand.

`Shop` calls the running APIs as the tills and the back office would; every purchase,
refund and referral reward is booked on a `Customer` as it is made, with the points the
earning rules below give, worked out here rather than read back. `books_match` and
`ledger_is_exact` then compare those books with what loyalty and scoring say.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import httpx

from tests.support.processes import eventually

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


def expected_points(total_minor: int, coffee_minor: int = 0) -> int:
    """The earning rules above, worked by hand: coffee lines x3, the rest at the base rate.

    Only for purchases whose lines do not exceed the total (no discounts).
    """
    assert total_minor >= coffee_minor
    coffee = Decimal(coffee_minor) / 100 * BASE_RATE * COFFEE_MULTIPLIER
    rest = Decimal(total_minor - coffee_minor) / 100 * BASE_RATE
    return int((coffee + rest).to_integral_value(rounding=ROUND_FLOOR))


def refunded_points(points: int, total_minor: int, amount_minor: int) -> int:
    """The share of a purchase's points a first partial refund takes back (rounded down)."""
    return points * amount_minor // total_minor


@dataclass
class Customer:
    """What one customer should end up with, kept as the test makes things happen."""

    name: str
    id: str = ""
    balance: int = 0
    orders: int = 0
    spend_minor: int = 0
    stores: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)
    purchases: list[str] = field(default_factory=list)
    refunds: list[str] = field(default_factory=list)
    bonuses: int = 0

    def bought(
        self, purchase_id: str, store: str, channel: str, total_minor: int, points: int
    ) -> None:
        """Book a purchase that must earn `points` once and count once in scoring."""
        self.balance += points
        self.orders += 1
        self.spend_minor += total_minor
        self.stores[store] += 1
        self.channels[channel] += 1
        self.purchases.append(purchase_id)

    def refunded(self, refund_id: str, amount_minor: int, points: int) -> None:
        """Book a partial refund: `points` taken back once, the spend reduced."""
        self.balance -= points
        self.spend_minor -= amount_minor
        self.refunds.append(refund_id)

    def rewarded(self, points: int) -> None:
        """Book one referral bonus."""
        self.balance += points
        self.bonuses += 1


@dataclass
class Shop:
    """The running APIs, the tokens that call them, and what the test expects of them."""

    http: httpx.AsyncClient
    apis: dict[str, str]
    admin: dict[str, str]
    tills: dict[str, dict[str, str]]
    customers: dict[str, Customer] = field(default_factory=dict)

    def url(self, service: str, path: str) -> str:
        """The address of `path` in `service`'s API."""
        return f"{self.apis[service]}/v1/{service}{path}"

    async def call(
        self, method: str, service: str, path: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        """One request to `service`'s API with `headers` (a bearer token)."""
        return await self.http.request(method, self.url(service, path), headers=headers, **kwargs)

    async def configure(self) -> None:
        """The back office's first morning: the earning rules and a referral programme."""
        rules = await self.call("POST", "loyalty", "/rules", self.admin, json=RULES)
        assert rules.status_code == 201, rules.text
        starts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        body = {"starts_at": starts, "rules": PROGRAMME}
        programme = await self.call("POST", "referrals", "/programmes", self.admin, json=body)
        assert programme.status_code == 201, programme.text

    async def sign_up(self, name: str, store: str, code: str | None = None) -> Customer:
        """Sign a customer up at `store`'s till, with a referral code when given."""
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

    async def buy(self, name: str, store: str, total_minor: int, cups: int = 0) -> str:
        """Post a purchase at `store`'s till, book what it must earn; answer its id."""
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
        points = expected_points(total_minor, cups * LATTE_MINOR)
        assert response.json()["points"] == points, response.text
        purchase_id = str(response.json()["purchase_id"])
        customer.bought(purchase_id, store, "pos", total_minor, points)
        return purchase_id

    async def refund(
        self, name: str, store: str, purchase_id: str, amount_minor: int, points: int
    ) -> None:
        """Refund part of a till purchase at `store`; it must take back `points`."""
        body = {"amount_minor": amount_minor}
        path = f"/purchases/{purchase_id}/refunds"
        response = await self.call("POST", "loyalty", path, self.tills[store], json=body)
        assert response.status_code == 201, response.text
        assert response.json()["points_reversed"] == points, response.text
        self.customers[name].refunded(str(response.json()["refund_id"]), amount_minor, points)

    async def referral_code(self, customer: Customer) -> str:
        """The display code referrals issued `customer` (once it has seen the signup)."""

        async def issued() -> str | None:
            response = await self.call("GET", "referrals", f"/codes/{customer.id}", self.admin)
            return None if response.status_code == 200 else response.text

        await eventually(issued, 30, f"referral code of {customer.name}")
        response = await self.call("GET", "referrals", f"/codes/{customer.id}", self.admin)
        return str(response.json()["display"])

    async def referral_status(self, friend: Customer) -> str | None:
        """The status of the referral that brought `friend`, if there is one."""
        params = {"referee_id": friend.id}
        response = await self.call("GET", "referrals", "", self.admin, params=params)
        items = response.json()["items"] if response.status_code == 200 else []
        return str(items[0]["status"]) if items else None

    async def referred(self, referrer: Customer, friend_name: str, store: str) -> Customer:
        """Sign a friend up with the referrer's code; wait until referrals attributed it."""
        friend = await self.sign_up(friend_name, store, await self.referral_code(referrer))

        async def attributed() -> str | None:
            status = await self.referral_status(friend)
            return None if status == "pending" else f"status {status}"

        await eventually(attributed, 30, f"referral of {friend_name}")
        return friend


def rewarded(referrer: Customer, friend: Customer) -> None:
    """Book the two bonuses a qualified referral pays."""
    referrer.rewarded(REFERRER_POINTS)
    friend.rewarded(REFEREE_POINTS)


async def books_match(shop: Shop) -> str | None:
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
        seen = (state["orders"], state["spend_minor"], state["stores"], state["channels"])
        wanted = (
            customer.orders,
            customer.spend_minor,
            dict(customer.stores),
            dict(customer.channels),
        )
        if seen != wanted or scored.json()["scores"] is None:
            return f"{customer.name}: scoring has {seen}, wanted {wanted}"
    return None


async def ledger_is_exact(shop: Shop) -> None:
    """Each purchase earned once, each refund and referral reward moved points once."""
    for customer in shop.customers.values():
        path = f"/members/{customer.id}/ledger"
        response = await shop.call("GET", "loyalty", path, shop.admin, params={"limit": 500})
        assert response.status_code == 200, response.text
        entries = response.json()
        by_kind: dict[str, Counter[str]] = {}
        for entry in entries:
            by_kind.setdefault(entry["kind"], Counter())[entry["reference"]] += 1
        # Till and web purchases alike: the earn entry's reference is the purchase id.
        earned = Counter(f"purchase:{p}" for p in customer.purchases)
        assert by_kind.pop("earn", Counter()) == earned, customer.name
        refunds = Counter(f"refund:{r}" for r in customer.refunds)
        assert by_kind.pop("refund_reversal", Counter()) == refunds, customer.name
        bonuses = by_kind.pop("bonus", Counter())
        assert bonuses.total() == customer.bonuses, (customer.name, bonuses)
        assert set(bonuses.values()) <= {1}, bonuses  # one entry per reward id
        assert not by_kind, (customer.name, by_kind)  # nothing else moved points
        assert sum(e["points"] for e in entries) == customer.balance, (customer.name, entries)
