"""The inventory poller: stock balances for tenants whose M3 publishes no inventory BOD.

Every ``M3BNG_INVENTORY_POLL_SECONDS`` it lists the balances of each configured warehouse with the
``list`` call of ``mappings/inventory_poll.yaml`` (MMS080MI LstItemWarehous, the whole list in one call), and
compares each row with the snapshot kept in the store. Only rows that changed become events
(source ``poller``, type ``inventory.balance``), which the same mapping's ``upsert`` request
sends to BNG through the inbox like any BOD: retried, ordered per item and warehouse, visible
with its steps.

Each changed row's event and its new snapshot are written in one transaction, so a crash or
restart never resends what was already enqueued and never loses a change it saw. A lease row
(``scheduler_leases``) makes one process poll per interval however many run on the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors.m3.client import M3Client
from m3bng.errors import M3bngError
from m3bng.inbox.ingest import Notifier
from m3bng.instances import Instances
from m3bng.mapping import Mapping
from m3bng.ops.scheduler import ScheduledJob, take_turn
from m3bng.store import queue, snapshots
from m3bng.store.queue import NewEvent
from m3bng.store.sql import utcnow

log = structlog.get_logger(__name__)

JOB = "inventory_poll"
EVENT_TYPE = "inventory.balance"


@dataclass(frozen=True)
class PollResult:
    warehouses: int
    rows: int
    changed: int


class InventoryPoller:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        m3: M3Client,
        mapping: Mapping | Callable[[], Mapping],
        notifier: Notifier | None = None,
        *,
        owner: str | None = None,
        instances: Instances | None = None,
    ) -> None:
        """``instances``: a warehouse's balances go to each BNG instance whose routing selects
        the warehouse (``locations``, or ``all``), an event each (docs/instances.md).
        ``mapping``: the mapping, or how to get the live one at each poll, so a version published
        in the studio is polled with from the next pass on."""
        self.settings, self.sessions, self.m3 = settings, sessions, m3
        self._mapping = mapping
        self.instances = instances
        self.notifier = notifier
        self.owner = owner or f"poller-{uuid.uuid4().hex[:12]}"
        self.interval = float(settings.inventory_poll_seconds or 300)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll whenever this process holds the lease and the interval has passed."""
        job = ScheduledJob(
            JOB, self.interval, self.sessions, self._poll_and_log, owner=self.owner, expected=(M3bngError,)
        )
        await job.run(stop)  # M3 down or refusing (M3bngError): tried again next interval

    async def _take_turn(self) -> bool:
        return await take_turn(self.sessions, JOB, self.owner, self.interval)

    async def _poll_and_log(self) -> None:
        result = await self.poll_once()
        log.info("poller.done", job=JOB, **result.__dict__)

    async def poll_once(self) -> PollResult:
        """One pass over every configured warehouse; returns how many balances changed."""
        rows = changed = 0
        for warehouse in self.settings.inventory_poll_warehouses:
            balances = await self._list(warehouse)
            rows += len(balances)
            changed += await self._enqueue_changes(warehouse, balances)
        return PollResult(len(self.settings.inventory_poll_warehouses), rows, changed)

    @property
    def mapping(self) -> Mapping:
        return self._mapping() if callable(self._mapping) else self._mapping

    async def _list(self, warehouse: str) -> list[dict[str, str]]:
        return await list_balances(self.m3, self.mapping, warehouse)

    async def _enqueue_changes(self, warehouse: str, balances: list[dict[str, str]]) -> int:
        async with self.sessions() as session:
            known = await snapshots.known_digests(session, warehouse)
        now = utcnow()
        changed = [
            (row, digest) for row in balances if known.get(row["ITNO"]) != (digest := balance_digest(row))
        ]
        routed = self.instances.routed(None, warehouse) if self.instances is not None else []
        for start in range(0, len(changed), 200):
            async with self.sessions.begin() as session:
                for row, digest in changed[start : start + 200]:
                    await enqueue_balance(session, warehouse, row, digest, now, instances=routed)
        if changed and self.notifier is not None:
            self.notifier.notify()
        return len(changed)


async def list_balances(m3: M3Client, mapping: Mapping, warehouse: str) -> list[dict[str, str]]:
    """The warehouse's whole list in one call: LstItemWarehous takes no start item to page by,
    so a page of ``maxrecs`` rows could never be followed by the next."""
    spec = mapping.call("list")
    [record] = mapping.render("list", {}, {"warehouse": warehouse})
    result = await m3.execute(spec.program, spec.transaction, record, maxrecs=0)
    return [r for r in result.records if r.get("WHLO", warehouse) == warehouse and r.get("ITNO")]


async def enqueue_balance(
    session: AsyncSession,
    warehouse: str,
    row: dict[str, str],
    digest: str,
    now: datetime,
    *,
    source: str = "poller",
    instances: Sequence[str] = (),
    snapshot: bool = True,
) -> int:
    """The balance's event and (``snapshot``) its new snapshot; the event id. Reconciliation's fix enqueues
    through here too (source ``reconcile``): the same key orders it among the poller's events,
    and the snapshot then holds what was sent, so the poller does not send it again.
    ``instances``: an event for each of these BNG instances (none given: ``default``).
    ``snapshot`` False: the snapshot is left alone (a load or fix for one instance other than
    default must not make the poller skip a change it has not yet sent to the others)."""
    item = row["ITNO"]
    new = NewEvent(
        source=source,
        # The poll time makes a balance that returns to an earlier value a new event too.
        external_id=f"{warehouse}:{item}:{now.strftime('%Y%m%dT%H%M%S%f')}:{digest[:12]}",
        event_type=EVENT_TYPE,
        payload={"data": row, "poll": {"warehouse": warehouse, "polled_at": now.isoformat()}},
        business_key=f"inventory:{warehouse}:{item}",
        correlation_id=uuid.uuid4().hex,
    )
    news = [replace(new, instance=i) for i in instances] or [new]
    [(event_id, _created), *_] = await queue.insert_events_once(session, news)
    if not snapshot:
        return event_id
    await snapshots.put_snapshot(
        session, warehouse=warehouse, item=item, balance=row, digest=digest, polled_at=now
    )
    return event_id


def balance_digest(row: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
