"""Reading an import file: the header's columns, and each row checked and normalised.

Pure functions on plain values (no database), so a worker process can run them. The
rules are the API's (`normalize.py`, `schemas.py`); the fast paths below only skip the
general parsers for the common spellings, and give the same answer they would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

import phonenumbers

from services.contacts.normalize import (
    InvalidValue,
    normalize_card,
    normalize_email,
    normalize_locale,
    normalize_phone,
    normalize_tags,
    normalize_time_zone,
)

FIELDS = (
    "given_name",
    "family_name",
    "email",
    "phone",
    "card_number",
    "birthday",
    "locale",
    "time_zone",
    "tags",
    "store_id",
)
"""Columns an import may set; `attr:<name>` columns set custom attributes."""

IDENTIFIERS = ("email", "phone", "card_number")
READ_ONLY = ("id", "status", "signup_source", "created_at", "updated_at")
"""Columns the export writes that an import accepts and ignores (so an export re-imports)."""
READ_ONLY_PREFIXES = ("consent:",)
ATTRIBUTE_PREFIX = "attr:"
MAX_ATTRIBUTES = 50
TAG_SEPARATOR = ";"
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FORMULA_ESCAPED = ("'=", "'+", "'-", "'@", "'\t", "'\r")


class HeaderError(ValueError):
    """The header row cannot be used; `errors` names each offending column."""

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


@dataclass(frozen=True)
class Columns:
    """Where each known field sits in a row, from the header."""

    width: int
    index: dict[str, int]
    attributes: tuple[tuple[str, int], ...]


def read_header(names: list[str]) -> Columns:
    """The columns of a header row; HeaderError lists unknown, duplicate or missing ones."""
    errors: list[dict[str, str]] = []
    index: dict[str, int] = {}
    attributes: list[tuple[str, int]] = []
    seen: set[str] = set()
    for position, raw in enumerate(names):
        name = raw.strip().lstrip("\ufeff").lower()
        where = f"header.{name or position + 1}"
        if name in seen:
            errors.append(_header_error(where, "this column appears twice"))
            continue
        seen.add(name)
        if name in FIELDS:
            index[name] = position
        elif name.startswith(ATTRIBUTE_PREFIX):
            attribute = name[len(ATTRIBUTE_PREFIX) :]
            if not _ATTRIBUTE_NAME.match(attribute):
                errors.append(
                    _header_error(where, "attribute names are a-z, 0-9 and _, at most 64")
                )
            else:
                attributes.append((attribute, position))
        elif name in READ_ONLY or name.startswith(READ_ONLY_PREFIXES):
            continue
        else:
            expected = ", ".join(FIELDS)
            errors.append(_header_error(where, f"unknown column; use {expected} or attr:<name>"))
    if len(attributes) > MAX_ATTRIBUTES:
        errors.append(_header_error("header", f"at most {MAX_ATTRIBUTES} attr: columns"))
    if not any(name in index for name in IDENTIFIERS):
        errors.append(_header_error("header", "needs at least one of email, phone or card_number"))
    if errors:
        fields = ", ".join(error["field"] for error in errors)
        raise HeaderError(f"The header row is not valid: {fields}.", errors)
    return Columns(len(names), index, tuple(attributes))


def _header_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": "value_error"}


# A valid row, normalised: (line, given_name, family_name, email, phone, card_number,
# birthday (month, day, year) | None, locale, time_zone, tags, attributes as (name,
# value) pairs, store_id). None means "not given": an empty cell never clears anything.
# Tuples of strings, not dicts: a big file makes millions of these, and tuples of
# atomic values drop out of the cyclic garbage collector's work, dicts do not.
ValidRow = tuple[
    int,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    tuple[int, int, int | None] | None,
    str | None,
    str | None,
    tuple[str, ...] | None,
    tuple[tuple[str, str], ...] | None,
    str | None,
]
RowError = tuple[int, str]


def check_rows(
    columns: Columns, rows: list[tuple[int, list[str]]], region: str, today: date
) -> tuple[list[ValidRow], list[RowError]]:
    """Normalise `(line, cells)` rows; a row with any bad value becomes one error."""
    valid: list[ValidRow] = []
    failed: list[RowError] = []
    width = columns.width
    # Only the columns the file has, each with its check: this loop runs per cell.
    checks = [
        (position, columns.index[name], name, _CHECKS[name])
        for position, name in enumerate(FIELDS)
        if name in columns.index
    ]
    for line, cells in rows:
        if len(cells) != width:
            failed.append((line, f"expected {width} fields as in the header, found {len(cells)}"))
            continue
        problems: list[str] | None = None
        values: list[Any] = [None] * 10
        for position, slot, name, check in checks:
            raw = cells[slot].strip()
            if not raw:
                continue
            if raw[0] == "'" and raw.startswith(_FORMULA_ESCAPED):
                raw = raw[1:]
            try:
                values[position] = check(raw, region, today)
            except InvalidValue as exc:
                if problems is None:
                    problems = []
                problems.append(f"{name}: {exc}")
        attributes: tuple[tuple[str, str], ...] | None = None
        if columns.attributes:
            pairs = tuple(
                (attribute, raw)
                for attribute, slot in columns.attributes
                if (raw := _cell(cells[slot]))
            )
            attributes = pairs or None
        if problems:
            failed.append((line, "; ".join(problems)))
            continue
        given, family, email, phone, card, birthday, locale, zone, tags, store = values
        if email is None and phone is None and card is None:
            failed.append((line, "needs at least one of email, phone or card_number"))
            continue
        valid.append(
            (
                line,
                given,
                family,
                email,
                phone,
                card,
                birthday,
                locale,
                zone,
                tags,
                attributes,
                store,
            )
        )
    return valid, failed


def _cell(raw: str) -> str:
    # Exports escape cells that spreadsheets would run as formulas; undo that here.
    value = raw.strip()
    if value.startswith(_FORMULA_ESCAPED):
        return value[1:]
    return value


def _name(raw: str, region: str, today: date) -> str:
    if len(raw) > 100:
        raise InvalidValue("at most 100 characters")
    return raw


def _store(raw: str, region: str, today: date) -> str:
    if len(raw) > 64:
        raise InvalidValue("at most 64 characters")
    return raw


def _email(raw: str, region: str, today: date) -> str:
    if len(raw) > 254:
        raise InvalidValue("at most 254 characters")
    return fast_email(raw)


def _phone(raw: str, region: str, today: date) -> str:
    if len(raw) > 32:
        raise InvalidValue("at most 32 characters")
    return fast_phone(raw, region)


def _card(raw: str, region: str, today: date) -> str:
    if len(raw) > 32:
        raise InvalidValue("at most 32 characters")
    if raw.isdigit() and raw.isascii() and 8 <= len(raw) <= 19 and luhn_digit(raw[:-1]) == raw[-1]:
        return raw  # what normalize_card returns for a valid all-digit number
    return normalize_card(raw)


def _birthday(raw: str, region: str, today: date) -> tuple[int, int, int | None]:
    month, day, year = _parse_birthday(raw)
    if year is not None and (year, month, day) > (today.year, today.month, today.day):
        raise InvalidValue("a birthday cannot be in the future")
    return month, day, year


@lru_cache(maxsize=65536)
def _parse_birthday(raw: str) -> tuple[int, int, int | None]:
    parts = raw.split("-")
    if len(parts) == 3 and len(parts[0]) == 4:
        year: int | None = _number(parts[0])
        month, day = _number(parts[1]), _number(parts[2])
    elif len(parts) == 2:
        year, month, day = None, _number(parts[0]), _number(parts[1])
    else:
        raise InvalidValue("write a birthday as YYYY-MM-DD or MM-DD")
    if year is not None and not 1900 <= year <= 2100:
        raise InvalidValue("the year must be between 1900 and 2100")
    try:
        # 29 February is allowed without a year, as in the API.
        date(year or 2000, month, day)
    except ValueError as exc:
        raise InvalidValue(f"{raw} is not a date") from exc
    return month, day, year


def _number(part: str) -> int:
    if not part.isdigit() or not part.isascii() or not 1 <= len(part) <= 4:
        raise InvalidValue("write a birthday as YYYY-MM-DD or MM-DD")
    return int(part)


@lru_cache(maxsize=4096)
def _locale(raw: str, region: str, today: date) -> str:
    return normalize_locale(raw)


@lru_cache(maxsize=4096)
def _time_zone(raw: str, region: str, today: date) -> str:
    return normalize_time_zone(raw)


@lru_cache(maxsize=16384)
def _tags(raw: str, region: str, today: date) -> tuple[str, ...]:
    return tuple(normalize_tags(raw.split(TAG_SEPARATOR)))


_CHECKS: dict[str, Any] = {
    "given_name": _name,
    "family_name": _name,
    "email": _email,
    "phone": _phone,
    "card_number": _card,
    "birthday": _birthday,
    "locale": _locale,
    "time_zone": _time_zone,
    "tags": _tags,
    "store_id": _store,
}

_DOUBLED = {str(d): (2 * d if d < 5 else 2 * d - 9) for d in range(10)}
_SINGLE = {str(d): d for d in range(10)}


def luhn_digit(digits: str) -> str:
    """`normalize.luhn_check_digit` without the per-digit Python loop (ASCII digits)."""
    total = sum(map(_DOUBLED.__getitem__, digits[::-2])) + sum(
        map(_SINGLE.__getitem__, digits[-2::-2])
    )
    return str(-total % 10)


# Fast paths. email_validator and phonenumbers.parse are general (Unicode, every way of
# writing a number) and cost ~20-30 us a call, which is most of an import's CPU. The
# common spellings are recognised here instead; anything else, and every error, goes to
# the general function, so the results and the messages are the same (a property test in
# tests/services/contacts/test_imports_api.py compares them).

_LOCAL_PART = re.compile(r"[a-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-z0-9_!#$%&'*+\-/=?^`{|}~]+)*")


def fast_email(raw: str) -> str:
    """`normalize_email(raw)`, without the general parser for plain ASCII addresses."""
    address = raw.strip().lower()
    local, at, domain = address.partition("@")
    if (
        at
        and len(local) <= 64
        and len(address) <= 254
        and _LOCAL_PART.fullmatch(local)
        and (normalized := _email_domain(domain)) is not None
    ):
        return f"{local}@{normalized}"
    return normalize_email(raw)


@lru_cache(maxsize=16384)
def _email_domain(domain: str) -> str | None:
    """The normalised domain, or None when the general parser should explain the error."""
    try:
        return normalize_email(f"a@{domain}").partition("@")[2]
    except InvalidValue:
        return None


_PHONE_SHAPE = re.compile(r"\+?[0-9]+")


@lru_cache(maxsize=64)
def _region_plan(region: str) -> tuple[int, str, str] | None:
    """(country code, national prefix, international prefix) when the fast path is exact."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return None
    national = metadata.national_prefix or ""
    parsing = metadata.national_prefix_for_parsing
    # Regions that rewrite numbers while parsing (AR, BR, MX...) take the general path.
    if metadata.national_prefix_transform_rule is not None or parsing not in (None, national):
        return None
    return metadata.country_code, national, metadata.international_prefix or ""


def fast_phone(raw: str, region: str) -> str:
    """`normalize_phone(raw, region)`, without the general parser for common spellings.

    Handles `+<region's code><number>` and `<national prefix><number>` written with
    digits, spaces and dashes; the validity check is the library's own.
    """
    compact = raw.strip().replace(" ", "").replace("-", "")
    plan = _region_plan(region)
    if plan is not None and _PHONE_SHAPE.fullmatch(compact):
        code, national_prefix, international = plan
        significant = ""
        if compact.startswith("+"):
            prefix = f"+{code}"
            if compact.startswith(prefix):
                significant = compact[len(prefix) :]
        elif (
            national_prefix
            and compact.startswith(national_prefix)
            and international.isdigit()
            and not compact.startswith(international)
        ):
            significant = compact[len(national_prefix) :]
        # A significant number never starts with 0 on this path: the general parser would
        # strip a second national prefix or keep an Italian leading zero.
        if significant and significant[0] != "0" and _is_valid(region, significant):
            return f"+{code}{significant}"
    return normalize_phone(raw, region)


_Pattern = tuple[frozenset[int], "re.Pattern[str]"]


@lru_cache(maxsize=64)
def _patterns(region: str) -> tuple[_Pattern, tuple[_Pattern, ...]]:
    """The region's general pattern and its number-type patterns, compiled once.

    `phonenumbers.is_valid_number` is "matches the general description and one of the
    type descriptions" (possible lengths, then the pattern); this asks the same question
    without building a PhoneNumber and looking the metadata up on every call.
    """
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert metadata is not None

    def compiled(desc: Any) -> _Pattern | None:
        if desc is None or desc.national_number_pattern is None:
            return None
        return frozenset(desc.possible_length or ()), re.compile(desc.national_number_pattern)

    general = compiled(metadata.general_desc)
    assert general is not None
    kinds = (
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
        metadata.mobile,
    )
    return general, tuple(p for p in map(compiled, kinds) if p is not None)


def _is_valid(region: str, significant: str) -> bool:
    (lengths, pattern), kinds = _patterns(region)
    length = len(significant)
    if (lengths and length not in lengths) or not pattern.fullmatch(significant):
        return False
    return any(
        (not lengths or length in lengths) and pattern.fullmatch(significant)
        for lengths, pattern in kinds
    )
