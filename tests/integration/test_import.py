"""History import (`POST /v1/import`, `sir import FILE`) against real PostgreSQL and Tansu."""

from __future__ import annotations

import json
import uuid

from services import cli
from shared.events import ANY_EVENT
from shared.lifecycle import case_after, fold
from shared.messaging import CASE_EVENTS, IMPORTED_HEADER, ROUTING_EVENTS
from tests.factories import envelope, mappa_notification, notification, review
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually, find_records, header

NDJSON = {"Content-Type": "application/x-ndjson"}


def _event(event_type, data, case_id, received_at, *, role="council", local_authority="glasgow-city") -> dict:
    event = envelope(event_type, data, case_id=case_id, local_authority=local_authority, role=role)
    return event | {"received_at": received_at, "recorded_at": received_at}


def _concluded_case(case_id, notified=None) -> list[dict]:
    """A whole case of 2024, with the forwarding that happened then."""
    return [
        _event("incident.notified", notified or notification(incident_date="2024-03-01"), case_id, "2024-03-05T10:00:00Z"),
        _event("notification.forwarded",
               {"recipient": "scottish-government", "channel": "email", "attempts": 1,
                "delivered_at": "2024-03-06T09:00:00Z"},
               case_id, "2024-03-05T10:00:00Z", role="service"),
        _event("notification.criteria_assessed", {"meets_criteria": True}, case_id, "2024-03-07T10:00:00Z", role="inspectorate"),
        _event("review.submitted", review(), case_id, "2024-05-20T10:00:00Z"),
        _event("review.responded", {"outcome": "concluded"}, case_id, "2024-06-10T10:00:00Z", role="inspectorate"),
        _event("case.closed", {"reason": "concluded"}, case_id, "2024-06-11T10:00:00Z", role="inspectorate"),
    ]


def _ndjson(*lines) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


async def _import(platform, tokens, body: bytes, token="admin"):
    return await platform.clients["intake"].post(
        "/v1/import", content=body, headers={**bearer(tokens[token]), **NDJSON}
    )


async def _stored(platform, case_id) -> list:
    return await platform.pool.fetch(
        "SELECT event_id, event_type, received_at, recorded_at, imported FROM intake.events"
        " WHERE case_id = $1 ORDER BY position", case_id,
    )


async def test_importing_a_file_twice_changes_nothing(platform, tokens):
    case_id = uuid.uuid4()
    body = _ndjson(*_concluded_case(case_id))

    first = await _import(platform, tokens, body)
    assert first.status_code == 200, first.text
    assert first.json() == {"imported": 6, "skipped": 0, "rejected": 0, "errors": []}
    stored = await _stored(platform, case_id)
    # Case events in order of received_at; the forwarding record after them.
    assert [r["event_type"] for r in stored][-2:] == ["case.closed", "notification.forwarded"]
    assert all(r["imported"] for r in stored)
    # received_at stays historical; recorded_at is the time of the import.
    assert stored[0]["received_at"].year == 2024 and stored[0]["recorded_at"].year > 2024

    second = await _import(platform, tokens, body)
    assert second.json() == {"imported": 0, "skipped": 6, "rejected": 0, "errors": []}
    assert await _stored(platform, case_id) == stored

    case = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["inspectorate"]))
    assert case.json()["state"] == "closed" and len(case.json()["events"]) == 6


async def test_a_bad_line_refuses_its_case_and_the_others_go_in(platform, tokens):
    good, bad = uuid.uuid4(), uuid.uuid4()
    body = _ndjson(
        _event("incident.notified", notification(incident_date="2024-01-02"), good, "2024-01-04T09:00:00Z"),
        _event("incident.notified", notification(incident_date="2024-01-02"), bad, "2024-01-04T09:00:00Z"),
        "{not json",
        _event("review.submitted", review(review_type="thorough"), bad, "2024-02-04T09:00:00Z"),
        _event("review.submitted", review(), good, "2024-02-04T09:00:00Z"),
    )
    answer = (await _import(platform, tokens, body)).json()
    assert answer["imported"] == 2 and answer["rejected"] == 3
    errors = {e["line"]: e for e in answer["errors"]}
    assert set(errors) == {3, 4}
    assert errors[3]["case_id"] is None and "not JSON" in errors[3]["reason"]
    assert errors[4]["case_id"] == str(bad) and "review_type" in errors[4]["reason"]
    assert len(await _stored(platform, good)) == 2
    assert await _stored(platform, bad) == []


async def test_a_repeated_line_counts_with_its_case(platform, tokens):
    good, bad = uuid.uuid4(), uuid.uuid4()
    good_notified = _event("incident.notified", notification(incident_date="2024-01-02"), good, "2024-01-04T09:00:00Z")
    bad_notified = _event("incident.notified", notification(incident_date="2024-01-02"), bad, "2024-01-04T09:00:00Z")
    body = _ndjson(
        good_notified, good_notified, bad_notified, bad_notified,
        _event("review.submitted", review(review_type="thorough"), bad, "2024-02-04T09:00:00Z"),
    )
    answer = (await _import(platform, tokens, body)).json()
    # The good case's repeat is skipped; every line of the refused case is rejected.
    assert (answer["imported"], answer["skipped"], answer["rejected"]) == (1, 1, 3)


async def test_a_case_that_breaks_the_state_machine_is_refused_whole(platform, tokens):
    broken, reordered = uuid.uuid4(), uuid.uuid4()
    body = _ndjson(
        _event("incident.notified", notification(incident_date="2024-01-02"), broken, "2024-01-04T09:00:00Z"),
        _event("notification.criteria_assessed", {"meets_criteria": True}, broken, "2024-01-05T09:00:00Z", role="inspectorate"),
        _event("review.responded", {"outcome": "concluded"}, broken, "2024-01-06T09:00:00Z", role="inspectorate"),
        # Out of file order, but in order of received_at: fine.
        _event("review.submitted", review(), reordered, "2024-02-04T09:00:00Z"),
        _event("incident.notified", notification(incident_date="2024-01-02"), reordered, "2024-01-04T09:00:00Z"),
    )
    answer = (await _import(platform, tokens, body)).json()
    assert answer["imported"] == 2 and answer["rejected"] == 3
    [error] = answer["errors"]
    assert error["line"] == 3 and error["case_id"] == str(broken)
    assert "review.responded" in error["reason"] and "no review to respond to" in error["reason"]
    assert await _stored(platform, broken) == []
    assert [r["event_type"] for r in await _stored(platform, reordered)] == ["incident.notified", "review.submitted"]


async def test_an_event_id_stored_with_other_content_refuses_its_case(platform, tokens):
    case_id = uuid.uuid4()
    events = _concluded_case(case_id)[:3]
    assert (await _import(platform, tokens, _ndjson(*events))).json()["imported"] == 3
    changed = events[2] | {"data": {"meets_criteria": True, "reason": "changed"}}
    later = _event("review.submitted", review(), case_id, "2024-05-20T10:00:00Z")
    answer = (await _import(platform, tokens, _ndjson(events[0], changed, later))).json()
    assert answer["imported"] == 0 and answer["rejected"] == 3
    assert "stored already with other content" in answer["errors"][0]["reason"]
    assert len(await _stored(platform, case_id)) == 3


async def test_a_forwarding_record_needs_its_case(platform, tokens):
    orphan = _concluded_case(uuid.uuid4())[1]
    answer = (await _import(platform, tokens, _ndjson(orphan))).json()
    assert answer["rejected"] == 1 and "follows its case's notification" in answer["errors"][0]["reason"]


async def test_import_is_for_admins_and_takes_ndjson(platform, tokens):
    body = _ndjson(*_concluded_case(uuid.uuid4()))
    assert (await _import(platform, tokens, body, token="inspectorate")).status_code == 403
    wrong_type = await platform.clients["intake"].post(
        "/v1/import", content=body, headers={**bearer(tokens["admin"]), "Content-Type": "application/json"}
    )
    assert wrong_type.status_code == 415


async def test_imported_events_are_marked_on_the_topics_and_not_routed(platform, tokens):
    case_id = uuid.uuid4()
    events = _concluded_case(case_id, notified=mappa_notification(incident_date="2024-03-01"))
    assert (await _import(platform, tokens, _ndjson(*events))).json()["imported"] == 6
    notified, forwarded = events[0], events[1]

    [record] = await find_records(
        platform.settings.kafka_bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == notified["event_id"]
    )
    assert header(record, IMPORTED_HEADER) == "true" and header(record, "ce_type") == "incident.notified"
    # Imported events carry the case after them as intake decided it, as live ones do.
    region = case_after(None, ANY_EVENT.validate_json(record.value)).sog_region
    assert region is not None
    assert json.loads(record.value)["case_after"] == {
        "state": "notified", "sog_region": region, "responded": False, "closed_reason": None,
    }
    stored = [
        json.loads(r["envelope"]) if isinstance(r["envelope"], str) else r["envelope"]
        for r in await platform.pool.fetch(
            "SELECT envelope FROM intake.events WHERE case_id = $1 ORDER BY position", case_id
        )
    ]
    case_events = [e for e in stored if e["event_type"] != "notification.forwarded"]
    assert [e.get("case_after") for e in stored if e["event_type"] == "notification.forwarded"] == [None]
    for n, event in enumerate(case_events, start=1):
        folded = fold((e["event_type"], e["local_authority"], e["data"]) for e in case_events[:n])
        assert folded is not None
        assert event["case_after"] == {"state": folded.state.value, "sog_region": folded.sog_region,
                                       "responded": folded.responded, "closed_reason": folded.closed_reason}
    assert case_events[-1]["case_after"]["state"] == "closed"
    [record] = await find_records(
        platform.settings.kafka_bootstrap, ROUTING_EVENTS, lambda r: header(r, "ce_id") == forwarded["event_id"]
    )
    assert header(record, IMPORTED_HEADER) == "true"
    assert json.loads(record.value)["data"]["recipient"] == "scottish-government"

    # Routing has seen the imported notification and owes nobody a delivery for it.
    await eventually(
        lambda: platform.pool.fetchval(
            "SELECT count(*) FROM routing.processed_events WHERE event_id = $1", uuid.UUID(notified["event_id"])
        ),
        what="routing to consume the imported notification",
    )
    assert await platform.pool.fetchval("SELECT count(*) FROM routing.deliveries WHERE case_id = $1", case_id) == 0


def test_sir_import_reads_a_file_and_is_idempotent(cli_environment, tmp_path, capsys):
    case_id = uuid.uuid4()
    path = tmp_path / "history.ndjson"
    path.write_bytes(_ndjson(*_concluded_case(case_id), '{"event_type": "deadline.opened"}'))

    assert cli.main(["import", str(path)]) == 1  # one line refused
    out = capsys.readouterr().out
    assert "imported 6, skipped 0 (already present), rejected 1" in out
    assert "line 7 (case ?): event_type 'deadline.opened' is not imported" in out

    assert cli.main(["import", str(path)]) == 1
    assert "imported 0, skipped 6 (already present), rejected 1" in capsys.readouterr().out


def _poisoned_lines(case_ids) -> list[str]:
    """One line each that used to turn the whole import into a 500 with nothing stored."""
    nul, surrogate, overflow, odd = case_ids
    notified = lambda case_id: _event(  # noqa: E731
        "incident.notified", notification(incident_date="2024-01-02"), case_id, "2024-01-04T09:00:00Z"
    )
    return [
        json.dumps(_event("incident.notified", notification(council_reference="GC\u0000-1"), nul, "2024-01-04T09:00:00Z")),
        json.dumps(notified(surrogate) | {"actor": {"role": "council", "id": "legacy\ud800"}}),
        json.dumps(notified(overflow)).replace('"schema_version": 1', '"schema_version": 1e400'),
        json.dumps(notified(odd) | {"data": [["structurally", {"odd": None}]]}),
    ]


async def test_poisoned_lines_are_refused_by_number_and_the_rest_goes_in(platform, tokens):
    good, *poisoned = [uuid.uuid4() for _ in range(5)]
    body = _ndjson(*_concluded_case(good), *_poisoned_lines(poisoned), "[" * 50_000 + "]" * 50_000)
    answer = await _import(platform, tokens, body)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["imported"], report["rejected"]) == (6, 5)
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert "NUL character" in reasons[7] and "lone surrogate" in reasons[8]
    assert "not a finite number" in reasons[9] and "data" in reasons[10] and "nested too deeply" in reasons[11]
    assert len(await _stored(platform, good)) == 6
    for case_id in poisoned:
        assert await _stored(platform, case_id) == []


async def test_a_large_body_goes_through_the_streaming_path_in_batches(platform, tokens, monkeypatch):
    """Many spool batches and transactions (made small here), a case's lines spread over them."""
    from services.intake import history

    monkeypatch.setattr(history, "LINES_PER_BATCH", 64)
    monkeypatch.setattr(history, "CASES_PER_TRANSACTION", 16)
    cases = [uuid.uuid4() for _ in range(120)]
    lines = [event for case_id in cases for event in _concluded_case(case_id)]
    assert len(lines) > history.LINES_PER_BATCH
    # A case's lines spread over the file; one bad line at the end refuses its case.
    lines = lines[0::2] + lines[1::2]
    lines.append(_event("review.submitted", review(review_type="thorough"), cases[0], "2024-05-21T10:00:00Z"))
    report = (await _import(platform, tokens, _ndjson(*lines))).json()
    assert report["imported"] == 6 * (len(cases) - 1) and report["rejected"] == 7
    assert [e["line"] for e in report["errors"]] == [len(lines)]
    assert await _stored(platform, cases[0]) == []
    assert await platform.pool.fetchval(
        "SELECT count(DISTINCT case_id) FROM intake.events WHERE case_id = ANY($1::uuid[])", cases
    ) == len(cases) - 1


async def test_writers_storing_batches_at_once_give_the_same_answer(platform, tokens, monkeypatch):
    """`sir import`'s writers (history.import_history(writers=2)): many small batches at
    once; a case the lifecycle refuses and one whose event is stored with other content are
    refused whole with their line, every other case stored whole and numbered."""
    from services.intake import history

    monkeypatch.setattr(history, "CASES_PER_TRANSACTION", 3)
    stored_before = uuid.uuid4()
    assert (await _import(platform, tokens, _ndjson(*_concluded_case(stored_before)[:3]))).json()["imported"] == 3
    cases = [uuid.uuid4() for _ in range(30)]
    lines = [event for case_id in cases for event in _concluded_case(case_id)]
    lines[7 * 6 + 3] |= {"received_at": "2024-06-12T10:00:00Z"}  # case 7's review, after the case closed
    changed = _concluded_case(stored_before)[2] | {"data": {"meets_criteria": False}}
    lines += [changed, _event("review.submitted", review(), stored_before, "2024-05-20T10:00:00Z")]
    report = await history.import_history(platform.pool, [_ndjson(*lines[0::2], *lines[1::2])], writers=2)
    assert (report.imported, report.skipped, report.rejected) == (6 * 29, 0, 6 + 2)
    assert sorted(str(e.case_id) for e in report.errors) == sorted([str(cases[7]), str(stored_before)])
    assert await _stored(platform, cases[7]) == [] and len(await _stored(platform, stored_before)) == 3
    sequences = await platform.pool.fetch(
        "SELECT case_id, array_agg(sequence ORDER BY position) AS s FROM intake.events"
        " WHERE case_id = ANY($1::uuid[]) GROUP BY case_id", cases,
    )
    assert len(sequences) == 29 and all(r["s"] == [1, 2, 3, 4, 5, None] for r in sequences)  # the forwarding record last


def test_sir_import_refuses_poisoned_lines_by_number_without_a_traceback(cli_environment, tmp_path, capsys):
    path = tmp_path / "history.ndjson"
    path.write_text("\n".join(_poisoned_lines([uuid.uuid4() for _ in range(4)])) + "\n", encoding="utf-8", errors="surrogatepass")
    assert cli.main(["import", str(path)]) == 1
    captured = capsys.readouterr()
    assert "imported 0, skipped 0 (already present), rejected 4" in captured.out
    assert "line 1 (case " in captured.out and "line 4 (case " in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_sir_import_says_so_when_the_database_is_away(tmp_path, monkeypatch):
    import subprocess
    import sys

    from shared import devstack

    path = tmp_path / "history.ndjson"
    path.write_bytes(_ndjson(*_concluded_case(uuid.uuid4())))
    env = {**__import__("os").environ,
           "DATABASE_URL": f"postgresql://postgres:secret@127.0.0.1:{devstack.free_port()}/sir",
           "KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "import", str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "the database at postgresql://postgres:***@127.0.0.1" in done.stderr
    assert "secret" not in done.stderr


def test_sir_import_stores_and_says_so_when_the_broker_is_away(cli_environment, tmp_path, capsys, monkeypatch):
    from shared import devstack
    from shared.settings import get_settings

    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{devstack.free_port()}")
    get_settings.cache_clear()
    path = tmp_path / "history.ndjson"
    path.write_bytes(_ndjson(*_concluded_case(uuid.uuid4())))
    assert cli.main(["import", str(path)]) == 0
    captured = capsys.readouterr()
    assert "imported 6, skipped 0 (already present), rejected 0" in captured.out
    assert "stored, but not yet published" in captured.err and "Traceback" not in captured.err


async def test_a_body_over_the_limit_is_refused_whole_even_when_streamed(platform, tokens, monkeypatch):
    from services.intake import history

    case_id = uuid.uuid4()
    body = _ndjson(*_concluded_case(case_id))
    monkeypatch.setattr(history, "MAX_BODY_BYTES", len(body) // 2)

    async def chunks():  # no Content-Length: the limit is found while reading
        yield body[: len(body) // 3]
        yield body[len(body) // 3:]

    answer = await platform.clients["intake"].post(
        "/v1/import", content=chunks(), headers={**bearer(tokens["admin"]), **NDJSON}
    )
    assert answer.status_code == 413
    assert await _stored(platform, case_id) == []
