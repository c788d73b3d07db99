"""Helpers shared by the contacts API tests."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def sign_up(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    response = await client.post("/v1/contacts", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def add_consent(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    contact_id: str,
    channel: str,
    status: str,
    changed_at: datetime,
    proof: str | None = None,
) -> None:
    """A consent statement, through the consents API."""
    response = await client.put(
        f"/v1/contacts/{contact_id}/consents/{channel}",
        json={
            "status": status,
            "source": "web",
            "proof": proof,
            "changed_at": changed_at.isoformat(),
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text


async def events(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str, Any]]:
    """(type, subject, data) of every event in the contacts outbox, in outbox order."""
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT event_type, key, payload FROM contacts.outbox ORDER BY id")
        )
        return [(t, k, json.loads(p)["data"]) for t, k, p in rows]
