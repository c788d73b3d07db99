"""Problems the contacts service answers with (RFC 9457 types under `/problems/`)."""

from __future__ import annotations

import uuid

from shared.http.problems import Problem, validation_problem


def duplicate(holders: dict[str, uuid.UUID]) -> Problem:
    """409: another customer already has this email, phone or card number."""
    column, existing = next(iter(holders.items()))
    fields = ", ".join(holders)
    return Problem(
        409,
        "duplicate-contact",
        "Duplicate contact",
        f"A customer with this {fields.replace('_', ' ')} already exists.",
        existing_id=str(existing),
        fields=sorted(holders),
        conflicting_field=column,
    )


def not_found(contact_id: uuid.UUID) -> Problem:
    """404: no such customer."""
    return Problem(404, "contact-not-found", "Contact not found", f"No customer {contact_id}.")


def invalid(field: str, message: str) -> Problem:
    """422 naming the field at fault (the platform's shape for validation errors)."""
    return validation_problem(field, message)


def gone(contact_id: uuid.UUID, status: str, merged_into: uuid.UUID | None) -> Problem:
    """409: the customer was merged or erased and can no longer change."""
    return Problem(
        409,
        f"contact-{status}",
        f"Contact {status}",
        f"Customer {contact_id} was {status} and cannot be changed.",
        merged_into=str(merged_into) if merged_into else None,
    )
