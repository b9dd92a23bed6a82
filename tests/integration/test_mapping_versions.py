"""Mapping versions in the store (ops/mapping_versions.py): the start-up import of the files,
conflicts with the studio, drafts, publish, rollback, export and bundles, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.mapping import load_mapping
from m3bng.ops import mapping_versions as versions
from m3bng.store import mapping_versions as store
from m3bng.store.db import create_engine, session_factory
from tests.conftest import REPO_ROOT

Sessions = async_sessionmaker[AsyncSession]
ORDER = "order_to_cash"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A mappings folder of two flows, one with lookup tables."""
    target = tmp_path / "mappings"
    target.mkdir()
    for name in ("order_to_cash.yaml", "customer_sync.yaml"):
        shutil.copy(REPO_ROOT / "mappings" / name, target / name)
    shutil.copytree(REPO_ROOT / "mappings" / "lookups", target / "lookups")
    return target


def edit(path: Path, old: str, new: str) -> str:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path.read_text(encoding="utf-8")


async def live(sessions: Sessions, flow: str = ORDER) -> store.Version:
    async with sessions() as session:
        found = await store.live_version(session, flow)
    assert found is not None
    return found


async def test_startup_import_new_unchanged_and_changed_files(sessions: Sessions, folder: Path) -> None:
    first = await versions.import_files(sessions, folder)
    assert sorted(first.imported) == ["customer_sync v1", "order_to_cash v1"]
    v1 = await live(sessions)
    assert (v1.source, v1.state, v1.version) == ("file", "live", 1)
    # The same hash as the file's Mapping: an event's mapping_hash finds its version.
    assert v1.content_hash == load_mapping(folder / "order_to_cash.yaml").content_hash
    async with sessions() as session:
        assert (await store.find_by_hash(session, v1.content_hash)) == v1

    again = await versions.import_files(sessions, folder)
    assert again.imported == [] and sorted(again.unchanged) == ["customer_sync v1", "order_to_cash v1"]

    edit(folder / "order_to_cash.yaml", 'warehouse: "100"', 'warehouse: "200"')
    changed = await versions.import_files(sessions, folder)
    assert changed.imported == ["order_to_cash v2"]
    async with sessions() as session:
        states = [(v.version, v.state) for v in await store.list_versions(session, ORDER)]
    assert states == [(2, "live"), (1, "superseded")]
    _mark, mappings = await versions.load_live(sessions, folder)
    assert mappings[ORDER].spec.vars["warehouse"] == "200"
    assert mappings["customer_sync"].tables  # lookup tables read from the folder

    (folder / "customer_sync.yaml").unlink()  # a file removed: its flow is removed
    removed = await versions.import_files(sessions, folder)
    assert removed.retired == ["customer_sync v1"]
    _mark, mappings = await versions.load_live(sessions, folder)
    assert sorted(mappings) == [ORDER]


async def test_file_changed_after_a_studio_publish_is_a_conflict(sessions: Sessions, folder: Path) -> None:
    await versions.import_files(sessions, folder)
    text = (folder / "order_to_cash.yaml").read_text(encoding="utf-8").replace('"A01"', '"A02"')
    draft = await versions.create_draft(sessions, folder, flow=ORDER, text=text, author="alice")
    assert (draft.state, draft.source, draft.version) == ("draft", "studio", 2)
    await versions.publish(sessions, folder, flow=ORDER, version=2, comment="order type A02", actor="alice")

    # The file did not change since it was imported: the studio's version is newer, kept.
    report = await versions.import_files(sessions, folder)
    assert report.kept == ["order_to_cash v2"] and not report.conflicts

    edit(folder / "order_to_cash.yaml", 'warehouse: "100"', 'warehouse: "300"')
    report = await versions.import_files(sessions, folder)
    assert report.conflicts == [ORDER] and not report.imported
    current = await live(sessions)
    assert (current.version, current.source) == (2, "studio")  # never a silent overwrite
    async with sessions() as session:
        [summary] = [f for f in await versions.flows(session) if f.flow == ORDER]
    assert summary.conflict is not None
    assert (summary.conflict.live_version, summary.conflict.file_version) == (2, 1)

    # Someone decides for the studio: the live versions go back to the files.
    await versions.export_files(sessions, folder)
    report = await versions.import_files(sessions, folder)
    assert not report.conflicts and "order_to_cash v2" in report.unchanged
    async with sessions() as session:
        assert ORDER not in await store.conflicts(session)


async def test_processes_starting_at_once_make_one_version(db_url: str, folder: Path) -> None:
    engines = [create_engine(Settings(database_url=db_url)) for _ in range(4)]
    try:
        reports = await asyncio.gather(*(versions.import_files(session_factory(e), folder) for e in engines))
        sessions = session_factory(engines[0])
        async with sessions() as session:
            found = await store.list_versions(session, ORDER)
        assert [(v.version, v.state) for v in found] == [(1, "live")]
        assert sorted(r for report in reports for r in report.imported) == [
            "customer_sync v1",
            "order_to_cash v1",
        ]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_publication_the_flows_cannot_run_with_is_refused(sessions: Sessions, folder: Path) -> None:
    """Checked before it goes live: a trigger another flow handles, or a registry that cannot be
    built (``check``), is a 422 at publish, not a failure in every process that reloads."""
    await versions.import_files(sessions, folder)
    text = (folder / "order_to_cash.yaml").read_text(encoding="utf-8")
    clash = text.replace("trigger: [order.created]", "trigger: [order.created, customer.created]")
    await versions.create_draft(sessions, folder, flow=ORDER, text=clash, author="a")
    with pytest.raises(versions.InvalidMapping, match=r"trigger 'customer\.created' is already handled"):
        await versions.publish(sessions, folder, flow=ORDER, version=2, comment="x", actor="a")

    def refuse(_mappings: object) -> None:
        from m3bng.mapping import MappingFileError

        raise MappingFileError([f"{folder}/order_to_cash.yaml: flow 'order_to_cash' is not one m3bng knows"])

    await versions.create_draft(sessions, folder, flow=ORDER, text=text + "\n", author="a")
    with pytest.raises(versions.InvalidMapping) as refused:
        await versions.publish(sessions, folder, flow=ORDER, version=3, comment="x", actor="a", check=refuse)
    assert refused.value.problems == ["order_to_cash.yaml: flow 'order_to_cash' is not one m3bng knows"]
    assert (await live(sessions)).version == 1


async def test_drafts_are_validated_and_rollback_publishes_a_copy(sessions: Sessions, folder: Path) -> None:
    await versions.import_files(sessions, folder)
    text = (folder / "order_to_cash.yaml").read_text(encoding="utf-8")
    with pytest.raises(versions.InvalidMapping) as bad:
        await versions.create_draft(
            sessions,
            folder,
            flow=ORDER,
            text=text.replace("ORTP: {var: order_type}", "ORTP: {var: nope}"),
            author="a",
        )
    assert "order_to_cash.yaml:" in bad.value.message and "unknown var 'nope'" in bad.value.message
    assert str(folder) not in bad.value.message  # names the file, not the server's path
    with pytest.raises(versions.InvalidMapping, match="names flow 'order_to_cash', not 'payment'"):
        await versions.create_draft(sessions, folder, flow="payment", text=text, author="a")

    changed = text.replace('warehouse: "100"', 'warehouse: "200"')
    await versions.create_draft(sessions, folder, flow=ORDER, text=changed, author="a")
    await versions.publish(sessions, folder, flow=ORDER, version=2, comment="wh 200", actor="alice")
    with pytest.raises(versions.NotADraft):
        await versions.publish(sessions, folder, flow=ORDER, version=2, comment="again", actor="alice")
    back = await versions.rollback(
        sessions, folder, flow=ORDER, version=1, comment="back to 100", actor="bob"
    )
    assert (back.version, back.based_on, back.state, back.source) == (3, 1, "live", "studio")
    async with sessions() as session:
        v1 = await versions.need_version(session, ORDER, 1)
        v2 = await versions.need_version(session, ORDER, 2)
        assert back.content_hash == v1.content_hash
        assert (await store.find_by_hash(session, v1.content_hash)) == back  # the one published last
        assert v2.state == "superseded"
    patch = versions.diff(v1, v2)
    assert '-  warehouse: "100"' in patch and '+  warehouse: "200"' in patch
    assert patch.startswith("--- order_to_cash@v1\n+++ order_to_cash@v2\n")
    _mark, mappings = await versions.load_live(sessions, folder)
    assert mappings[ORDER].spec.vars["warehouse"] == "100"


async def test_publication_mark_moves_with_each_publication(sessions: Sessions, folder: Path) -> None:
    refresher = versions.Refresher(sessions, seconds=0)
    await versions.import_files(sessions, folder)
    mark, _ = await versions.load_live(sessions, folder)
    refresher.mark = mark
    assert not await refresher.changed()
    await versions.rollback(sessions, folder, flow=ORDER, version=1, comment="same again", actor="a")
    assert await refresher.changed()


@pytest.fixture
async def other_store(tmp_path: Path, pg_template: str) -> AsyncIterator[Sessions]:
    """A second installation: PostgreSQL (the first is the test's own SQLite store)."""
    from tests.conftest import fresh_store

    async with fresh_store("postgresql", tmp_path, pg_template) as url:
        engine = create_engine(Settings(database_url=url))
        yield session_factory(engine)
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bundle_round_trip_from_sqlite_to_postgresql(
    sessions: Sessions, other_store: Sessions, folder: Path
) -> None:
    await versions.import_files(sessions, folder)
    text = (folder / "order_to_cash.yaml").read_text(encoding="utf-8").replace('"A01"', '"A07"')
    await versions.create_draft(sessions, folder, flow=ORDER, text=text, author="dev")
    await versions.publish(sessions, folder, flow=ORDER, version=2, comment="tested in dev", actor="dev")
    async with sessions() as session:
        bundle = await versions.export_bundle(session, [ORDER])
    assert [e["flow"] for e in bundle["manifest"]["flows"]] == [ORDER]

    tampered = {**bundle, "texts": {ORDER: text.replace("A07", "A08")}}
    with pytest.raises(versions.BadBundle, match=r"manifest.flows.0.sha256"):
        await versions.import_bundle(other_store, folder, tampered, author="prod")

    async def refuse(_mappings: object) -> list[str]:
        return ["ERR order_to_cash.head: XYZ is not an input field of OIS100MI/AddBatchHead"]

    with pytest.raises(versions.InvalidMapping, match="XYZ is not an input field"):
        await versions.import_bundle(other_store, folder, bundle, author="prod", check=refuse)

    await versions.import_files(other_store, folder)
    [draft] = await versions.import_bundle(other_store, folder, bundle, author="prod")
    assert (draft.flow, draft.state, draft.source, draft.version) == (ORDER, "draft", "bundle", 2)
    assert "version 2" in (draft.comment or "") and "tested in dev" in (draft.comment or "")
    published = await versions.publish(
        other_store, folder, flow=ORDER, version=2, comment="promote", actor="ops"
    )
    assert published.content_hash == (await live(sessions)).content_hash


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_export_and_bundle_between_two_installations(
    db_url: str, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`m3bng mappings export` writes the live versions back; `bundle export|import` carries
    them to another store, checked against the (sandbox simulator's) M3 metadata there."""
    import json

    from typer.testing import CliRunner

    from m3bng.cli import app

    monkeypatch.setenv("M3BNG_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("M3BNG_DATABASE_URL", db_url)
    engine = create_engine(Settings(database_url=db_url))

    async def prepare() -> None:
        sessions = session_factory(engine)
        await versions.import_files(sessions, folder)
        text = (folder / "order_to_cash.yaml").read_text(encoding="utf-8").replace('"A01"', '"A07"')
        await versions.create_draft(sessions, folder, flow=ORDER, text=text, author="dev")
        await versions.publish(sessions, folder, flow=ORDER, version=2, comment="A07", actor="dev")
        await engine.dispose()

    asyncio.run(prepare())
    runner = CliRunner()
    exported = runner.invoke(app, ["mappings", "export", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert '"A07"' in (tmp_path / "out" / "order_to_cash.yaml").read_text(encoding="utf-8")

    bundle_file = tmp_path / "bundle.json"
    made = runner.invoke(app, ["mappings", "bundle", "export", str(bundle_file), "--flow", ORDER])
    assert made.exit_code == 0, made.output
    assert json.loads(bundle_file.read_text())["manifest"]["flows"][0]["version"] == 2

    other = tmp_path / "other"
    other.mkdir()
    other_url = f"sqlite+aiosqlite:///{other / 'store.db'}"
    monkeypatch.setenv("M3BNG_DATABASE_URL", other_url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    landed = runner.invoke(app, ["mappings", "bundle", "import", str(bundle_file)])
    assert landed.exit_code == 0, landed.output
    assert "draft order_to_cash v1" in landed.output and "bundle: version 2" in landed.output
    assert "metadata checks skipped" not in landed.output  # the sandbox simulator answered MRS001MI

    broken = json.loads(bundle_file.read_text())
    broken["texts"][ORDER] = broken["texts"][ORDER].replace("ORTP: {var: order_type}", "ORTP: {var: nope}")
    broken["manifest"]["flows"][0]["sha256"] = versions.sha256(broken["texts"][ORDER])
    bundle_file.write_text(json.dumps(broken))
    refused = runner.invoke(app, ["mappings", "bundle", "import", str(bundle_file)])
    assert refused.exit_code == 1 and "unknown var 'nope'" in refused.output
