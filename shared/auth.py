"""Bearer tokens: issued by an operator command, stored hashed, one role and scope each.

A token reads `sir_<token_id>_<secret>`. Only the SHA-256 of the secret is stored: the
secret is 256 random bits, so a slow password hash would add nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

import asyncpg
from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from shared.principal import Principal
from shared.reference import LOCAL_AUTHORITIES, MAPPA_REGIONS, ROLES


def check_scope(role: str, local_authority: str | None, region: str | None) -> None:
    """Raise ValueError unless the role has exactly the scope it needs."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if (role == "council") != (local_authority is not None):
        raise ValueError("a council token needs --local-authority, and only a council token has one")
    if (role == "sog") != (region is not None):
        raise ValueError("a sog token needs --region, and only a sog token has one")
    if local_authority is not None and local_authority not in LOCAL_AUTHORITIES:
        raise ValueError(f"unknown local authority {local_authority!r}")
    if region is not None and region not in MAPPA_REGIONS:
        raise ValueError(f"unknown MAPPA region {region!r}; regions: {', '.join(MAPPA_REGIONS)}")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def issue_token(
    conn: asyncpg.Connection | asyncpg.Pool,
    role: str,
    local_authority: str | None = None,
    region: str | None = None,
    label: str | None = None,
) -> str:
    """Store a new token and return it; this is the only time the secret is seen."""
    check_scope(role, local_authority, region)
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO auth.tokens (token_id, secret_sha256, role, local_authority, region, label)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        token_id, _digest(secret), role, local_authority, region, label,
    )
    return f"sir_{token_id}_{secret}"


async def list_tokens(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT token_id, role, local_authority, region, label, created_at, revoked_at"
        " FROM auth.tokens ORDER BY created_at"
    )


async def revoke_token(conn: asyncpg.Connection | asyncpg.Pool, token_id: str) -> bool:
    status = await conn.execute(
        "UPDATE auth.tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL", token_id
    )
    return status.endswith(" 1")


async def authenticate(pool: asyncpg.Pool, token: str) -> Principal | None:
    return (await authenticate_at(pool, token))[0]


def _token_parts(token: str) -> list[str] | None:
    """`sir`, the token's id and its secret; None for a token not even shaped like one."""
    parts = token.split("_", 2)
    return parts if len(parts) == 3 and parts[0] == "sir" else None


async def authenticate_at(
    database: asyncpg.Pool | asyncpg.Connection, token: str
) -> tuple[Principal | None, dt.datetime | None]:
    """The token's principal (None: not a valid token), and the database clock read in the
    same round trip (None for a token not even shaped like one). `database`: the pool, or
    the connection the request holds (`request_database`)."""
    parts = _token_parts(token)
    if parts is None:
        return None, None
    row = await database.fetchrow(
        "SELECT now() AS now, t.token_id, t.secret_sha256, t.role, t.local_authority, t.region"
        " FROM (SELECT 1) one LEFT JOIN auth.tokens t ON t.token_id = $1 AND t.revoked_at IS NULL",
        parts[1],
    )
    if row["token_id"] is None or not hmac.compare_digest(row["secret_sha256"], _digest(parts[2])):
        return None, row["now"]
    return Principal(row["token_id"], row["role"], row["local_authority"], row["region"]), row["now"]


class BearerToken(HTTPBearer):
    """FastAPI dependency: the caller's principal, or 401 (OpenAPI's `HTTPBearer` scheme).

    One dependency rather than a function over `HTTPBearer`'s credentials: each level of
    FastAPI's dependency tree costs every request a resolution of its own (issue 15). The
    database clock read with the token is kept as `request.state.clock` (`request_clock`):
    a route that records the moment it received the request needs no round trip for it."""

    def __init__(self) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer", description="A token from `sir token issue`")

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        credentials = bearer_credentials(request)
        principal = None
        if credentials is not None:
            principal, request.state.clock = await authenticate_at(request_database(request), credentials)
        if principal is None:
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return principal


current_principal = BearerToken()


def bearer_credentials(request: Request) -> str | None:
    """The request's bearer token, or None (no Authorization header, another scheme, none given)."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    return credentials if credentials and scheme.lower() == "bearer" else None


def may_be_a_token(request: Request) -> bool:
    """Whether the request carries a bearer token shaped like one of ours: only such a
    token is looked up (a route may take a connection for it beforehand)."""
    credentials = bearer_credentials(request)
    return credentials is not None and _token_parts(credentials) is not None


def request_database(request: Request) -> asyncpg.Pool | asyncpg.Connection:
    """The connection a route took for the whole of a request (`request.state.connection`),
    so that its token's check and its work share one, a single turn through the pool
    rather than two (intake's `POST /v1/notifications`, issue 15); else the app's pool."""
    return getattr(request.state, "connection", None) or request.app.state.pool


def request_clock(request: Request) -> dt.datetime | None:
    """The database clock when the request's token was checked (None if it was not)."""
    return getattr(request.state, "clock", None)
