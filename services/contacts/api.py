"""HTTP routes of the contacts service, mounted under `/v1/contacts`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.contacts import consents_api, errors, gdpr_api, imports_api, profiles, repository
from services.contacts.deps import Rules, Session
from services.contacts.filters import ContactQuery
from services.contacts.schemas import ContactCreate, ContactOut, ContactPage, ContactUpdate
from shared.auth import AdminAuth, PosAuth, ReadAuth
from shared.http.problems import Problem


def routes() -> APIRouter:
    """The service's routes; health and readiness come from the platform's app factory."""
    router = APIRouter(tags=["contacts"])
    # Fixed paths first: they must win over `/{contact_id}`.
    router.include_router(imports_api.routes())
    router.include_router(consents_api.routes())
    router.include_router(gdpr_api.routes())

    @router.post("", status_code=201, responses={409: {"description": "Duplicate contact"}})
    async def sign_up(
        body: ContactCreate, session: Session, rules: Rules, principal: PosAuth, response: Response
    ) -> ContactOut:
        """Sign a customer up (a duplicate email, phone or card is 409 with the existing id)."""
        contact = await profiles.sign_up(
            session, body, rules, store_id=principal.store_for(body.store_id)
        )
        response.headers["Location"] = f"/v1/contacts/{contact.id}"
        return profiles.to_out(contact)

    @router.get("")
    async def list_contacts(
        session: Session,
        _: ReadAuth,
        criteria: ContactQuery,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> ContactPage:
        """List customers, oldest first, filtered; cursor-paginated."""
        try:
            contacts, next_cursor = await repository.page(session, criteria, limit, cursor)
        except ValueError as exc:
            raise errors.invalid("query.cursor", "not a cursor this API made") from exc
        consents = await repository.consents_of(session, [c.id for c in contacts])
        by_contact: dict[uuid.UUID, list[object]] = {}
        for consent_row in consents:
            by_contact.setdefault(consent_row.contact_id, []).append(consent_row)
        return ContactPage(
            items=[profiles.to_out(c, by_contact.get(c.id, [])) for c in contacts],
            next_cursor=next_cursor,
        )

    @router.get("/lookup")
    async def lookup(
        session: Session,
        rules: Rules,
        _: PosAuth,
        email: str | None = None,
        phone: str | None = None,
        card: str | None = None,
    ) -> ContactOut:
        """Find a customer at the till by exactly one of email, phone or card number."""
        given = {k: v for k, v in {"email": email, "phone": phone, "card": card}.items() if v}
        if len(given) != 1:
            raise errors.invalid("query", "give exactly one of email, phone or card")
        ((kind, raw),) = given.items()
        column = "card_number" if kind == "card" else kind
        fields = ContactUpdate.model_validate({column: raw})
        value = profiles.clean_fields(fields, rules, {column})[column]
        contact = await repository.find_by_identifier(session, column, value)
        if contact is None or contact.status != "active":
            raise Problem(
                404, "contact-not-found", "Contact not found", f"No customer with this {kind}."
            )
        return profiles.to_out(contact, await repository.consents_of(session, [contact.id]))

    @router.get("/{contact_id}")
    async def get_contact(contact_id: uuid.UUID, session: Session, _: ReadAuth) -> ContactOut:
        """One customer, with current consents."""
        contact = await repository.get(session, contact_id)
        if contact is None:
            raise errors.not_found(contact_id)
        return profiles.to_out(contact, await repository.consents_of(session, [contact.id]))

    @router.patch("/{contact_id}")
    async def update_contact(
        contact_id: uuid.UUID, body: ContactUpdate, session: Session, rules: Rules, _: AdminAuth
    ) -> ContactOut:
        """Change some fields; `null` clears one. Publishes `customer.updated`."""
        contact = await repository.get(session, contact_id, lock=True)
        if contact is None:
            raise errors.not_found(contact_id)
        await profiles.update(session, contact, body, rules)
        return profiles.to_out(contact, await repository.consents_of(session, [contact.id]))

    return router
