"""Bearer tokens: JWTs signed with the deployment's key, carrying scopes and a store.

Scopes: `admin` (everything), `pos` (the till: purchases, redemptions, lookups) and `read`
(read-only). A POS token may name the store it belongs to. Each service verifies tokens
locally; there is no token service to call.

Keys rotate without downtime through a key ring (`CRM_JWT_KEYS`): each token names its
key in the `kid` header, every process verifies with any key of the ring, and only
`CRM_JWT_SIGNING_KEY_ID` signs. Give every process the new key first, then switch the
signing id, then drop the old key once its last tokens have expired.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Mapping
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


@dataclass(frozen=True)
class KeyRing:
    """The keys tokens and signed links are verified with, and the one that signs.

    `unkeyed` verifies tokens without a `kid`: those signed before a ring was configured,
    with `CRM_JWT_SECRET` or the generated key.
    """

    signing_kid: str | None
    signing_secret: str
    by_kid: Mapping[str, str]
    unkeyed: str

    def encode(self, claims: Mapping[str, Any]) -> str:
        """`claims` signed with the signing key, which the header names."""
        headers = {"kid": self.signing_kid} if self.signing_kid is not None else None
        return jwt.encode(dict(claims), self.signing_secret, algorithm=ALGORITHM, headers=headers)

    def decode(self, token: str, **options: Any) -> dict[str, Any]:
        """The verified claims of `token`, checked with the key its `kid` names.

        Raises PyJWT's errors, as `jwt.decode` does; an unknown `kid` is an invalid token.
        """
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None:
            key = self.unkeyed
        elif isinstance(kid, str) and kid in self.by_kid:
            key = self.by_kid[kid]
        else:
            raise jwt.InvalidKeyError(f"the token names an unknown key id {kid!r}")
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=[ALGORITHM], **options)
        return claims

    def secrets(self) -> list[str]:
        """Every key, the signing one first: for signatures that carry no key id."""
        keys = [self.signing_secret, *self.by_kid.values(), self.unkeyed]
        return list(dict.fromkeys(keys))


def key_ring(settings: Settings) -> KeyRing:
    """The ring of `CRM_JWT_KEYS`, or a ring of the single legacy key when none is set."""
    legacy = signing_key(settings)[0] if settings.jwt_secret or not settings.jwt_keys else None
    if not settings.jwt_keys:
        assert legacy is not None
        return KeyRing(None, legacy, {}, legacy)
    keys = {kid: secret.get_secret_value() for kid, secret in settings.jwt_keys.items()}
    kid = settings.jwt_signing_key_id or next(iter(keys))
    return KeyRing(kid, keys[kid], keys, legacy or keys[kid])


def issue_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[Scope],
    store_id: str | None = None,
    ttl: timedelta = timedelta(days=30),
    ring: KeyRing | None = None,
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
    return (ring or key_ring(settings)).encode(claims)


class TokenVerifier:
    """Checks signatures and claims; built once per app from the settings."""

    def __init__(self, settings: Settings, ring: KeyRing) -> None:
        self._settings = settings
        self._ring = ring

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; a 401 problem otherwise."""
        try:
            claims = self._ring.decode(
                token,
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
