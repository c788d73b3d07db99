"""Bearer tokens for tests, signed with the test key the service fixtures use."""

from __future__ import annotations

from shared.auth import Scope, issue_token
from shared.settings import Settings

SECRET = "service-test-secret-long-enough-for-hs256-0123456789"


def auth(settings: Settings, scope: Scope, store: str | None = None) -> dict[str, str]:
    """An Authorization header for a caller with `scope` (and a POS store, if given)."""
    token = issue_token(settings, subject=f"{scope.value}-user", scopes=[scope], store_id=store)
    return {"Authorization": f"Bearer {token}"}
