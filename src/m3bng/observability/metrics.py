"""Prometheus metrics. Names are part of the contract with dashboards: change them deliberately.

Label values are bounded sets (programs and transactions come from mapping files, outcomes from
the error classes), so cardinality stays small.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

M3_CALLS = Counter(
    "m3bng_m3_calls_total",
    "MI calls by program, transaction and outcome class",
    ["program", "transaction", "outcome"],
)
M3_CALL_SECONDS = Histogram(
    "m3bng_m3_call_duration_seconds",
    "Latency of MI calls, including the wait for the answer",
    ["program", "transaction"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CIRCUIT_OPEN = Gauge("m3bng_circuit_open", "1 while the circuit to a target is open or half-open", ["target"])


def observe_m3_call(program: str, transaction: str, outcome: str, seconds: float) -> None:
    M3_CALLS.labels(program, transaction, outcome).inc()
    M3_CALL_SECONDS.labels(program, transaction).observe(seconds)


def set_circuit_state(target: str, state: str) -> None:
    CIRCUIT_OPEN.labels(target).set(0 if state == "closed" else 1)
