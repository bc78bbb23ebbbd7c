"""`sir`, the operators' command-line tool."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shared.logs import configure_logging
from shared.settings import CONSOLE, SERVICES, Settings, get_settings

# The default database for `sir up` on the machine's own server.
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_DATABASE = "postgresql://postgres@127.0.0.1:5432/sir"
STATE_DIR = Path(".sir")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(
        settings.log_level, settings.log_format, service=getattr(args, "service", None) or "sir",
        repeat_seconds=settings.log_repeat_seconds,
    )
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

    up = commands.add_parser("up", help="run the whole platform locally (broker, database, four services, console)")
    up.set_defaults(run=_up)

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=(*SERVICES, CONSOLE))
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply the SQL migrations of every schema")
    migrate.set_defaults(run=lambda _: asyncio.run(_migrate(get_settings())))

    replay = commands.add_parser("replay", help="re-publish every service's emitted events to the topics, in causal order")
    replay.set_defaults(run=lambda _: asyncio.run(_replay(get_settings())))

    outbox = commands.add_parser("outbox", help="review the outbox rows the broker refused for good")
    actions = outbox.add_subparsers(required=True, metavar="ACTION", dest="action")
    actions.add_parser("parked", help="list parked rows awaiting a decision")
    for action, what in (("retry", "queue a parked row for publication again"),
                         ("discard", "record that a parked row is not to be published (the event is kept)")):
        actions.add_parser(action, help=what).add_argument("id", help="SCHEMA:POSITION, as `sir outbox parked` lists it")
    outbox.set_defaults(run=lambda a: asyncio.run(_outbox(a)))

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
        parser.add_argument("--as-of", dest="as_of", type=_moment, help="as known then: RFC 3339 with offset")
        parser.add_argument("--basis", choices=("received", "cohort"), default="received")
    rebuild = kinds.add_parser("rebuild", help="drop reporting's projections and rebuild them from the topics")
    rebuild.add_argument("--idle-polls", type=int, default=3, help="empty fetches in a row that mark a topic's end")
    kinds.add_parser("schema", help="write the JSON Schema of a report to docs/report.schema.json")
    report.set_defaults(run=_report)


def _moment(text: str):
    import datetime as dt

    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give the moment with its offset, e.g. 2015-01-31T23:59:59Z")
    return moment


def _report(args: argparse.Namespace) -> int:
    from services.reporting import commands as reporting

    return asyncio.run(reporting.run(args, get_settings()))


def _serve(args: argparse.Namespace) -> None:
    from shared.service import serve

    settings = get_settings()
    app = importlib.import_module(f"services.{args.service}.app").build(settings)
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(serve(args.service, app, settings))


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (uvicorn[standard]; uvicorn picks it only
    when it makes the loop itself, and `serve` runs in ours), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


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
    from shared import record

    async def run(pool):
        await _migrate_emitting(pool)

        def progress(done: int, total: int) -> None:
            print(f"\rre-published {done}/{total} events", end="", flush=True)

        count = await record.replay(pool, settings.kafka_bootstrap, settings.kafka_partitions, progress)
        print()
        for schema in record.EMITTING:
            await _publish_outbox(pool, settings, schema)
        return count

    print(f"re-published {await _with_pool(run)} events (intake, routing, deadlines, in causal order)")


async def _migrate_emitting(pool) -> None:
    from shared.db import COMMON, migrate
    from shared.record import EMITTING

    for name in EMITTING:
        await migrate(pool, name, COMMON, importlib.import_module(f"services.{name}.app").SERVICE.migrations)


# Rows a relay of `sir import` publishes per batch (a service's relay: 500).
IMPORT_PUBLISH_BATCH = 5000
# Connections of `sir import` storing batches of cases at once (history.import_history):
# the database writes one while the import decides the next.
IMPORT_WRITERS = 2


async def _publish_outbox(pool, settings: Settings, schema: str = "intake", batch_size: int = 500) -> None:
    """Publish a service's outbox here: the service may not be running. A running
    service's relay shares the work; an advisory lock keeps their batches apart."""
    from shared.outbox import OutboxRelay

    relay = OutboxRelay(
        pool, schema, settings.kafka_bootstrap, partitions=settings.kafka_partitions, batch_size=batch_size
    )
    try:
        await relay.drain(timeout=3600)
    finally:
        await relay.stop()


async def _outbox(args: argparse.Namespace) -> int:
    """`sir outbox parked|retry|discard`: rows the broker refused for good."""
    from shared import outbox
    from shared.record import EMITTING

    async def run(pool):
        await _migrate_emitting(pool)
        if args.action == "parked":
            rows = await outbox.list_parked(pool, EMITTING)
            for row in rows:
                print(f"{row['id']:<18} {row['parked_at']:%Y-%m-%d %H:%M:%S}  {row['event_type']:<24} "
                      f"{row['event_id']}  {row['size']} bytes  {row['topic']}  {row['error']}")
            print(f"{len(rows)} parked row(s) awaiting a decision")
            return 0
        schema, _, position = args.id.partition(":")
        if schema not in EMITTING or not position.isdigit():
            print(f"sir outbox {args.action}: ID is SCHEMA:POSITION as `sir outbox parked` lists it", file=sys.stderr)
            return 2
        decision = "retried" if args.action == "retry" else "discarded"
        if not await outbox.decide_parked(pool, schema, int(position), decision):
            print(f"sir outbox {args.action}: no parked row {args.id} awaits a decision", file=sys.stderr)
            return 1
        print(f"{args.id} {decision}" + (" (queued for publication again)" if decision == "retried"
                                          else " (kept in the record, not published)"))
        return 0

    return await _with_pool(run)


def _readable_size(path: Path) -> int:
    """The file's size, once it is known to open for reading (OSError otherwise)."""
    size = path.stat().st_size
    path.open("rb").close()
    return size


async def _import(path: Path, settings: Settings) -> int:
    """Never a traceback: a bad line is reported by number, a missing file or an
    unreachable database by a sentence and an exit code (docs/import.md)."""
    import asyncpg

    from services.intake import history
    from services.intake.app import SERVICE
    from shared.db import COMMON, migrate

    try:
        size = await asyncio.to_thread(_readable_size, path)
    except OSError as error:
        print(f"sir import: {error}", file=sys.stderr)
        return 2
    progress = _ImportProgress(size)

    async def run(pool):
        await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
        _collect_garbage_seldom()
        # Published while they are stored: intake's outbox relay runs beside the import, in
        # a process of its own so that publishing takes no time from storing (a broker that
        # does not answer only delays it; the drain below says so).
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from services.cli import _import_relay; _import_relay()", stdin=subprocess.PIPE,
        )
        try:
            report = await history.import_history(
                pool, history.read_file(path), max_line_bytes=settings.max_message_bytes, progress=progress,
                writers=IMPORT_WRITERS,
            )
        finally:
            assert relay.stdin is not None
            relay.stdin.close()  # the relay stops at the end of its input
            await relay.wait()
        progress.done(report)
        try:
            await _publish_outbox(pool, settings, batch_size=IMPORT_PUBLISH_BATCH)
        except Exception as error:  # any failure: stored is what matters; the relay publishes later
            print(
                f"sir import: stored, but not yet published ({type(error).__name__}: {error}); intake's"
                " outbox relay publishes the events when the broker answers",
                file=sys.stderr,
            )
        return report

    try:
        # The import's connection and its writers (then the drain's).
        report = await _with_pool(run, max_size=1 + IMPORT_WRITERS)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
        print(
            f"sir import: the database at {_redacted(settings.database_url)} failed ({type(error).__name__}:"
            f" {error}); read {progress.lines} lines. Cases stored before stay stored: run the same"
            " import again when the database answers (it skips what is there).",
            file=sys.stderr,
        )
        return 3
    print(f"imported {report.imported}, skipped {report.skipped} (already present), rejected {report.rejected}")
    for rejection in report.as_dict()["errors"]:
        print(f"line {rejection['line']} (case {rejection['case_id'] or '?'}): {rejection['reason']}")
    return 1 if report.rejected else 0


def _collect_garbage_seldom() -> None:
    """For a command's process that churns through many short-lived objects (`sir import`
    and its relay): what is loaded so far stays out of the cycle collector's scans, and it
    runs after 50,000 objects more than freed rather than 700. Nearly everything an import
    makes is freed by its reference count; the collector's full scans of every object,
    every few thousand events, were a third of the import's time (issue 15)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def _import_relay() -> None:
    """`sir import`'s relay process: intake's outbox relay, publishing until its standard
    input ends (the import closes it when it has stored everything, or exits)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="sir", repeat_seconds=settings.log_repeat_seconds)

    async def relay() -> None:
        from shared.db import create_pool
        from shared.outbox import OutboxRelay

        pool = await create_pool(settings.database_url, max_size=2)  # its listener and its batch
        _collect_garbage_seldom()
        relay = OutboxRelay(
            pool, "intake", settings.kafka_bootstrap, partitions=settings.kafka_partitions,
            batch_size=IMPORT_PUBLISH_BATCH,
        )
        await relay.start()
        try:
            await asyncio.to_thread(sys.stdin.buffer.read)
        finally:
            await relay.stop()
            await pool.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(relay())


class _ImportProgress:
    """Lines read and events stored, with their rates, on stderr at most twice a second."""

    def __init__(self, size: int):
        self.size = size
        self.started = time.monotonic()
        self.shown = 0.0
        self.lines = 0
        self.stored_since: float | None = None
        self.terminal = sys.stderr.isatty()

    def __call__(self, lines: int, events: int) -> None:
        self.lines = lines
        now = time.monotonic()
        if events and self.stored_since is None:
            self.stored_since = now
        if now - self.shown < 0.5:
            return
        self.shown = now
        if self.stored_since is None:  # pass 1: reading and checking every line
            text = f"checked {lines:,} lines ({lines / max(now - self.started, 1e-3):,.0f} lines/s)"
        else:  # pass 2: storing the good cases
            text = (f"checked {lines:,} lines in {self.stored_since - self.started:.0f} s, stored {events:,} events"
                    f" ({events / max(now - self.stored_since, 1e-3):,.0f} events/s)")
        print(f"\r{text}\033[K" if self.terminal else text, end="" if self.terminal else "\n",
              file=sys.stderr, flush=True)

    def done(self, report) -> None:
        seconds = time.monotonic() - self.started
        if self.terminal:
            print(file=sys.stderr)
        print(
            f"{report.lines:,} lines in {seconds:.1f} s: {report.imported / max(seconds, 1e-3):,.0f} events/s stored",
            file=sys.stderr,
        )


def _redacted(dsn: str) -> str:
    """The DSN without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


def _docs(args: argparse.Namespace) -> int:
    from services import contracts

    stale = contracts.check() if args.check else contracts.write()
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


async def _with_pool(work, max_size: int = 2):
    from shared.db import create_pool, migrate_auth

    pool = await create_pool(get_settings().database_url, max_size=max_size)
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

    # The demo prints each step itself: httpx's line per request would only repeat it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
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
    """Broker and database (started here when none is given), then the four services
    and the console."""
    STATE_DIR.mkdir(exist_ok=True)
    stack: list = []  # Tansu, the embedded PostgreSQL: stopped in reverse at the end
    try:
        return _run_platform(stack)
    finally:
        # Whatever happened (a database that does not answer, Ctrl-C), nothing started
        # here is left running.
        for part in reversed(stack):
            part.stop()


def _run_platform(stack: list) -> int:
    from shared import devstack

    env = dict(os.environ)
    if "KAFKA_BOOTSTRAP" not in env:
        port = 9092 if not devstack.port_open(9092) else devstack.free_port()
        broker = devstack.Tansu(port, log_path=STATE_DIR / "tansu.log").start()
        stack.append(broker)
        env["KAFKA_BOOTSTRAP"] = broker.bootstrap
        print(f"broker    Tansu at {broker.bootstrap} (in memory; the services restore its topics from their records at start)")
    if "DATABASE_URL" not in env:
        if devstack.postgres_reachable(LOCAL_SERVER):
            env["DATABASE_URL"] = LOCAL_DATABASE
        else:
            database = devstack.EmbeddedPostgres(STATE_DIR.resolve() / "postgres")
            stack.append(database)
            env["DATABASE_URL"] = database.start().rsplit("/", 1)[0] + "/sir"
        print(f"database  {env['DATABASE_URL']}")
    devstack.ensure_database(env["DATABASE_URL"])  # a named database too: created if missing
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    asyncio.run(_migrate(settings))

    processes = {
        name: subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name], env=env)
        for name in (*SERVICES, CONSOLE)
    }
    for name in SERVICES:
        port = settings.port_of(name)
        print(f"{name:<10}http://{settings.host}:{port}/docs")
    print(f"{CONSOLE:<10}http://{settings.host}:{settings.port_of(CONSOLE)}/  (sign in with a token from `sir token issue`)")
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
    if failed:
        print(f"stopped because {', '.join(failed)} exited", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
