"""Short retries of one store transaction (store/blips.py), shared by the worker's outcome write
and a flow's step rows: the tries, the waits between them, and what comes out when all fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from m3bng.store import blips
from m3bng.store.blips import ride_out_blips


class Store:
    """Stands in for ``async_sessionmaker``: the first ``failures`` transactions fail to start."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures, self.begun = failures, 0
        self.error = error or ConnectionResetError("the database went away")

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[str]:
        yield "session"

    def begin(self) -> Any:
        self.begun += 1
        if self.begun <= self.failures:
            raise self.error
        return self._session()


async def write(session: Any) -> str:
    return f"written in {session}"


async def test_a_blip_is_ridden_out_with_growing_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Module loggers are cached on first use (configure_logging elsewhere in the suite): a fresh one.
    monkeypatch.setattr(blips, "log", structlog.get_logger(blips.__name__))
    store = Store(failures=2)
    started = time.monotonic()
    with capture_logs() as logs:
        result = await ride_out_blips(store, write, attempts=5, log_as="x.failed", step="head")  # type: ignore[arg-type]
    assert result == "written in session" and store.begun == 3
    assert 0.6 <= time.monotonic() - started < 2.0  # 0.2 s, then 0.4 s
    assert [(e["event"], e["attempt"], e["step"]) for e in logs] == [
        ("x.failed", 1, "head"),
        ("x.failed", 2, "head"),
    ]


async def test_the_last_error_comes_out_after_the_last_try_without_a_last_wait() -> None:
    store = Store(failures=99)
    started = time.monotonic()
    with pytest.raises(ConnectionResetError):
        await ride_out_blips(store, write, attempts=3, log_as="x.failed")  # type: ignore[arg-type]
    assert store.begun == 3
    assert time.monotonic() - started < 1.0  # 0.2 s + 0.4 s between the three tries


async def test_a_cancellation_is_not_retried() -> None:
    store = Store(failures=1, error=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await ride_out_blips(store, write, attempts=5, log_as="x.failed")  # type: ignore[arg-type]
    assert store.begun == 1
