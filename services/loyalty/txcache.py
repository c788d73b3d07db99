"""Per-transaction memo of configuration the purchase path reads (rules, tiers, cards).

Kept in `session.info` under `KEY`, tagged with the session's root transaction, so a
later transaction on the same session starts afresh. Only read-mostly configuration
that the purchase path itself never changes goes in here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

KEY = "loyalty.txcache"


def memo(session: AsyncSession) -> dict[str, Any]:
    """The current transaction's memo (a throwaway dict outside a transaction)."""
    transaction = session.sync_session.get_transaction()
    if transaction is None:
        return {}
    entry = session.info.get(KEY)
    if entry is None or entry[0] is not transaction:
        entry = (transaction, {})
        session.info[KEY] = entry
    memo_: dict[str, Any] = entry[1]
    return memo_
