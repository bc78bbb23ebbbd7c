"""What each service's OpenAPI document says beyond what FastAPI infers: every status a
route can answer, all with the one error body (shared/http.py ErrorBody, 422 included),
`/metrics` as Prometheus text, `/readyz` 503, an example for every request body, and
`servers`. `tests/integration/test_openapi_statuses.py` asks each route for each status
declared here and checks that no undeclared one comes back.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from shared.events import CASE_EVENT_TYPES, event_type_of
from shared.examples import EXAMPLE_DATA, example_event
from shared.settings import Settings

# The version of the HTTP contract (CHANGELOG.md): major for a change that breaks a client.
VERSION = "1.1.0"
ERROR = {"$ref": "#/components/schemas/ErrorBody"}

# Statuses a route answers beyond 2xx and those every /v1 route shares (401, 403, 413,
# 503, and 422 where it takes parameters or a body): (method, path) → {status: why}.
ROUTE_STATUSES: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/notifications"): {
        409: "The Idempotency-Key was used for another request, or that request is still in progress",
    },
    ("post", "/v1/cases/{case_id}/events"): {
        404: "No such case",
        409: "The event does not fit the case's state (SPEC §3 lifecycle), or the Idempotency-Key clashes",
    },
    ("get", "/v1/cases/{case_id}"): {404: "No such case"},
    ("post", "/v1/import"): {415: "The body is not application/x-ndjson"},
    ("post", "/v1/deliveries/{delivery_id}/retry"): {
        404: "No such delivery",
        409: "The delivery is not failed: nothing to retry",
    },
    ("put", "/v1/recipients/{recipient}"): {404: "No such recipient"},
    ("get", "/v1/cases/{case_id}/deadlines"): {404: "No case of this id is known to the deadlines service"},
}


# Routes that answer any valid token alike (shared/policy.py: every role, no scope):
# never 403.
ANY_TOKEN = frozenset({
    ("get", "/v1/reports/national"),
    ("get", "/v1/reports/quarterly/{year}/{quarter}"),
    ("get", "/v1/reports/notifications-by-authority"),
    ("get", "/v1/vocabularies"),
    ("get", "/v1/reports/reporting-patterns"),
    ("get", "/v1/whoami"),
})


def request_examples() -> dict[tuple[str, str], dict[str, dict]]:
    """Examples of each request body, by (method, path): content type → named examples."""
    later_events = {
        event_type_of(model): {"event_type": event_type_of(model), "data": EXAMPLE_DATA[event_type_of(model)]}
        for model in CASE_EVENT_TYPES if event_type_of(model) != "incident.notified"
    }
    history = "\n".join(
        json.dumps(example_event(model).model_dump(mode="json"), sort_keys=True) for model in CASE_EVENT_TYPES[:2]
    ) + "\n"
    return {
        ("post", "/v1/notifications"): {
            "application/json": {"incident.notified": {"summary": "A MAPPA case", "value": EXAMPLE_DATA["incident.notified"]}},
        },
        ("post", "/v1/cases/{case_id}/events"): {
            "application/json": {name: {"summary": name, "value": value} for name, value in later_events.items()},
        },
        ("post", "/v1/import"): {
            "application/x-ndjson": {"history": {"summary": "Two events of one case, one per line", "value": history}},
        },
        ("put", "/v1/recipients/{recipient}"): {
            "application/json": {
                "webhook": {
                    "summary": "Deliver by signed webhook",
                    "value": {"channel": "webhook", "url": "https://sog-tayside.example/sir",
                              "secret_env": "SIR_WEBHOOK_SECRET_SOG_TAYSIDE"},
                },
                "topic": {"summary": "Back to the outbound topic", "value": {"channel": "topic"}},
            },
        },
    }


def install(app: FastAPI, service: str) -> None:
    """Make `app.openapi()` return the completed document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not schema.get("servers"):
            complete(schema, service)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], service: str) -> None:
    """Complete FastAPI's document in place (see the module's docstring)."""
    port = Settings.model_fields[f"{service}_port"].default
    schema["info"]["version"] = VERSION
    schema["servers"] = [
        {"url": f"http://127.0.0.1:{port}", "description": "`sir up` and docker compose (published on 127.0.0.1)"},
    ]
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    examples = request_examples()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "requestBody" not in operation:
                responses.pop("413", None)  # a body is refused only where one is read
            if (method, path) in ANY_TOKEN:
                responses.pop("403", None)
            for status, why in ROUTE_STATUSES.get((method, path), {}).items():
                responses[str(status)] = {"description": why, "content": {"application/json": {"schema": ERROR}}}
            if "422" in responses:
                responses["422"] = {
                    "description": "A field is missing or wrong: one entry per field, naming it and the reason",
                    "content": {"application/json": {"schema": ERROR}},
                }
            for content_type, named in examples.get((method, path), {}).items():
                operation["requestBody"]["content"][content_type]["examples"] = named
    _operations_paths(schema["paths"])


def _operations_paths(paths: dict[str, Any]) -> None:
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"]["200"] = {
            "description": "Prometheus text exposition format (docs/operations.md lists the metrics)",
            "content": {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}},
        }
    ready = {"migrations": True, "database": True, "outbox_relay": True, "workers": True, "broker": True}
    readiness = {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "reported": {"type": "object"},
            "outbox": {
                "type": "object",
                "properties": {"backlog": {"type": "integer"}, "oldest_age_seconds": {"type": "number"}},
            },
        },
    }
    paths["/readyz"]["get"]["responses"] = {
        "200": {
            "description": "Ready: every check passes",
            "content": {"application/json": {"schema": readiness, "example": {"ready": True, "checks": ready}}},
        },
        "503": {
            "description": "Not ready: a check fails (send it no traffic until it passes)",
            "content": {
                "application/json": {"schema": readiness, "example": {"ready": False, "checks": ready | {"database": False}}},
            },
        },
    }
    paths["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"],
    }
