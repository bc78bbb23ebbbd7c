"""docker-compose.yml cannot run here; these checks keep it in step with the code."""

import json
from pathlib import Path

import yaml

from shared.settings import SERVICES, Settings
from tests.deploy_queries import dashboard_queries, scraped_names

ROOT = Path(__file__).parents[2]
# Compose publishes on 127.0.0.1 unless SIR_PUBLISH_ADDRESS says otherwise.
PUBLISHED_ON = "${SIR_PUBLISH_ADDRESS:-127.0.0.1}"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add((field.validation_alias or name).upper())
    return names


def test_compose_runs_every_service_with_its_port():
    services = _compose()["services"]
    for name in SERVICES:
        assert services[name]["command"] == ["serve", name]
        port = services[name]["environment"][f"{name.upper()}_PORT"]
        assert services[name]["ports"] == [f"{PUBLISHED_ON}:{port}:{port}"]


def test_compose_stores_no_event_the_broker_would_refuse():
    compose = _compose()["services"]
    broker_limit = int(compose["kafka"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"])
    for name in SERVICES:
        assert int(compose[name]["environment"]["SIR_MAX_MESSAGE_BYTES"]) < broker_limit


def test_compose_publishes_only_what_a_user_needs_on_loopback_by_default():
    published = {name: service["ports"] for name, service in _compose()["services"].items() if "ports" in service}
    # The four APIs, Prometheus and Grafana; never the database or the broker.
    assert set(published) == set(SERVICES) | {"console", "prometheus", "grafana"}
    for ports in published.values():
        assert all(port.startswith(f"{PUBLISHED_ON}:") for port in ports), ports


def test_compose_sets_only_settings_the_code_reads():
    for name in SERVICES:
        environment = _compose()["services"][name]["environment"]
        assert set(environment) <= _setting_names(), set(environment) - _setting_names()
        assert {"DATABASE_URL", "KAFKA_BOOTSTRAP", "SIR_HOST"} <= set(environment)


def test_prometheus_scrapes_every_service():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    defaults = Settings()
    assert targets == {f"{name}:{defaults.port_of(name)}" for name in SERVICES}


def test_compose_gives_prometheus_its_rules_and_grafana_its_provisioning():
    services = _compose()["services"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for pattern in config["rule_files"]:
        assert list((ROOT / "deploy/prometheus").glob(pattern)), pattern
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana-oss:") and not grafana["image"].endswith(":latest")
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    [provider] = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/sir.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_panels_use_the_provisioned_datasource():
    [datasource] = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in _compose()["services"]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/sir.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
            assert panel["targets"], panel["title"]


def test_dashboard_shows_flow_lag_backlog_deadlines_and_deliveries():
    read = scraped_names(dashboard_queries())
    assert {"sir_outbox_published_total", "sir_events_consumed_total", "sir_outbox_published_offset",
            "sir_consumer_applied_offset", "sir_outbox_backlog", "sir_outbox_oldest_age_seconds",
            "sir_deadlines_open", "sir_deadline_warnings_total", "sir_deadline_breaches_total",
            "sir_deliveries_total"} <= read
    assert any("sum by (rule, local_authority)" in expr for _, expr in dashboard_queries())


def test_compose_runs_the_console_against_the_four_apis():
    console = _compose()["services"]["console"]
    defaults = Settings()
    assert console["command"] == ["serve", "console"]
    # Published on the loopback unless SIR_PUBLISH_ADDRESS says otherwise (as the APIs are).
    assert console["ports"] == [f"${{SIR_PUBLISH_ADDRESS:-127.0.0.1}}:{defaults.console_port}:{defaults.console_port}"]
    environment = console["environment"]
    assert set(environment) <= _setting_names(), set(environment) - _setting_names()
    for name in SERVICES:
        assert environment[f"SIR_{name.upper()}_URL"] == f"http://{name}:{defaults.port_of(name)}"
