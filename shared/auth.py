"""Bearer tokens: JWTs signed with the deployment's key, carrying scopes and a store.

Scopes: `admin` (everything), `pos` (the till: purchases, redemptions, lookups) and `read`
(read-only). A POS token may name the store it belongs to. Each service verifies tokens
locally; there is no token service to call.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.http.problems import Problem
from shared.settings import Settings

ALGORITHM = "HS256"
KEY_FILE = "jwt-secret"


class Scope(StrEnum):
    """What a token may do: `admin` implies `pos`, and `pos` implies `read`."""

    ADMIN = "admin"
    POS = "pos"
    READ = "read"


_IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.POS: frozenset({Scope.POS, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
}


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    subject: str
    scopes: frozenset[Scope]
    store_id: str | None = None

    def store_for(self, body_store: str | None) -> str | None:
        """The store a request acts for: the token's, else the body's; 403 if they differ."""
        if self.store_id and body_store and body_store != self.store_id:
            raise Problem(
                403,
                "store-mismatch",
                "Store mismatch",
                f"This token belongs to store {self.store_id}, not {body_store}.",
            )
        return self.store_id or body_store

    def has(self, scope: Scope) -> bool:
        """True when one of the token's scopes grants `scope`."""
        return any(scope in _IMPLIED[held] for held in self.scopes)


def signing_key(settings: Settings) -> tuple[str, bool]:
    """The HMAC key, and whether it was generated just now (first start).

    An explicit `CRM_JWT_SECRET` wins; otherwise a random key is created once in the data
    folder, readable by its owner only, and reused by later runs and by `crm token issue`.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value(), False
    path = Path(settings.data_dir) / KEY_FILE
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip(), False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key, True


def issue_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[Scope],
    store_id: str | None = None,
    ttl: timedelta = timedelta(days=30),
    key: str | None = None,
) -> str:
    """A signed token for `subject` with `scopes`, valid for `ttl`."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "scope": " ".join(sorted(scope.value for scope in scopes)),
        "iat": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
    }
    if store_id is not None:
        claims["store"] = store_id
    return jwt.encode(claims, key or signing_key(settings)[0], algorithm=ALGORITHM)


class TokenVerifier:
    """Checks signatures and claims; built once per app from the settings."""

    def __init__(self, settings: Settings, key: str) -> None:
        self._settings = settings
        self._key = key

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; a 401 problem otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("token-expired", "The bearer token has expired.") from exc
        except jwt.InvalidSignatureError as exc:
            raise unauthorized("invalid-token", "The token's signature is not valid.") from exc
        except jwt.PyJWTError as exc:
            raise unauthorized("invalid-token", f"The bearer token is not valid: {exc}.") from exc
        scopes: set[Scope] = set()
        for name in str(claims.get("scope", "")).split():
            try:
                scopes.add(Scope(name))
            except ValueError:
                continue  # scopes of other systems mean nothing here
        store = claims.get("store")
        return Principal(str(claims["sub"]), frozenset(scopes), str(store) if store else None)


def unauthorized(kind: str, detail: str) -> Problem:
    """A 401 problem with the challenge RFC 6750 asks for."""
    return Problem(
        401,
        kind,
        "Authentication required" if kind == "missing-token" else "Invalid token",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="crm"'},
    )


_bearer = HTTPBearer(auto_error=False)


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller; 401 when there is no valid bearer token."""
    if credentials is None:
        raise unauthorized("missing-token", "This endpoint needs an `Authorization: Bearer` token.")
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


def require(scope: Scope) -> Any:
    """A dependency that admits tokens granting `scope` and answers 403 to the rest."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(scope):
            raise Problem(
                403,
                "insufficient-scope",
                "Insufficient scope",
                f"This endpoint needs the `{scope.value}` scope.",
            )
        return principal

    return Depends(check)


AdminAuth = Annotated[Principal, require(Scope.ADMIN)]
PosAuth = Annotated[Principal, require(Scope.POS)]
ReadAuth = Annotated[Principal, require(Scope.READ)]
