"""Segment rules: the parser, its errors with positions, and its two compilations agreeing."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import segment_rules
from services.scoring.models import customers
from services.scoring.segment_rules import RuleError, parse

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def row(**values: Any) -> dict[str, Any]:
    """A customer row with every rule column, NULL unless given."""
    base: dict[str, Any] = dict.fromkeys(segment_rules.COLUMNS)
    base.update(orders=0, purchase_days=0, spend_minor=0)
    return base | values


@pytest.mark.parametrize(
    ("rule", "values", "expected"),
    [
        ('churn_risk >= 0.6 and clv >= 500 and tier in ["gold"]', {}, False),
        (
            'churn_risk >= 0.6 and clv >= 500 and tier in ["gold"]',
            {"churn_risk": 0.7, "clv": 800.0, "tier": "gold"},
            True,
        ),
        (
            'churn_risk >= 0.6 and clv >= 500 and tier in ["gold"]',
            {"churn_risk": 0.7, "clv": 800.0, "tier": "silver"},
            False,
        ),
        ("orders > 2 or spend_minor >= 10000", {"orders": 1, "spend_minor": 10000}, True),
        ("not (orders > 2)", {"orders": 2}, True),
        ("NOT orders > 2 AND orders >= 2", {"orders": 2}, True),
        ("orders == 3", {"orders": 3}, True),
        ('tier != "gold"', {"tier": None}, True),
        ('tier == "gold"', {"tier": None}, False),
        ("tier == null", {"tier": None}, True),
        ("tier != null", {"tier": "gold"}, True),
        ('tier not in ["gold", "silver"]', {"tier": None}, True),
        ('tier in ["gold", null]', {"tier": None}, True),
        ("churn_risk < 0.5", {"churn_risk": None}, False),
        ("not churn_risk < 0.5", {"churn_risk": None}, True),
        ("rfm_r in [4, 5] and rfm_f >= 4", {"rfm_r": 5, "rfm_f": 4}, True),
        ("tier in []", {"tier": "gold"}, False),
        ("clv >= -1.5e2", {"clv": -100.0}, True),
        ('rfm_segment == "Can\'t lose them"', {"rfm_segment": "Can't lose them"}, True),
        ("rfm_segment == 'Can\\'t lose them'", {"rfm_segment": "Can't lose them"}, True),
        (
            'last_purchase_at < "2026-01-01"',
            {"last_purchase_at": datetime(2025, 12, 31, 23, tzinfo=UTC)},
            True,
        ),
        (
            'signed_up_at >= "2026-06-01T08:00:00+08:00"',
            {"signed_up_at": datetime(2026, 6, 1, 0, 0, tzinfo=UTC)},
            True,
        ),
        (
            "days_since_last_purchase >= 90",
            {"last_purchase_at": NOW - timedelta(days=90)},
            True,
        ),
        (
            "days_since_last_purchase >= 90",
            {"last_purchase_at": NOW - timedelta(days=89, hours=23)},
            False,
        ),
        ("days_since_last_purchase >= 90", {"last_purchase_at": None}, False),
        ("((orders == 1))", {"orders": 1}, True),
        ("orders == 1 or orders == 2 and orders == 3", {"orders": 1}, True),
        ("(orders == 1 or orders == 2) and orders == 3", {"orders": 1}, False),
    ],
)
def test_rules_match(rule: str, values: dict[str, Any], expected: bool) -> None:
    assert parse(rule).matches(row(**values), NOW) is expected


@pytest.mark.parametrize(
    ("rule", "kind", "position"),
    [
        ("clv_12m >= 500", "unknown-attribute", 0),
        ('churn_risk >= 0.6 and tierr in ["gold"]', "unknown-attribute", 22),
        ("status == 'active'", "unknown-attribute", 0),
        ('churn_risk >= "high"', "type-mismatch", 14),
        ("tier == 3", "type-mismatch", 8),
        ('tier > "gold"', "type-mismatch", 5),
        ("signed_up_at > 2026", "type-mismatch", 15),
        ('signed_up_at > "last tuesday"', "type-mismatch", 15),
        ("orders >= null", "type-mismatch", 10),
        ('orders in [1, "2"]', "type-mismatch", 14),
        ("", "syntax", 0),
        ("orders >=", "syntax", 9),
        ("orders = 1", "syntax", 7),
        ("orders >= 1 and", "syntax", 15),
        ("(orders >= 1", "syntax", 12),
        ("orders >= 1)", "syntax", 11),
        ("orders >= 1 orders", "syntax", 12),
        ("orders >= spend_minor", "syntax", 10),
        ("orders 1", "syntax", 7),
        ('tier == "gold', "syntax", 8),
        ("orders >= 1 & orders < 3", "syntax", 12),
        ("orders not 3", "syntax", 11),
        ("tier in ['a' 'b']", "syntax", 13),
        ("__import__('os').system('true')", "syntax", 16),
        ("1 == 1", "syntax", 0),
        ("not " * 50 + "orders == 1", "syntax", 4 * (segment_rules.MAX_DEPTH + 1)),
        ("x" * (segment_rules.MAX_RULE_LENGTH + 1), "syntax", segment_rules.MAX_RULE_LENGTH),
    ],
)
def test_rule_errors_name_kind_and_position(rule: str, kind: str, position: int) -> None:
    with pytest.raises(RuleError) as raised:
        parse(rule)
    assert (raised.value.kind, raised.value.position) == (kind, position), raised.value


def test_unknown_attribute_suggests_a_close_name() -> None:
    with pytest.raises(RuleError, match="did you mean clv"):
        parse("clv_12m >= 500")


def test_rules_are_never_evaluated_as_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser builds its own tree: eval, exec and compile are never reached."""

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("the rule engine must not evaluate Python")

    import builtins

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    rule = parse('churn_risk >= 0.6 and tier in ["gold"]')
    assert rule.matches(row(churn_risk=0.9, tier="gold"), NOW)
    assert rule.attributes == {"churn_risk", "tier"}
    with pytest.raises(RuleError):
        parse("__import__('os')")


# --- the SQL where-clause and the Python predicate agree on every customer -------------


TIERS = [None, "bronze", "silver", "gold"]
SEGMENTS = [None, "Champions", "At risk", "Can't lose them", "Lost"]
RULES = [
    'churn_risk >= 0.6 and clv >= 500 and tier in ["gold"]',
    "churn_risk < 0.3 or clv > 1000",
    "not churn_risk >= 0.5",
    "not (clv >= 200 and orders > 1)",
    'tier != "gold"',
    'tier == "gold"',
    "tier == null",
    "tier != null",
    'tier not in ["gold", "silver"]',
    'tier in ["bronze", null]',
    'not tier in ["bronze"]',
    "rfm_r in [4, 5] and rfm_f >= 3",
    'rfm_segment in ["Champions", "Can\'t lose them"]',
    'rfm_segment != "Lost" and p_alive > 0.5',
    "spend_minor >= 5000.5",
    "orders >= 2 and purchase_days < 3",
    "expected_purchases > 1.25",
    "days_since_last_purchase >= 30",
    "not days_since_last_purchase < 30",
    'last_purchase_at < "2026-10-24"',
    'first_purchase_at >= "2026-01-01T00:00:00+07:00"',
    'signed_up_at == null or signed_up_at < "2026-03-01"',
    'churn_band == "high" or (churn_band == "medium" and rfm_m >= 4)',
    "churn_risk == null",
    "clv in [0, 100.5, 250]",
]


def random_customer(rng: random.Random) -> dict[str, Any]:
    def maybe(make: Callable[[], Any]) -> Any:
        return None if rng.random() < 0.2 else make()

    last = maybe(lambda: NOW - timedelta(days=rng.choice([0, 29, 30, 31]), hours=rng.random()))
    return {
        "customer_id": uuid.uuid4(),
        "status": "active",
        "updated_at": NOW,
        "tier": rng.choice(TIERS),
        "rfm_segment": rng.choice(SEGMENTS),
        "churn_band": rng.choice([None, "low", "medium", "high"]),
        "churn_risk": maybe(lambda: rng.choice([0.3, 0.5, 0.6, rng.random()])),
        "p_alive": maybe(rng.random),
        "clv": maybe(lambda: rng.choice([0.0, 100.5, 250.0, 500.0, rng.uniform(0, 2000)])),
        "expected_purchases": maybe(lambda: rng.uniform(0, 3)),
        "rfm_r": maybe(lambda: rng.randint(1, 5)),
        "rfm_f": maybe(lambda: rng.randint(1, 5)),
        "rfm_m": maybe(lambda: rng.randint(1, 5)),
        "orders": rng.randint(0, 5),
        "purchase_days": rng.randint(0, 4),
        "spend_minor": rng.choice([0, 5000, 5001, rng.randint(0, 20000)]),
        "first_purchase_at": maybe(lambda: datetime(2025, 12, 31, 17, tzinfo=UTC)),
        "last_purchase_at": last,
        "signed_up_at": maybe(lambda: datetime(2026, rng.randint(1, 6), 1, tzinfo=UTC)),
    }


async def test_sql_and_python_compilations_agree(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rng = random.Random(7)
    people = [random_customer(rng) for _ in range(300)]
    async with sessions() as session, session.begin():
        await session.execute(customers.insert(), people)
    columns = [customers.c[name] for name in segment_rules.COLUMNS]
    async with sessions() as session:
        rows = {
            r.customer_id: dict(r._mapping)
            for r in await session.execute(select(customers.c.customer_id, *columns))
        }
        for text_rule in RULES:
            rule = parse(text_rule)
            in_sql = set(
                (
                    await session.execute(select(customers.c.customer_id).where(rule.where(NOW)))
                ).scalars()
            )
            in_python = {cid for cid, values in rows.items() if rule.matches(values, NOW)}
            assert in_sql == in_python, text_rule
            # Both sides of every rule are populated, so agreement is not vacuous.
            assert 0 < len(in_python) < len(rows), text_rule


async def test_where_clause_binds_values_as_parameters(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A string that looks like SQL is a value to compare, never SQL."""
    rule = parse('tier == "x\'; DROP TABLE scoring.customers; --"')
    async with sessions() as session:
        found = await session.execute(select(customers.c.customer_id).where(rule.where(NOW)))
        assert found.all() == []
        still = await session.execute(text("SELECT count(*) FROM scoring.customers"))
        assert still.scalar_one() == 0
