"""Each route answers what its OpenAPI document declares, and nothing else.

For every route of the four services, a request for each status the document declares
(where one can be made here: 503 needs the database away, which test_hostile_input.py
does for intake), and every answer checked against the declared statuses, with the one
error body for every error. Undeclared statuses must never come back.
"""

from __future__ import annotations

import uuid

import pytest

from shared.examples import EXAMPLE_DATA
from shared.http import DEFAULT_BODY_LIMIT
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually

# Declared but not produced here, and where they are tested.
NOT_MADE_HERE = {
    "503": "the database away: test_hostile_input.py",
    ("routing", "post", "/v1/deliveries/{delivery_id}/retry", "200"): "a failed delivery: test_routing.py",
}


class Answers:
    """Every answer seen, by (service, method, path template)."""

    def __init__(self, platform):
        self.platform = platform
        self.seen: dict[tuple[str, str, str], set[str]] = {}

    async def ask(self, service, method, template, url=None, token=None, **kwargs):
        headers = kwargs.pop("headers", {}) | (bearer(token) if token else {})
        answer = await self.platform.clients[service].request(method.upper(), url or template, headers=headers, **kwargs)
        declared = self.platform.apps[service].openapi()["paths"][template][method]["responses"]
        status = str(answer.status_code)
        where = f"{service} {method.upper()} {template}"
        assert status in declared, f"{where}: {status} is not declared ({sorted(declared)}): {answer.text[:300]}"
        if answer.status_code >= 400:
            body = answer.json()
            assert set(body) == {"detail"}, body
        self.seen.setdefault((service, method, template), set()).add(status)
        return answer


@pytest.fixture(scope="module")
async def case(platform, tokens):
    """A notified case that routing and deadlines know."""
    answer = await platform.clients["intake"].post(
        "/v1/notifications", json=EXAMPLE_DATA["incident.notified"], headers=bearer(tokens["glasgow"])
    )
    assert answer.status_code == 201, answer.text
    case_id = answer.json()["case_id"]

    async def known_everywhere():
        inspectorate = bearer(tokens["inspectorate"])
        deadlines = await platform.clients["deadlines"].get(f"/v1/cases/{case_id}/deadlines", headers=inspectorate)
        deliveries = await platform.clients["routing"].get("/v1/deliveries", params={"case_id": case_id}, headers=inspectorate)
        return deadlines.status_code == 200 and deliveries.json() and deliveries.json()

    [delivery, *_] = await eventually(known_everywhere, what="routing and deadlines to know the case")
    return {"case_id": case_id, "delivery_id": delivery["id"]}


async def test_every_route_answers_only_what_it_declares_and_each_declared_status_can_be_had(platform, tokens, case):
    answers = Answers(platform)
    ask = answers.ask
    t = tokens
    case_id, delivery_id, nobody = case["case_id"], case["delivery_id"], str(uuid.uuid4())
    too_big = {"content": b"x" * (DEFAULT_BODY_LIMIT + 1), "headers": {"Content-Type": "application/json"}}
    notification = EXAMPLE_DATA["incident.notified"]
    assessed = {"event_type": "notification.criteria_assessed", "data": {"meets_criteria": True}}

    for service in ("intake", "routing", "deadlines", "reporting"):
        await ask(service, "get", "/healthz")
        await ask(service, "get", "/readyz")
        metrics = await ask(service, "get", "/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")

    # intake
    path = "/v1/notifications"
    await ask("intake", "post", path, token=t["glasgow"], json=notification)
    await ask("intake", "post", path, json=notification)
    await ask("intake", "post", path, token=t["inspectorate"], json=notification)
    await ask("intake", "post", path, token=t["glasgow"], **too_big)
    await ask("intake", "post", path, token=t["glasgow"], json={})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    await ask("intake", "post", path, token=t["glasgow"], json=notification, headers=key)
    await ask("intake", "post", path, token=t["glasgow"], json=notification | {"council_reference": "other"}, headers=key)

    path = "/v1/cases/{case_id}/events"
    url = f"/v1/cases/{case_id}/events"
    await ask("intake", "post", path, url, token=t["inspectorate"], json=assessed)
    await ask("intake", "post", path, url, json=assessed)
    review = {"event_type": "review.submitted", "data": EXAMPLE_DATA["review.submitted"]}
    await ask("intake", "post", path, url, token=t["fife"], json=review)
    await ask("intake", "post", path, f"/v1/cases/{nobody}/events", token=t["inspectorate"], json=assessed)
    bogus = {"event_type": "case.closed", "data": {"reason": "bogus"}}
    await ask("intake", "post", path, url, token=t["inspectorate"], json=bogus)
    closing = {"event_type": "review.responded", "data": EXAMPLE_DATA["review.responded"]}
    await ask("intake", "post", path, url, token=t["inspectorate"], json=closing)  # no review yet: 409
    await ask("intake", "post", path, url, token=t["inspectorate"], **too_big)

    path = "/v1/cases/{case_id}"
    await ask("intake", "get", path, f"/v1/cases/{case_id}", token=t["glasgow"])
    await ask("intake", "get", path, f"/v1/cases/{case_id}")
    await ask("intake", "get", path, f"/v1/cases/{case_id}", token=t["fife"])
    await ask("intake", "get", path, f"/v1/cases/{nobody}", token=t["inspectorate"])
    await ask("intake", "get", path, "/v1/cases/not-a-uuid", token=t["inspectorate"])

    path = "/v1/notifications/check"
    await ask("intake", "post", path, token=t["glasgow"], json=notification)
    await ask("intake", "post", path, json=notification)
    await ask("intake", "post", path, token=t["inspectorate"], json=notification)
    await ask("intake", "post", path, token=t["glasgow"], **too_big)
    await ask("intake", "post", path, token=t["glasgow"], json={})

    path = "/v1/whoami"
    await ask("intake", "get", path, token=t["glasgow"])
    await ask("intake", "get", path)

    path = "/v1/import"
    ndjson = {"headers": {"Content-Type": "application/x-ndjson"}}
    await ask("intake", "post", path, token=t["admin"], content=b"", **ndjson)
    await ask("intake", "post", path, content=b"", **ndjson)
    await ask("intake", "post", path, token=t["inspectorate"], content=b"", **ndjson)
    await ask("intake", "post", path, token=t["admin"], content=b"{}", headers={"Content-Type": "text/plain"})
    await ask("intake", "post", path, token=t["admin"], content=b"x" * (32 * 1024 * 1024 + 1), **ndjson)

    # routing
    path = "/v1/deliveries"
    await ask("routing", "get", path, token=t["inspectorate"])
    await ask("routing", "get", path)
    await ask("routing", "get", path, token=t["glasgow"])
    await ask("routing", "get", path, token=t["inspectorate"], params={"status": "bogus"})

    path = "/v1/deliveries/{delivery_id}/retry"
    await ask("routing", "post", path, f"/v1/deliveries/{delivery_id}/retry")
    await ask("routing", "post", path, f"/v1/deliveries/{delivery_id}/retry", token=t["inspectorate"])
    await ask("routing", "post", path, f"/v1/deliveries/{nobody}/retry", token=t["admin"])
    await ask("routing", "post", path, f"/v1/deliveries/{delivery_id}/retry", token=t["admin"])  # not failed: 409
    await ask("routing", "post", path, "/v1/deliveries/not-a-uuid/retry", token=t["admin"])
    await ask("routing", "post", path, f"/v1/deliveries/{delivery_id}/retry", token=t["admin"], **too_big)

    path = "/v1/recipients"
    await ask("routing", "get", path, token=t["inspectorate"])
    await ask("routing", "get", path)
    await ask("routing", "get", path, token=t["glasgow"])

    path = "/v1/recipients/{recipient}"
    url = "/v1/recipients/sog:fife"
    await ask("routing", "put", path, url, token=t["admin"], json={"channel": "topic"})
    await ask("routing", "put", path, url, json={"channel": "topic"})
    await ask("routing", "put", path, url, token=t["inspectorate"], json={"channel": "topic"})
    await ask("routing", "put", path, "/v1/recipients/nobody", token=t["admin"], json={"channel": "topic"})
    await ask("routing", "put", path, url, token=t["admin"], json={"channel": "carrier-pigeon"})
    await ask("routing", "put", path, url, token=t["admin"], **too_big)

    # deadlines
    path = "/v1/cases/{case_id}/deadlines"
    await ask("deadlines", "get", path, f"/v1/cases/{case_id}/deadlines", token=t["glasgow"])
    await ask("deadlines", "get", path, f"/v1/cases/{case_id}/deadlines")
    await ask("deadlines", "get", path, f"/v1/cases/{case_id}/deadlines", token=t["fife"])
    await ask("deadlines", "get", path, f"/v1/cases/{nobody}/deadlines", token=t["inspectorate"])
    await ask("deadlines", "get", path, "/v1/cases/not-a-uuid/deadlines", token=t["inspectorate"])

    path = "/v1/deadlines"
    await ask("deadlines", "get", path, token=t["glasgow"])
    await ask("deadlines", "get", path)
    await ask("deadlines", "get", path, token=t["glasgow"], params={"local_authority": "fife"})
    await ask("deadlines", "get", path, token=t["inspectorate"], params={"status": "bogus"})

    # reporting
    path = "/v1/cases"
    await ask("reporting", "get", path, token=t["glasgow"])
    await ask("reporting", "get", path)
    await ask("reporting", "get", path, token=t["glasgow"], params={"local_authority": "fife"})
    await ask("reporting", "get", path, token=t["inspectorate"], params={"status": "bogus"})

    path = "/v1/reports/national"
    await ask("reporting", "get", path, token=t["glasgow"], params={"from": "2026-01-01", "to": "2026-12-31"})
    await ask("reporting", "get", path, params={"from": "2026-01-01", "to": "2026-12-31"})
    await ask("reporting", "get", path, token=t["glasgow"], params={"from": "2026-12-31", "to": "2026-01-01"})

    path = "/v1/reports/national/cases"
    year = {"from": "2026-01-01", "to": "2026-12-31"}
    await ask("reporting", "get", path, token=t["inspectorate"], params=year | {"figure": "notifications"})
    await ask("reporting", "get", path, params=year | {"figure": "notifications"})
    await ask("reporting", "get", path, token=t["sog_tayside"], params=year | {"figure": "notifications"})
    await ask("reporting", "get", path, token=t["inspectorate"], params=year | {"figure": "no-such-figure"})

    path = "/v1/reports/reporting-patterns"
    await ask("reporting", "get", path, token=t["sog_tayside"], params=year)
    await ask("reporting", "get", path, params=year)
    await ask("reporting", "get", path, token=t["glasgow"], params={"from": "2026-12-31", "to": "2026-01-01"})

    path = "/v1/reports/quarterly/{year}/{quarter}"
    await ask("reporting", "get", path, "/v1/reports/quarterly/2026/Q3", token=t["glasgow"])
    await ask("reporting", "get", path, "/v1/reports/quarterly/2026/Q3")
    await ask("reporting", "get", path, "/v1/reports/quarterly/2026/Q9", token=t["glasgow"])

    for path in ("/v1/reports/notifications-by-authority", "/v1/vocabularies"):
        await ask("reporting", "get", path, token=t["sog_tayside"])
        await ask("reporting", "get", path)

    # Every declared status of every route was had, but for those that cannot be made here.
    missing = []
    for service in ("intake", "routing", "deadlines", "reporting"):
        for template, operations in platform.apps[service].openapi()["paths"].items():
            for method, operation in operations.items():
                for status in operation["responses"]:
                    if status in NOT_MADE_HERE or (service, method, template, status) in NOT_MADE_HERE:
                        continue
                    if status not in answers.seen.get((service, method, template), set()):
                        missing.append(f"{service} {method.upper()} {template} {status}")
    assert not missing, missing
