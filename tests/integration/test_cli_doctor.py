"""`m3bng init` then `m3bng doctor`, as an operator runs them: a deployment folder, its .env
filled in, the M3 and BNG simulators as real HTTP servers, a PostgreSQL store, and `doctor` run
as its own process from the folder. Every check passes; breaking one piece fails its check, with
the fix."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from m3bng.cli import app
from m3bng.ops.tokens import hash_token, new_token
from m3bng.sim.bng import DEFAULT_API_KEY
from m3bng.sim.m3 import M3SimConfig, create_app, write_ionapi
from tests.conftest import AsgiServer, free_port
from tests.support import postgres
from tests.support.bng import BngSim, running_bng_sim
from tests.support.webhooks import TEST_SECRET


@dataclass
class Deployment:
    folder: Path
    m3: AsgiServer
    bng: BngSim
    database: str
    extra_databases: list[str] = field(default_factory=list)

    def set_env(self, name: str, value: str) -> None:
        """Edit a line of .env as a person would: `M3BNG_NAME=value`."""
        env = self.folder / ".env"
        text, count = re.subn(
            rf"^(# )?M3BNG_{name}=.*$", lambda _: f"M3BNG_{name}={value}", env.read_text(), flags=re.M
        )
        assert count == 1, name
        env.write_text(text)

    async def doctor(self) -> tuple[int, dict[str, Any]]:
        """`m3bng doctor --json` from the folder, in a clean environment (only .env counts)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "m3bng",
            "doctor",
            "--json",
            cwd=self.folder,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        try:
            report: dict[str, Any] = json.loads(out)
        except ValueError:
            raise AssertionError(f"not JSON: {out!r} {err!r}") from None
        return process.returncode, report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


@pytest.fixture
async def deployment(tmp_path: Path, pg_template: str) -> AsyncIterator[Deployment]:
    """`m3bng init`, then .env filled in for the simulators and a migrated PostgreSQL store."""
    folder = tmp_path / "prod"
    result = CliRunner().invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    database = postgres.unique_name("m3bng_doctor")
    await postgres.create_database(database, template=pg_template)
    config = M3SimConfig()
    extras: list[str] = []
    try:
        async with AsgiServer(create_app(config)) as m3, running_bng_sim() as bng:
            write_ionapi(folder / "m3bng.ionapi", m3.base_url, config)
            deployment = Deployment(folder, m3, bng, database, extras)
            deployment.set_env("DATABASE_URL", postgres.async_url(database))
            deployment.set_env("WEBHOOK_SECRETS", TEST_SECRET)
            deployment.set_env("BNG_BASE_URL", bng.url)
            deployment.set_env("BNG_API_KEY", DEFAULT_API_KEY)
            deployment.set_env("ION_INBOUND_TOKEN", new_token())
            deployment.set_env("OPS_TOKENS", f"admin ops:admin {hash_token(new_token())}")
            deployment.set_env("ALERT_WEBHOOK_URL", "https://hooks.example.invalid/m3bng")
            yield deployment
    finally:
        for name in [database, *extras]:
            await postgres.drop_database(name)


async def test_a_filled_in_deployment_passes_every_check(deployment: Deployment) -> None:
    code, report = await deployment.doctor()
    checks = by_name(report)
    assert code == 0, report
    assert report["ok"] is True
    expected = {"settings", "store", "m3", "clock", "mappings", "mappings_m3", "bng"}
    expected |= {"ion_inbound", "ion_outbound", "webhooks"}
    assert set(checks) == expected
    assert {c["status"] for c in checks.values()} == {"ok"}, report


async def _wrong_m3_secret(d: Deployment) -> None:
    ionapi = d.folder / "m3bng.ionapi"
    data = json.loads(ionapi.read_text())
    data["cs"] = "not-the-secret"
    ionapi.write_text(json.dumps(data))


async def _bng_down(d: Deployment) -> None:
    d.set_env("BNG_BASE_URL", f"http://127.0.0.1:{free_port()}")


async def _bng_key_wrong(d: Deployment) -> None:
    d.set_env("BNG_API_KEY", "not-the-key")


async def _no_webhook_secret(d: Deployment) -> None:
    d.set_env("WEBHOOK_SECRETS", "")


async def _no_ion_token(d: Deployment) -> None:
    d.set_env("ION_INBOUND_TOKEN", "")


async def _unmigrated_store(d: Deployment) -> None:
    name = d.database + "_empty"
    await postgres.create_database(name)
    d.extra_databases.append(name)
    d.set_env("DATABASE_URL", postgres.async_url(name))


async def _store_down(d: Deployment) -> None:
    d.set_env("DATABASE_URL", f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")


async def _field_m3_does_not_list(d: Deployment) -> None:
    customer = d.folder / "mappings" / "customer_sync.yaml"
    text = customer.read_text()
    marker = "      CUTM: {var: customer_template}\n"
    assert marker in text
    customer.write_text(text.replace(marker, marker + "      CUCD: SEK\n", 1))


async def _broken_mapping_file(d: Deployment) -> None:
    (d.folder / "mappings" / "order_to_cash.yaml").write_text("flow: [unclosed\n")


BREAKAGES: dict[str, tuple[Callable[[Deployment], Awaitable[None]], str, str]] = {
    # what is broken: (how, the check that fails, a word of its fix)
    "wrong M3 secret": (_wrong_m3_secret, "m3", ".ionapi"),
    "BNG down": (_bng_down, "bng", "M3BNG_BNG_BASE_URL"),
    "BNG key refused": (_bng_key_wrong, "bng", "M3BNG_BNG_API_KEY"),
    "no webhook secret": (_no_webhook_secret, "webhooks", "M3BNG_WEBHOOK_SECRETS"),
    "no ION inbound token": (_no_ion_token, "ion_inbound", "M3BNG_ION_INBOUND_TOKEN"),
    "unmigrated store": (_unmigrated_store, "store", "m3bng db upgrade"),
    "store down": (_store_down, "store", "M3BNG_DATABASE_URL"),
    "a field M3 does not list": (_field_m3_does_not_list, "mappings_m3", "mapping"),
    "a broken mapping file": (_broken_mapping_file, "mappings", "mappings check"),
}


@pytest.mark.parametrize("broken", list(BREAKAGES))
async def test_each_broken_piece_fails_its_check_with_the_fix(deployment: Deployment, broken: str) -> None:
    breakage, name, fix_word = BREAKAGES[broken]
    await breakage(deployment)
    code, report = await deployment.doctor()
    checks = by_name(report)
    assert code == 1, report
    assert report["ok"] is False
    assert checks[name]["status"] == "fail", report
    assert fix_word in checks[name]["fix"], checks[name]
    # Only the broken piece (and what depends on it) fails.
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert failed == {name}, report
    if broken == "a field M3 does not list":
        assert "CUCD is not an input field of CRS610MI/Add" in checks[name]["detail"]


async def test_every_bng_instance_is_checked(deployment: Deployment) -> None:
    """With an instances file: the file and its secrets (from .env), each instance's BNG, and M3
    in each instance's company; a broken instance fails its own check only."""
    async with running_bng_sim() as us_bng:
        (deployment.folder / "instances.yaml").write_text(
            "instances:\n"
            f"  us:\n    bng_base_url: {us_bng.url}\n    cono: 100\n    divi: AAA\n"
            f"  eu:\n    bng_base_url: {us_bng.url}\n    cono: 300\n"
        )
        deployment.set_env("INSTANCES_FILE", "instances.yaml")
        with (deployment.folder / ".env").open("a") as env:
            for instance, key in (("US", DEFAULT_API_KEY), ("EU", "not-the-key")):
                env.write(f"M3BNG_INSTANCE_{instance}_WEBHOOK_SECRETS={TEST_SECRET}\n")
                env.write(f"M3BNG_INSTANCE_{instance}_BNG_API_KEY={key}\n")
        code, report = await deployment.doctor()
    checks = by_name(report)
    assert code == 1, report
    assert checks["instances"]["status"] == "ok" and "default, us, eu" in checks["instances"]["detail"]
    assert (checks["bng:us"]["status"], checks["m3:us"]["status"]) == ("ok", "ok"), report
    # eu: its key is refused, and M3 has no company 300.
    assert checks["bng:eu"]["status"] == "fail" and "M3BNG_INSTANCE_EU_BNG_API_KEY" in checks["bng:eu"]["fix"]
    assert checks["m3:eu"]["status"] == "fail" and "cono/divi of eu" in checks["m3:eu"]["fix"]
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} == {"bng:eu", "m3:eu"}
