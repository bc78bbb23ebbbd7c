"""The `sir` operator commands against a real database."""

import asyncio
import os
from unittest.mock import ANY

import asyncpg
import pytest

from services import cli
from shared.settings import SERVICES, get_settings


@pytest.fixture
def database(infra, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", infra.new_database())
    monkeypatch.setenv("KAFKA_BOOTSTRAP", infra.bootstrap)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_tokens_are_issued_listed_and_revoked(database, capsys):
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
def test_a_token_with_the_wrong_scope_is_refused(database, capsys, argv, reason):
    code, out, err = _run(capsys, "token", "issue", *argv)
    assert code == 2 and out == "" and reason in err


def test_migrate_applies_every_schema_once(database, capsys):
    assert _run(capsys, "migrate")[0] == 0
    assert _run(capsys, "migrate")[1] == "migrated: auth, intake, routing, deadlines, reporting"
    applied = asyncio.run(_applied(os.environ["DATABASE_URL"]))
    assert applied == {
        "auth": ["auth/001_tokens.sql"],
        **{s: ["common/001_outbox.sql", "common/002_processed_events.sql", ANY] for s in SERVICES if s != "auth"},
    }


async def _applied(database_url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            schema: [r["name"] for r in await conn.fetch(f"SELECT name FROM {schema}.schema_migrations ORDER BY name")]
            for schema in ("auth", *SERVICES)
        }
    finally:
        await conn.close()
