"""M3's own description of its fields, used to check a record before it is sent.

A record that is too long or misses a mandatory field fails in M3 anyway, but only after a
round trip, possibly half-way through a multi-step flow (an order head created, its lines
refused). Checking against MRS001MI LstFields first turns that into a clean data error before
anything is written. The answer changes only when M3 is upgraded or modified, so it is cached
in the store for ``M3BNG_M3_METADATA_TTL_HOURS``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.m3.client import M3Client, MiValue, format_value
from m3bng.store import metadata as store
from m3bng.store.sql import utcnow

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_MANDATORY_FLAGS = {"1", "X", "Y", "YES", "TRUE", "R"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    length: int  # 0: M3 gave no length (nothing is checked or truncated)
    type: str  # A alphanumeric, N numeric, D date (yyyyMMdd)
    mandatory: bool = False
    description: str = ""


@dataclass(frozen=True)
class FieldProblem:
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


def check_record(
    program: str, transaction: str, specs: Mapping[str, FieldSpec], record: Mapping[str, MiValue]
) -> list[FieldProblem]:
    """Every way ``record`` would be refused by M3 according to ``specs`` (empty list: it fits)."""
    problems: list[FieldProblem] = []
    values = {k: format_value(v) for k, v in record.items()}
    for name, spec in specs.items():
        if spec.mandatory and not (values.get(name) or "").strip():
            problems.append(FieldProblem(name, f"is mandatory in {program}/{transaction}"))
    for name, value in values.items():
        if value is None:
            continue
        if name not in specs:
            problems.append(FieldProblem(name, f"is not an input field of {program}/{transaction}"))
            continue
        spec = specs[name]
        if spec.type == "N":
            if value.strip() and not _NUMBER.match(value.strip()):
                problems.append(
                    FieldProblem(name, f"must be a number with '.' as decimal point, got {value!r}")
                )
            digits = len(value.strip().lstrip("-").replace(".", ""))
            if spec.length and digits > spec.length:
                problems.append(FieldProblem(name, f"has {digits} digits; M3 allows {spec.length}"))
        elif spec.type == "D":
            if value.strip() and not _is_date(value.strip()):
                problems.append(FieldProblem(name, f"must be a date as yyyyMMdd, got {value!r}"))
        elif spec.length and len(value) > spec.length:
            problems.append(FieldProblem(name, f"is {len(value)} characters; M3 allows {spec.length}"))
    return problems


def _is_date(value: str) -> bool:
    if len(value) != 8 or not value.isdigit():
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def parse_lst_fields(records: list[dict[str, str]]) -> dict[str, FieldSpec]:
    specs = {}
    for row in records:
        name = row.get("FLNM", "").strip()
        if not name:
            continue
        length = row.get("LENG", "0").strip() or "0"
        specs[name] = FieldSpec(
            name=name,
            length=int(float(length)),
            type=(row.get("TYPE", "A").strip() or "A")[0].upper(),
            mandatory=row.get("MAND", "").strip().upper() in _MANDATORY_FLAGS,
            description=row.get("FLDS", "").strip(),
        )
    return specs


class M3Metadata:
    def __init__(
        self, client: M3Client, sessions: async_sessionmaker[AsyncSession], *, ttl_hours: float = 24.0
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.ttl = timedelta(hours=ttl_hours)
        self._memory: dict[tuple[str, str, str], tuple[datetime, dict[str, FieldSpec]]] = {}
        self._loading: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def fields(self, program: str, transaction: str, direction: str = "I") -> dict[str, FieldSpec]:
        key = (program, transaction, direction)
        cached = self._memory.get(key)
        if cached and utcnow() - cached[0] < self.ttl:
            return cached[1]
        # One load per key at a time: a worker starting with eight flows in flight used to ask
        # the store and M3 eight times for the same transaction's fields.
        async with self._loading.setdefault(key, asyncio.Lock()):
            cached = self._memory.get(key)
            now = utcnow()
            if cached and now - cached[0] < self.ttl:
                return cached[1]
            return await self._refresh(key, now)

    async def _refresh(self, key: tuple[str, str, str], now: datetime) -> dict[str, FieldSpec]:
        program, transaction, direction = key
        stored = await self._load(key)
        if stored and now - stored[0] < self.ttl:
            self._memory[key] = stored
            return stored[1]
        result = await self.client.execute(
            "MRS001MI", "LstFields", {"MINM": program, "TRNM": transaction, "TRTP": direction}, maxrecs=0
        )
        specs = parse_lst_fields(result.records)
        await self._save(key, specs, now)
        self._memory[key] = (now, specs)
        return specs

    async def check(
        self, program: str, transaction: str, record: Mapping[str, MiValue]
    ) -> list[FieldProblem]:
        return check_record(program, transaction, await self.fields(program, transaction, "I"), record)

    async def _load(self, key: tuple[str, str, str]) -> tuple[datetime, dict[str, FieldSpec]] | None:
        async with self.sessions() as session:
            row = await store.get_fields(session, *key)
        if row is None:
            return None
        return row.fetched_at, {f["name"]: FieldSpec(**f) for f in row.fields}

    async def _save(self, key: tuple[str, str, str], specs: dict[str, FieldSpec], now: datetime) -> None:
        async with self.sessions.begin() as session:
            await store.put_fields(session, *key, [asdict(s) for s in specs.values()], now)
