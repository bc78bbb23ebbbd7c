"""Routing's pure rules: recipients, channels, the signature, retry and give-up."""

import base64
import datetime as dt
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.routing import config
from services.routing.domain import (
    ALL_RECIPIENTS,
    Attempt,
    Outcome,
    RecipientConfig,
    after_failure,
    backoff_seconds,
    forward_failed,
    forwarded,
    outcome_of_status,
    recipients,
    webhook_headers,
    webhook_secret_problem,
)
from shared.events import ANY_EVENT
from shared.messaging import OUTBOUND_TOPICS, all_topics, outbound_topic

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)


def test_every_notification_goes_to_the_scottish_government_only_without_mappa():
    assert recipients(None) == ["scottish-government"]


def test_mappa_adds_the_sog_of_the_region_intake_decided():
    # The region itself is intake's decision (shared/lifecycle.py), carried by the event:
    # tests/unit/test_routing_decider.py follows it from the notification to the recipients.
    assert recipients("glasgow") == ["scottish-government", "sog:glasgow"]
    assert recipients("tayside") == ["scottish-government", "sog:tayside"]


def test_outbound_topics_hold_no_colon_and_are_created_with_the_platform():
    assert outbound_topic("scottish-government") == "sir.outbound.scottish-government.v1"
    assert outbound_topic("sog:tayside") == "sir.outbound.sog.tayside.v1"
    assert len(OUTBOUND_TOPICS) == len(ALL_RECIPIENTS) == 11
    assert set(OUTBOUND_TOPICS) <= set(all_topics())
    assert all(":" not in topic for topic in all_topics())


def test_the_recipients_file_gives_every_recipient_the_topic_channel():
    configs = config.load(config.DEFAULT_FILE)
    assert sorted(configs) == sorted(ALL_RECIPIENTS)
    assert {c.channel for c in configs.values()} == {"topic"}


def test_a_recipients_file_with_a_webhook_and_its_mistakes(tmp_path):
    path = tmp_path / "recipients.toml"
    path.write_text(
        '[defaults]\nmax_attempts = 2\n[recipients."sog:fife"]\nchannel = "webhook"\n'
        'url = "https://sog-fife.example/sir"\nsecret_env = "FIFE_SECRET"\n'
    )
    configs = config.load(path)
    assert configs["sog:fife"].channel == "webhook" and configs["sog:fife"].max_attempts == 2
    assert configs["scottish-government"].channel == "topic" and configs["scottish-government"].max_attempts == 2

    path.write_text('[recipients."sog:atlantis"]\nchannel = "topic"\n')
    with pytest.raises(ValueError, match="unknown recipients"):
        config.load(path)
    path.write_text('[recipients."sog:fife"]\nchannel = "webhook"\nurl = "https://x.example"\n')
    with pytest.raises(ValueError, match="secret_env"):
        config.load(path)
    path.write_text('[recipients."sog:fife"]\nchannel = "webhook"\nurl = "http://x.example"\nsecret_env = "S"\n')
    with pytest.raises(ValueError, match="https"):
        config.load(path)
    assert config.load(path, allow_http=True)["sog:fife"].url == "http://x.example"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]:80/"])
def test_plain_http_only_to_this_machine(url):
    RecipientConfig(channel="webhook", url=url, secret_env="S").check_transport(allow_http=False)


def test_a_webhook_needs_an_absolute_url():
    with pytest.raises(ValidationError, match="url"):
        RecipientConfig(channel="webhook", url="/relative", secret_env="S")
    with pytest.raises(ValidationError):
        RecipientConfig(channel="webhook", url="https://x.example", secret_env="lower-case-name")


SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_webhook_headers_follow_standard_webhooks_and_verify_with_its_library():
    body = b'{"event_id": "x"}'
    delivery = uuid.uuid4()
    headers = webhook_headers(SECRET, delivery, body, dt.datetime.now(dt.timezone.utc))
    assert headers["webhook-id"] == str(delivery)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {"event_id": "x"}
    for tampered in (
        (body + b" ", headers),
        (body, headers | {"webhook-id": str(uuid.uuid4())}),  # the id is signed too
        (body, headers | {"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 600)}),  # a replay
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(*tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"o" * 32).decode()).verify(body, headers)


def test_a_webhook_secret_must_be_a_standard_webhooks_secret():
    assert webhook_secret_problem(SECRET) is None
    assert webhook_secret_problem(None) == "is not set"
    for wrong in ("s3cret", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        assert "Standard Webhooks secret" in webhook_secret_problem(wrong)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (500, Outcome.RETRY), (503, Outcome.RETRY),
     (408, Outcome.RETRY), (429, Outcome.RETRY), (400, Outcome.REFUSED), (401, Outcome.REFUSED),
     (404, Outcome.REFUSED), (301, Outcome.REFUSED)],
)
def test_which_answers_are_retried(status, outcome):
    assert outcome_of_status(status) is outcome


@given(attempt=st.integers(1, 200), base=st.floats(0.01, 100), cap=st.floats(0.01, 10_000), r=st.floats(0, 1))
def test_backoff_grows_with_jitter_and_stays_under_its_cap(attempt, base, cap, r):
    delay = backoff_seconds(attempt, base, cap, rand=lambda: r)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9


def test_backoff_doubles():
    assert [backoff_seconds(n, 1.0, 100.0, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]


def test_retryable_failures_are_retried_until_the_horizon():
    cfg = RecipientConfig(backoff_base_seconds=10, backoff_max_seconds=1000, horizon_seconds=100)
    retry = Attempt(Outcome.RETRY, "HTTP 503")
    first = after_failure(retry, cfg, 1, NOW, NOW, rand=lambda: 1.0)
    assert first.retry_at == NOW + dt.timedelta(seconds=10)
    # Any number of attempts, while the next falls within the horizon…
    assert after_failure(retry, cfg, 50, NOW, NOW + dt.timedelta(seconds=1), rand=lambda: 0.0).retry_at is None
    assert after_failure(retry, cfg, 3, NOW, NOW + dt.timedelta(seconds=50), rand=lambda: 1.0).retry_at is not None
    # …and none beyond it.
    assert after_failure(retry, cfg, 3, NOW, NOW + dt.timedelta(seconds=70), rand=lambda: 1.0).retry_at is None


def test_refusals_end_after_max_attempts():
    cfg = RecipientConfig(max_attempts=2, backoff_base_seconds=1)
    refused = Attempt(Outcome.REFUSED, "HTTP 400")
    assert after_failure(refused, cfg, 1, NOW, NOW).retry_at is not None
    assert after_failure(refused, cfg, 2, NOW, NOW).retry_at is None


def test_the_records_are_valid_routing_events_with_stable_ids():
    case_id = uuid.uuid4()
    record = forwarded(case_id, "glasgow-city", "sog:tayside", "webhook", 3, NOW, NOW)
    parsed = ANY_EVENT.validate_json(record.model_dump_json())
    assert parsed.data.recipient == "sog:tayside" and parsed.data.attempts == 3
    assert parsed.actor.role == "service"
    assert record.event_id == forwarded(case_id, "glasgow-city", "sog:tayside", "webhook", 3, NOW, NOW).event_id
    assert record.event_id != forwarded(case_id, "glasgow-city", "scottish-government", "topic", 1, NOW, NOW).event_id
    failed = forward_failed(case_id, "glasgow-city", "scottish-government", 2, "HTTP 400" * 100, NOW)
    assert len(ANY_EVENT.validate_json(failed.model_dump_json()).data.error) == 200
