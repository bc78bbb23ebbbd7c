"""docker-compose.yml cannot run here; these checks keep it in step with the code."""

from pathlib import Path

import yaml

from shared.settings import SERVICES, Settings

ROOT = Path(__file__).parents[2]


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
        assert services[name]["ports"] == [f"{port}:{port}"]


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
