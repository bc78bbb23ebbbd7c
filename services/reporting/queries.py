"""Reporting's queries: each report and list the API serves and the CLI prints, read from
the projections (repository.py) and made by the pure rules (domain.py, patterns.py). No
HTTP here: api.py translates requests and answers, services/reporting/commands.py prints."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg

from services.reporting import patterns, repository
from services.reporting.domain import (
    categorisation_table,
    follow_up_table,
    learning_theme_tables,
    national_report,
    patterns_table,
    period_state,
    quarter_period,
    quarterly_report,
)
from services.reporting.render import case_anchor
from shared.reference import LOCAL_AUTHORITIES
from shared.settings import get_settings

_acquiring = asyncio.Lock()


def _readers(pool: asyncpg.Pool) -> int:
    """How many connections a report reads on: up to 4 (its queries side by side), always
    leaving one of the pool to the rest of the service (`sir report` gives it a pool of 4)."""
    return max(1, min(4, pool.get_max_size() - 1))


@contextlib.asynccontextmanager
async def _one_snapshot(pool: asyncpg.Pool, connections: int) -> AsyncIterator[repository.Readers]:
    """Connections reading the same snapshot (the first one's, exported to the others),
    so a report's queries run side by side and still see one state of the projections;
    each query takes whichever connection is free (repository.Readers). The snapshot is
    taken before `sir report rebuild` begins or after it commits, never between (the
    first connection holds the rebuild off from before it until the report ends)."""
    async with contextlib.AsyncExitStack() as stack:
        # One report at a time takes its connections: several each holding some and
        # waiting for the rest would empty the pool for good (the consumers' too). And
        # one at a time waits at the gate for a rebuild: reports queued there each
        # holding their connections would leave none to the live consumers.
        async with _acquiring:
            held = [await stack.enter_async_context(pool.acquire()) for _ in range(connections)]
            # The first to begin, the last to end (the stack ends the others' first).
            await stack.enter_async_context(held[0].transaction(isolation="repeatable_read", readonly=True))
            await repository.hold_off_rebuild(held[0])
        # The report's moment with its snapshot: now() is when the transaction began,
        # before any wait for a rebuild at the gate (its write, or up to its lock timeout).
        snapshot, moment = await held[0].fetchrow("SELECT pg_export_snapshot(), statement_timestamp()")
        await repository.report_settings(held[0])
        for conn in held[1:]:
            await stack.enter_async_context(conn.transaction(isolation="repeatable_read", readonly=True))
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            await repository.report_settings(conn)
        yield repository.Readers(held, moment)


async def _summarised(pool: asyncpg.Pool, as_of: dt.datetime | None) -> None:
    """Before a report reads: the months changed since they were summarised, summarised
    again (repository.refresh_summaries), so that it adds up their counts rather than read
    their rows. A report as of a moment past reads the rows of then, no summary."""
    if as_of is None:
        await repository.refresh_summaries(pool)


def _moment(now: dt.datetime, as_of: dt.datetime | None) -> dt.datetime:
    """The moment a report is made at: now, or the earlier moment it is asked as known at."""
    return now if as_of is None or as_of > now else as_of


async def compute_national(
    pool: asyncpg.Pool, period_from: dt.date, period_to: dt.date, now: dt.datetime | None = None,
    as_of: dt.datetime | None = None, basis: repository.Basis = "received", threshold: float | None = None,
) -> dict:
    """The national report over the projections, read in one snapshot, as at `now` (the
    database clock unless a test or command gives one): a running period is never counted
    beyond it. `as_of`: only what the platform had recorded by then counts, and the report
    is made as it would have been made then; `basis`: the reviews and responses received in
    the period, or those of the period's notifications (cohort)."""
    await _summarised(pool, as_of)
    async with _one_snapshot(pool, _readers(pool)) as reader:
        now = now or await repository.database_now(reader)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        summaries = await repository.summaries(reader, scope)
        notifications, reviews = await asyncio.gather(
            repository.notification_counts(reader, scope, summaries),
            repository.review_counts(reader, scope, summaries),
        )
        report = national_report(
            period_from, period_to, _moment(now, as_of), notifications, reviews,
            extra_tables=_signals(scope, notifications, reviews, threshold),
        )
        return report | known(now, as_of, basis)


def _signals(scope: repository.Scope, n, r, threshold: float | None) -> dict[str, dict]:
    """The tables beyond the published report: reporting patterns, categorisation quality,
    learning themes over time (from the same scans as the figures)."""
    national, found = patterns_of(scope, n.by_quarter, threshold)
    return {
        "reporting_patterns": patterns_table(national, found),
        "categorisation_by_authority": categorisation_table(n.categorisation),
        **learning_theme_tables(r.findings_over_time),
    }


def patterns_of(scope: repository.Scope, by_quarter, threshold: float | None):
    """The under-reporting signal over the scope (services/reporting/patterns.py)."""
    return patterns.reporting_patterns(
        scope.period_from, scope.period_to, by_quarter, LOCAL_AUTHORITIES, patterns.load_caseload(),
        threshold if threshold is not None else get_settings().under_reporting_p_value,
    )


def report_scope(period_from, period_to, now, as_of, basis) -> repository.Scope:
    as_at, _ = period_state(period_to, _moment(now, as_of))
    return repository.Scope(period_from, period_to, as_of, basis, as_at)


def known(now: dt.datetime, as_of: dt.datetime | None, basis: str) -> dict:
    """What a report says about its knowledge: as of when, on which basis, and when it was made."""
    return {"generated_at": now.isoformat(), "as_of": (as_of or now).isoformat(), "basis": basis}


async def compute_quarterly(
    pool: asyncpg.Pool, year: int, quarter: int, now: dt.datetime | None = None,
    as_of: dt.datetime | None = None, basis: repository.Basis = "received", threshold: float | None = None,
) -> dict:
    period_from, period_to = quarter_period(year, quarter)
    await _summarised(pool, as_of)
    async with _one_snapshot(pool, _readers(pool)) as reader:
        now = now or await repository.database_now(reader)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        summaries = await repository.summaries(reader, scope)
        notifications, reviews, quarter_counts, follow_up = await asyncio.gather(
            repository.notification_counts(reader, scope, summaries),
            repository.review_counts(reader, scope, summaries),
            repository.quarter_counts(reader, period_from, period_to, scope.as_at, as_of),
            repository.categorisation_follow_up(reader, scope),
        )
        extra = _signals(scope, notifications, reviews, threshold)
        extra["categorisation_follow_up"] = follow_up_table(follow_up)
        report = quarterly_report(year, quarter, _moment(now, as_of), notifications, reviews, quarter_counts, extra)
        return report | known(now, as_of, basis)


async def compute_cases(
    pool: asyncpg.Pool, period_from: dt.date, period_to: dt.date, figure: str, value: str | None = None,
    local_authority: str | None = None, now: dt.datetime | None = None, as_of: dt.datetime | None = None,
    basis: repository.Basis = "received", limit: int | None = None,
) -> dict:
    """The cases behind one figure (or table row) of the national report of the same
    period, as of the same moment, on the same basis."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await repository.report_settings(conn)
        now = now or await repository.database_now(conn)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        count, listed = await repository.cases(conn, scope, figure, value, local_authority, limit)
    return {
        "figure": figure, "value": value, "local_authority": local_authority,
        "period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
        **known(now, as_of, basis), "count": count, "cases": listed,
    }


async def compute_all_cases(
    pool: asyncpg.Pool, report: dict, local_authority: str | None, limit: int
) -> dict[str, dict]:
    """Every figure's and table row's cases for the HTML page's drill-down section, keyed
    as render.case_anchor keys them; each list cut at `limit` cases (the count says all)."""
    period = report["period"]
    period_from, period_to = dt.date.fromisoformat(period["from"]), dt.date.fromisoformat(period["to"])
    now = dt.datetime.fromisoformat(report["generated_at"])
    as_of = dt.datetime.fromisoformat(report["as_of"]) if report["as_of"] != report["generated_at"] else None
    wanted = [(f, None) for f in report["figures"] if f in repository.FIGURE_CASES]
    for name, table in report["tables"].items():
        if name in repository.TABLE_CASES:
            wanted += [(name, key) for key, row in zip(table.get("keys") or (), table["rows"], strict=False) if key is not None]
    scope = report_scope(period_from, period_to, now, as_of, report["basis"])
    async with _one_snapshot(pool, _readers(pool)) as reader:
        found = await repository.many_cases(reader, scope, wanted, local_authority, limit)
    return {
        case_anchor(figure, value): {
            "figure": figure, "value": value, "local_authority": local_authority,
            "period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
            **known(now, as_of, report["basis"]), "count": count, "cases": listed,
        }
        for (figure, value), (count, listed) in zip(wanted, found, strict=True)
    }


async def compute_reporting_patterns(
    pool: asyncpg.Pool, period_from: dt.date, period_to: dt.date, as_of: dt.datetime | None, threshold: float | None
) -> dict:
    """The under-reporting signal per local authority over the period (patterns.py)."""
    async with pool.acquire() as conn:
        now = await repository.database_now(conn)
        scope = report_scope(period_from, period_to, now, as_of, "received")
        by_quarter = await repository.notifications_by_quarter(conn, scope)
        national, found = patterns_of(scope, by_quarter, threshold)
    return {
        "period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
        **known(now, as_of, "received"),
        "test": "one-sided Poisson: P(X <= notifications) with X ~ Poisson(national rate x supervised person-years)",
        "national": national,
        "authorities": [
            p.__dict__ | {"name": LOCAL_AUTHORITIES[p.local_authority].name} for p in found
        ],
    }


async def compute_notifications_by_authority(pool: asyncpg.Pool) -> dict:
    """Notifications received so far, by local authority (all 32, zeros included)."""
    counted = await repository.notifications_by_authority(pool)
    listed = [
        {"local_authority": slug, "name": la.name, "notifications": counted.get(slug, 0)}
        for slug, la in LOCAL_AUTHORITIES.items()
    ]
    return {
        "total": sum(r["notifications"] for r in listed),
        "authorities_notifying": sum(1 for r in listed if r["notifications"]),
        "by_local_authority": listed,
    }
