"""The `sir` operator commands against a real database."""

import asyncio
import importlib
import os

import asyncpg
import pytest

from services import cli
from shared.db import COMMON, read_migrations
from shared.settings import SERVICES


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_tokens_are_issued_listed_and_revoked(cli_environment, capsys):
    code, token, _ = _run(capsys, "token", "issue", "--role", "council", "--local-authority", "fife", "--label", "ops")
    assert code == 0 and token.startswith("sir_")
    token_id = token.split("_")[1]

    code, listing, _ = _run(capsys, "token", "list")
    assert token_id in listing and "fife" in listing and "active" in listing
    assert token.split("_", 2)[2] not in listing  # the secret is never shown again

    assert _run(capsys, "token", "revoke", token_id)[0] == 0
    assert "revoked" in _run(capsys, "token", "list")[1]
    assert _run(capsys, "token", "revoke", token_id)[0] == 1


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--role", "council"], "needs --local-authority"),
        (["--role", "council", "--local-authority", "gotham"], "unknown local authority"),
        (["--role", "sog", "--region", "atlantis"], "unknown MAPPA region"),
        (["--role", "inspectorate", "--region", "fife"], "only a sog token"),
    ],
)
def test_a_token_with_the_wrong_scope_is_refused(cli_environment, capsys, argv, reason):
    code, out, err = _run(capsys, "token", "issue", *argv)
    assert code == 2 and out == "" and reason in err


def test_migrate_applies_every_schema_once(cli_environment, capsys):
    assert _run(capsys, "migrate")[0] == 0
    assert _run(capsys, "migrate")[1] == "migrated: auth, intake, routing, deadlines, reporting"
    applied = asyncio.run(_applied(os.environ["DATABASE_URL"]))
    assert applied == {
        "auth": ["auth/001_tokens.sql"],
        **{name: sorted(_migration_names(name)) for name in SERVICES},
    }


def _migration_names(service: str) -> list[str]:
    migrations = importlib.import_module(f"services.{service}.app").SERVICE.migrations
    return [name for name, _ in read_migrations(service, COMMON, migrations)]


async def _applied(database_url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            schema: [r["name"] for r in await conn.fetch(f"SELECT name FROM {schema}.schema_migrations ORDER BY name")]
            for schema in ("auth", *SERVICES)
        }
    finally:
        await conn.close()
