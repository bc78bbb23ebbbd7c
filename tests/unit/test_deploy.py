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
    # The four APIs, the console, Prometheus, Alertmanager and Grafana; never the database
    # or the broker.
    assert set(published) == set(SERVICES) | {"console", "prometheus", "alertmanager", "grafana"}
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


def test_compose_builds_one_image_once_for_the_four_services():
    services = _compose()["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["intake"]
    image = services["intake"]["image"]
    for name in SERVICES:
        assert services[name]["image"] == image
        if name != "intake":
            assert services[name]["pull_policy"] == "never"


def test_compose_checks_the_health_of_every_service():
    services = _compose()["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "services.healthcheck"]
    # Everything a service or Grafana waits for, it waits for healthy.
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)


def test_compose_keeps_the_brokers_topics_on_a_volume():
    compose = _compose()
    kafka = compose["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert f"kafka-data:{log_dirs}" in kafka["volumes"] and "kafka-data" in compose["volumes"]
    assert kafka["environment"]["CLUSTER_ID"]


def test_compose_runs_prometheus_of_the_major_version_ci_tests_with_and_alertmanager():
    services = _compose()["services"]
    # CI's promtool is Debian bookworm's prometheus package, 2.42: the rules are tested on 2.x.
    assert services["prometheus"]["image"].startswith("prom/prometheus:v2.")
    assert "--enable-feature=expand-external-labels" in services["prometheus"]["command"]
    assert "SIR_RUNBOOK_BASE" in services["prometheus"]["environment"]
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]


def test_the_image_is_pinned_locked_non_root_and_checks_readiness():
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line.startswith((" ", "#"))]
    # Every stage's base pinned by digest: the console's assets (node), then the runtime.
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert len(bases) == 2
    for base in bases:
        assert "@sha256:" in base and len(base.split("@sha256:")[1]) == 64, base
    runtime = dockerfile.split("\nFROM ")[-1]  # the last stage: the image that runs
    copies = [rest for word, rest in instructions if word == "COPY" and rest in runtime]
    assert copies[0] == "requirements.lock ./", "the dependency layer comes before the source"
    assert any("--require-hashes" in rest for word, rest in instructions if word == "RUN")
    [user] = [rest for word, rest in instructions if word == "USER"]
    assert not user.startswith(("root", "0"))
    assert "services.healthcheck" in next(rest for word, rest in instructions if word == "HEALTHCHECK")
    assert "calfkit" not in (ROOT / "requirements.lock").read_text()


def _locked(path: Path) -> dict[str, str]:
    lock = path.read_text()
    pinned = dict(line.split(" ", 1)[0].split("==") for line in lock.splitlines() if line and line[0].isalpha())
    assert lock.count("--hash=sha256:") >= len(pinned)
    return pinned


def test_the_locks_pin_every_dependency_of_pyproject_with_hashes():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for lock, requirements in (
        ("requirements.lock", project["dependencies"]),
        ("requirements-dev.lock", project["dependencies"] + extras["test"] + extras["embedded"] + extras["tansu"]),
    ):
        pinned = _locked(ROOT / lock)
        for requirement in requirements:
            name, version = requirement.split("==")
            name = name.split("[")[0].lower()
            assert pinned.get(name) == version, f"{lock}: {name} {version} in pyproject, {pinned.get(name)} locked (make lock)"


def test_the_healthcheck_finds_the_service_of_the_containers_command():
    from services.healthcheck import main, served_service

    assert served_service(["python", "-m", "services.cli", "serve", "routing"]) == "routing"
    assert served_service(["/bin/sh", "/usr/local/bin/sir", "migrate"]) is None
    assert main(["no-such-service"]) == 1


def test_compose_follows_the_compose_specification():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
