"""The console's sign-in and sessions over HTTP, with the APIs stood in by httpx's
MockTransport (the whole platform in a browser: tests/integration/test_console.py)."""

import re

import httpx
import pytest

from services.console.app import build
from shared.settings import SERVICES, Settings

CASE = "8f6c0d7e-0000-4000-8000-000000000001"
IDENTITY = {"token_id": "abc", "role": "council", "local_authority": "fife", "region": None}


WARNINGS = [{"field": "incident_type_detail", "reason": "incident_type is 'other' with no incident_type_detail"}]


class Apis:
    def __init__(self) -> None:
        self.revoked = False

    def answer(self, request: httpx.Request) -> httpx.Response:
        if self.revoked or request.headers.get("authorization") != "Bearer sir_abc_secret":
            return httpx.Response(401, json={"detail": "a valid bearer token is required"})
        if request.url.path == "/v1/whoami":
            return httpx.Response(200, json=IDENTITY)
        if request.url.path == "/v1/cases":
            return httpx.Response(200, json=[])
        if request.url.path == "/v1/notifications/check":
            return httpx.Response(200, json={"warnings": WARNINGS})
        if request.url.path == "/v1/notifications":
            return httpx.Response(201, json={"case_id": CASE, "state": "notified", "warnings": WARNINGS})
        if request.url.path == f"/v1/cases/{CASE}":
            return httpx.Response(200, json={"case_id": CASE, "local_authority": "fife", "state": "notified",
                                             "closed_reason": None, "sog_region": None, "events": []})
        return httpx.Response(404, json={"detail": "no such thing"})


@pytest.fixture
def console():
    apis = Apis()
    app = build(Settings(), {name: httpx.MockTransport(apis.answer) for name in SERVICES})
    return app, apis


def _client(app, scheme="http") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=f"{scheme}://console.test")


async def _sign_in(client: httpx.AsyncClient, token="sir_abc_secret") -> httpx.Response:
    page = await client.get("/sign-in")
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return await client.post("/sign-in", data={"token": token, "csrf_token": nonce})


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_token_is_exchanged_once_for_an_httponly_strict_session(console, scheme):
    app, _ = console
    async with _client(app, scheme) as client:
        answer = await _sign_in(client)
        assert answer.status_code == 303 and answer.headers["location"] == "/cases"
        cookie = answer.headers["set-cookie"]
        assert "sir_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert ("Secure" in cookie) == (scheme == "https")
        assert "sir_abc_secret" not in cookie
        page = await client.get("/cases")
        assert page.status_code == 200 and "a council: Fife" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_a_wrong_token_or_a_sign_in_without_its_form_token_is_refused(console):
    app, _ = console
    async with _client(app) as client:
        assert (await _sign_in(client, "sir_abc_wrong")).status_code == 401
        refused = await client.post("/sign-in", data={"token": "sir_abc_secret", "csrf_token": "forged"})
        assert refused.status_code == 400 and "sir_console=" not in refused.headers.get("set-cookie", "")
        assert len(app.state.sessions) == 0


async def test_a_post_without_the_session_csrf_token_changes_nothing(console):
    app, _ = console
    async with _client(app) as client:
        await _sign_in(client)
        refused = await client.post("/sign-out", data={})
        assert refused.status_code == 403
        assert (await client.get("/cases")).status_code == 200  # still signed in


async def test_a_revoked_token_ends_every_session_it_opened(console):
    app, apis = console
    async with _client(app) as first, _client(app) as second:
        await _sign_in(first)
        await _sign_in(second)
        assert len(app.state.sessions) == 2
        apis.revoked = True
        answer = await first.get("/cases")
        assert answer.status_code == 303 and answer.headers["location"] == "/sign-in?ended=token"
        assert len(app.state.sessions) == 0
        assert (await second.get("/cases")).headers["location"] == "/sign-in"


async def test_sign_out_ends_the_session_on_the_server(console):
    app, _ = console
    async with _client(app) as client:
        await _sign_in(client)
        session_id = client.cookies["sir_console"]
        page = await client.get("/cases")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        assert (await client.post("/sign-out", data={"csrf_token": csrf})).status_code == 303
        assert len(app.state.sessions) == 0
        client.cookies.set("sir_console", session_id)
        assert (await client.get("/cases")).headers["location"] == "/sign-in"


async def test_pages_of_another_role_are_a_403_page(console):
    app, _ = console
    async with _client(app) as client:
        await _sign_in(client)
        page = await client.get("/queues")
        assert page.status_code == 403 and "You cannot see this page" in page.text
        assert (await client.get("/nowhere")).status_code == 404


async def test_categorisation_warnings_are_shown_before_sending_and_on_the_case(console):
    app, _ = console
    async with _client(app) as client:
        await _sign_in(client)
        form = await client.get("/notify")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        # Intake's check warns: the form comes back with the warnings, nothing sent yet.
        checked = await client.post("/notify", data={"csrf_token": csrf, "incident_type": "other"})
        assert checked.status_code == 200 and 'id="warnings"' in checked.text
        assert "The type of incident is Other: say in a few words what happened." in checked.text
        assert 'name="warnings_seen" value="1"' in checked.text
        answer = await client.post("/notify", data={"csrf_token": csrf, "incident_type": "other", "warnings_seen": "1"})
        assert answer.status_code == 303 and answer.headers["location"] == f"/cases/{CASE}"
        page = await client.get(answer.headers["location"])
        assert "The type of incident is Other: say in a few words what happened." in page.text
