"""The PromQL that deploy/ runs (recording rules, alerts, the Grafana dashboard) and the
metric names it reads, to check them against what the services expose."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import promql_parser
import yaml
from prometheus_client.metrics_core import Metric

ROOT = Path(__file__).parents[1]
PROMETHEUS = ROOT / "deploy/prometheus"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
# Series Prometheus makes itself rather than scraping them.
PROMETHEUS_OWN = {"up"}
# Grafana's variables, replaced by something PromQL parses.
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}


def rules() -> list[dict]:
    return [
        rule
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every panel target of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", ()):
                expr = target["expr"]
                for variable, value in _GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((f"{path.name}: {panel['title']}", expr))
    return found


def queries() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()] + dashboard_queries()


def selected_names(expr: str) -> set[str]:
    """Metric names the expression selects."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
            walk(node.expr)

    walk(promql_parser.parse(expr))
    return names


def scraped_names(read: list[tuple[str, str]] | None = None) -> set[str]:
    """Every metric name that the queries (all of them by default) read, with recording
    rules replaced by what they read, less Prometheus's own series."""
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    names: set[str] = set()
    for _, expr in queries() if read is None else read:
        names |= selected_names(expr)
    while expanded := names & recorded.keys():
        for name in expanded:
            names = (names - {name}) | selected_names(recorded[name])
    return names - PROMETHEUS_OWN


def exposable_names(families: Iterable[Metric]) -> set[str]:
    """Names under which Prometheus stores the families' series."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    names = set()
    for family in families:
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


_RECORD_NAME = re.compile(r"^[a-z_]+:[a-z_]+:[a-z0-9_]+$")


def is_recording_rule_name(name: str) -> bool:
    """level:metric:operations, the convention of Prometheus's docs."""
    return bool(_RECORD_NAME.match(name))
