"""Prometheus metrics. Names are part of the contract with dashboards: change them deliberately.

Label values are bounded sets (event types and flows come from mapping files, programs and
transactions from mapping files, outcomes from the error classes, instances from the instances
file), so cardinality stays small. The BNG instance is the label ``bng_instance``: Prometheus
sets ``instance`` on every series to the scraped target (host:port) and would rename ours.
Gauges about the store (backlog, dead letters) are read from the database when Prometheus
scrapes (api/metrics.py), so every process reports the same, true numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

M3_CALLS = Counter(
    "m3bng_m3_calls_total",
    "MI calls by program, transaction and outcome class",
    ["program", "transaction", "outcome"],
)
M3_CALL_SECONDS = Histogram(
    "m3bng_m3_call_duration_seconds",
    "Latency of MI calls, including the wait for the answer",
    ["program", "transaction"],
    buckets=LATENCY_BUCKETS,
)
CIRCUIT_OPEN = Gauge("m3bng_circuit_open", "1 while the circuit to a target is open or half-open", ["target"])

EVENTS_RECEIVED = Counter(
    "m3bng_events_received_total",
    "Inbound events stored (duplicates excluded) by BNG instance, source and event type",
    ["bng_instance", "source", "event_type"],
)
EVENTS_DUPLICATE = Counter(
    "m3bng_events_duplicate_total", "Inbound deliveries recognised as duplicates", ["bng_instance", "source"]
)
EVENTS_FINISHED = Counter(
    "m3bng_events_finished_total",
    "Processing attempts by outcome: done, skipped, dead, retry, waiting (target unavailable)",
    ["bng_instance", "source", "event_type", "outcome"],
)
ATTEMPTS_BY_ERROR = Counter(
    "m3bng_attempt_errors_total",
    "Failed processing attempts by error class (transient, data, auth, target_down, ...)",
    ["event_type", "error_class"],
)
OUTBOUND_SECONDS = Histogram(
    "m3bng_outbound_call_duration_seconds",
    "Every recorded outbound call (M3 transaction, BNG request, ION message) by target, "
    "program and transaction (for BNG: the flow step)",
    ["target", "program", "transaction", "status"],
    buckets=LATENCY_BUCKETS,
)
ANOMALIES = Counter(
    "m3bng_anomalies_total",
    "Anomaly rules that fired, by flow, rule and action (flag: the order went on; hold: it waits)",
    ["flow", "rule", "action"],
)
REPLAYS = Counter("m3bng_replays_total", "Events replayed through the ops API", ["mode", "kind"])
RECONCILE_FINDINGS = Counter(
    "m3bng_reconcile_findings_total",
    "Objects reconciliation runs put in each class (matching, different, never_arrived, stuck, in_flight)",
    ["kind", "finding"],
)
LIMIT_SHARE = Gauge(
    "m3bng_limit_share",
    "This process's share of an installation-wide limit (m3.concurrency, bng.concurrency, bng.rate)",
    ["limit"],
)

# --- read from the store at scrape time (api/metrics.py) -----------------------------------------
# Every series is rewritten on each scrape: a flow whose backlog drained reads 0 (registered
# flows) or disappears (an event type no flow handles), never its last non-zero value.
BACKLOG = Gauge(
    "m3bng_backlog_events",
    "Open events per instance and flow by status (pending: waiting for a worker or a retry; "
    "processing: claimed)",
    ["bng_instance", "source", "event_type", "status"],
)
BACKLOG_OLDEST = Gauge(
    "m3bng_backlog_oldest_age_seconds",
    "Seconds since the oldest open (pending or processing) event of a flow was received, per "
    "instance; 0 when none",
    ["bng_instance", "source", "event_type"],
)
DEAD_LETTERS = Gauge(
    "m3bng_dead_letters",
    "Unresolved dead letters (events still dead, neither replayed nor discarded) per instance and flow",
    ["bng_instance", "source", "event_type"],
)
PAUSED = Gauge(
    "m3bng_paused",
    "1 while a flow (name = event type), a target (m3, bng, ion) or a BNG instance is paused by an operator",
    ["kind", "name"],
)
# Labelled by the store's backend (sqlite, postgresql) so that only processes that read the store
# expose them: a worker's /metrics never shows a misleading "store_up 0".
STORE_UP = Gauge(
    "m3bng_store_up",
    "1 when this scrape read the store's gauges; 0 when the query failed or timed out "
    "(the backlog, dead letter and paused gauges are then left out)",
    ["backend"],
)
STORE_SCRAPE_SECONDS = Gauge(
    "m3bng_store_scrape_duration_seconds",
    "Time the last scrape spent reading the store's gauges",
    ["backend"],
)
STORE_GAUGES = (BACKLOG, BACKLOG_OLDEST, DEAD_LETTERS, PAUSED)
STOREFRONT_CACHE = Counter(
    "m3bng_storefront_cache_total",
    "Storefront cache lookups by kind (price, stock) and outcome (hit, miss, shared, stale, "
    "unavailable, invalidated; answer: a whole price answer served as held)",
    ["kind", "outcome"],
)


def observe_storefront_cache(kind: str, outcome: str, count: int = 1) -> None:
    if count:
        STOREFRONT_CACHE.labels(kind, outcome).inc(count)


def storefront_cache_counter(kind: str, outcome: str) -> Counter:
    """One series of ``STOREFRONT_CACHE``, looked up once: a held price answer counts its hits
    on every read, and ``labels`` cost more than the increment (counters are never cleared)."""
    return STOREFRONT_CACHE.labels(kind, outcome)


def observe_m3_call(program: str, transaction: str, outcome: str, seconds: float) -> None:
    M3_CALLS.labels(program, transaction, outcome).inc()
    M3_CALL_SECONDS.labels(program, transaction).observe(seconds)


def set_circuit_state(target: str, state: str) -> None:
    CIRCUIT_OPEN.labels(target).set(0 if state == "closed" else 1)


def refresh_circuits(states: dict[str, str]) -> None:
    """Report every configured target, closed ones too (a breaker reports only its changes)."""
    for target, state in states.items():
        set_circuit_state(target, state)


@dataclass(frozen=True)
class StoreGauges:
    """One scrape's reading of the store (ops/backlog.py builds it)."""

    backlog: dict[tuple[str, str, str, str], int]  # (instance, source, event_type, status) → count
    oldest_age: dict[tuple[str, str, str], float]  # (instance, source, event_type) → seconds
    dead_letters: dict[tuple[str, str, str], int]  # (instance, source, event_type) → count
    paused: dict[tuple[str, str], bool]  # (kind, name) → paused


def set_store_gauges(gauges: StoreGauges | None, seconds: float, backend: str) -> None:
    """Replace every store series at once (no await in here, so a concurrent scrape never
    reads a half-written set); ``None`` means the store could not be read."""
    STORE_SCRAPE_SECONDS.labels(backend).set(seconds)
    for gauge in STORE_GAUGES:
        gauge.clear()
    if gauges is None:
        STORE_UP.labels(backend).set(0)
        return
    STORE_UP.labels(backend).set(1)
    for (instance, source, event_type, status), count in gauges.backlog.items():
        BACKLOG.labels(instance, source, event_type, status).set(count)
    for (instance, source, event_type), age in gauges.oldest_age.items():
        BACKLOG_OLDEST.labels(instance, source, event_type).set(age)
    for (instance, source, event_type), count in gauges.dead_letters.items():
        DEAD_LETTERS.labels(instance, source, event_type).set(count)
    for (kind, name), paused in gauges.paused.items():
        PAUSED.labels(kind, name).set(1 if paused else 0)


def observe_outbound(target: str, operation: str, step: str, status: str, seconds: float) -> None:
    """M3 operations are ``PROGRAM/TRANSACTION``; other targets' paths hold ids (unbounded), so
    the flow's step name stands in as the transaction."""
    program, slash, transaction = operation.partition("/")
    if target != "m3" or not slash or " " in operation:
        program, transaction = target, step
    OUTBOUND_SECONDS.labels(target, program[:32], transaction[:64], status).observe(seconds)


def observe_outcome(
    source: str, event_type: str, outcome: str, error_class: str | None = None, instance: str = "default"
) -> None:
    EVENTS_FINISHED.labels(instance, source, event_type, outcome).inc()
    if error_class and outcome in ("dead", "retry", "waiting"):
        ATTEMPTS_BY_ERROR.labels(event_type, error_class).inc()


def observe_received(
    source: str, event_type: str, duplicate: bool, instance: str = "default", count: int = 1
) -> None:
    """``count`` events of one kind: the group commit counts each batch's once, not per event."""
    if duplicate:
        EVENTS_DUPLICATE.labels(instance, source).inc(count)
    else:
        EVENTS_RECEIVED.labels(instance, source, event_type).inc(count)


def observe_reconcile(kind: str, finding: str, count: int) -> None:
    if count:
        RECONCILE_FINDINGS.labels(kind, finding).inc(count)
