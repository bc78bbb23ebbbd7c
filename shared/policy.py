"""Who may read and write what (SPEC §1), decided here for all four services
(docs/access.md).

Two layers. Each route names the roles that may call it (`ROUTES`, checked by the
`authorized` dependency every API route takes): a route missing from the table is
refused to every token, and a test enumerates every route of every service against it.
Then the scope of a case or a filter: a council only its own authority's cases, a SOG
only the cases routed to its region, the inspectorate and admin every case. Every
refusal is a `Forbidden` (HTTP 403) that says why, never a silently empty answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.auth import BearerToken, Principal
from shared.lifecycle import POSTED_BY
from shared.reference import MAPPA_REGIONS, ROLES, mappa_region_of

EVERYONE = frozenset(ROLES)
# Readers of every case: the Inspectorate for its work, admin (operators) to check what
# an import, a replay or a delivery did. Admin writes no case event (POSTED_BY).
READ_EVERY_CASE = frozenset({"inspectorate", "admin"})

# "METHOD path template" -> the roles that may call it. Scope within a route is below.
ROUTES: dict[str, frozenset[str]] = {
    # intake
    "POST /v1/notifications": POSTED_BY["incident.notified"],
    "POST /v1/notifications/check": POSTED_BY["incident.notified"],
    "POST /v1/cases/{case_id}/events": frozenset().union(*POSTED_BY.values()),
    "GET /v1/cases/{case_id}": EVERYONE,
    "POST /v1/import": frozenset({"admin"}),
    # who a token is: the console signs people in with it
    "GET /v1/whoami": EVERYONE,
    # routing: deliveries concern the Inspectorate and operators, not councils or SOGs
    "GET /v1/deliveries": READ_EVERY_CASE,
    "POST /v1/deliveries/{delivery_id}/retry": frozenset({"admin"}),
    "GET /v1/recipients": READ_EVERY_CASE,
    "PUT /v1/recipients/{recipient}": frozenset({"admin"}),
    # deadlines (scoped per case or filter)
    "GET /v1/cases/{case_id}/deadlines": EVERYONE,
    "GET /v1/deadlines": EVERYONE,
    # reporting: published aggregate figures for every token; the casework view scoped
    "GET /v1/reports/national": EVERYONE,
    "GET /v1/reports/quarterly/{year}/{quarter}": EVERYONE,
    # the cases behind a report's figures: the Inspectorate and admin, a council its own
    "GET /v1/reports/national/cases": frozenset({"inspectorate", "admin", "council"}),
    "GET /v1/reports/notifications-by-authority": EVERYONE,
    "GET /v1/reports/reporting-patterns": EVERYONE,
    "GET /v1/cases": EVERYONE,
    "GET /v1/vocabularies": EVERYONE,
}
# Answered without a token: liveness, readiness, metrics and the API description.
PUBLIC = frozenset({
    "GET /healthz", "GET /readyz", "GET /metrics",
    "GET /docs", "GET /docs/oauth2-redirect", "GET /redoc", "GET /openapi.json",
})


class Forbidden(Exception):
    """The principal may not do this; the message says why (HTTP 403)."""


def route_key(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def check_route(principal: Principal, key: str) -> None:
    allowed = ROUTES.get(key)
    if allowed is None:
        raise Forbidden(f"no access policy is set for {key}")
    if principal.role not in allowed:
        raise Forbidden(f"role {principal.role} may not call {key}; allowed: {', '.join(sorted(allowed))}")


class _Authorized(BearerToken):
    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        """FastAPI dependency: the caller's principal (401 without a valid token), or 403
        unless `ROUTES` lets its role call this route. The token's check itself, not a
        dependency on it: one level of FastAPI's dependency tree a request, not two."""
        principal = await super().__call__(request)
        check_route(principal, route_key(request.method, request.scope["route"].path))
        return principal


authorized = _Authorized()
Authorized = Annotated[Principal, Depends(authorized)]


def may_read_case(principal: Principal, local_authority: str, sog_region: str | None) -> bool:
    if principal.role in READ_EVERY_CASE:
        return True
    if principal.role == "council":
        return principal.local_authority == local_authority
    if principal.role == "sog":
        return sog_region is not None and principal.region == sog_region
    return False


def check_may_read_case(principal: Principal, case_id: object, local_authority: str, sog_region: str | None) -> None:
    if not may_read_case(principal, local_authority, sog_region):
        if principal.role == "council":
            raise Forbidden(f"case {case_id} belongs to another local authority than {principal.local_authority}")
        if principal.role == "sog":
            raise Forbidden(f"case {case_id} is not routed to the {principal.region} SOG")
        raise Forbidden(f"this token ({principal.role}) may not read case {case_id}")


def check_may_post(principal: Principal, event_type: str, local_authority: str, sog_region: str | None) -> None:
    """Forbidden unless the principal's role posts this event for a case of this
    authority (and, for a SOG, routed to its region; `sog_region` None: not routed)."""
    roles = POSTED_BY[event_type]
    if principal.role not in roles:
        raise Forbidden(f"{event_type} is posted by {' or '.join(sorted(roles))}, not {principal.role}")
    if principal.role == "council" and principal.local_authority != local_authority:
        raise Forbidden(f"this token is for {principal.local_authority}; the case belongs to {local_authority}")
    if principal.role == "sog" and sog_region != principal.region:
        raise Forbidden(f"this case is not routed to the {principal.region} SOG")


# Who may see the cases behind a report's figures (the drill-down, issue 16).
CASE_LIST_ROLES = READ_EVERY_CASE | {"council"}


def case_list_scope(principal: Principal, local_authority: str | None) -> str | None:
    """The authority the cases behind a report's figures are narrowed to: a council's own
    (another's is Forbidden), any or all for the Inspectorate and admin; others Forbidden."""
    if principal.role == "council":
        if local_authority not in (None, principal.local_authority):
            raise Forbidden(f"this token is for {principal.local_authority}; it may not read {local_authority}'s cases")
        return principal.local_authority
    if principal.role in READ_EVERY_CASE:
        return local_authority
    raise Forbidden(f"role {principal.role} may not list the cases behind a report's figures")


def list_scope(principal: Principal, local_authority: str | None) -> tuple[str | None, str | None]:
    """(local_authority, sog_region) a listing is narrowed to for this principal; a
    filter outside the principal's scope is Forbidden rather than an empty list."""
    if principal.role == "council":
        if local_authority not in (None, principal.local_authority):
            raise Forbidden(f"this token is for {principal.local_authority}; it may not read {local_authority}'s cases")
        return principal.local_authority, None
    if principal.role == "sog":
        # The authorities of the region as grouped today (shared/reference/mappa_regions.json).
        if local_authority is not None and mappa_region_of(local_authority) != principal.region:
            raise Forbidden(
                f"{local_authority} is not in the {MAPPA_REGIONS.get(principal.region or '')} MAPPA region of this SOG token"
            )
        return local_authority, principal.region
    if principal.role in READ_EVERY_CASE:
        return local_authority, None
    raise Forbidden(f"role {principal.role} may not list cases")
