"""Access policy (shared/policy.py) against the four running services: every route of
every OpenAPI document has a decision, each role is refused exactly where the policy
says, and filters outside a token's scope are 403, never an empty list (SPEC §1)."""

from __future__ import annotations

import re
import uuid

from shared.policy import PUBLIC, ROUTES, route_key
from tests.factories import mappa_notification, notification
from tests.integration.conftest import bearer

SERVICES = ("intake", "routing", "deadlines", "reporting")
# One token of each role (tokens fixture names).
ROLE_TOKENS = {"council": "glasgow", "sog": "sog_north_strathclyde", "inspectorate": "inspectorate", "admin": "admin"}
# A value for each path parameter that parses but names nothing.
SAMPLE = {"case_id": str(uuid.uuid4()), "delivery_id": str(uuid.uuid4()), "recipient": "nobody",
          "year": "2026", "quarter": "Q1"}


def _operations(platform):
    for name in SERVICES:
        for path, methods in platform.apps[name].openapi()["paths"].items():
            for method in methods:
                yield name, method.upper(), path


def test_every_route_of_every_service_has_a_policy_decision(platform):
    undecided = [
        f"{name}: {route_key(method, path)}"
        for name, method, path in _operations(platform)
        if route_key(method, path) not in ROUTES and route_key(method, path) not in PUBLIC
    ]
    assert not undecided, f"routes without an access decision in shared/policy.py: {undecided}"


async def test_every_route_refuses_exactly_the_roles_the_policy_refuses(platform, tokens):
    checked = 0
    for name, method, path in _operations(platform):
        key = route_key(method, path)
        if key in PUBLIC:
            continue
        url = re.sub(r"{(\w+)}", lambda m: SAMPLE[m.group(1)], path)
        client = platform.clients[name]
        anonymous = await client.request(method, url)
        assert anonymous.status_code == 401, (key, anonymous.text)
        for role, token in ROLE_TOKENS.items():
            answer = await client.request(method, url, headers=bearer(tokens[token]))
            if role in ROUTES[key]:
                assert answer.status_code not in (401, 403), (key, role, answer.text)
            else:
                assert answer.status_code == 403, (key, role, answer.text)
                assert role in answer.json()["detail"], answer.text
            assert answer.status_code < 500, (key, role, answer.text)
            checked += 1
    assert checked >= 4 * 14


async def test_a_sog_asking_for_an_authority_outside_its_region_is_403(platform, tokens):
    sog = bearer(tokens["sog_north_strathclyde"])
    for name, path in (("deadlines", "/v1/deadlines"), ("reporting", "/v1/cases")):
        outside = await platform.clients[name].get(path, params={"local_authority": "fife"}, headers=sog)
        assert outside.status_code == 403, (name, outside.text)
        assert "fife" in outside.json()["detail"]
        inside = await platform.clients[name].get(path, params={"local_authority": "inverclyde"}, headers=sog)
        assert inside.status_code == 200, (name, inside.text)


async def test_a_council_asking_for_another_authority_is_403(platform, tokens):
    for name, path in (("deadlines", "/v1/deadlines"), ("reporting", "/v1/cases")):
        answer = await platform.clients[name].get(
            path, params={"local_authority": "fife"}, headers=bearer(tokens["glasgow"])
        )
        assert answer.status_code == 403, (name, answer.text)


async def test_admin_reads_a_case_as_it_reads_its_deadlines(platform, tokens):
    from tests.integration.helpers import eventually

    notified = await platform.clients["intake"].post(
        "/v1/notifications", json=notification(), headers=bearer(tokens["glasgow"])
    )
    case_id = notified.json()["case_id"]
    admin = bearer(tokens["admin"])
    case = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=admin)
    assert case.status_code == 200, case.text

    async def deadlines_known():
        answer = await platform.clients["deadlines"].get(f"/v1/cases/{case_id}/deadlines", headers=admin)
        return answer.status_code == 200 and answer

    await eventually(deadlines_known, what="the case's deadlines")


async def test_a_sog_reads_only_cases_routed_to_it(platform, tokens):
    routed = await platform.clients["intake"].post(
        "/v1/notifications", json=mappa_notification(), headers=bearer(tokens["inverclyde"])
    )
    other = await platform.clients["intake"].post(
        "/v1/notifications", json=mappa_notification(), headers=bearer(tokens["fife"])
    )
    sog = bearer(tokens["sog_north_strathclyde"])
    assert (await platform.clients["intake"].get(f"/v1/cases/{routed.json()['case_id']}", headers=sog)).status_code == 200
    refused = await platform.clients["intake"].get(f"/v1/cases/{other.json()['case_id']}", headers=sog)
    assert refused.status_code == 403 and "north-strathclyde" in refused.json()["detail"]
