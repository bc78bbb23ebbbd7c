"""Structured JSON logs: correlation by event_id and case_id, and no personal data."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid

from shared.logs import JsonFormatter, configure_logging, event_context
from tests.factories import notification
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually

# Free-text and identifying values a notification and its follow-ups may carry.
SECRETS = {
    "council_reference": "GC-PRIVATE-REF-4711",
    "incident_type_detail": "detail-that-must-not-be-logged",
    "note": "note-that-must-not-be-logged",
    "reason": "reason-that-must-not-be-logged",
}


@contextlib.contextmanager
def _captured_json_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the services' default level
    lines: list[str] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        lines += stream.getvalue().splitlines()


async def test_a_notification_is_logged_as_json_with_its_ids_and_without_personal_data(platform, tokens):
    intake = platform.clients["intake"]
    with _captured_json_lines() as lines:
        answer = await intake.post(
            "/v1/notifications",
            json=notification(
                council_reference=SECRETS["council_reference"], incident_type_detail=SECRETS["incident_type_detail"]
            ),
            headers=bearer(tokens["glasgow"]),
        )
        case_id, event_id = answer.json()["case_id"], answer.json()["event_id"]
        assessed = await intake.post(
            f"/v1/cases/{case_id}/events",
            json={"event_type": "notification.criteria_assessed",
                  "data": {"meets_criteria": False, "reason": SECRETS["reason"]}},
            headers=bearer(tokens["inspectorate"]),
        )
        assert assessed.status_code == 201
        # A refused event logs nothing of its body either.
        await intake.post(
            f"/v1/cases/{case_id}/events",
            json={"event_type": "review.additional_info_requested", "data": {"note": SECRETS["note"]}},
            headers=bearer(tokens["inspectorate"]),
        )
        # Let a consumer apply the notification while we listen.
        await eventually(
            lambda: platform.pool.fetchval(
                "SELECT count(*) FROM routing.processed_events WHERE event_id = $1", uuid.UUID(event_id)
            ),
            what="routing to apply the notification",
        )

    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    [accepted] = [r for r in records if r.get("event_id") == event_id and r["logger"] == "services.intake.api"]
    assert accepted == accepted | {
        "level": "INFO", "case_id": case_id, "event_type": "incident.notified", "local_authority": "glasgow-city"
    }
    for line in lines:
        for field, value in SECRETS.items():
            assert value not in line, f"{field} logged: {line}"
            assert f'"{field}"' not in line, f"{field} logged: {line}"


def test_lines_name_the_event_of_their_context_and_text_is_a_choice(capsys):
    log = logging.getLogger("sir.test")
    configure_logging("INFO", "json", service="routing")
    try:
        with event_context(event_id="e-1", case_id="c-1"):
            log.info("applied %s", "incident.notified", extra={"consumer": "sir-routing"})
        log.warning("outside")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert lines[0] | {"ts": None} == {
            "ts": None, "level": "INFO", "logger": "sir.test", "message": "applied incident.notified",
            "service": "routing", "event_id": "e-1", "case_id": "c-1", "consumer": "sir-routing",
        }
        assert "event_id" not in lines[1]

        configure_logging("INFO", "text")
        log.info("plain")
        assert capsys.readouterr().err.rstrip().endswith("INFO sir.test plain")
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if type(h).__name__ == "_StderrHandler"]:
            root.removeHandler(handler)
