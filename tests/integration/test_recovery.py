"""Issue 11's scenario, exactly: the platform runs, the broker restarts blank, one more
event comes, then an operator replays and rebuilds. No figure may move, and no case may
go back in its lifecycle.

The platform runs in this process on its own Tansu (the session's broker is shared by
other tests and must not restart) and its own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid

import pytest

from services import cli
from shared import devstack
from shared.settings import get_settings
from tests.factories import mappa_notification, notification, review
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import eventually

SERVICES = ("intake", "routing", "deadlines", "reporting")
CONSUMERS = ("routing", "deadlines", "reporting")
TODAY = dt.date.today()
YEAR = TODAY.year
QUARTER = (TODAY.month - 1) // 3 + 1
# Moments that differ between two readings of the same figures.
VOLATILE = {"generated_at", "as_at", "as_of"}


def _days_ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.fixture
def own_broker(infra, monkeypatch):
    """A Tansu of this test's own on a fixed port, and `sir` commands pointed at it."""
    database_url = infra.new_database()
    with devstack.Tansu() as tansu:
        settings = infra.settings(database_url, kafka_bootstrap=tansu.bootstrap)
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("KAFKA_BOOTSTRAP", tansu.bootstrap)
        monkeypatch.setenv("KAFKA_PARTITIONS", str(settings.kafka_partitions))
        monkeypatch.setenv("SIR_SESSION_TIMEOUT_MS", str(settings.session_timeout_ms))
        monkeypatch.setenv("SIR_HEARTBEAT_INTERVAL_MS", str(settings.heartbeat_interval_ms))
        get_settings.cache_clear()
        yield tansu, settings
        get_settings.cache_clear()


async def _post(platform, path, token, body) -> dict:
    answer = await platform.clients["intake"].post(path, json=body, headers=bearer(token))
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _event(platform, token, case_id, event_type, data=None) -> dict:
    body = {"event_type": event_type} | ({"data": data} if data is not None else {})
    return await _post(platform, f"/v1/cases/{case_id}/events", token, body)


async def _all_applied(platform) -> bool:
    """Every stored case event applied by all three consumers, and the relays idle."""
    pool = platform.pool
    stored = await pool.fetchval(
        "SELECT count(*) FROM intake.events WHERE event_type <> 'notification.forwarded'"
    )
    for schema in CONSUMERS:
        applied = await pool.fetchval(
            f"SELECT count(*) FROM {schema}.processed_events p"
            " WHERE p.event_id IN (SELECT event_id FROM intake.events)"
        )
        if applied < stored:
            return False
    return True


async def _settled(platform) -> None:
    """Wait until nothing is moving: case events applied, and the derived events too."""
    await eventually(lambda: _all_applied(platform), timeout=60, what="every case event applied")
    previous = before_last = None
    for _ in range(200):
        snapshot = await _readings(platform)
        if snapshot == previous:
            return
        before_last, previous = previous, snapshot
        await asyncio.sleep(0.5)
    import difflib
    import json
    diff = difflib.unified_diff(json.dumps(before_last, indent=1, sort_keys=True).splitlines(),
                                json.dumps(previous, indent=1, sort_keys=True).splitlines(), lineterm="")
    raise AssertionError("the figures never settled:\n" + "\n".join(list(diff)[:60]))


async def _readings(platform) -> dict:
    headers = bearer(platform.inspectorate)
    reporting = platform.clients["reporting"]
    national = await reporting.get(
        "/v1/reports/national", params={"from": f"{YEAR}-01-01", "to": f"{YEAR}-12-31"}, headers=headers
    )
    quarterly = await reporting.get(f"/v1/reports/quarterly/{YEAR}/Q{QUARTER}", headers=headers)
    casework = await reporting.get("/v1/cases", params={"limit": 500}, headers=headers)
    for answer in (national, quarterly, casework):
        assert answer.status_code == 200, answer.text
    return _stable({"national": national.json(), "quarterly": quarterly.json(), "casework": casework.json()})


async def _case_state(platform, case_id) -> str:
    answer = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(platform.inspectorate))
    return answer.json()["state"]


@contextlib.asynccontextmanager
async def _platform(settings, tokens=None):
    async with run_services(settings, SERVICES) as platform:
        from shared.auth import issue_token

        pool = platform.pool
        platform.tokens = tokens or {
            "glasgow": await issue_token(pool, "council", local_authority="glasgow-city"),
            "fife": await issue_token(pool, "council", local_authority="fife"),
            "inspectorate": await issue_token(pool, "inspectorate"),
        }
        platform.inspectorate = platform.tokens["inspectorate"]
        yield platform


async def test_a_blank_broker_replay_and_rebuild_change_no_figure(own_broker):
    tansu, settings = own_broker
    async with _platform(settings) as platform:
        tokens = platform.tokens
        glasgow, fife, inspectorate = tokens["glasgow"], tokens["fife"], tokens["inspectorate"]
        concluding = (await _post(platform, "/v1/notifications", glasgow, notification(incident_date=_days_ago(3))))[
            "case_id"
        ]
        late = (await _post(platform, "/v1/notifications", glasgow, notification(incident_date=_days_ago(40))))[
            "case_id"
        ]
        # A MAPPA case too, in the figures compared below.
        await _post(platform, "/v1/notifications", fife, mappa_notification(incident_date=_days_ago(2)))
        asking = (await _post(platform, "/v1/notifications", fife, notification(incident_date=_days_ago(4))))[
            "case_id"
        ]
        await _event(platform, glasgow, concluding, "review.submitted", review())
        await _event(platform, inspectorate, late, "notification.criteria_assessed", {"meets_criteria": True})
        await _event(platform, fife, asking, "review.submitted", review(review_type="initial_analysis"))
        await _event(platform, inspectorate, asking, "review.additional_info_requested", {})
        await _event(platform, fife, asking, "review.additional_info_provided")
        await _settled(platform)
        before = await _readings(platform)
        assert before["national"]["figures"]["forwarded_to_sg_within_2_working_days"]["base"] == 4
        tokens = platform.tokens

    # The broker restarts with nothing (Tansu keeps topics in memory); the platform comes
    # back by itself, and nobody types a command.
    tansu.restart()
    async with _platform(settings, tokens) as platform:
        await _settled(platform)
        assert await _readings(platform) == before, "a blank broker changed the figures"

        await _event(platform, inspectorate, concluding, "review.responded", {"outcome": "concluded"})
        await _settled(platform)
        live = await _readings(platform)
        assert await _case_state(platform, concluding) == "concluded"

        # An operator replays every store and rebuilds reporting from the topics.
        assert await asyncio.to_thread(cli.main, ["replay"]) == 0
        await _settled(platform)
        assert await asyncio.to_thread(cli.main, ["report", "rebuild"]) == 0
        after = await _readings(platform)
        assert after == live, "replay and rebuild changed the figures"
        case_row = next(c for c in after["casework"] if c["case_id"] == concluding)
        assert case_row["state"] == "concluded"
        assert await platform.pool.fetchval(
            "SELECT state FROM reporting.notifications WHERE case_id = $1", uuid.UUID(concluding)
        ) == "concluded"
