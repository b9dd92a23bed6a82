"""``m3bng ops …`` end to end: the installed command in a subprocess (real stdout, stderr, exit
code and environment) against the real app with workers and the M3 simulator.

The server runs in the test's event loop, so the command runs as an asyncio subprocess: the loop
keeps serving while the test waits for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from m3bng.cli.ops_client import resolve_token
from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from tests.conftest import LiveServer
from tests.integration.ops.conftest import Ops
from tests.support.ops import ADMIN, READ, REPLAY

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

M3BNG = str(Path(sys.executable).with_name("m3bng"))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def command_env(url: str | None, token: str | None) -> dict[str, str]:
    """The caller's environment without any M3BNG_* setting, plus the ops URL and token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")}
    env["PYTHONUNBUFFERED"] = "1"
    if url:
        env["M3BNG_OPS_URL"] = url
    if token:
        env["M3BNG_OPS_TOKEN"] = token
    return env


async def m3bng_ops(
    *args: str, url: str | None = None, token: str | None = None, cwd: Path, stdin: str | None = None
) -> Run:
    process = await asyncio.create_subprocess_exec(
        M3BNG,
        "ops",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=command_env(url, token),
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@pytest.fixture
def cli(ops: Ops, tmp_path: Path) -> Callable[..., Any]:
    """``await cli(token, *args)`` against the ops fixture's server, in an empty folder."""

    async def run(token: str | None, *args: str, stdin: str | None = None) -> Run:
        return await m3bng_ops(*args, url=ops.server.base_url, token=token, cwd=tmp_path, stdin=stdin)

    return run


async def test_token_new_prints_an_entry_that_authenticates(
    tmp_path: Path, make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    made = await m3bng_ops(
        "--json", "token", "new", "--name", "ci-bot", "--scope", "ops:replay", cwd=tmp_path
    )
    assert made.code == 0, made.stderr
    token, entry = made.json()["token"], made.json()["entry"]
    assert entry.startswith("ci-bot ops:replay sha256:") and token not in entry

    human = await m3bng_ops("token", "new", "--name", "alice", cwd=tmp_path)
    assert human.code == 0 and "alice ops:read sha256:" in human.stdout
    bad = await m3bng_ops("token", "new", "--name", "two words", cwd=tmp_path)
    assert bad.code == 2 and "--name" in bad.stderr

    async with live_server(make_settings(ops_tokens=[entry])) as server:
        me = await m3bng_ops("whoami", url=server.base_url, token=token, cwd=tmp_path)
        assert me.code == 0, me.stderr
        assert me.stdout.split()[:2] == ["ci-bot", "ops:replay"]
        # --token wins over the environment; a wrong one is the API's 401, exit code 1.
        refused = await m3bng_ops(
            "--token", "m3bng_ops_wrong", "whoami", url=server.base_url, token=token, cwd=tmp_path
        )
        assert refused.code == 1
        assert "401" in refused.stderr and "the token is not valid" in refused.stderr

        # With no token at all, a local server's sandbox token file in the working folder is used.
        anonymous = await m3bng_ops("whoami", url=server.base_url, cwd=tmp_path)
        assert anonymous.code == 1 and "--token or M3BNG_OPS_TOKEN" in anonymous.stderr
        (tmp_path / "m3bng-sandbox.ops-token").write_text(token + "\n")
        from_file = await m3bng_ops("--json", "whoami", url=server.base_url, cwd=tmp_path)
        assert from_file.code == 0, from_file.stderr
        assert from_file.json()["name"] == "ci-bot"
    # ... but never sent to another host.
    assert resolve_token(None, "https://m3bng.example.com", cwd=tmp_path) is None
    assert resolve_token(None, "http://127.0.0.1:8080", cwd=tmp_path) == token


async def test_find_show_dlq_replay_discard(ops: Ops, cli: Callable[..., Any]) -> None:
    dead = await ops.dead_order("SO-CLI-1", customer="C-CLI1")
    other = await ops.dead_order("SO-CLI-2", customer="C-CLI2")

    found = await cli(READ, "tx", "find", "SO-CLI-1")
    assert found.code == 0, found.stderr
    rows = [line.split() for line in found.stdout.splitlines()[1:]]
    assert [row[:2] for row in rows] == [[str(dead), "dead"]]

    shown = await cli(READ, "tx", "show", str(dead))
    assert shown.code == 0, shown.stderr
    assert f"transaction {dead}  order.created  dead" in shown.stdout
    assert "dead letter" in shown.stdout and "SO-CLI-1" in shown.stdout

    listed = await cli(READ, "dlq", "list", "--json")
    assert listed.code == 0, listed.stderr
    page = listed.json()
    assert {item["event_id"] for item in page["items"]} == {dead, other}
    assert page["next_cursor"] is None

    # A read token cannot replay: the API's 403 and its message, exit code 1, nothing on stdout.
    refused = await cli(READ, "replay", str(dead))
    assert refused.code == 1
    assert "403" in refused.stderr and "ops:replay" in refused.stderr
    assert refused.stdout == ""

    await ops.add_customer("C-CLI1")
    replayed = await cli(REPLAY, "replay", str(dead), "--reason", "customer created in M3")
    assert replayed.code == 0, replayed.stderr
    assert f"transaction {dead} is pending again (from_failed_step)" in replayed.stdout
    assert (await ops.settle(dead)).status == "done"
    again = await cli(REPLAY, "replay", str(dead))
    assert again.code == 1 and "409" in again.stderr  # done: already applied

    discarded = await cli(REPLAY, "--json", "discard", str(other), "--reason", "order cancelled in BNG")
    assert discarded.code == 0, discarded.stderr
    assert discarded.json()["status"] == "discarded"
    missing_reason = await cli(REPLAY, "discard", str(other))
    assert missing_reason.code == 2 and "--reason" in missing_reason.stderr

    summary = await cli(READ, "dlq", "summary", "--json")
    assert summary.code == 0, summary.stderr
    assert summary.json()["total"] == 0


async def test_bulk_replay_yes_follows_progress_to_the_end(ops: Ops, cli: Callable[..., Any]) -> None:
    dead = [await ops.dead_order(f"SO-BLK-{n}", customer="C-BLK") for n in range(3)]

    declined = await cli(REPLAY, "bulk-replay", "--type", "order.created", stdin="n\n")
    assert declined.code == 1
    assert "3 dead letters match" in declined.stdout and "not started" in declined.stderr

    await ops.add_customer("C-BLK")
    run = await cli(REPLAY, "bulk-replay", "--type", "order.created", "--yes", "--reason", "customers fixed")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "3 dead letters match"
    assert lines[1].startswith("bulk replay ")  # the progress bar (its label, when not a terminal)
    assert ": done, 3 of 3 replayed, 0 skipped (from_failed_step" in lines[-1]
    assert "by replay-user" in lines[-1]
    for event_id in dead:
        assert (await ops.settle(event_id)).status == "done"

    nothing = await cli(REPLAY, "bulk-replay", "--type", "order.created", "--yes")
    assert nothing.code == 0 and "nothing to replay" in nothing.stdout

    bulk_id = lines[-1].split()[2].rstrip(":")
    status = await cli(READ, "--json", "bulk", "status", bulk_id)
    assert status.code == 0 and status.json()["replayed"] == 3


async def test_ctrl_c_during_bulk_replay_cancels_it(ops: Ops, tmp_path: Path) -> None:
    dead = [await ops.dead_order(f"SO-INT-{n}", customer="C-INT") for n in range(4)]
    process = await asyncio.create_subprocess_exec(
        M3BNG,
        "ops",
        "bulk-replay",
        "--type",
        "order.created",
        "--rate",
        "0.2",
        "--yes",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=command_env(ops.server.base_url, REPLAY),
    )
    assert process.stdout is not None
    while True:  # wait for the progress bar, i.e. the bulk replay has started
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line, "the command ended before its progress bar"
        if line.startswith("bulk replay "):
            break
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    last = out.decode().splitlines()[-1]
    assert ": cancelled," in last, last
    bulk_id = last.split()[2].rstrip(":")
    status = (await ops.read.get(f"/api/v1/replays/bulk/{bulk_id}")).json()
    assert status["status"] == "cancelled"
    assert status["replayed"] < len(dead)


async def test_pause_resume_and_status(ops: Ops, cli: Callable[..., Any]) -> None:
    refused = await cli(REPLAY, "pause", "flow", "order.created", "--reason", "checking duplicates")
    assert refused.code == 1 and "ops:admin" in refused.stderr

    paused = await cli(ADMIN, "pause", "flow", "order.created", "--reason", "checking duplicates")
    assert paused.code == 0, paused.stderr
    assert paused.stdout.strip() == "flow order.created paused"
    state = await cli(READ, "--json", "status")
    assert state.code == 0, state.stderr
    flows = {f["event_type"]: f for f in state.json()["flows"]}
    assert flows["order.created"]["paused"] is True
    assert flows["order.created"]["reason"] == "checking duplicates"
    human = await cli(READ, "status")
    assert human.code == 0 and "checking duplicates" in human.stdout and "targets:" in human.stdout

    resumed = await cli(ADMIN, "resume", "flow", "order.created")
    assert resumed.code == 0, resumed.stderr
    state = await cli(READ, "--json", "status")
    flows = {f["event_type"]: f for f in state.json()["flows"]}
    assert flows["order.created"]["paused"] is False

    audit = await cli(ADMIN, "--json", "audit", "--limit", "10")
    assert audit.code == 0, audit.stderr
    actions = [entry["action"] for entry in audit.json()["items"]]
    assert any("pause" in a for a in actions) and any("resume" in a for a in actions)

    wrong_kind = await cli(ADMIN, "pause", "queue", "x", "--reason", "r")
    assert wrong_kind.code == 2


async def test_instances_pause_and_filter(ops: Ops, cli: Callable[..., Any]) -> None:
    unknown = await cli(ADMIN, "pause", "instance", "nope", "--reason", "r")
    assert unknown.code == 1 and "default" in unknown.stderr, unknown.stderr
    paused = await cli(ADMIN, "pause", "instance", "default", "--reason", "shop migration")
    assert paused.code == 0, paused.stderr
    assert paused.stdout.strip() == "instance default paused"
    listed = await cli(READ, "--json", "instances")
    assert listed.code == 0, listed.stderr
    assert [(i["id"], i["paused"]) for i in listed.json()["items"]] == [("default", True)]
    assert (await cli(ADMIN, "resume", "instance", "default")).code == 0
    none = await cli(READ, "--json", "tx", "list", "--instance", "elsewhere")
    assert none.code == 0 and none.json()["items"] == [], none.stderr


async def test_show_lists_fix_suggestions_and_fix_replays_one(ops: Ops, cli: Callable[..., Any]) -> None:
    data = {**sample("order.created"), "OrderID": "SO-CLI-FIX"}
    data["Lines"] = [{"SKU": "BIKE-10O", "Quantity": "1"}]
    event = await ops.settle(await ops.send("order.created", data))
    assert event.status == "dead"

    shown = await cli(READ, "tx", "show", str(event.id))
    assert shown.code == 0, shown.stderr
    assert "fix suggestions (cause: missing_item" in shown.stdout
    assert "1. [" in shown.stdout and "Use item BIKE-100" in shown.stdout
    assert "edit data.Lines[0].SKU: BIKE-10O → BIKE-100" in shown.stdout

    dry = await cli(ADMIN, "fix", str(event.id), "1")
    assert dry.code == 0, dry.stderr
    assert "dry run: replay from_start, nothing replayed" in dry.stdout
    assert "changed data.Lines[0].SKU: BIKE-10O → BIKE-100" in dry.stdout
    assert (await ops.settle(event.id)).status == "dead"

    declined = await cli(ADMIN, "fix", str(event.id), "1", "--replay", stdin="n\n")
    assert declined.code == 1 and "not replayed" in declined.stderr
    masked = await cli(REPLAY, "fix", str(event.id), "1", "--replay", "--yes")
    assert masked.code == 1 and "ops:admin" in masked.stderr

    replayed = await cli(ADMIN, "fix", str(event.id), "1", "--replay", "--yes", "--reason", "SKU typo")
    assert replayed.code == 0, replayed.stderr
    assert f"transaction {event.id} is pending again (from_start)" in replayed.stdout
    assert (await ops.settle(event.id)).status == "done"
