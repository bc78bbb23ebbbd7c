"""`sir`, the operators' command-line tool."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.settings import SERVICES, Settings, get_settings

# The default database for `sir up` on the machine's own server.
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_DATABASE = "postgresql://postgres@127.0.0.1:5432/sir"
STATE_DIR = Path(".sir")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args.run(args) or 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sir", description=__doc__)
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


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    app = importlib.import_module(f"services.{args.service}.app").build(settings)
    uvicorn.run(app, host=settings.host, port=settings.port_of(args.service), log_level="warning")


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
    from services.intake.repository import SCHEMA, replay
    from shared.outbox import OutboxRelay

    async def run(pool):
        count = await replay(pool)
        # Publish here too: intake may not be running. A running intake's relay shares
        # the work; an advisory lock keeps their batches apart.
        relay = OutboxRelay(pool, SCHEMA, settings.kafka_bootstrap, partitions=settings.kafka_partitions)
        try:
            await relay.drain(timeout=3600)
        finally:
            await relay.stop()
        return count

    print(f"re-published {await _with_pool(run)} events")


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
