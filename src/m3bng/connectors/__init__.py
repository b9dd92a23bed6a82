"""Clients for the systems m3bng connects, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3bng.connectors.bng.client import BngClient
    from m3bng.connectors.ion.client import IonClient
    from m3bng.connectors.m3.client import M3Client
    from m3bng.connectors.m3.metadata import M3Metadata


@dataclass
class Connectors:
    """What flows use to reach M3 and BNG. A connector that is not configured is None."""

    m3: M3Client | None = None
    m3_metadata: M3Metadata | None = None
    bng: BngClient | None = None
    ion: IonClient | None = None  # ConfirmBODs to ION (same .ionapi OAuth as M3)
    extras: dict[str, Any] = field(default_factory=dict)

    async def aclose(self) -> None:
        if self.m3 is not None:
            await self.m3.aclose()
        if self.bng is not None:
            await self.bng.aclose()
