"""Normalising what people type: emails, phone numbers, card numbers, tags, locales.

One spelling per identifier is what makes the uniqueness rules (and lookups at the till)
work: `Aisyah@Example.MY` and `aisyah@example.my` are one customer, and so are
`012-345 6789` and `+60123456789` in Malaysia.
"""

from __future__ import annotations

import re
import secrets
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class InvalidValue(ValueError):
    """A value that cannot be normalised; the message says why, for the client."""


def normalize_email(raw: str) -> str:
    """Validated, lower-cased address (no DNS look-up: the till must not wait for one)."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValue(str(exc)) from exc
    return result.normalized.lower()


def normalize_phone(raw: str, default_region: str) -> str:
    """E.164; numbers without a country code are read in `default_region`."""
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue(f"not a valid phone number for region {default_region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def luhn_check_digit(digits: str) -> str:
    """The Luhn digit that makes `digits + it` valid (catches any single mistyped digit)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def is_valid_card(number: str) -> bool:
    """True for an all-digit number whose last digit is its Luhn check digit."""
    return number.isdigit() and len(number) >= 2 and luhn_check_digit(number[:-1]) == number[-1]


def normalize_card(raw: str) -> str:
    """Digits only (spaces and dashes from printed cards dropped), check digit verified."""
    number = re.sub(r"[\s-]", "", raw)
    if not number.isdigit() or not 8 <= len(number) <= 19:
        raise InvalidValue("a card number has 8 to 19 digits")
    if not is_valid_card(number):
        raise InvalidValue("the card number's check digit is wrong (mistyped?)")
    return number


def generate_card(prefix: str, length: int) -> str:
    """A random card number with `prefix` and a Luhn check digit."""
    body_length = length - len(prefix) - 1
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(body_length))
    return body + luhn_check_digit(body)


_TAG = re.compile(r"^[a-z0-9][a-z0-9_\-:.]{0,63}$")


def normalize_tags(raw: list[str]) -> list[str]:
    """Lower-case, trimmed, unique, sorted tags."""
    tags = sorted({tag.strip().lower() for tag in raw if tag.strip()})
    for tag in tags:
        if not _TAG.match(tag):
            raise InvalidValue(f"tag {tag!r}: letters, digits and _-:. only, at most 64")
    return tags


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")


def normalize_locale(raw: str) -> str:
    """A language tag such as `en`, `ms-MY` or `th-TH` (case repaired)."""
    parts = raw.strip().replace("_", "-").split("-")
    candidate = parts[0].lower() + (f"-{parts[1].upper()}" if len(parts) > 1 else "")
    if len(parts) > 2 or not _LOCALE.match(candidate):
        raise InvalidValue("a locale looks like `en`, `ms-MY` or `th-TH`")
    return candidate


def normalize_time_zone(raw: str) -> str:
    """An IANA time zone name such as `Asia/Kuala_Lumpur`."""
    name = raw.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidValue(f"unknown time zone {name!r}") from exc
    if name not in _zone_names() and name != "UTC":
        raise InvalidValue(f"unknown time zone {name!r}")
    return name
