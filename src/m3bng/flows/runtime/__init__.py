"""The flow runtime: what every flow runs on, in four modules read in this order.

* ``registry``: event type → flow, what the worker looks up for a claimed event;
* ``guards``: the named steps around a BNG → M3 flow (stale check, echo check, version record);
* ``m3``: ``M3Work``, the M3 calls a flow is written with (records checked against M3's field
  metadata, one step row per call, bulk requests, read-backs, cross-references);
* ``context``: ``FlowContext``, the claimed event with its checkpoints, the writes deferred to
  the next durable one, and the step recorder every outbound call runs inside.

An order's walk from the claim to M3 (docs/architecture.md): ``inbox/worker.py`` claims it and
runs the guarded flow → ``guards`` → ``flows/orders.py`` → ``m3.M3Work.send`` (inside
``context.FlowContext.step``) → ``connectors/m3/client.py``.
"""

from m3bng.flows.runtime.context import FlowContext, LeaseLost, StepRecorder
from m3bng.flows.runtime.guards import guarded, is_echo, merged, split_names
from m3bng.flows.runtime.m3 import (
    BULK_SIZE,
    ConflictInM3,
    FlowMappings,
    InvalidPayload,
    M3Work,
    MappedFlow,
    MissingReference,
    UnresolvedOutcome,
    add_or_change,
    already_in_m3,
    note_mapping_version,
    step_name,
)
from m3bng.flows.runtime.registry import Flow, FlowInfo, FlowRegistry

__all__ = [
    "BULK_SIZE",
    "ConflictInM3",
    "Flow",
    "FlowContext",
    "FlowInfo",
    "FlowMappings",
    "FlowRegistry",
    "InvalidPayload",
    "LeaseLost",
    "M3Work",
    "MappedFlow",
    "MissingReference",
    "StepRecorder",
    "UnresolvedOutcome",
    "add_or_change",
    "already_in_m3",
    "guarded",
    "is_echo",
    "merged",
    "note_mapping_version",
    "split_names",
    "step_name",
]
