"""Templates: validation naming the place, locale fallback, locale formatting, the sandbox."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from services.messaging import templates
from services.messaging.templates import TemplateInvalid

PERSON = {
    "customer_id": uuid.uuid4(),
    "given_name": "Somchai",
    "family_name": "Jaidee",
    "tier": "Gold",
    "points_balance": 12500,
    "expiring_points": 300,
    "expiring_at": None,
}
OFFER = {
    "voucher_code": "HBD-7KQ9",
    "expires_at": "2026-12-31T23:59:00+08:00",
    "amount_minor": 123456,
    "currency": "MYR",
}


def test_a_syntax_error_names_the_field_and_line() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        templates.validate("Hi", "line one\nline two {{ name | }}\nline three")
    assert (caught.value.field, caught.value.line) == ("body", 2)


def test_an_unknown_variable_names_the_variable_and_line() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        templates.validate("Hi {{ name }}", "Hello\n\nYour code: {{ vouchr_code }}")
    assert (caught.value.field, caught.value.line) == ("body", 3)
    assert "vouchr_code" in caught.value.message
    with pytest.raises(TemplateInvalid) as in_subject:
        templates.validate("{{ nam }}", "ok")
    assert (in_subject.value.field, in_subject.value.line) == ("subject", 1)


def test_loops_and_filters_over_known_names_validate() -> None:
    templates.validate(
        None, "{% for c in voucher_code %}{{ c|upper }}{% endfor %} {{ name|title }}"
    )


def test_the_sandbox_blocks_internals() -> None:
    compiled = templates.compile_template(None, "{{ name.__class__.__mro__ }}")
    with pytest.raises(TemplateInvalid):
        compiled.render(templates.context(PERSON, None, locale="en"))


@pytest.mark.parametrize(
    ("locale", "points", "money", "expiry"),
    [
        ("ms-MY", "12,500", "RM1,234.56", "31 Disember 2026"),
        ("th-TH", "12,500", "MYR1,234.56", "31 ธันวาคม 2569"),
        ("en", "12,500", "MYR1,234.56", "December 31, 2026"),
    ],
)
def test_personalisation_is_formatted_for_the_locale(
    locale: str, points: str, money: str, expiry: str
) -> None:
    context = templates.context(PERSON, OFFER, locale=locale)
    assert context["points"] == points
    assert context["discount"] == money
    assert context["expiry_date"] == expiry
    assert context["voucher_code"] == "HBD-7KQ9"
    assert context["name"] == "Somchai"


def test_currency_defaults_to_the_locales() -> None:
    context = templates.context(PERSON, {"amount_minor": 5000}, locale="th-TH")
    assert "฿" in context["discount"] and "50.00" in context["discount"]
    assert (
        templates.context(PERSON, {"expires_at": date(2027, 1, 2)}, locale="ms-MY")["expiry_date"]
        == "2 Januari 2027"
    )


def test_locale_fallback_order() -> None:
    variants = [{"locale": loc} for loc in ("default", "en", "ms-MY", "th")]
    assert templates.choose(variants, "ms-MY") == {"locale": "ms-MY"}
    assert templates.choose(variants, "th-TH") == {"locale": "th"}
    assert templates.choose(variants, "zh-CN") == {"locale": "default"}
    assert templates.choose(variants, None) == {"locale": "default"}
    assert templates.choose([{"locale": "en"}], "ms-MY") == {"locale": "en"}
    assert templates.choose([{"locale": "th-TH"}], "ms-MY") == {"locale": "th-TH"}
    assert templates.choose([], "ms-MY") is None


def test_rendering_uses_every_variable() -> None:
    body = " ".join("{{ " + name + " }}" for name in sorted(templates.VARIABLES))
    rendered = templates.compile_template("Hi {{ name }}", body).render(
        templates.context(PERSON, OFFER, locale="en", link="https://x", unsubscribe_url="https://u")
    )
    assert rendered.subject == "Hi Somchai"
    assert "https://u" in rendered.body and "Gold" in rendered.body
