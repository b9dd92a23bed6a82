"""Which BNG instance(s) an M3 change goes to (instances.py).

Decided when the BOD is stored, so that each instance gets an event of its own: its own retries,
dead letters, pause switch and BNG circuit breaker, and one instance's outage never holds back
another's copy of the same change.

* A document that belongs to a BNG object (a mapping with ``require_link``: an order's status)
  goes back to the instance(s) whose cross-reference links it, narrowed to the instance(s) of
  the BOD's company when two companies' order numbers coincide.
* Master data (items, stock, customers, suppliers, invoices) goes to every instance whose
  routing rule selects the BOD's accounting entity or location (``Instance.receives``).

Nothing routed is still stored, for the instance ``default``: the event is durable and visible,
and the flow closes it as ``skipped`` (not routed) unless the default instance takes it.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.instances import DEFAULT, Instances
from m3bng.mapping import Mapping, MappingError
from m3bng.store import documents
from m3bng.store.db import single_statement


class BodRouter:
    def __init__(
        self,
        instances: Instances | None,
        mappings: MappingABC[str, Mapping],
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.instances = instances if instances is not None and instances.several else None
        self.sessions = sessions
        self.by_type = {
            trigger: mapping
            for mapping in mappings.values()
            if mapping.spec.target == "bng" and mapping.spec.event_source == "ion"
            for trigger in mapping.spec.trigger
        }

    async def instances_for(self, bod_type: str, payload: dict[str, Any]) -> list[str]:
        """The instances a stored BOD's event is made for, ``default`` when nothing decides."""
        if self.instances is None:
            return [DEFAULT]
        bod = payload.get("bod") or {}
        mapping = self.by_type.get(bod_type)
        if mapping is not None and mapping.option("require_link", False) and mapping.option("entity"):
            linked = await self._linked(mapping, payload, bod)
            return linked or [DEFAULT]
        routed = self.instances.routed(bod.get("accounting_entity"), bod.get("location"))
        return routed or [DEFAULT]

    async def _linked(self, mapping: Mapping, payload: dict[str, Any], bod: dict[str, Any]) -> list[str]:
        assert self.instances is not None
        data = payload.get("data")
        if not isinstance(data, dict):
            return []
        try:
            m3_key = mapping.key("M3Key", data, {"bod": bod})
        except MappingError:
            return []
        async with single_statement(self.sessions) as session:
            linked = await documents.instances_of_m3(session, str(mapping.option("entity")), m3_key)
        linked = [i for i in linked if i in self.instances]
        if len(linked) > 1 and bod.get("cono") is not None:
            # The same order number in two companies: the BOD's company tells them apart; an
            # instance with no company set runs in the M3 service account's own.
            conos = {i: found.cono for i in linked if (found := self.instances.get(i)) is not None}
            same = [i for i in linked if conos.get(i) == bod.get("cono")]
            linked = same or [i for i in linked if conos.get(i) is None] or linked
        return linked


def routed_to(instances: Instances | None, instance_id: str, bod: MappingABC[str, Any] | None) -> bool:
    """Whether an instance takes M3 master data of this BOD (checked again when the event runs:
    a routing rule may have changed since it was stored)."""
    if instances is None or bod is None:
        return True
    instance = instances.get(instance_id)
    if instance is None:
        return False
    return instance.receives(bod.get("accounting_entity"), bod.get("location"))
