"""Every metric a dashboard or an alert queries is in the contract
(cloudml.cluster.telemetry.METRIC_NAMES) or a known external series."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from cloudml.cluster.manifests.objects import ref

# non-cloudml series the alerts may use (Prometheus' own scrape health, Pushgateway's)
EXTERNAL_METRICS = frozenset({"up", "push_time_seconds", "push_failure_time_seconds"})
_PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
})  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (no parser: strip what is not a name)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range / subquery durations
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every query in a Grafana dashboard: panel targets (rows included) and variables."""
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets") or [] if t.get("expr"))
            walk(panel.get("panels") or [])

    walk(dashboard.get("panels") or [])
    for var in (dashboard.get("templating") or {}).get("list") or []:
        query = var.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
            exprs.append(m.group(1) if m else query)
    return exprs


def metric_problems(named_exprs: Iterable[tuple[str, str]], allowed: frozenset[str]) -> list[str]:
    """Names in (where, expr) pairs that are neither in the contract nor external."""
    problems = []
    for where, expr in named_exprs:
        for name in sorted(promql_metric_names(expr)):
            if name not in allowed and name not in EXTERNAL_METRICS:
                problems.append(
                    f"{where}: metric {name} is not in cloudml.cluster.telemetry.METRIC_NAMES"
                )
    return problems


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule group of every PrometheusRule."""
    return [g for d in docs if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]]


def dashboards(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(where, json text) for every Grafana dashboard ConfigMap entry."""
    return [
        (f"{ref(d)} {key}", text)
        for d in docs
        if d.get("kind") == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})
        for key, text in (d.get("data") or {}).items()
        if key.endswith(".json")
    ]


def contract_metric_names() -> frozenset[str]:
    """cloudml.cluster.telemetry.METRIC_NAMES, imported lazily (another module owns it)."""
    from cloudml.cluster.telemetry import METRIC_NAMES

    return frozenset(METRIC_NAMES)
