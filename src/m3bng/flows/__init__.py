"""Business flows, one module per flow; ``default_registry()`` wires them to event types.

The BNG → M3 and M3 → BNG flows are added by their own modules as they are built. An event whose
type has no flow is dead-lettered with the reason ``no_flow`` (and can be replayed once a flow
exists), never silently dropped.
"""

from __future__ import annotations

from m3bng.inbox.flows import FlowRegistry


def default_registry() -> FlowRegistry:
    return FlowRegistry()
