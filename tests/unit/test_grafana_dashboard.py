"""docs/grafana-dashboard.json cannot drift from the code: every metric and label its queries use
exists in m3bng's Prometheus registry, and it is a dashboard Grafana imports as it is."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from m3bng.observability import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\bm3bng_[a-z0-9_]+")
# PromQL aggregations and selectors: `by (a, b)` and `name{label="..", label=~".."}`
BY = re.compile(r"\bby\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b(m3bng_[a-z0-9_]+)\{([^}]*)\}")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


def exposed_names() -> set[str]:
    """Every sample name the registry can expose for m3bng's metrics (counters get ``_total``,
    histograms ``_bucket``/``_count``/``_sum``)."""
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("m3bng_"):
            continue
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def label_names() -> dict[str, set[str]]:
    """Sample name → its label names, from the metric objects in observability/metrics.py."""
    labels: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        names = set(metric._labelnames)  # no public accessor; stable across prometheus-client
        base = metric._name
        kind = (
            "counter" if isinstance(metric, Counter) else "histogram" if isinstance(metric, Histogram) else ""
        )
        for sample in (base, *(base + s for s in SUFFIXES.get(kind, ()))):
            labels[sample] = names | ({"le"} if sample.endswith("_bucket") else set())
    return labels


def test_every_metric_in_the_dashboard_is_exposed() -> None:
    exposed = exposed_names()
    used = {name for expr in expressions(load()) for name in METRIC.findall(expr)}
    assert used, "the dashboard queries no m3bng metric"
    assert used <= exposed, f"not in the registry: {sorted(used - exposed)}"
    # the headline metrics of the issue are all on it
    assert {
        "m3bng_events_received_total",
        "m3bng_events_finished_total",
        "m3bng_backlog_events",
        "m3bng_backlog_oldest_age_seconds",
        "m3bng_dead_letters",
        "m3bng_attempt_errors_total",
        "m3bng_outbound_call_duration_seconds_bucket",
        "m3bng_circuit_open",
        "m3bng_replays_total",
        "m3bng_paused",
        "m3bng_store_up",
    } <= used


def test_every_label_in_the_dashboard_exists_on_its_metric() -> None:
    labels = label_names()
    for expr in expressions(load()):
        unknown = [name for name in METRIC.findall(expr) if name not in labels]
        assert not unknown, f"{expr}: no such metric {unknown}"
        for name, selector in SELECTOR.findall(expr):
            used = {part.split("=")[0].strip(" !~") for part in selector.split(",") if part.strip()}
            assert used <= labels[name], f"{expr}: {name} has no label {sorted(used - labels[name])}"
        grouped = {label.strip() for group in BY.findall(expr) for label in group.split(",") if label.strip()}
        metric_labels = set().union(*(labels[name] for name in METRIC.findall(expr)))
        assert grouped <= metric_labels, f"{expr}: grouped by unknown {sorted(grouped - metric_labels)}"


def test_importable_grafana_dashboard() -> None:
    dashboard = load()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    [source] = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


@pytest.mark.parametrize(
    "title",
    [
        "Received per second by type",
        "Processed per second by type",
        "Failed per second by type",
        "Backlog per flow",
        "Oldest open event per flow",
        "Dead letters per flow",
        "Failed attempts by error class",
        "Outbound latency p50 by program/transaction",
        "Outbound latency p99 by program/transaction",
        "Circuit state by target",
        "Replays",
    ],
)
def test_panel_asked_for_is_there(title: str) -> None:
    assert title in {p["title"] for p in panels(load())}
