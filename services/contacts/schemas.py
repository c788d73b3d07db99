"""Request and response bodies of the contacts API.

Unknown fields are refused (422) rather than silently dropped: a typo in a field name
must not lose what the user meant to store.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.events.contacts import Birthday, Channel, ConsentStatus, SignupSource

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Handle = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
AttributeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
AttributeValue = str | int | float | bool | date | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BirthdayIn(Strict):
    """Month and day; the year is optional (many customers prefer not to give it)."""

    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)
    year: int | None = Field(default=None, ge=1900, le=2100)

    @model_validator(mode="after")
    def _real_date(self) -> BirthdayIn:
        # 29 February is allowed without a year (leap-year birthdays exist).
        try:
            date(self.year or 2000, self.month, self.day)
        except ValueError as exc:
            raise ValueError(f"{self.day}/{self.month} is not a date") from exc
        if self.year is not None and date(self.year, self.month, self.day) > date.today():
            raise ValueError("a birthday cannot be in the future")
        return self

    def snapshot(self) -> Birthday:
        return Birthday(month=self.month, day=self.day, year=self.year)


class SocialHandles(Strict):
    """Handles on the chat and social apps customers use in the region."""

    instagram: Handle | None = None
    facebook: Handle | None = None
    line: Handle | None = None
    whatsapp: Handle | None = None
    tiktok: Handle | None = None


class ContactFields(Strict):
    """Fields a client may set at signup and change later."""

    given_name: Name | None = None
    family_name: Name | None = None
    email: str | None = Field(default=None, max_length=254, examples=["aisyah@example.my"])
    phone: str | None = Field(default=None, max_length=32, examples=["012-345 6789"])
    card_number: str | None = Field(default=None, max_length=32)
    birthday: BirthdayIn | None = None
    locale: str | None = Field(default=None, max_length=16, examples=["ms-MY"])
    time_zone: str | None = Field(default=None, max_length=64, examples=["Asia/Kuala_Lumpur"])
    social: SocialHandles | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    attributes: dict[AttributeName, AttributeValue] | None = Field(default=None, max_length=50)


class ContactCreate(ContactFields):
    """A signup. A card number is generated when none is given."""

    source: SignupSource = "api"
    store_id: str | None = Field(default=None, max_length=64)
    referral_code: str | None = Field(default=None, max_length=32)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "given_name": "Aisyah",
                    "family_name": "Rahman",
                    "email": "aisyah@example.my",
                    "phone": "012-345 6789",
                    "birthday": {"month": 3, "day": 14},
                    "locale": "ms-MY",
                    "source": "pos",
                    "referral_code": "K7QX2M",
                }
            ]
        },
    )


class ContactUpdate(ContactFields):
    """A partial change: absent fields stay, `null` clears a field."""


class ConsentOut(BaseModel):
    channel: Channel
    status: ConsentStatus
    source: str
    proof: str | None
    changed_at: datetime


class ContactOut(BaseModel):
    """A customer as the API shows them."""

    id: uuid.UUID
    status: Literal["active", "merged", "erased"]
    given_name: str | None
    family_name: str | None
    email: str | None
    phone: str | None
    card_number: str | None
    birthday: Birthday | None
    locale: str | None
    time_zone: str | None
    social: dict[str, str]
    tags: list[str]
    attributes: dict[str, AttributeValue]
    signup_source: SignupSource
    signup_store: str | None
    referral_code: str | None
    merged_into: uuid.UUID | None
    consents: dict[str, ConsentOut] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


class ContactPage(BaseModel):
    """One page of a list; pass `next_cursor` as `cursor` for the next."""

    items: list[ContactOut]
    next_cursor: str | None
