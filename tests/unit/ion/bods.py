"""The BOD fixtures on disk (tests/fixtures/bods/), for the unit and integration tests."""

from __future__ import annotations

from pathlib import Path

BODS = Path(__file__).resolve().parents[2] / "fixtures" / "bods"
LIMIT = 5_242_880


def bod(name: str) -> bytes:
    return (BODS / name).read_bytes()
