"""The bytes an import writes: `COPY` lines of contacts and outbox rows, and event JSON.

Built as text, not through pydantic or asyncpg's encoders, because they are most of an
import's CPU: a worker process prepares each row's lines as if the row creates a new
customer (`check_batch`), and the batch writer only assembles them. The event JSON is
byte for byte what `Event.to_envelope(...).model_dump_json()` writes (a test compares
them), so consumers cannot tell an imported signup from any other.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import NamedTuple

from services.contacts.import_files import Span, read_span
from services.contacts.import_rows import (
    Columns,
    RowError,
    ValidRow,
    check_rows,
    fast_email,
    fast_phone,
    luhn_digit,
)
from services.contacts.profiles import SOURCE
from shared.events.contacts import TOPIC, CustomerSignedUp, CustomerUpdated

SIGNUP_SOURCE = "import"
EVENT_SOURCE = SOURCE
SIGNED_UP = CustomerSignedUp.event_type
UPDATED = CustomerUpdated.event_type
CONTACT_COLUMNS = [
    "id",
    "given_name",
    "family_name",
    "email",
    "phone",
    "card_number",
    "birthday_month",
    "birthday_day",
    "birthday_year",
    "locale",
    "time_zone",
    "tags",
    "attributes",
    "signup_source",
    "signup_store",
    "created_at",
    "updated_at",
]
OUTBOX_COLUMNS = ["event_id", "topic", "key", "event_type", "payload"]

Prepared = tuple[str, str | None, bytes, bytes]
"""Per valid row: (new contact id, generated card or None, contact line, event line)."""


class CheckedRows(NamedTuple):
    """A batch as a worker returns it: rows checked, lines prepared, identifiers listed."""

    valid: list[ValidRow]
    errors: list[RowError]
    prepared: list[Prepared]
    emails: list[str]
    phones: list[str]
    cards: list[str]
    """Card numbers the rows give."""
    generated: list[str]
    """Card numbers generated for rows that give none."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Clock:
    """Row times of a batch: its base plus one microsecond per row, as `...Z` strings."""

    def __init__(self, base_us: int) -> None:
        self.base_us = base_us
        self._seconds: dict[int, str] = {}

    @classmethod
    def starting(cls, moment: datetime) -> Clock:
        return cls((moment - _EPOCH) // timedelta(microseconds=1))

    def stamp(self, offset: int) -> str:
        """The time of row `offset`, as pydantic writes a UTC time in JSON."""
        second, micro = divmod(self.base_us + offset, 1_000_000)
        prefix = self._seconds.get(second)
        if prefix is None:
            prefix = (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
            self._seconds[second] = prefix
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"

    def at(self, offset: int) -> datetime:
        return _EPOCH + timedelta(microseconds=self.base_us + offset)


def _json(value: str | None) -> str:
    return "null" if value is None else str(encode_basestring(value))


def profile_json(
    given: str | None,
    family: str | None,
    email: str | None,
    phone: str | None,
    card: str | None,
    birthday: tuple[int | None, int | None, int | None],
    locale: str | None,
    zone: str | None,
    tags: Sequence[str],
) -> str:
    """A `ProfileSnapshot` as JSON."""
    month, day, year = birthday
    born = "null"
    if month and day:
        born = f'{{"month":{month},"day":{day},"year":{"null" if year is None else year}}}'
    return (
        f'{{"given_name":{_json(given)},"family_name":{_json(family)},"email":{_json(email)},'
        f'"phone":{_json(phone)},"card_number":{_json(card)},"birthday":{born},'
        f'"locale":{_json(locale)},"time_zone":{_json(zone)},'
        f'"tags":[{",".join(map(encode_basestring, tags))}]}}'
    )


def signed_up_json(event_id: str, contact_id: str, profile: str, store: str | None, at: str) -> str:
    """The envelope of `customer.signed_up` (source `import`)."""
    return (
        f'{{"id":"{event_id}","type":"{SIGNED_UP}","source":"{EVENT_SOURCE}","time":"{at}",'
        f'"subject":"{contact_id}","schema_version":1,"data":{{"customer_id":"{contact_id}",'
        f'"profile":{profile},"source":"{SIGNUP_SOURCE}","store_id":{_json(store)},'
        f'"referral_code":null,"signed_up_at":"{at}"}}}}'
    )


def updated_json(
    event_id: str, contact_id: str, changed: Sequence[str], profile: str, at: str
) -> str:
    """The envelope of `customer.updated`."""
    fields = ",".join(f'"{name}"' for name in changed)
    return (
        f'{{"id":"{event_id}","type":"{UPDATED}","source":"{EVENT_SOURCE}","time":"{at}",'
        f'"subject":"{contact_id}","schema_version":1,"data":{{"customer_id":"{contact_id}",'
        f'"changed":[{fields}],"profile":{profile},"updated_at":"{at}"}}}}'
    )


def _text(value: str | None) -> str:
    """A value in COPY's text format."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def _number(value: int | None) -> str:
    return "\\N" if value is None else str(value)


def outbox_line(event_id: str, subject: str, event_type: str, payload: str) -> bytes:
    """One outbox row for COPY (JSON has no raw tabs or newlines, only backslashes)."""
    if "\\" in payload:
        payload = payload.replace("\\", "\\\\")
    return f"{event_id}\t{TOPIC}\t{subject}\t{event_type}\t{payload}\n".encode()


def contact_line(
    contact_id: str,
    given: str | None,
    family: str | None,
    email: str | None,
    phone: str | None,
    card: str | None,
    birthday: tuple[int | None, int | None, int | None],
    locale: str | None,
    zone: str | None,
    tags: Sequence[str],
    attributes: str,
    store: str | None,
    created_at: str,
    updated_at: str,
) -> bytes:
    """One contacts row for COPY, in `CONTACT_COLUMNS` order (tags are [a-z0-9_-:.])."""
    month, day, year = birthday
    tag_array = "{" + ",".join(f'"{tag}"' for tag in tags) + "}"
    return (
        f"{contact_id}\t{_text(given)}\t{_text(family)}\t{_text(email)}\t{_text(phone)}\t"
        f"{_text(card)}\t{_number(month)}\t{_number(day)}\t{_number(year)}\t{_text(locale)}\t"
        f"{_text(zone)}\t{tag_array}\t{_text(attributes)}\t{SIGNUP_SOURCE}\t{_text(store)}\t"
        f"{created_at}\t{updated_at}\n"
    ).encode()


def new_ids(count: int) -> list[str]:
    """`count` random version-4 UUIDs as strings, from one read of the OS's random source."""
    noise = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, 32 * count, 32):
        h = noise[start : start + 32]
        variant = "89ab"[int(h[16], 16) & 3]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return ids


def fresh_cards(prefix: str, length: int, count: int) -> list[str]:
    """Random card numbers with `prefix` and a check digit (`generate_card`, in bulk)."""
    body = length - len(prefix) - 1
    modulus = 10**body
    noise = os.urandom(8 * count)
    cards = []
    for start in range(0, 8 * count, 8):
        number = prefix + str(int.from_bytes(noise[start : start + 8], "big") % modulus).zfill(body)
        cards.append(number + luhn_digit(number))
    return cards


def attributes_json(attributes: tuple[tuple[str, str], ...] | None) -> str:
    """Attributes of a new contact as JSON (plain strings, as the CSV gives them)."""
    if not attributes:
        return "{}"
    return (
        "{"
        + ",".join(f"{encode_basestring(k)}:{encode_basestring(v)}" for k, v in attributes)
        + "}"
    )


def check_span(
    path: str,
    delimiter: str,
    span: Span,
    columns: Columns,
    region: str,
    today: date,
    base_us: int,
    card_prefix: str,
    card_length: int,
) -> CheckedRows:
    """Read one span of the file and `check_batch` its rows (a worker process's job)."""
    rows = read_span(Path(path), delimiter, span)
    return check_batch(columns, rows, region, today, base_us, card_prefix, card_length)


def warm_up(region: str) -> None:
    """Load what checking rows needs (run once in each new worker process)."""
    fast_email("warm@example.com")
    fast_phone("+60123456789", region)
    # Everything imported so far lives as long as the process: keeping it out of the
    # cyclic collector's scans saves about a quarter of a worker's CPU (each batch
    # allocates enough to trigger full collections).
    gc.freeze()


def check_batch(
    columns: Columns,
    rows: list[tuple[int, list[str]]],
    region: str,
    today: date,
    base_us: int,
    card_prefix: str,
    card_length: int,
) -> CheckedRows:
    """Check rows, and prepare each valid row's lines as if it created a new customer.

    Runs in a worker process for big files. Row `i` of the valid rows is at
    `Clock(base_us).stamp(i)`; its generated card is used only when the row gives none
    and the card turns out to be free.
    """
    valid, errors = check_rows(columns, rows, region, today)
    clock = Clock(base_us)
    ids = new_ids(2 * len(valid))
    needing = sum(1 for row in valid if row[5] is None)
    cards = iter(fresh_cards(card_prefix, card_length, needing))
    prepared: list[Prepared] = []
    for index, row in enumerate(valid):
        _, given, family, email, phone, card, born, locale, zone, tags, attributes, store = row
        contact_id, event_id = ids[2 * index], ids[2 * index + 1]
        generated = next(cards) if card is None else None
        birthday = born or (None, None, None)
        tag_list = tags or ()
        at = clock.stamp(index)
        profile = profile_json(
            given, family, email, phone, card or generated, birthday, locale, zone, tag_list
        )
        payload = signed_up_json(event_id, contact_id, profile, store, at)
        prepared.append(
            (
                contact_id,
                generated,
                contact_line(
                    contact_id,
                    given,
                    family,
                    email,
                    phone,
                    card or generated,
                    birthday,
                    locale,
                    zone,
                    tag_list,
                    attributes_json(attributes),
                    store,
                    at,
                    at,
                ),
                outbox_line(event_id, contact_id, SIGNED_UP, payload),
            )
        )
    # Sorted, so that batches lock matching contacts in a consistent order.
    return CheckedRows(
        valid,
        errors,
        prepared,
        sorted({row[3] for row in valid if row[3] is not None}),
        sorted({row[4] for row in valid if row[4] is not None}),
        sorted({row[5] for row in valid if row[5] is not None}),
        [p[1] for p in prepared if p[1] is not None],
    )
