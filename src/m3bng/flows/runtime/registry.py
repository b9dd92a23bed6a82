"""Event type → flow: what the worker looks up for a claimed event, and what ops pause by target."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m3bng.flows.runtime.context import FlowContext

Flow = Callable[["FlowContext"], Awaitable[None]]


@dataclass(frozen=True)
class FlowInfo:
    """What the ops API shows of a registered flow (and pauses by event type or target)."""

    source: str | None
    event_type: str
    target: str | None
    name: str
    also: tuple[str, ...] = ()  # other sources it runs for (sync, reconcile): one row, their events too


class FlowRegistry:
    """Event type → flow. A flow may be registered for one source or for any source."""

    def __init__(self) -> None:
        self._flows: dict[tuple[str | None, str], Flow] = {}
        self._targets: dict[tuple[str | None, str], str | None] = {}
        self._also: dict[tuple[str | None, str], tuple[str, ...]] = {}  # primary → alias sources
        self._aliases: set[tuple[str | None, str]] = set()

    def register(
        self,
        event_type: str,
        flow: Flow,
        *,
        source: str | None = None,
        target: str | None = None,
        also: tuple[str, ...] = (),
    ) -> None:
        """``target``: the system the flow writes to (m3, bng, ion); pausing it pauses the flow.
        ``also``: other sources whose events of this type the same flow runs (the initial load,
        reconciliation); they share its row in the ops views."""
        keys = [(source, event_type), *((alias, event_type) for alias in also)]
        for key in keys:
            if key in self._flows:
                raise ValueError(f"a flow is already registered for {event_type!r} (source {key[0]!r})")
        for key in keys:
            self._flows[key] = flow
            self._targets[key] = target
        self._also[(source, event_type)] = also
        self._aliases.update(keys[1:])

    def flow(
        self, event_type: str, *, source: str | None = None, target: str | None = None
    ) -> Callable[[Flow], Flow]:
        def decorator(fn: Flow) -> Flow:
            self.register(event_type, fn, source=source, target=target)
            return fn

        return decorator

    def get(self, source: str, event_type: str) -> Flow | None:
        return self._flows.get((source, event_type)) or self._flows.get((None, event_type))

    def describe(self) -> list[FlowInfo]:
        return [
            FlowInfo(
                source,
                event_type,
                self._targets.get((source, event_type)),
                getattr(flow, "__name__", "flow"),
                self._also.get((source, event_type), ()),
            )
            for (source, event_type), flow in sorted(
                self._flows.items(), key=lambda kv: (kv[0][1], kv[0][0] or "")
            )
            if (source, event_type) not in self._aliases
        ]

    def event_types_for_target(self, target: str) -> set[str]:
        return {event_type for (_source, event_type), t in self._targets.items() if t == target}

    def __iter__(self) -> Iterator[tuple[str | None, str]]:
        return iter(self._flows)

    def __len__(self) -> int:
        return len(self._flows)
