"""Message templates: per channel and locale, Jinja2 in a sandbox, personalised from the
recipient projection and the offer, with dates and money formatted for the locale.

Why a closed set of variables: a template is written by a shop owner and rendered for
thousands of customers by a worker. An unknown name must be caught when the template is
saved (422 naming the line and the variable), not discovered as a failed campaign, so
the context always defines every name in `VARIABLES` (empty when unknown) and rendering
uses `StrictUndefined`. The sandbox keeps a template from reaching Python internals.

Locale fallback: the exact locale (`th-TH`), then the same language (`th`), then
`default`, then `en`, then any variant of the template, so a customer is never skipped
for want of a translation.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal, get_currency_precision
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.messaging.models import templates

VARIABLES: frozenset[str] = frozenset(
    {
        "name",
        "given_name",
        "family_name",
        "tier",
        "points",
        "expiring_points",
        "expiry_date",
        "voucher_code",
        "discount",
        "offer_title",
        "offer_description",
        "link",
        "unsubscribe_url",
    }
)
"""The names a template may use."""

DEFAULT_LOCALE = "default"
LOCALE_CURRENCY = {"ms": "MYR", "th": "THB"}
FALLBACK_CURRENCY = "MYR"

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateInvalid(Exception):
    """A template that does not compile or uses an unknown variable, and where."""

    def __init__(self, field: str, line: int | None, message: str) -> None:
        where = f"{field}, line {line}" if line is not None else field
        super().__init__(f"{where}: {message}")
        self.field = field
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    body: str


@dataclass(frozen=True)
class Compiled:
    subject: Any
    body: Any

    def render(self, context: Mapping[Any, Any]) -> Rendered:
        try:
            subject = self.subject.render(context) if self.subject is not None else None
            return Rendered(subject.strip() if subject else subject, self.body.render(context))
        except TemplateError as exc:
            raise TemplateInvalid("body", getattr(exc, "lineno", None), str(exc)) from exc


def validate(subject: str | None, body: str) -> None:
    """Raise `TemplateInvalid` for a syntax error or a variable outside `VARIABLES`."""
    for field, source in (("subject", subject), ("body", body)):
        if source is None:
            continue
        try:
            tree = _env.parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateInvalid(field, exc.lineno, exc.message or "syntax error") from exc
        unknown = sorted(meta.find_undeclared_variables(tree) - VARIABLES)
        if unknown:
            name = unknown[0]
            raise TemplateInvalid(field, _line_of(source, name), f"unknown variable '{name}'")


def _line_of(source: str, name: str) -> int | None:
    for line, kind, value in _env.lex(source):
        if kind == "name" and value == name:
            return line
    return None


@functools.lru_cache(maxsize=512)
def compile_template(subject: str | None, body: str) -> Compiled:
    """The compiled pair, cached: a campaign renders one template many thousand times."""
    validate(subject, body)
    return Compiled(
        _env.from_string(subject) if subject is not None else None, _env.from_string(body)
    )


@functools.lru_cache(maxsize=64)
def babel_locale(tag: str | None) -> Locale:
    """`ms-MY` -> Babel's `ms_MY`; English for anything unknown."""
    if tag and tag != DEFAULT_LOCALE:
        try:
            return Locale.parse(tag.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            pass
    return Locale.parse("en")


def money(amount_minor: int, currency: str, locale: Locale) -> str:
    digits = get_currency_precision(currency)
    return format_currency(amount_minor / 10**digits, currency, locale=locale)


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            return None
    return None


def context(
    recipient: Mapping[Any, Any],
    offer: Mapping[Any, Any] | None,
    *,
    locale: str | None,
    link: str | None = None,
    unsubscribe_url: str | None = None,
) -> dict[str, Any]:
    """Every name in `VARIABLES`, formatted for `locale`.

    The offer is free-form JSON from a campaign or trigger; the keys read are
    `voucher_code`, `expires_at`, `amount_minor` with `currency`, `title`, `description`.
    """
    offer = offer or {}
    loc = babel_locale(locale)
    given = recipient.get("given_name") or ""
    family = recipient.get("family_name") or ""
    expiry = _as_date(offer.get("expires_at")) or _as_date(recipient.get("expiring_at"))
    amount = offer.get("amount_minor")
    currency = offer.get("currency") or LOCALE_CURRENCY.get(loc.language, FALLBACK_CURRENCY)
    return {
        "name": given or f"{given} {family}".strip(),
        "given_name": given,
        "family_name": family,
        "tier": recipient.get("tier") or "",
        "points": format_decimal(recipient.get("points_balance") or 0, locale=loc),
        "expiring_points": format_decimal(recipient.get("expiring_points") or 0, locale=loc),
        "expiry_date": local_date(expiry, loc) if expiry else "",
        "voucher_code": offer.get("voucher_code") or "",
        "discount": money(int(amount), str(currency), loc) if amount is not None else "",
        "offer_title": offer.get("title") or "",
        "offer_description": offer.get("description") or "",
        "link": link or offer.get("link") or "",
        "unsubscribe_url": unsubscribe_url or "",
    }


def local_date(day: date, loc: Locale) -> str:
    """A date as people write it where `loc` is spoken.

    Thai customers read the Buddhist Era year (2026 CE is 2569 BE); babel formats only the
    Gregorian calendar, so the year is written out here.
    """
    if loc.language == "th":
        return f"{format_date(day, 'd MMMM', locale=loc)} {day.year + 543}"
    return format_date(day, format="long", locale=loc)


def choose(variants: Sequence[Mapping[Any, Any]], locale: str | None) -> Mapping[Any, Any] | None:
    """The variant for `locale` by the fallback order in the module text."""
    by_locale = {v["locale"]: v for v in variants}
    if locale and locale in by_locale:
        return by_locale[locale]
    language = (locale or "").split("-")[0].split("_")[0].lower()
    if language:
        for tag, variant in sorted(by_locale.items()):
            if tag.split("-")[0].lower() == language:
                return variant
    for fallback in (DEFAULT_LOCALE, "en"):
        if fallback in by_locale:
            return by_locale[fallback]
    return variants[0] if variants else None


# Queries -----------------------------------------------------------------------------


async def variants(
    session: AsyncSession, name: str, channel: str | None = None
) -> list[RowMapping]:
    """Every stored variant of template `name` (on `channel` when given)."""
    query = sa.select(templates).where(templates.c.name == name)
    if channel is not None:
        query = query.where(templates.c.channel == channel)
    result = await session.execute(query.order_by(templates.c.channel, templates.c.locale))
    return list(result.mappings())


async def variants_of(
    session: AsyncSession, names: Sequence[str]
) -> dict[tuple[str, str], list[RowMapping]]:
    """Variants of several templates keyed by (name, channel), for a dispatcher batch."""
    result = await session.execute(sa.select(templates).where(templates.c.name.in_(names)))
    found: dict[tuple[str, str], list[RowMapping]] = {}
    for row in result.mappings():
        found.setdefault((row["name"], row["channel"]), []).append(row)
    return found


async def listing(session: AsyncSession) -> list[RowMapping]:
    query = sa.select(templates).order_by(templates.c.name, templates.c.channel, templates.c.locale)
    return list((await session.execute(query)).mappings())


async def upsert(
    session: AsyncSession,
    *,
    name: str,
    channel: str,
    locale: str,
    subject: str | None,
    body: str,
    now: datetime | None = None,
) -> tuple[RowMapping, bool]:
    """Validate and store one variant; returns it and whether it was created."""
    validate(subject, body)
    now = now or datetime.now(UTC)
    existing = await session.execute(
        sa.select(templates.c.id).where(
            templates.c.name == name, templates.c.channel == channel, templates.c.locale == locale
        )
    )
    found = existing.scalar_one_or_none()
    if found is None:
        query: Any = sa.insert(templates).values(
            id=uuid.uuid4(),
            name=name,
            channel=channel,
            locale=locale,
            subject=subject,
            body=body,
            created_at=now,
            updated_at=now,
        )
    else:
        query = (
            sa.update(templates)
            .where(templates.c.id == found)
            .values(subject=subject, body=body, updated_at=now)
        )
    row = (await session.execute(query.returning(*templates.c))).mappings().one()
    return row, found is None


async def delete(session: AsyncSession, name: str, channel: str, locale: str) -> bool:
    result = await session.execute(
        sa.delete(templates)
        .where(
            templates.c.name == name, templates.c.channel == channel, templates.c.locale == locale
        )
        .returning(templates.c.id)
    )
    return result.scalar_one_or_none() is not None
