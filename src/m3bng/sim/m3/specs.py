"""The simulated tenant's MI transactions and their fields, loaded from ``mi_metadata.json``.

Nothing here is written by hand: the data file is Infor's published MRS001MI metadata of one
tenant, converted by ``build_metadata.py`` (where it came from and what was derived is in the
file's ``source`` and in docs/m3.md). The simulator validates input, answers MRS001MI and shapes
its answers from these lists, so a mapping that sends a field M3 does not have, or misses a
mandatory one, fails here as it would on a real tenant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("mi_metadata.json")


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # A alphanumeric, N numeric, D date (yyyyMMdd)
    length: int | None  # None: no public source gives it (the simulator does not check it)
    mandatory: bool = False
    description: str = ""


@dataclass(frozen=True)
class Transaction:
    program: str
    name: str
    description: str
    inputs: dict[str, Field]
    outputs: dict[str, Field]
    unverified: bool = False


@cache
def load(path: Path = DATA_FILE) -> dict[str, dict[str, Transaction]]:
    """Program → transaction name → Transaction, as the data file lists them."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    programs: dict[str, dict[str, Transaction]] = {}
    for program, pdata in data["programs"].items():
        programs[program] = {
            name: Transaction(
                program=program,
                name=name,
                description=tdata["description"],
                inputs={
                    f["name"]: Field(f["name"], f["type"], f["length"], f["mandatory"], f["description"])
                    for f in tdata["inputs"]
                },
                outputs={
                    f["name"]: Field(f["name"], f["type"], f["length"], False, f["description"])
                    for f in tdata["outputs"]
                },
                unverified=bool(tdata.get("unverified")),
            )
            for name, tdata in pdata["transactions"].items()
        }
    return programs


PROGRAMS = load()
