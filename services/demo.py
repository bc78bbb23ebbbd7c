"""`sir demo`: the README's "Try it", done against a running platform (`make run`), each
step printed as the curl command it stands for and what came back.

Issues a council token (Glasgow) and an Inspectorate token, notifies a MAPPA incident,
waits (bounded) for routing to forward it to the Scottish Government and the SOG and for
deadlines to open its timescales, and writes this year's national report as HTML.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from shared.auth import issue_token
from shared.examples import EXAMPLE_DATA

Out = Callable[[str], None]


class DemoFailed(Exception):
    """A step did not give what it should; the message says which."""


async def run(
    clients: dict[str, httpx.AsyncClient], pool: asyncpg.Pool, output: Path, out: Out = print, wait_seconds: float = 60.0,
) -> dict[str, Any]:
    """The demo over `clients` (one per service, each with its base URL); returns what it made."""
    council = await issue_token(pool, "council", local_authority="glasgow-city", label="sir demo")
    inspectorate = await issue_token(pool, "inspectorate", label="sir demo")
    out("$ COUNCIL=$(sir token issue --role council --local-authority glasgow-city)")
    out("$ INSPECTORATE=$(sir token issue --role inspectorate)")
    out("  two tokens issued (each printed once; only their hashes are stored)")

    today = dt.date.today()
    notification = EXAMPLE_DATA["incident.notified"] | {
        "council_reference": f"DEMO-{int(time.time())}",
        "incident_date": (today - dt.timedelta(days=2)).isoformat(),
    }
    out(f"$ curl -X POST {_url(clients, 'intake', '/v1/notifications')} -H \"Authorization: Bearer $COUNCIL\""
        f" -H 'Content-Type: application/json' -d '{json.dumps(notification)}'")
    answer = await clients["intake"].post("/v1/notifications", json=notification, headers=_bearer(council))
    if answer.status_code != 201:
        raise DemoFailed(f"intake answered {answer.status_code}: {answer.text[:300]}")
    accepted = answer.json()
    case_id = accepted["case_id"]
    out(f"  201: case {case_id}, state {accepted['state']}")

    out(f"$ curl '{_url(clients, 'routing', '/v1/deliveries')}?case_id={case_id}' -H \"Authorization: Bearer $INSPECTORATE\"")

    async def forwarded() -> list[dict]:
        found = await clients["routing"].get("/v1/deliveries", params={"case_id": case_id}, headers=_bearer(inspectorate))
        deliveries = found.json() if found.status_code == 200 else []
        return deliveries if len(deliveries) >= 2 and all(d["status"] == "delivered" for d in deliveries) else []

    deliveries = await _until(forwarded, wait_seconds, "routing to forward the notification to the SG and the SOG")
    for delivery in sorted(deliveries, key=lambda d: d["recipient"]):
        out(f"  {delivery['recipient']}: {delivery['status']} by {delivery['channel']}")

    out(f"$ curl {_url(clients, 'deadlines', f'/v1/cases/{case_id}/deadlines')} -H \"Authorization: Bearer $INSPECTORATE\"")

    async def opened() -> list[dict]:
        found = await clients["deadlines"].get(f"/v1/cases/{case_id}/deadlines", headers=_bearer(inspectorate))
        return found.json().get("deadlines", []) if found.status_code == 200 else []

    deadlines = await _until(opened, wait_seconds, "deadlines to open the case's timescales")
    for deadline in deadlines:
        out(f"  {deadline['rule']}: {deadline['status']}, due {deadline['due_at']}")

    period = {"from": f"{today.year}-01-01", "to": f"{today.year}-12-31", "format": "html"}
    out(f"$ curl '{_url(clients, 'reporting', '/v1/reports/national')}?from={period['from']}&to={period['to']}&format=html'"
        f" -H \"Authorization: Bearer $INSPECTORATE\" > {output}")
    report = await clients["reporting"].get("/v1/reports/national", params=period, headers=_bearer(inspectorate))
    if report.status_code != 200:
        raise DemoFailed(f"reporting answered {report.status_code}: {report.text[:300]}")
    await asyncio.to_thread(output.write_bytes, report.content)
    out(f"  200: {len(report.content):,} bytes written to {output}")
    return {"case_id": case_id, "deliveries": deliveries, "deadlines": deadlines, "report": output}


async def _until(check: Callable[[], Awaitable[list[dict]]], wait_seconds: float, what: str) -> list[dict]:
    deadline = time.monotonic() + wait_seconds
    while not (found := await check()):
        if time.monotonic() > deadline:
            raise DemoFailed(f"waited {wait_seconds:g}s for {what}; is every service running (`make run`)?")
        await asyncio.sleep(0.2)
    return found


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _url(clients: dict[str, httpx.AsyncClient], service: str, path: str) -> str:
    return str(clients[service].base_url).rstrip("/") + path
