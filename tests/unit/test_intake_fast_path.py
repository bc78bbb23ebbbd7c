"""POST /v1/notifications' fast path (services/intake/api.py `_NotificationRoute`) answers
as FastAPI's own handler does where no database is needed: a body cut off by the client,
and a request without a bearer token, which takes no connection of the pool."""

import asyncio
import json

import pytest

from services.intake.app import build
from shared.settings import Settings
from tests.factories import notification


class Pool:
    """A stand-in pool: counts acquisitions; nothing in these tests reaches a database."""

    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self):
        self.acquired += 1
        raise AssertionError("this request took a connection of the pool")

    async def fetchrow(self, *args):
        raise AssertionError("this request went to the database")


@pytest.fixture
def intake():
    app = build(Settings())
    app.state.pool = Pool()
    return app


async def _post(app, content_type: str, messages: list[dict], authorization: str | None = None) -> tuple[int, dict]:
    """The ASGI exchange of one POST /v1/notifications: `messages` are what the client sends."""
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # pragma: no cover - a handler reading past the end

    sent = []

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", content_type.encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    await app({
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/notifications", "raw_path": b"/v1/notifications", "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("intake", 80),
    }, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_a_body_the_client_cuts_off_is_the_400_fastapi_gives(intake, content_type, caplog):
    """Not a 500 logged as an unhandled error with its traceback (and counted as one)."""
    status, answer = await _post(intake, content_type, [
        {"type": "http.request", "body": json.dumps(notification()).encode()[:20], "more_body": True},
        {"type": "http.disconnect"},
    ], authorization="Bearer sir_abc_secret")
    assert (status, answer) == (400, {"detail": "There was an error parsing the body"})
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer ", "Bearer not-a-sir-token"])
async def test_a_notification_without_a_token_is_401_without_a_connection(intake, authorization):
    """A valid body with no bearer token to check is the 401 that needs no database: it
    neither waits for a connection of the pool nor depends on one being had."""
    status, answer = await _post(intake, "application/json", [
        {"type": "http.request", "body": json.dumps(notification()).encode(), "more_body": False},
    ], authorization=authorization)
    assert (status, answer) == (401, {"detail": "a valid bearer token is required"})
    assert intake.state.pool.acquired == 0
