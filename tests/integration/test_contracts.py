"""The committed AsyncAPI and OpenAPI documents are what the code generates (`sir docs`)."""

from services import cli, contracts
from shared.messaging import PLATFORM_TOPICS


def test_the_committed_documents_are_what_the_code_generates():
    stale = [str(path.relative_to(contracts.DOCS.parent)) for path in contracts.check()]
    assert not stale, f"out of date: {', '.join(stale)}; run `sir docs` and commit docs/"


def test_sir_docs_check_says_whether_the_documents_are_current(capsys):
    expected = 1 if contracts.check() else 0
    assert cli.main(["docs", "--check"]) == expected
    capsys.readouterr()


def test_every_topic_is_documented_with_its_payload_and_cloudevents_headers():
    document = contracts.asyncapi()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert set(PLATFORM_TOPICS) <= addresses
    schemas = document["components"]["schemas"]
    assert {"IncidentNotified", "NotificationForwarded", "DeadlineBreached"} <= set(schemas)
    assert {"ce_id", "ce_type", "ce_source", "ce_time", "ce_subject", "ce_specversion"} <= set(
        schemas["CloudEventsHeaders"]["required"]
    )
    for message in document["components"]["messages"].values():
        assert message["headers"]["$ref"].endswith("Headers")


def test_the_intake_openapi_has_every_route():
    paths = contracts.openapi("intake")["paths"]
    assert {"/v1/notifications", "/v1/cases/{case_id}/events", "/v1/cases/{case_id}", "/v1/import"} <= set(paths)
    assert "application/x-ndjson" in paths["/v1/import"]["post"]["requestBody"]["content"]
