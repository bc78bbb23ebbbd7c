"""`sir`, the operators' command-line tool."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.logs import configure_logging
from shared.settings import SERVICES, Settings, get_settings

# The default database for `sir up` on the machine's own server.
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_DATABASE = "postgresql://postgres@127.0.0.1:5432/sir"
STATE_DIR = Path(".sir")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service=getattr(args, "service", None) or "sir")
    return args.run(args) or 0


class _Version(argparse.Action):
    """`sir --version`: the release and each contract's version (imported only when asked)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from services import version_line

        print(version_line())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sir", description=__doc__)
    parser.add_argument("--version", action=_Version, nargs=0, help="show the release and the contracts' versions")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the whole platform locally (broker, database, four services)")
    up.set_defaults(run=_up)

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply the SQL migrations of every schema")
    migrate.set_defaults(run=lambda _: asyncio.run(_migrate(get_settings())))

    replay = commands.add_parser("replay", help="re-publish the event store to the topics")
    replay.set_defaults(run=lambda _: asyncio.run(_replay(get_settings())))

    history = commands.add_parser("import", help="import history: NDJSON of events (docs/import.md)")
    history.add_argument("file", type=Path, help="one SPEC §3 event per line, with historical received_at")
    history.set_defaults(run=lambda a: asyncio.run(_import(a.file, get_settings())))

    _add_report_commands(commands)

    demo = commands.add_parser("demo", help="the README's Try it against the running platform, printing each step")
    demo.add_argument("--output", type=Path, default=Path("national.html"), help="where the national report goes")
    demo.set_defaults(run=lambda a: asyncio.run(_demo(a)))
    docs = commands.add_parser("docs", help="write the AsyncAPI and OpenAPI documents under docs/")
    docs.add_argument("--check", action="store_true", help="only say whether the committed documents are current")
    docs.set_defaults(run=_docs)

    token = commands.add_parser("token", help="issue, list and revoke bearer tokens")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    issue = token_commands.add_parser("issue", help="issue a token and print it (only this once)")
    issue.add_argument("--role", required=True, choices=("council", "inspectorate", "sog", "admin"))
    issue.add_argument("--local-authority", help="for a council token: its local authority slug")
    issue.add_argument("--region", help="for a sog token: its MAPPA region")
    issue.add_argument("--label", help="a note for operators (no personal data)")
    issue.set_defaults(run=lambda a: asyncio.run(_token_issue(a)))
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    listing.set_defaults(run=lambda a: asyncio.run(_token_list()))
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    revoke.set_defaults(run=lambda a: asyncio.run(_token_revoke(a.token_id)))
    return parser


def _add_report_commands(commands) -> None:
    """`sir report national|quarterly|rebuild` (docs/reports.md)."""
    import datetime as dt

    report = commands.add_parser("report", help="national and quarterly reports; rebuild reporting's projections")
    kinds = report.add_subparsers(required=True, metavar="REPORT", dest="report")
    national = kinds.add_parser("national", help="the national report for a period (dates in Scotland, both included)")
    national.add_argument("--from", dest="period_from", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    national.add_argument("--to", dest="period_to", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    quarterly = kinds.add_parser("quarterly", help="the quarterly report, e.g. `sir report quarterly 2014 Q3`")
    quarterly.add_argument("year", type=int)
    quarterly.add_argument("quarter", help="Q1 to Q4")
    for parser in (national, quarterly):
        parser.add_argument("--format", choices=("json", "csv", "html"), default="json")
        parser.add_argument("--output", type=Path, help="write to this file (default: standard output)")
    rebuild = kinds.add_parser("rebuild", help="drop reporting's projections and rebuild them from the topics")
    rebuild.add_argument("--idle-polls", type=int, default=3, help="empty fetches in a row that mark a topic's end")
    kinds.add_parser("schema", help="write the JSON Schema of a report to docs/report.schema.json")
    report.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    from services.reporting import commands as reporting

    return asyncio.run(reporting.run(args, get_settings()))


def _serve(args: argparse.Namespace) -> None:
    from shared.service import serve

    settings = get_settings()
    app = importlib.import_module(f"services.{args.service}.app").build(settings)
    asyncio.run(serve(args.service, app, settings))


async def _migrate(settings: Settings) -> None:
    from shared.db import COMMON, create_pool, migrate, migrate_auth

    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await migrate_auth(pool)
        for name in SERVICES:
            service = importlib.import_module(f"services.{name}.app").SERVICE
            await migrate(pool, name, COMMON, service.migrations)
    finally:
        await pool.close()
    print("migrated: auth, " + ", ".join(SERVICES))


async def _replay(settings: Settings) -> None:
    from services.intake.repository import replay

    async def run(pool):
        count = await replay(pool)
        await _publish_intake_outbox(pool, settings)
        return count

    print(f"re-published {await _with_pool(run)} events")


async def _publish_intake_outbox(pool, settings: Settings) -> None:
    """Publish intake's outbox here: intake may not be running. A running intake's relay
    shares the work; an advisory lock keeps their batches apart."""
    from services.intake.repository import SCHEMA
    from shared.outbox import OutboxRelay

    relay = OutboxRelay(pool, SCHEMA, settings.kafka_bootstrap, partitions=settings.kafka_partitions)
    try:
        await relay.drain(timeout=3600)
    finally:
        await relay.stop()


async def _import(path: Path, settings: Settings) -> int:
    from services.intake import history
    from services.intake.app import SERVICE
    from shared.db import COMMON, migrate

    try:
        with path.open("rb") as lines:  # read line by line: history files can be large
            parsed = history.parse(lines)
    except OSError as error:
        print(f"sir import: {error}", file=sys.stderr)
        return 2

    async def run(pool):
        await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
        report = await history.import_history(pool, parsed)
        await _publish_intake_outbox(pool, settings)
        return report

    report = await _with_pool(run)
    print(f"imported {report.imported}, skipped {report.skipped} (already present), rejected {report.rejected}")
    for error in report.as_dict()["errors"]:
        print(f"line {error['line']} (case {error['case_id'] or '?'}): {error['reason']}")
    return 1 if report.rejected else 0


def _docs(args: argparse.Namespace) -> int:
    from services import contracts

    stale = contracts.check() if args.check else contracts.write()
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


async def _with_pool(work):
    from shared.db import create_pool, migrate_auth

    pool = await create_pool(get_settings().database_url, max_size=2)
    try:
        await migrate_auth(pool)
        return await work(pool)
    finally:
        await pool.close()


async def _token_issue(args: argparse.Namespace) -> int:
    from shared.auth import issue_token

    try:
        token = await _with_pool(
            lambda pool: issue_token(pool, args.role, args.local_authority, args.region, args.label)
        )
    except ValueError as error:
        print(f"sir token issue: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


async def _demo(args: argparse.Namespace) -> int:
    import httpx

    from services import demo

    settings = get_settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://{host}:{settings.port_of(name)}"))
            for name in SERVICES
        }
        try:
            await _with_pool(lambda pool: demo.run(clients, pool, args.output))
        except (demo.DemoFailed, httpx.ConnectError) as error:
            print(f"sir demo: {error}", file=sys.stderr)
            return 1
    return 0


async def _token_list() -> None:
    from shared.auth import list_tokens

    for row in await _with_pool(list_tokens):
        scope = row["local_authority"] or row["region"] or "-"
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
        print(f"{row['token_id']}  {row['role']:<12} {scope:<24} {state:<18} {row['label'] or ''}")


async def _token_revoke(token_id: str) -> int:
    from shared.auth import revoke_token

    if await _with_pool(lambda pool: revoke_token(pool, token_id)):
        print(f"revoked {token_id}")
        return 0
    print(f"sir token revoke: no active token {token_id}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    """Broker and database (started here when none is given), then the four services."""
    from shared import devstack

    STATE_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    stack = []
    if "KAFKA_BOOTSTRAP" not in env:
        port = 9092 if not devstack.port_open(9092) else devstack.free_port()
        broker = devstack.Tansu(port, log_path=STATE_DIR / "tansu.log").start()
        stack.append(broker)
        env["KAFKA_BOOTSTRAP"] = broker.bootstrap
        print(f"broker    Tansu at {broker.bootstrap} (in memory; `sir replay` re-publishes the event store)")
    if "DATABASE_URL" not in env:
        if devstack.postgres_reachable(LOCAL_SERVER):
            env["DATABASE_URL"] = LOCAL_DATABASE
        else:
            database = devstack.EmbeddedPostgres(STATE_DIR.resolve() / "postgres")
            stack.append(database)
            env["DATABASE_URL"] = database.start().rsplit("/", 1)[0] + "/sir"
        devstack.ensure_database(env["DATABASE_URL"])
        print(f"database  {env['DATABASE_URL']}")
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    asyncio.run(_migrate(settings))

    processes = {
        name: subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name], env=env)
        for name in SERVICES
    }
    for name in SERVICES:
        port = settings.port_of(name)
        print(f"{name:<10}http://{settings.host}:{port}/docs")
    print("Ctrl-C stops everything.")
    stopping = []
    # Set both handlers explicitly: a process started in the background inherits an
    # ignored SIGINT, and Ctrl-C must still stop everything.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    while not stopping and all(p.poll() is None for p in processes.values()):
        time.sleep(0.2)
    failed = [n for n, p in processes.items() if p.poll() not in (None, 0)]
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    for part in reversed(stack):
        part.stop()
    if failed:
        print(f"stopped because {', '.join(failed)} exited", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
