"""deploy/prometheus: promtool checks the configuration and the rules and runs the alerts'
unit tests; every alert has a runbook and a test; every metric read is one the code declares."""

import importlib
import os
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

from shared.settings import SERVICES, Settings
from tests.deploy_queries import PROMETHEUS, ROOT, exposable_names, is_recording_rule_name, rules, scraped_names

ALERT_TESTS = PROMETHEUS / "tests"
ALERTMANAGER_CONFIG = ROOT / "deploy/alertmanager/alertmanager.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is missing (Debian: apt-get install prometheus)")
    result = subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_promtool_accepts_the_configuration():
    _promtool("check", "config", "prometheus.yml")


def test_promtool_accepts_the_rules():
    _promtool("check", "rules", *sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml")))


def test_alert_unit_tests_pass():
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in ALERT_TESTS.glob("*.yml"))
    assert tests
    _promtool("test", "rules", *tests)


def test_every_alert_has_a_test_a_severity_and_a_runbook():
    tested = {
        case["alertname"]
        for path in ALERT_TESTS.glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    runbook = (ROOT / "docs/operations.md").read_text().lower()
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {"DeadlineBreached", "OutboxBacklogStale", "DeadLettersGrowing", "ServiceDown", "DeliveriesFailing"} <= {
        a["alert"] for a in alerts
    }
    for alert in alerts:
        assert alert["alert"] in tested, f"{alert['alert']} has no promtool test that makes it fire"
        assert alert["labels"]["severity"] in {"warning", "critical"}
        # Absolute once Prometheus puts its external label runbook_base in front.
        url = alert["annotations"]["runbook_url"]
        assert url == "{{ $externalLabels.runbook_base }}#" + alert["alert"].lower()
        assert f"### {alert['alert'].lower()}" in runbook, f"no runbook section for {alert['alert']}"


def test_alerts_go_to_alertmanager_with_a_route_per_severity():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["global"]["external_labels"]["runbook_base"] == "${SIR_RUNBOOK_BASE}"
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    routes = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["route"]["routes"]
    severities = {alert["labels"]["severity"] for alert in rules() if "alert" in alert}
    assert {route["matchers"][0] for route in routes} == {f'severity="{s}"' for s in severities}


def test_amtool_accepts_the_alertmanager_configuration_and_routes_each_severity():
    if shutil.which("amtool") is None:
        if os.environ.get("CI"):
            pytest.fail("amtool is missing: .ci/run installs Debian's prometheus-alertmanager package")
        pytest.skip("amtool is missing (Debian: apt-get install prometheus-alertmanager)")
    checked = subprocess.run(["amtool", "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for severity in ("critical", "warning"):
        routed = subprocess.run(
            ["amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", f"severity={severity}"],
            capture_output=True, text=True, timeout=60,
        )
        assert routed.stdout.strip() == f"sir-{severity}", routed.stdout + routed.stderr


def test_recording_rules_are_named_level_metric_operations():
    for rule in rules():
        if "record" in rule:
            assert is_recording_rule_name(rule["record"]), rule["record"]


def test_every_metric_the_rules_and_dashboard_read_is_declared():
    # Building the apps registers every metric the services expose, FastStream's included.
    for name in SERVICES:
        importlib.import_module(f"services.{name}.app").build(Settings())
    declared = exposable_names(REGISTRY.collect())
    assert scraped_names() - declared == set()


def test_selected_names_reads_every_selector_of_an_expression():
    from tests.deploy_queries import selected_names

    expr = (
        'sum by (topic) (rate(a_total{topic="t"}[5m])) / on (topic) group_left max(b)'
        ' or histogram_quantile(0.9, sum by (le) (rate(c_bucket[5m]))) > bool scalar(d)'
        ' unless -(e offset 10m) and max_over_time(f[10m:1m])'
    )
    assert selected_names(expr) == {"a_total", "b", "c_bucket", "d", "e", "f"}
