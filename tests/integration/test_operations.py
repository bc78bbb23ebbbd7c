"""Operations: what /metrics exposes on a running platform (every metric the alert rules
and the dashboard read; the two sides of consumer lag) and when /readyz says ready."""

import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from shared.messaging import CASE_EVENTS
from shared.service import Service, create_app
from shared.settings import SERVICES
from tests.deploy_queries import exposable_names, scraped_names
from tests.factories import notification
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import eventually

CONSUMERS = ("routing", "deadlines", "reporting")


async def _notify_and_wait(platform, token) -> None:
    answer = await platform.clients["intake"].post("/v1/notifications", json=notification(), headers=bearer(token))
    assert answer.status_code == 201, answer.text
    event_id = uuid.UUID(answer.json()["event_id"])

    async def handled_by_all() -> bool:
        for schema in CONSUMERS:
            if not await platform.pool.fetchval(
                f"SELECT count(*) FROM {schema}.processed_events WHERE event_id = $1", event_id
            ):
                return False
        return True

    await eventually(handled_by_all, what="the notification applied by every consumer")


async def _scrape(platform) -> dict[str, list]:
    """Sample lists by name, from every service's /metrics."""
    samples: dict[str, list] = {}
    for name in SERVICES:
        answer = await platform.clients[name].get("/metrics")
        assert answer.status_code == 200
        for family in text_string_to_metric_families(answer.text):
            samples.setdefault(f"family:{family.type}:{family.name}", [])
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
    return samples


async def test_every_metric_the_rules_and_dashboard_read_is_exposed(platform, tokens):
    await _notify_and_wait(platform, tokens["glasgow"])
    exposed = set()
    for name in SERVICES:
        answer = await platform.clients[name].get("/metrics")
        exposed |= exposable_names(text_string_to_metric_families(answer.text))
    assert scraped_names() - exposed == set()

    samples = await _scrape(platform)
    published = {s.labels["event_type"] for s in samples["sir_outbox_published_total"] if s.labels["schema"] == "intake"}
    assert "incident.notified" in published
    consumers = {s.labels["consumer"] for s in samples["sir_consumer_delay_seconds_count"]}
    assert {f"sir-{name}:{CASE_EVENTS}" for name in CONSUMERS} <= consumers
    ready = {s.labels["service"]: s.value for s in samples["sir_service_ready"]}
    assert ready == {name: 1.0 for name in SERVICES} | {k: v for k, v in ready.items() if k not in SERVICES}
    # FastStream's middleware counts each subscriber's batches under its service's name.
    apps = {s.labels["app_name"] for s in samples["faststream_received_messages_total"]}
    assert set(CONSUMERS) <= apps


async def test_consumer_lag_closes_and_matches_the_committed_offsets(platform, tokens):
    """The lag's two sides: the offsets the broker gave the relay's records and the offsets
    each consumer applied. Once a notification is through, no consumer is behind the
    producer, and each applied offset is the one its group committed (less one)."""
    await _notify_and_wait(platform, tokens["glasgow"])

    async def caught_up() -> bool:
        samples = await _scrape(platform)
        produced = {}
        for s in samples["sir_outbox_published_offset"]:
            if s.labels["topic"] == CASE_EVENTS:
                key = s.labels["partition"]
                produced[key] = max(produced.get(key, -1), s.value)
        applied = {
            (s.labels["consumer"], s.labels["partition"]): s.value
            for s in samples["sir_consumer_applied_offset"] if s.labels["topic"] == CASE_EVENTS
        }
        for name in CONSUMERS:
            for partition, offset in produced.items():
                if applied.get((f"sir-{name}:{CASE_EVENTS}", partition), -1) < offset:
                    return False
        return applied

    applied = await eventually(caught_up, what="every consumer at the producer's offsets")
    # Every partition has its series from the assignment on, records applied there or not.
    partitions = {str(p) for p in range(platform.settings.kafka_partitions)}
    for name in CONSUMERS:
        assert {p for c, p in applied if c == f"sir-{name}:{CASE_EVENTS}"} == partitions

    async def applied_is_committed() -> bool:
        # Compared again until equal: a batch committed between the two reads is fine.
        applied = await caught_up()
        for name in CONSUMERS:
            # Not subscribed, so it never joins the group: it only reads the group's offsets.
            reader = AIOKafkaConsumer(bootstrap_servers=platform.settings.kafka_bootstrap, group_id=f"sir-{name}")
            await reader.start()
            try:
                for (consumer, partition), offset in applied.items():
                    if consumer == f"sir-{name}:{CASE_EVENTS}":
                        committed = await reader.committed(TopicPartition(CASE_EVENTS, int(partition)))
                        if offset != committed - 1:
                            return False
            finally:
                await reader.stop()
        return True

    await eventually(applied_is_committed, what="applied offsets equal to the committed ones")


async def test_every_service_is_ready_when_its_database_and_broker_answer(platform):
    for name in SERVICES:
        answer = await platform.clients[name].get("/readyz")
        assert answer.status_code == 200, answer.text
        checks = answer.json()["checks"]
        own = {"migrations": True, "database": True, "outbox_relay": True, "workers": True}
        if name == "intake":  # emits only: the broker is reported, not depended on
            assert checks == own and answer.json()["reported"] == {"broker": True}
            assert answer.json()["outbox"]["backlog"] >= 0
        else:
            assert checks == {**own, "broker": True}


async def test_intake_stays_ready_and_accepts_while_its_broker_is_away(infra):
    from shared import devstack
    from shared.auth import issue_token

    with devstack.Tansu() as tansu:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=tansu.bootstrap)
        async with run_services(settings, ("intake",)) as platform:
            token = await issue_token(platform.pool, "council", local_authority="glasgow-city")
            tansu.stop()
            client = platform.clients["intake"]
            accepted = await client.post("/v1/notifications", json=notification(), headers=bearer(token))
            assert accepted.status_code == 201, accepted.text
            answer = await client.get("/readyz")
            assert answer.status_code == 200, answer.text
            assert answer.json()["reported"] == {"broker": False}
            assert answer.json()["outbox"]["backlog"] >= 1


async def _crashing_worker(pool, settings) -> None:
    raise RuntimeError("worker fell over")


async def test_not_ready_before_start_nor_when_a_worker_or_the_broker_stops(infra, tmp_path: Path):
    settings = infra.settings(infra.new_database())
    service = Service(name="opsprobe", migrations=tmp_path, description="readiness probe", workers=[_crashing_worker])
    app = create_app(service, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://opsprobe") as client:
        before = await client.get("/readyz")
        assert before.status_code == 503
        assert before.json()["checks"] == {"migrations": False, "started": False}

        async with app.router.lifespan_context(app):
            async def worker_down():
                answer = await client.get("/readyz")
                return answer.status_code == 503 and answer.json()["checks"]["workers"] is False and answer

            checks = (await eventually(worker_down, what="the crashed worker to show")).json()["checks"]
            assert checks["migrations"] and checks["database"] and checks["outbox_relay"]
            metrics = (await client.get("/metrics")).text
            assert 'sir_service_ready{service="opsprobe"} 0.0' in metrics

            await app.state.broker.stop()
            answer = await client.get("/readyz")
            # It consumes nothing, so the broker is reported, not a check of its readiness.
            assert answer.status_code == 503 and answer.json()["reported"]["broker"] is False


async def _ignore(conn, event) -> None:
    return None


async def test_a_consuming_service_is_not_ready_while_its_broker_is_away(infra, tmp_path: Path):
    settings = infra.settings(infra.new_database())
    service = Service(name="opsconsumer", migrations=tmp_path, description="consumes", consumes={CASE_EVENTS: _ignore})
    app = create_app(service, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://opsconsumer") as client:
        async with app.router.lifespan_context(app):
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["broker"] is True, ready.text
            await app.state.broker.stop()
            answer = await client.get("/readyz")
            assert answer.status_code == 503 and answer.json()["checks"]["broker"] is False
