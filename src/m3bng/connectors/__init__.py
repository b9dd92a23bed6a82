"""Clients for the systems m3bng connects, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3bng.connectors.bng.client import BngClient
    from m3bng.connectors.ion.client import IonClient
    from m3bng.connectors.m3.client import M3Client
    from m3bng.connectors.m3.metadata import M3Metadata
    from m3bng.instances import Instance, Instances


@dataclass
class Connectors:
    """What flows use to reach M3 and BNG. A connector that is not configured is None.

    With several BNG instances (instances.py) a flow gets ``for_instance(id)``: that instance's
    BNG client (its own credentials, rate limit and circuit breaker, so one instance's outage or
    429s never slow another) and an M3 client that runs in its company and division while
    sharing the tenant's connection pool, token and concurrency cap with every other instance.
    """

    m3: M3Client | None = None
    # The storefront's lane of M3's concurrency cap (M3BNG_STOREFRONT_M3_SHARE; storefront/):
    # its reads never take a slot order entry needs. None: no M3, or the cap cannot be split.
    m3_storefront: M3Client | None = None
    m3_metadata: M3Metadata | None = None
    bng: BngClient | None = None
    ion: IonClient | None = None  # ConfirmBODs to ION (same .ionapi OAuth as M3)
    extras: dict[str, Any] = field(default_factory=dict)
    instances: Instances | None = None
    instance: Instance | None = None  # the instance these connectors serve (for_instance)
    bng_clients: dict[str, BngClient] = field(default_factory=dict)  # other instances than default
    _views: dict[str, Connectors] = field(default_factory=dict, repr=False)

    def for_instance(self, instance_id: str) -> Connectors:
        """The connectors a flow of ``instance_id`` uses; this object itself for a lone instance."""
        if self.instances is None:
            return self
        view = self._views.get(instance_id)
        if view is None:
            view = self._views[instance_id] = self._view(instance_id)
        return view

    def _view(self, instance_id: str) -> Connectors:
        from m3bng.instances import DEFAULT

        assert self.instances is not None
        instance = self.instances.get(instance_id)
        m3 = self.m3
        if m3 is not None and instance is not None:
            m3 = m3.for_company(instance.cono, instance.divi)
        # An instance no longer configured gets no BNG: its events wait, they are not sent
        # to another instance's BNG.
        bng = self.bng if instance_id == DEFAULT else self.bng_clients.get(instance_id)
        return Connectors(
            m3=m3,
            m3_metadata=self.m3_metadata,
            bng=bng,
            ion=self.ion,
            extras=self.extras,
            instances=self.instances,
            instance=instance,
            bng_clients=self.bng_clients,
            _views=self._views,
        )

    async def aclose(self) -> None:
        if self.m3 is not None:
            await self.m3.aclose()
        if self.bng is not None:
            await self.bng.aclose()
        for client in self.bng_clients.values():
            await client.aclose()
