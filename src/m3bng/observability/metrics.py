"""Prometheus metrics. Names are part of the contract with dashboards: change them deliberately.

Label values are bounded sets (event types and flows come from mapping files, programs and
transactions from mapping files, outcomes from the error classes), so cardinality stays small.
Gauges about the store (backlog, dead letters) are read from the database when Prometheus
scrapes (api/metrics.py), so every process reports the same, true numbers.
"""

from __future__ import annotations

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
    "m3bng_events_received_total", "Inbound events stored (duplicates excluded)", ["source", "event_type"]
)
EVENTS_DUPLICATE = Counter(
    "m3bng_events_duplicate_total", "Inbound deliveries recognised as duplicates", ["source"]
)
EVENTS_FINISHED = Counter(
    "m3bng_events_finished_total",
    "Processing attempts by outcome: done, skipped, dead, retry, waiting (target unavailable)",
    ["source", "event_type", "outcome"],
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
REPLAYS = Counter("m3bng_replays_total", "Events replayed through the ops API", ["mode", "kind"])


def observe_m3_call(program: str, transaction: str, outcome: str, seconds: float) -> None:
    M3_CALLS.labels(program, transaction, outcome).inc()
    M3_CALL_SECONDS.labels(program, transaction).observe(seconds)


def set_circuit_state(target: str, state: str) -> None:
    CIRCUIT_OPEN.labels(target).set(0 if state == "closed" else 1)


def observe_outbound(target: str, operation: str, step: str, status: str, seconds: float) -> None:
    """M3 operations are ``PROGRAM/TRANSACTION``; other targets' paths hold ids (unbounded), so
    the flow's step name stands in as the transaction."""
    program, slash, transaction = operation.partition("/")
    if target != "m3" or not slash or " " in operation:
        program, transaction = target, step
    OUTBOUND_SECONDS.labels(target, program[:32], transaction[:64], status).observe(seconds)


def observe_outcome(source: str, event_type: str, outcome: str, error_class: str | None = None) -> None:
    EVENTS_FINISHED.labels(source, event_type, outcome).inc()
    if error_class and outcome in ("dead", "retry", "waiting"):
        ATTEMPTS_BY_ERROR.labels(event_type, error_class).inc()


def observe_received(source: str, event_type: str, duplicate: bool) -> None:
    if duplicate:
        EVENTS_DUPLICATE.labels(source).inc()
    else:
        EVENTS_RECEIVED.labels(source, event_type).inc()
