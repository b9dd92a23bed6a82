"""Mapping versions: the store is where the mappings flows run live; the files feed it.

Why the store and not the files: a mapping changed through the API must reach every process
(API, any number of workers on other hosts) without a deployment, keep its history, and be
carried to another installation; the files stay the way to version mappings in git
(``m3bng mappings export``) and the way a deployment ships them (imported at start-up).

The rules of the start-up import (``import_files``), per mapping file:

* no version yet, or the file's content differs from a live version that came from the file:
  the file becomes a new live version (source ``file``);
* the same content as the live version: nothing (the file is noted as holding it);
* a live version imported from a file that is no longer there: retired (superseded, nothing
  live), so removing a file removes its flow as it always did;
* different from a live version published from the studio or a bundle: if the file is the
  same as when last seen, nothing (the studio's version is newer); if it changed since, a
  **conflict**: logged (``mapping.conflict``), kept in the store for the API, and the live
  version stays. Exporting the live version to the file, or publishing the file's text,
  resolves it.

Lookup tables stay files in the mappings folder: a version's text names them and they are read
from the folder whenever the version is parsed (and are part of its content hash).
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng import __version__
from m3bng.errors import Conflict, Invalid, NotFound
from m3bng.mapping import Mapping, MappingFileError, combine, parse_mapping
from m3bng.mapping.m3check import check_mappings_against_m3
from m3bng.store import audit
from m3bng.store import mapping_versions as store
from m3bng.store.mapping_versions import DRAFT, LIVE, ConflictRow, Version, VersionClash

if TYPE_CHECKING:
    from m3bng.connectors.m3.metadata import M3Metadata

log = structlog.get_logger(__name__)
T = TypeVar("T")

ATTEMPTS = 5  # a clash means another process won the race: re-read and decide again
BUNDLE_FORMAT = "m3bng-mapping-bundle"
BUNDLE_FORMAT_VERSION = 1
MAX_TEXT_BYTES = 512 * 1024
# Raises MappingFileError when flows cannot run with these mappings (runtime.build_registry).
RegistryCheck = Callable[[dict[str, Mapping]], None]
# A check of parsed mappings against the tenant (M3's field metadata): its problems, one a line.
MappingCheck = Callable[[dict[str, Mapping]], Awaitable[list[str]]]


def sha256(data: bytes | str) -> str:
    # surrogatepass: a bundle's text is checksummed before it is validated (and refused) as UTF-8
    return hashlib.sha256(
        data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    ).hexdigest()


class InvalidMapping(Invalid):
    """Mapping text the loader refuses: each problem names the line and field."""

    code = "invalid_mapping"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "; ".join(problems),
            fields=[{"field": "text", "problem": problem} for problem in problems],
        )
        self.problems = problems


class VersionNotFound(NotFound):
    code = "not_found"


class NotADraft(Conflict):
    code = "not_a_draft"


class BadBundle(Invalid):
    code = "invalid_bundle"


# -- parsing ----------------------------------------------------------------------------------------


def parse_text(text: str, file_name: str, folder: Path) -> Mapping:
    """A version's text as a ``Mapping``, validated as a file would be; problems name
    ``file_name`` and the line, never the server's path."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON allows "\ud800")
        raise InvalidMapping([f"{file_name}: not UTF-8 text (character {exc.start})"]) from None
    if len(raw) > MAX_TEXT_BYTES:
        raise InvalidMapping([f"{file_name}: longer than {MAX_TEXT_BYTES} bytes"])
    try:
        mapping = parse_mapping(raw, Path(file_name), lookups_dir=folder)
    except MappingFileError as exc:
        raise InvalidMapping(exc.problems) from None
    mapping.path = folder / file_name
    return mapping


FLOW_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}\.yaml")


def clean(comment: str | None) -> str | None:
    """A comment as PostgreSQL and the audit log take it (no NUL, bounded)."""
    return comment.replace("\x00", "")[:2000] if comment is not None else None


def checked_text(text: str, flow: str, file_name: str, folder: Path) -> Mapping:
    if not FLOW_NAME.fullmatch(flow):
        raise InvalidMapping([f"flow: {flow[:80]!r} is not a flow name (letters, digits, _ . -; at most 64)"])
    mapping = parse_text(text, file_name, folder)
    if mapping.flow != flow:
        raise InvalidMapping([f"{file_name}: flow: the text names flow {mapping.flow!r}, not {flow!r}"])
    return mapping


# -- start-up import --------------------------------------------------------------------------------


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)  # "flow vN"
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the studio's live version is newer than the file
    conflicts: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # the file of a file-sourced live version is gone


async def _retrying(
    sessions: async_sessionmaker[AsyncSession], write: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    for attempt in range(ATTEMPTS):
        try:
            async with sessions.begin() as session:
                return await write(session)
        except VersionClash:
            if attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _read_files(folder: Path) -> list[tuple[Path, Mapping, str, str]]:
    """(path, mapping, text, file hash) of every mapping file that loads; read before any
    store work (no blocking file I/O inside the event loop's store calls)."""
    found = []
    for path in sorted(folder.glob("*.yaml")):
        raw = path.read_bytes()
        try:
            mapping = parse_mapping(raw, path)
        except MappingFileError:
            continue  # load_mappings, run before this, already refused the folder
        found.append((path, mapping, raw.decode("utf-8"), sha256(raw)))
    return found


async def import_files(sessions: async_sessionmaker[AsyncSession], folder: Path) -> ImportReport:
    """Each mapping file against the flow's live version (the rules are in the module's
    docstring). Each file in a transaction of its own, retried when another process starting
    at the same moment imported it first: the retry then finds the same content live."""
    report = ImportReport()
    found = await asyncio.to_thread(_read_files, folder)
    for path, mapping, text, file_hash in found:

        async def one(
            session: AsyncSession,
            path: Path = path,
            mapping: Mapping = mapping,
            text: str = text,
            fh: str = file_hash,
        ) -> None:
            await _import_one(session, mapping, path, text, fh, report)

        await _retrying(sessions, one)
    in_files = {mapping.flow for _path, mapping, _text, _hash in found}
    async with sessions.begin() as session:
        for flow, live in (await store.live_versions(session)).items():
            # The file was the source of this version and is gone: the flow is removed, as it
            # was before versions were kept. A studio or bundle version has no file to lose.
            if (
                live.source == "file"
                and flow not in in_files
                and not (folder / live.file_name).exists()  # a file that does not load is not gone
                and await store.retire(session, flow, live.version)
            ):
                log.warning("mapping.retired", flow=flow, version=live.version, file=live.file_name)
                report.retired.append(f"{flow} v{live.version}")
    return report


async def _import_one(
    session: AsyncSession, mapping: Mapping, path: Path, text: str, file_hash: str, report: ImportReport
) -> None:
    flow = mapping.flow
    live = await store.live_version(session, flow)
    if live is not None and live.content_hash == mapping.content_hash:
        if live.file_hash != file_hash:
            await store.note_file_hash(session, live.id, file_hash)
        await store.clear_conflict(session, flow)
        report.unchanged.append(f"{flow} v{live.version}")
        return
    if live is not None and live.source != "file":
        seen = await store.last_from_file(session, flow)
        if seen is not None and seen.file_hash == file_hash:
            report.kept.append(f"{flow} v{live.version}")
            return
        await store.put_conflict(
            session,
            flow=flow,
            file_name=path.name,
            file_hash=file_hash,
            content_hash=mapping.content_hash,
            live_version=live.version,
            file_version=seen.version if seen is not None else None,
        )
        log.warning(
            "mapping.conflict",
            flow=flow,
            file=str(path),
            live_version=live.version,
            live_source=live.source,
            file_version=seen.version if seen is not None else None,
            hint="the file changed after the live version was published from the studio or a "
            "bundle: the live version stays; export it to the file or publish the file's text",
        )
        report.conflicts.append(flow)
        return
    created = await store.add_version(
        session,
        flow=flow,
        file_name=path.name,
        text=text,
        content_hash=mapping.content_hash,
        source="file",
        state=LIVE,
        author="file",
        comment=f"imported from {path.name}",
        file_hash=file_hash,
        replaces=live.version if live is not None else None,
    )
    await store.clear_conflict(session, flow)
    log.info("mapping.imported", flow=flow, version=created.version, file=path.name)
    report.imported.append(f"{flow} v{created.version}")


# -- what flows run ---------------------------------------------------------------------------------


async def load_live(
    sessions: async_sessionmaker[AsyncSession], folder: Path
) -> tuple[tuple[int, datetime | None], dict[str, Mapping]]:
    """The live version of every flow, parsed (mark, mappings): the mark is the publication
    mark read in the same transaction, for ``Refresher`` to compare with later."""
    async with sessions() as session:
        mark = await store.publication_mark(session)
        live = await store.live_versions(session)
    loaded = []
    for version in live.values():
        mapping = parse_text(version.text, version.file_name, folder)
        if mapping.content_hash != version.content_hash:
            # A lookup table file changed since the version was stored: the new hash is what
            # events record (docs/mapping-studio.md).
            log.warning("mapping.lookups_changed", flow=version.flow, version=version.version)
        loaded.append(mapping)
    try:
        return mark, combine(loaded)
    except MappingFileError as exc:
        raise InvalidMapping(exc.problems) from None


class Refresher:
    """Tells a process when a version was published anywhere: one tiny query at most every
    ``seconds``, and at once after ``invalidate`` (a publication through this process)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], seconds: float) -> None:
        self.sessions = sessions
        self.seconds = seconds
        self.mark: tuple[int, datetime | None] | None = None
        self._read_at = float("-inf")

    def invalidate(self) -> None:
        self._read_at = float("-inf")

    async def changed(self) -> bool:
        if time.monotonic() - self._read_at < self.seconds:
            return False
        self._read_at = time.monotonic()
        async with self.sessions() as session:
            mark = await store.publication_mark(session)
        return mark != self.mark


def metadata_check(metadata: M3Metadata | None) -> MappingCheck | None:
    """The tenant's field metadata as `m3bng mappings check` judges it (only its errors: an
    unreachable metadata service does not block an import); None without M3."""
    if metadata is None:
        return None

    async def check(mappings: dict[str, Mapping]) -> list[str]:
        findings = await check_mappings_against_m3(metadata, mappings)
        return [finding.line() for finding in findings if finding.error]

    return check


# -- studio actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSummary:
    flow: str
    live: Version | None
    drafts: int
    conflict: ConflictRow | None


async def flows(session: AsyncSession) -> list[FlowSummary]:
    live = await store.live_versions(session)
    drafts = await store.draft_counts(session)
    conflicts = await store.conflicts(session)
    names = sorted(set(live) | set(drafts) | set(conflicts))
    return [FlowSummary(n, live.get(n), drafts.get(n, 0), conflicts.get(n)) for n in names]


async def need_version(session: AsyncSession, flow: str, version: int) -> Version:
    found = await store.get_version(session, flow, version)
    if found is None:
        raise VersionNotFound(f"flow {flow!r} has no version {version}")
    return found


def file_name_of(flow: str, live: Version | None) -> str:
    """The file a flow's text is checked as (and exported to): the live version's, else
    ``<flow>.yaml``; problems name it, never the server's path."""
    return live.file_name if live is not None else f"{flow}.yaml"


async def create_draft(
    sessions: async_sessionmaker[AsyncSession],
    folder: Path,
    *,
    flow: str,
    text: str,
    author: str,
    comment: str | None = None,
    source: str = "studio",
    file_name: str | None = None,
) -> Version:
    """A draft from YAML text, refused (naming the line and field) unless it loads as a file would."""
    async with sessions() as session:
        live = await store.live_version(session, flow)
    name = file_name or file_name_of(flow, live)
    mapping = checked_text(text, flow, name, folder)

    async def write(session: AsyncSession) -> Version:
        draft = await store.add_version(
            session,
            flow=flow,
            file_name=name,
            text=text,
            content_hash=mapping.content_hash,
            source=source,
            state=DRAFT,
            author=author,
            comment=clean(comment),
        )
        # The audit log holds every write made through the API or CLI, drafts included.
        await audit.record(
            session,
            actor=author,
            action="mapping.draft",
            target_type="mapping",
            target_id=f"{flow}/{draft.version}",
            after=_audit_view(draft),
            detail=draft.comment,
        )
        return draft

    return await _retrying(sessions, write)


async def _check_with_others(
    session: AsyncSession, folder: Path, mapping: Mapping, check: RegistryCheck | None
) -> None:
    """The live set as it would be after this publication must load as a whole: no trigger
    handled twice, and (``check``) a flow registry the processes can build. Refused here, a
    version can never go live and then fail in every process that reloads it."""
    live = await store.live_versions(session)
    others = [parse_text(v.text, v.file_name, folder) for f, v in live.items() if f != mapping.flow]
    try:
        mappings = combine([*others, mapping])
        if check is not None:
            check(mappings)
    except MappingFileError as exc:
        raise InvalidMapping([p.replace(str(folder) + "/", "") for p in exc.problems]) from None


def _audit_view(version: Version | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"version": version.version, "content_hash": version.content_hash, "source": version.source}


async def publish(
    sessions: async_sessionmaker[AsyncSession],
    folder: Path,
    *,
    flow: str,
    version: int,
    comment: str,
    actor: str,
    check: RegistryCheck | None = None,
) -> Version:
    """A draft becomes the live version, audited in the same transaction; ``check`` is asked
    first whether the flows can run with it beside the other live versions."""
    comment = clean(comment) or ""

    async def write(session: AsyncSession) -> Version:
        draft = await need_version(session, flow, version)
        if draft.state != DRAFT:
            raise NotADraft(
                f"flow {flow!r} version {version} is {draft.state}, not a draft; "
                "roll back to it to make it live again"
            )
        mapping = checked_text(draft.text, flow, draft.file_name, folder)  # lookup tables may have gone
        await _check_with_others(session, folder, mapping, check)
        before = await store.live_version(session, flow)
        published = await store.publish(session, flow, version, comment=comment, author=actor)
        await _after_publish(
            session, published, before, actor=actor, action="mapping.publish", detail=comment
        )
        return published

    return await _retrying(sessions, write)


async def rollback(
    sessions: async_sessionmaker[AsyncSession],
    folder: Path,
    *,
    flow: str,
    version: int,
    comment: str,
    actor: str,
    check: RegistryCheck | None = None,
) -> Version:
    """A copy of an older version published as the new live one: history only grows, so the
    events that ran with each version still find it."""
    comment = clean(comment) or ""

    async def write(session: AsyncSession) -> Version:
        old = await need_version(session, flow, version)
        mapping = checked_text(old.text, flow, old.file_name, folder)
        await _check_with_others(session, folder, mapping, check)
        before = await store.live_version(session, flow)
        published = await store.add_version(
            session,
            flow=flow,
            file_name=old.file_name,
            text=old.text,
            content_hash=mapping.content_hash,
            source="studio",
            state=LIVE,
            author=actor,
            comment=comment,
            based_on=old.version,
            replaces=before.version if before is not None else None,
        )
        await _after_publish(
            session, published, before, actor=actor, action="mapping.rollback", detail=comment
        )
        return published

    return await _retrying(sessions, write)


async def _after_publish(
    session: AsyncSession, published: Version, before: Version | None, *, actor: str, action: str, detail: str
) -> None:
    conflict = (await store.conflicts(session)).get(published.flow)
    if conflict is not None and conflict.content_hash == published.content_hash:
        await store.clear_conflict(session, published.flow)  # the file's text is now live
    await audit.record(
        session,
        actor=actor,
        action=action,
        target_type="mapping",
        target_id=f"{published.flow}/{published.version}",
        before=_audit_view(before),
        after=_audit_view(published),
        detail=detail,
    )
    log.info(action, flow=published.flow, version=published.version, actor=actor)


def text_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=old_label, tofile=new_label
        )
    )


def diff(old: Version, new: Version) -> str:
    """Unified diff of two versions' texts, labelled flow@vN."""
    return text_diff(old.text, new.text, f"{old.flow}@v{old.version}", f"{new.flow}@v{new.version}")


# -- export and bundles -----------------------------------------------------------------------------


def _write_files(folder: Path, live: Iterable[Version]) -> list[tuple[Path, Version, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for version in sorted(live, key=lambda v: v.flow):
        path = folder / Path(version.file_name).name
        data = version.text.encode("utf-8")
        path.write_bytes(data)
        written.append((path, version, sha256(data)))
    return written


async def export_files(sessions: async_sessionmaker[AsyncSession], folder: Path) -> list[Path]:
    """The live versions written as YAML files (for git); the files are then known to hold
    them, so the next start-up from that folder imports nothing and sees no conflict."""
    async with sessions() as session:
        live = await store.live_versions(session)
    written = await asyncio.to_thread(_write_files, folder, live.values())
    async with sessions.begin() as session:
        for _path, version, file_hash in written:
            await store.note_file_hash(session, version.id, file_hash)
            await store.clear_conflict(session, version.flow)
    return [path for path, _version, _hash in written]


async def export_bundle(session: AsyncSession, only: Iterable[str] = ()) -> dict[str, Any]:
    """The live versions of ``only`` (default: every flow) as a bundle: a manifest with the
    sha256 of each text, and the texts."""
    live = await store.live_versions(session)
    wanted = list(only) or sorted(live)
    missing = [flow for flow in wanted if flow not in live]
    if missing:
        raise VersionNotFound(
            f"flow: no live version of {', '.join(missing)} (flows: {', '.join(sorted(live))})"
        )
    entries, texts = [], {}
    for flow in wanted:
        version = live[flow]
        entries.append(
            {
                "flow": flow,
                "version": version.version,
                "file_name": version.file_name,
                "content_hash": version.content_hash,
                "sha256": sha256(version.text),
                "comment": version.comment,
            }
        )
        texts[flow] = version.text
    return {
        "manifest": {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "m3bng_version": __version__,
            "created_at": datetime.now(UTC).isoformat(),
            "flows": entries,
        },
        "texts": texts,
    }


def read_bundle(bundle: Any) -> list[tuple[dict[str, Any], str]]:
    """(manifest entry, text) per flow, once the format and every checksum are right."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("manifest"), dict):
        raise BadBundle("manifest: missing; a bundle is a JSON object with `manifest` and `texts`")
    manifest, texts = bundle["manifest"], bundle.get("texts")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BadBundle(f"manifest.format: {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BadBundle(
            f"manifest.format_version: {manifest.get('format_version')!r}; this m3bng reads "
            f"{BUNDLE_FORMAT_VERSION}"
        )
    entries = manifest.get("flows")
    if not isinstance(entries, list) or not isinstance(texts, dict):
        raise BadBundle("manifest.flows must be a list and texts an object")
    out = []
    for index, entry in enumerate(entries):
        flow = entry.get("flow") if isinstance(entry, dict) else None
        if not isinstance(flow, str) or not isinstance(texts.get(flow), str):
            raise BadBundle(f"manifest.flows.{index}: no flow name, or no text for it in `texts`")
        text = texts[flow]
        if sha256(text) != entry.get("sha256"):
            raise BadBundle(
                f"manifest.flows.{index}.sha256: the text of {flow!r} does not match its checksum "
                "(the bundle was changed or damaged)"
            )
        out.append((entry, text))
    return out


async def import_bundle(
    sessions: async_sessionmaker[AsyncSession],
    folder: Path,
    bundle: Any,
    *,
    author: str,
    check: MappingCheck | None = None,
) -> list[Version]:
    """Every mapping of a bundle landed as a draft (source ``bundle``), to be published here.

    Nothing lands unless all pass: the checksums, the loader's validation, and ``check`` (the
    tenant's field metadata, when M3 is configured), whose problems are returned as errors."""
    entries = read_bundle(bundle)
    mappings: dict[str, Mapping] = {}
    problems: list[str] = []
    for entry, text in entries:
        name = str(entry.get("file_name") or "")
        name = name if FILE_NAME.fullmatch(name) else f"{entry['flow'][:64]}.yaml"
        try:
            mappings[entry["flow"]] = checked_text(text, entry["flow"], name, folder)
        except InvalidMapping as exc:
            problems.extend(exc.problems)
    if not problems and check is not None:
        problems.extend(await check(mappings))
    if problems:
        raise InvalidMapping(problems)
    origin = bundle["manifest"].get("m3bng_version")
    created = []
    for entry, text in entries:
        created.append(
            await create_draft(
                sessions,
                folder,
                flow=entry["flow"],
                text=text,
                author=author,
                comment=f"bundle: version {entry.get('version')} from m3bng {origin}"
                + (f" ({entry['comment']})" if entry.get("comment") else ""),
                source="bundle",
                file_name=mappings[entry["flow"]].path.name,
            )
        )
    return created
