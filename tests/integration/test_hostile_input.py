"""Hostile and unlucky input against the real services (issue 13 items 1, 3, 7): bounded
bodies and events, strings and numbers JSON allows but the store cannot hold, one error
shape that never echoes the input, every answer counted and given its security headers."""

from __future__ import annotations

import json

import pytest

from shared.metrics import HTTP_REQUESTS
from tests.factories import mappa_notification, notification, review
from tests.integration.conftest import bearer

SERVICES = ("intake", "routing", "deadlines", "reporting")


async def _events_stored(platform) -> int:
    return await platform.pool.fetchval("SELECT count(*) FROM intake.events")


async def _case(platform, tokens) -> str:
    answer = await platform.clients["intake"].post(
        "/v1/notifications", json=notification(), headers=bearer(tokens["glasgow"])
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["case_id"]


async def _post_raw(platform, token, path, raw: bytes):
    return await platform.clients["intake"].post(
        path, content=raw, headers={**bearer(token), "Content-Type": "application/json"}
    )


def _assert_field_error(answer, field: str) -> None:
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert any(field in [str(part) for part in error["loc"]] for error in errors), errors
    assert all("input" not in error for error in errors), errors


async def test_a_review_with_140000_findings_is_refused_and_nothing_stored(platform, tokens):
    case_id = await _case(platform, tokens)
    before = await _events_stored(platform)
    answer = await platform.clients["intake"].post(
        f"/v1/cases/{case_id}/events",
        json={"event_type": "review.submitted", "data": review(findings=["other"] * 140_000)},
        headers=bearer(tokens["glasgow"]),
    )
    assert answer.status_code in (413, 422), answer.text
    assert len(answer.content) < 2_000
    assert await _events_stored(platform) == before


async def test_lists_are_bounded_by_their_vocabulary_and_kept_without_repeats(platform, tokens):
    from shared.reference import VOCABULARIES

    case_id = await _case(platform, tokens)
    too_many = await platform.clients["intake"].post(
        f"/v1/cases/{case_id}/events",
        json={"event_type": "review.submitted", "data": review(findings=list(VOCABULARIES["finding"]) + ["other"])},
        headers=bearer(tokens["glasgow"]),
    )
    _assert_field_error(too_many, "findings")
    repeated = await platform.clients["intake"].post(
        f"/v1/cases/{case_id}/events",
        json={"event_type": "review.submitted", "data": review(findings=["other", "other"])},
        headers=bearer(tokens["glasgow"]),
    )
    assert repeated.status_code == 201, repeated.text
    stored = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["glasgow"]))
    assert stored.json()["events"][-1]["data"]["findings"] == ["other"]


async def test_a_body_over_the_route_limit_is_413_in_the_error_shape(platform, tokens):
    before = await _events_stored(platform)
    body = json.dumps(notification(padding="x" * 300_000)).encode()
    answer = await _post_raw(platform, tokens["glasgow"], "/v1/notifications", body)
    assert answer.status_code == 413, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert await _events_stored(platform) == before


@pytest.mark.parametrize(
    "raw, field",
    [
        (json.dumps(notification(council_reference="GC\u00001")), "council_reference"),
        (json.dumps(notification(council_reference="GC-\ud800")), "council_reference"),
        (json.dumps(notification(incident_type_detail="a\u0000b")), "incident_type_detail"),
        (json.dumps(notification()).replace('"historical": false', '"historical": 1e400'), "historical"),
        (json.dumps(mappa_notification()).replace('"level": 2', '"level": 1e400'), "level"),
        # A key that is no string at all: the body is named.
        (json.dumps(notification()).replace('"council_reference"', '"\\ud800"'), "body"),
    ],
)
async def test_strings_and_numbers_the_store_cannot_hold_are_422_naming_the_field(platform, tokens, raw, field):
    before = await _events_stored(platform)
    answer = await _post_raw(platform, tokens["glasgow"], "/v1/notifications", raw.encode())
    _assert_field_error(answer, field)
    assert await _events_stored(platform) == before


async def test_a_nul_in_a_later_events_text_is_422(platform, tokens):
    case_id = await _case(platform, tokens)
    answer = await platform.clients["intake"].post(
        f"/v1/cases/{case_id}/events",
        json={"event_type": "notification.criteria_assessed", "data": {"meets_criteria": False, "reason": "x\u0000"}},
        headers=bearer(tokens["inspectorate"]),
    )
    _assert_field_error(answer, "reason")


async def test_a_mappa_notification_before_any_region_grouping_is_422_naming_the_date(platform, tokens):
    answer = await platform.clients["intake"].post(
        "/v1/notifications", json=mappa_notification(incident_date="1995-06-01"), headers=bearer(tokens["glasgow"])
    )
    _assert_field_error(answer, "incident_date")


async def test_a_422_never_echoes_the_input(platform, tokens):
    huge = "y" * 60_000
    answer = await platform.clients["intake"].post(
        "/v1/notifications", json=notification(council_reference=huge), headers=bearer(tokens["glasgow"])
    )
    _assert_field_error(answer, "council_reference")
    assert huge[:100] not in answer.text and len(answer.content) < 2_000


def _count(service: str, route: str, method: str, status: str) -> float:
    return HTTP_REQUESTS.labels(service, route, method, status)._value.get()


async def test_a_server_error_is_counted_and_answered_in_the_error_shape(platform, tokens, monkeypatch):
    from services.intake import repository

    async def broken(*args, **kwargs):
        raise RuntimeError("the unexpected")

    monkeypatch.setattr(repository, "read_case", broken)
    route = "/v1/cases/{case_id}"
    before = _count("intake", route, "GET", "500")
    answer = await platform.clients["intake"].get(
        "/v1/cases/00000000-0000-0000-0000-000000000001", headers=bearer(tokens["inspectorate"])
    )
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error"}
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert _count("intake", route, "GET", "500") == before + 1


async def test_the_database_away_is_503_json_with_retry_after(platform, tokens, monkeypatch):
    import asyncpg

    from services.intake import repository

    async def away(*args, **kwargs):
        raise asyncpg.CannotConnectNowError("the database system is shutting down")

    monkeypatch.setattr(repository, "read_case", away)
    answer = await platform.clients["intake"].get(
        "/v1/cases/00000000-0000-0000-0000-000000000001", headers=bearer(tokens["inspectorate"])
    )
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) > 0
    assert isinstance(answer.json()["detail"], str)


@pytest.mark.parametrize("name", SERVICES)
async def test_every_answer_has_nosniff_and_no_server_header(platform, tokens, name):
    client = platform.clients[name]
    for path in ("/healthz", "/v1/nothing-here", "/metrics"):
        answer = await client.get(path)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert "server" not in answer.headers
    assert (await client.get("/v1/nothing-here")).json() == {"detail": "Not Found"}


async def test_case_data_is_not_cached_and_html_reports_have_a_csp(platform, tokens):
    case_id = await _case(platform, tokens)
    case = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["glasgow"]))
    assert case.headers["cache-control"] == "no-store"
    unauthorised = await platform.clients["intake"].get(f"/v1/cases/{case_id}")
    assert unauthorised.status_code == 401 and unauthorised.headers["cache-control"] == "no-store"
    html = await platform.clients["reporting"].get(
        "/v1/reports/national?from=2026-01-01&to=2026-12-31&format=html", headers=bearer(tokens["inspectorate"])
    )
    assert html.status_code == 200
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert html.headers["cache-control"] == "no-store"


async def test_an_event_larger_than_the_message_limit_is_413_before_it_is_stored(infra):
    from shared.auth import issue_token
    from tests.integration.conftest import run_services

    # A valid notification serialises to some 700 bytes: over this limit, under the body limit.
    settings = infra.settings(infra.new_database(), SIR_MAX_MESSAGE_BYTES=500)
    async with run_services(settings, ("intake",)) as platform:
        token = await issue_token(platform.pool, "council", local_authority="glasgow-city")
        answer = await platform.clients["intake"].post("/v1/notifications", json=notification(), headers=bearer(token))
        assert answer.status_code == 413, answer.text
        assert "500" in answer.json()["detail"]
        assert await _events_stored(platform) == 0
        assert await platform.pool.fetchval("SELECT count(*) FROM intake.outbox") == 0


class _Cuttable:
    """A TCP proxy to PostgreSQL that a test cuts: the database goes away for the service."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list = []
        self.pipes: set = set()  # the copying tasks, kept so none is collected while it runs

    async def start(self) -> int:
        import asyncio

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def link(client_reader, client_writer):
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.links += [client_writer, server_writer]
            for task in (asyncio.ensure_future(pipe(client_reader, server_writer)),
                         asyncio.ensure_future(pipe(server_reader, client_writer))):
                self.pipes.add(task)
                task.add_done_callback(self.pipes.discard)

        self.server = await asyncio.start_server(link, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.server.close()
        for writer in self.links:
            writer.transport.abort()


async def test_the_database_away_is_503_json_with_retry_after_and_counted(infra):
    from urllib.parse import urlsplit, urlunsplit

    from shared.auth import issue_token
    from tests.integration.conftest import run_services

    dsn = urlsplit(infra.new_database())
    proxy = _Cuttable(dsn.port or 5432)
    port = await proxy.start()
    settings = infra.settings(urlunsplit(dsn._replace(netloc=f"{dsn.username}@127.0.0.1:{port}")))
    async with run_services(settings, ("intake",)) as platform:
        token = await issue_token(platform.pool, "inspectorate")
        council = await issue_token(platform.pool, "council", local_authority="glasgow-city")
        client = platform.clients["intake"]
        assert (await client.get("/v1/cases/00000000-0000-0000-0000-000000000001", headers=bearer(token))).status_code == 404
        await proxy.cut()
        before = _count("intake", "/v1/cases/{case_id}", "GET", "503")
        for _ in range(3):  # a broken connection, then refused reconnections
            answer = await client.get("/v1/cases/00000000-0000-0000-0000-000000000001", headers=bearer(token))
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert int(answer.headers["retry-after"]) > 0 and isinstance(answer.json()["detail"], str)
        assert _count("intake", "/v1/cases/{case_id}", "GET", "503") == before + 3
        # A notification (its token checked on the connection its write takes): 503 with a
        # token, and without one the 401 that needs no database.
        for _ in range(2):
            notified = await client.post("/v1/notifications", json=notification(), headers=bearer(council))
            assert notified.status_code == 503, notified.text
            assert (await client.post("/v1/notifications", json=notification())).status_code == 401
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False


async def test_docs_can_be_switched_off_and_metrics_served_apart(infra):
    import httpx

    from tests.integration.conftest import run_services

    settings = infra.settings(infra.new_database(), SIR_API_DOCS=False, SIR_METRICS_PORT_OFFSET=1000)
    assert settings.metrics_port_of("intake") == 9000
    async with run_services(settings, ("intake",)) as platform:
        client = platform.clients["intake"]
        for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/healthz")).status_code == 200
        assert "/v1/notifications" in platform.apps["intake"].openapi()["paths"]  # `sir docs` still works
        metrics_app = platform.apps["intake"].state.metrics_app
        async with httpx.AsyncClient(transport=httpx.ASGITransport(metrics_app), base_url="http://metrics") as metrics:
            scraped = await metrics.get("/metrics")
            assert scraped.status_code == 200 and 'sir_service_ready{service="intake"} 1.0' in scraped.text
            assert (await metrics.get("/v1/cases")).status_code == 404


async def test_sir_serve_sends_no_server_header_and_serves_metrics_on_its_own_port(infra):
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from shared import devstack
    from tests.integration.helpers import eventually

    port = devstack.free_port()
    metrics_port = devstack.free_port()
    env = {
        **os.environ, "DATABASE_URL": infra.new_database(), "KAFKA_BOOTSTRAP": infra.bootstrap,
        "INTAKE_PORT": str(port), "SIR_METRICS_PORT_OFFSET": str(metrics_port - port), "SIR_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-m", "services.cli", "serve", "intake"], env=env)
    try:
        async with httpx.AsyncClient() as client:
            async def answers():
                try:
                    return await client.get(f"http://127.0.0.1:{port}/readyz")
                except httpx.TransportError:
                    return None

            ready = await eventually(answers, timeout=60, what="sir serve intake")
            assert "server" not in ready.headers and ready.headers["x-content-type-options"] == "nosniff"
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
            scraped = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert scraped.status_code == 200 and "server" not in scraped.headers
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # both servers stop
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_nul_in_a_recipients_url_is_422(platform, tokens):
    answer = await platform.clients["routing"].put(
        "/v1/recipients/scottish-government",
        json={"channel": "webhook", "url": "https://example.org/\u0000", "secret_env": "SG_SECRET"},
        headers=bearer(tokens["admin"]),
    )
    _assert_field_error(answer, "url")


async def test_a_report_as_of_a_moment_with_any_offset_python_takes_is_answered(platform, tokens):
    # Found by the fuzz run: an offset PostgreSQL does not take (beyond 15:59) was a 500.
    for as_of in ("2026-12-20T17:16:09+19:34", "3610-12-20T17:16:09.88114+19:34"):
        answer = await platform.clients["reporting"].get(
            "/v1/reports/quarterly/2096/Q4", params={"as_of": as_of, "basis": "cohort"},
            headers=bearer(tokens["inspectorate"]),
        )
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("as_of", ["0436-11-25T22:17:13-19:11", "1989-12-31T23:59:59Z", "2026-01-01T00:00:00"])
async def test_a_report_as_of_a_moment_that_cannot_be_is_422_naming_as_of(platform, tokens, as_of):
    # Found by the fuzz run: a moment centuries back was a 500.
    answer = await platform.clients["reporting"].get(
        "/v1/reports/quarterly/2026/Q3", params={"as_of": as_of}, headers=bearer(tokens["inspectorate"])
    )
    _assert_field_error(answer, "as_of")
