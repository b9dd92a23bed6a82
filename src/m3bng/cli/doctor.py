"""``m3bng doctor``: every go-live prerequisite checked in one run, each with ok / what is wrong /
how to fix it.

Why one command: a new installation fails in a dozen small ways (a .ionapi of the wrong client,
a store nobody migrated, BNG's key pasted with a space, the host clock off by minutes) and each
shows up only when the first real event fails, often at night. The checks here talk to the same
systems with the same clients the service uses, so "doctor passes" means "serve will work".

The mapping-against-M3 check (:func:`check_mappings_against_m3`, in mapping/m3check.py) is shared with
``m3bng mappings check``, so both always judge a mapping the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from m3bng.config import Settings, SettingsError, load_settings
from m3bng.errors import M3bngError
from m3bng.mapping.m3check import MappingFinding, check_mappings_against_m3  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from m3bng.connectors.m3.client import M3Client
    from m3bng.mapping import Mapping

Status = Literal["ok", "warn", "fail", "skip"]

# Webhook signatures and ION/OAuth tokens carry timestamps; beyond this the other side's
# tolerance (and our own, M3BNG_WEBHOOK_TOLERANCE_SECONDS) starts to bite.
MAX_CLOCK_SKEW_SECONDS = 60.0
# Checks must answer quickly: one attempt, short waits (the service itself retries, doctor not).
PROBE_TIMEOUT = 15.0
# A GET that needs valid credentials and changes nothing: an order id BNG will not have.
BNG_PROBE_PATH = "/orders/m3bng-doctor-probe"


@dataclass
class Check:
    """One line of the report: what was checked, the verdict, and the fix when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""


# -- mappings against the tenant's metadata: mapping/m3check.py (shared with `m3bng mappings check`
# and bundle imports) -----------------------------------------------------------------------------

# -- the checks --------------------------------------------------------------------------------------


@dataclass
class _State:
    """What earlier checks found, for the checks that depend on them."""

    settings: Settings
    mappings: dict[str, Mapping] | None = None
    engine: AsyncEngine | None = None
    store_ok: bool = False
    m3: M3Client | None = None
    m3_ok: bool = False
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    def targets(self) -> set[str]:
        return {m.spec.target for m in (self.mappings or {}).values()}

    def sources(self) -> set[str]:
        return {m.spec.event_source for m in (self.mappings or {}).values()}


def _probe_settings(settings: Settings) -> Settings:
    """The same settings with one quick attempt per call: a check reports, the service retries."""
    return settings.model_copy(
        update={
            "m3_call_attempts": 1,
            "bng_call_attempts": 1,
            "m3_max_inline_wait": 0.0,
            "bng_max_inline_wait": 0.0,
            "m3_timeout": min(settings.m3_timeout, PROBE_TIMEOUT),
            "bng_timeout": min(settings.bng_timeout, PROBE_TIMEOUT),
            "bng_rate_limit": 0.0,
        }
    )


def _check_mapping_files(state: _State) -> None:
    from m3bng.mapping import MappingFileError, load_mappings

    try:
        folder = state.settings.mappings_folder
    except SettingsError as exc:
        state.add("mappings", "fail", str(exc), "set M3BNG_MAPPINGS_DIR in .env")
        return
    if not folder.is_dir():
        state.add(
            "mappings",
            "fail",
            f"M3BNG_MAPPINGS_DIR {folder.resolve()} is not a folder",
            "point M3BNG_MAPPINGS_DIR at your copy of the mappings (`m3bng init` writes one)",
        )
        return
    try:
        state.mappings = load_mappings(folder)
    except MappingFileError as exc:
        state.add(
            "mappings", "fail", str(exc), "fix the file and line named; `m3bng mappings check --no-metadata`"
        )
        return
    state.add("mappings", "ok", f"{len(state.mappings)} flows in {folder}")


def _check_settings(state: _State) -> None:
    """Complete for what this installation runs: the flows in its mappings folder decide which
    connections are needed (M3 → BNG flows need BNG's API, BOD flows need ION's credentials)."""
    s = state.settings
    if s.sandbox:
        state.add(
            "settings",
            "fail",
            "no M3 (.ionapi) and no BNG configured: this is sandbox mode, with simulators",
            "set M3BNG_IONAPI_FILE and M3BNG_BNG_BASE_URL in .env (`m3bng init` writes one to fill in)",
        )
        return
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    targets = state.targets()
    if s.ionapi_file is None and (targets & {"m3"} or "poller" in state.sources()):
        problems.append(
            ("M3BNG_IONAPI_FILE is not set", "the .ionapi file of M3's backend service (docs/m3.md §1)")
        )
    if s.bng_base_url is None and "bng" in targets:
        problems.append(("M3BNG_BNG_BASE_URL is not set", "BNG's REST API base URL, for the M3 → BNG flows"))
    if s.bng_base_url and s.bng_api_key is None and not s.bng_oauth_token_url:
        problems.append(
            (
                "no BNG credentials",
                "set M3BNG_BNG_API_KEY, or M3BNG_BNG_OAUTH_TOKEN_URL with client id/secret",
            )
        )
    if s.is_sqlite:
        warnings.append(
            (
                "the store is SQLite",
                "production runs on PostgreSQL: M3BNG_DATABASE_URL=postgresql+asyncpg://…",
            )
        )
    if not s.ops_tokens and not s.ops_jwt_enabled:
        warnings.append(
            (
                "no ops tokens or SSO: /api/v1 and /ui answer 503",
                "`m3bng ops token new --name NAME --scope ops:admin`, its entry into M3BNG_OPS_TOKENS",
            )
        )
    if not s.alert_webhook_url:
        warnings.append(
            ("no M3BNG_ALERT_WEBHOOK_URL: alerts only show in /ui", "a Slack or Teams webhook URL")
        )
    if problems:
        state.add("settings", "fail", "\n".join(p for p, _ in problems), "\n".join(f for _, f in problems))
    elif warnings:
        state.add("settings", "warn", "\n".join(p for p, _ in warnings), "\n".join(f for _, f in warnings))
    else:
        state.add("settings", "ok", "complete for the flows in the mappings folder")


async def _check_store(state: _State) -> None:
    from m3bng.store import migrate
    from m3bng.store.db import create_engine

    s = state.settings
    where = s.database_url.split("@")[-1] if not s.is_sqlite else s.database_url  # no password shown
    state.engine = create_engine(s)
    try:
        up_to_date = await asyncio.wait_for(migrate.is_up_to_date(state.engine), PROBE_TIMEOUT)
    except Exception as exc:  # any driver error: the same verdict, unreachable
        state.add(
            "store",
            "fail",
            f"cannot reach {where}: {type(exc).__name__}: {str(exc)[:200]}",
            "check M3BNG_DATABASE_URL (host, database, user, password) and that the server runs",
        )
        return
    if not up_to_date:
        state.add("store", "fail", f"{where}: the schema is not at the newest revision", "m3bng db upgrade")
        return
    state.store_ok = True
    state.add("store", "ok", f"{where}: reachable, schema up to date")


async def _check_m3(state: _State) -> None:
    """What `m3bng m3 check` does: a token, then MNS150MI/GetUserData."""
    from m3bng.connectors.m3.client import M3Client

    s = state.settings
    if s.ionapi_file is None:
        state.add("m3", "skip", "M3BNG_IONAPI_FILE is not set")
        return
    try:
        state.m3 = M3Client.from_settings(_probe_settings(s))
    except (M3bngError, ValueError) as exc:
        state.add("m3", "fail", f"{s.ionapi_file}: {exc}", "download the .ionapi again (docs/m3.md §1)")
        return
    try:
        user = (await state.m3.execute("MNS150MI", "GetUserData")).record
    except M3bngError as exc:
        state.add(
            "m3",
            "fail",
            f"{state.m3.config.base_url}: {exc}",
            "check the .ionapi (client id/secret, service account: docs/m3.md §1), the network to the "
            "ION API gateway, and that the user may run MNS150MI",
        )
        return
    state.m3_ok = True
    shown = ", ".join(f"{k}={user[k]}" for k in ("USID", "CONO", "DIVI") if user.get(k))
    state.add("m3", "ok", f"token and MNS150MI/GetUserData: {shown}")


async def _check_mappings_m3(state: _State) -> None:
    from m3bng.connectors.m3.metadata import M3Metadata
    from m3bng.store.db import session_factory

    if state.mappings is None:
        state.add("mappings_m3", "skip", "the mapping files did not load")
        return
    if state.m3 is None or not state.m3_ok:
        state.add("mappings_m3", "skip", "M3 is not reachable")
        return
    if state.engine is None or not state.store_ok:
        state.add("mappings_m3", "skip", "needs a reachable, migrated store (M3's metadata is cached there)")
        return
    metadata = M3Metadata(
        state.m3, session_factory(state.engine), ttl_hours=state.settings.m3_metadata_ttl_hours
    )
    findings = await check_mappings_against_m3(metadata, state.mappings)
    if not findings:
        state.add("mappings_m3", "ok", "every mapped field is an input field of its M3 transaction")
        return
    lines = "\n".join(f.line() for f in findings)
    unreachable = any(not f.error for f in findings)
    fix = "fix the mapping files named (docs/mappings.md), then `m3bng mappings check`"
    if unreachable:
        fix += "; metadata not reachable: authorize MRS001MI for the service account (docs/m3.md §6)"
    state.add("mappings_m3", "fail", lines, fix)


async def _check_clock(state: _State) -> None:
    """The host clock against the M3 gateway's ``Date`` header (any answer carries one)."""
    import httpx

    if state.m3 is None:
        state.add("clock", "skip", "no M3 client (see the m3 check)")
        return
    url = state.m3.config.base_url
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, transport=state.m3.transport) as http:
            started = time.time()
            response = await http.get(url)
            ended = time.time()
    except httpx.HTTPError as exc:
        state.add("clock", "skip", f"the M3 gateway did not answer ({type(exc).__name__})")
        return
    date = response.headers.get("date")
    if not date:
        state.add("clock", "skip", "the M3 gateway's answer has no Date header")
        return
    skew = clock_skew(date, (started + ended) / 2)
    if skew is None:
        state.add("clock", "skip", f"unreadable Date header {date!r}")
    elif abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        ahead = "ahead of" if skew > 0 else "behind"
        state.add(
            "clock",
            "fail",
            f"this host's clock is {abs(skew):.0f} s {ahead} the M3 gateway's "
            f"(limit {MAX_CLOCK_SKEW_SECONDS:.0f} s)",
            "synchronise the clock with NTP (e.g. `timedatectl set-ntp true`, chrony)",
        )
    else:
        state.add("clock", "ok", f"within {abs(skew):.0f} s of the M3 gateway")


def clock_skew(date_header: str, local: float) -> float | None:
    """Seconds the local clock is ahead of the server's (negative: behind); None if unreadable."""
    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if remote.tzinfo is None:
        remote = remote.replace(tzinfo=UTC)
    return datetime.fromtimestamp(local, UTC).timestamp() - remote.timestamp()


async def _check_bng(state: _State) -> None:
    s = state.settings
    if not s.bng_base_url:
        if "bng" in state.targets():
            state.add("bng", "fail", "M3BNG_BNG_BASE_URL is not set", "set it and BNG's credentials in .env")
        else:
            state.add("bng", "skip", "no M3 → BNG flows in the mappings")
        return
    await _probe_bng(state, "bng", s, key="M3BNG_BNG_API_KEY", url="M3BNG_BNG_BASE_URL")


async def _probe_bng(state: _State, name: str, s: Settings, *, key: str, url: str) -> None:
    """One BNG API (the single-instance one, or an instance's): reachable, credentials accepted."""
    from m3bng.connectors.bng.client import BngClient
    from m3bng.connectors.bng.errors import BngAuthError

    try:
        client = BngClient.from_settings(_probe_settings(s))
    except ValueError as exc:
        state.add(name, "fail", str(exc), f"set {key} or the OAuth2 settings (docs/bng-api.md)")
        return
    try:
        await client.get(BNG_PROBE_PATH)
    except BngAuthError as exc:
        state.add(
            name,
            "fail",
            f"{s.bng_base_url}: credentials refused: {exc}",
            f"check {key} (and the API key header) or the OAuth2 client id/secret",
        )
    except M3bngError as exc:
        state.add(
            name,
            "fail",
            f"{s.bng_base_url}: {exc}",
            f"check {url}, that BNG is up, and the network/firewall between them",
        )
    else:
        state.add(name, "ok", f"{s.bng_base_url}: reachable, credentials accepted")
    finally:
        await client.aclose()


async def _check_instances(state: _State) -> None:
    """Every BNG instance of the instances file (docs/instances.md): the file and its secrets
    load, each instance's BNG answers, and M3 answers in each instance's company. Without the
    file the single-instance checks above are the instance ``default``'s."""
    from m3bng.instances import DEFAULT, env_name, load_instances

    s = state.settings
    if s.instances_file is None:
        return
    try:
        instances = load_instances(s)
    except SettingsError as exc:
        state.add(
            "instances",
            "fail",
            str(exc),
            "fix the instances file, or set the environment variables it names (docs/instances.md)",
        )
        return
    state.add("instances", "ok", f"{len(instances)} BNG instances: {', '.join(instances.ids)}")
    for instance in instances:
        if instance.id != DEFAULT:
            where = f"bng_base_url of {instance.id} in {s.instances_file}"
            await _probe_bng(
                state,
                f"bng:{instance.id}",
                instance.settings,
                key=env_name(instance.id, "BNG_API_KEY"),
                url=where,
            )
        if instance.cono is None and not instance.divi:
            continue
        company = f"CONO {instance.cono} / DIVI {instance.divi or 'default'}"
        if state.m3 is None or not state.m3_ok:
            state.add(f"m3:{instance.id}", "skip", f"{company}: M3 is not reachable")
            continue
        try:
            await state.m3.for_company(instance.cono, instance.divi).execute("MNS150MI", "GetUserData")
        except M3bngError as exc:
            state.add(
                f"m3:{instance.id}",
                "fail",
                f"{company}: {exc}",
                f"check cono/divi of {instance.id} in {s.instances_file}, and that M3's service account "
                "may work in that company and division",
            )
        else:
            state.add(f"m3:{instance.id}", "ok", f"{company}: M3 answers in it")


def _check_ion_inbound(state: _State) -> None:
    s = state.settings
    if s.ion_inbound_token or s.ion_inbound_username:
        how = "bearer token" if s.ion_inbound_token else "basic auth"
        state.add("ion_inbound", "ok", f"ION's connection point authenticates with a {how}")
    elif "ion" in state.sources():
        state.add(
            "ion_inbound",
            "fail",
            "no M3BNG_ION_INBOUND_TOKEN (or username/password): /ion answers 503 to ION",
            "set M3BNG_ION_INBOUND_TOKEN to a long random string "
            "(`python -c 'import secrets; print(secrets.token_urlsafe(32))'`) and the same in ION's "
            "connection point (docs/ion.md, Configuring ION)",
        )
    else:
        state.add("ion_inbound", "skip", "no BOD flows in the mappings")


async def _check_ion_outbound(state: _State) -> None:
    """The ConfirmBOD path: ION's messaging service, through the .ionapi gateway, answers ping."""
    import httpx

    from m3bng.connectors.ion.client import messaging_url
    from m3bng.connectors.m3.auth import IonApiAuth

    s = state.settings
    if not s.ion_confirm_bods:
        state.add("ion_outbound", "skip", "M3BNG_ION_CONFIRM_BODS is off")
        return
    if state.m3 is None or not state.m3_ok:
        state.add("ion_outbound", "skip", "M3 is not reachable (the same gateway and token)")
        return
    credentials = state.m3.credentials
    if credentials is None and not s.ion_messaging_url:
        state.add("ion_outbound", "fail", "no ION messaging URL", "set M3BNG_ION_MESSAGING_URL")
        return
    base = (
        messaging_url(s, credentials.ion_api_url, credentials.tenant)
        if credentials is not None
        else str(s.ion_messaging_url).rstrip("/")
    )
    url = f"{base}/service/ping"
    auth = IonApiAuth(state.m3.tokens) if state.m3.tokens is not None else None
    fix = (
        "check M3BNG_ION_MESSAGING_URL (default {iu}/{ti}/IONSERVICES/api/ion/messaging) and that the "
        "backend service may use ION messaging (docs/ion.md, ConfirmBOD)"
    )
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, transport=state.m3.transport, auth=auth) as http:
            headers = {"X-TenantId": credentials.tenant} if credentials is not None else {}
            response = await http.get(url, headers=headers)
    except (httpx.HTTPError, M3bngError) as exc:
        state.add("ion_outbound", "fail", f"{url}: {type(exc).__name__}: {exc}", fix)
        return
    if response.is_success:
        state.add("ion_outbound", "ok", f"{url}: answered {response.status_code}")
    else:
        state.add("ion_outbound", "fail", f"{url}: HTTP {response.status_code}", fix)


def _check_webhooks(state: _State, missing: bool) -> None:
    s = state.settings
    if missing or not s.webhook_secrets:
        state.add(
            "webhooks",
            "fail",
            "no M3BNG_WEBHOOK_SECRETS: every BNG webhook would be refused (401)",
            "put the signing secret BNG shows for the webhook registration (whsec_…) into "
            "M3BNG_WEBHOOK_SECRETS (docs/go-live.md §2)",
        )
        return
    state.add("webhooks", "ok", f"{len(s.webhook_secrets)} signing secret(s), scheme {s.webhook_scheme}")


async def diagnose(settings: Settings, *, webhook_secret_missing: bool = False) -> list[Check]:
    """Run every check in order; later checks skip (saying why) when what they need failed."""
    state = _State(settings)
    steps: list[Callable[[], Awaitable[None] | None]] = [
        lambda: _check_mapping_files(state),
        lambda: _check_settings(state),
        lambda: _check_store(state),
        lambda: _check_m3(state),
        lambda: _check_clock(state),
        lambda: _check_mappings_m3(state),
        lambda: _check_bng(state),
        lambda: _check_instances(state),
        lambda: _check_ion_inbound(state),
        lambda: _check_ion_outbound(state),
        lambda: _check_webhooks(state, webhook_secret_missing),
    ]
    try:
        for step in steps:
            result = step()
            if result is not None:
                await result
    finally:
        if state.m3 is not None:
            await state.m3.aclose()
        if state.engine is not None:
            await state.engine.dispose()
    return state.checks


def _load() -> tuple[Settings | None, bool, Check | None]:
    """Settings, whether only the webhook secret was missing, and the settings failure if any."""
    try:
        return load_settings(), False, None
    except SettingsError as exc:
        error = str(exc)
    fix = "edit .env (every setting is described there) or the M3BNG_* environment"
    if "M3BNG_IONAPI_FILE" in error:
        fix = "put the .ionapi file at the path M3BNG_IONAPI_FILE names (README.txt, docs/m3.md §1)"
    return None, False, Check("settings", "fail", error, fix)


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _print(checks: list[Check]) -> None:
    for check in checks:
        lines = check.detail.splitlines() or [""]
        typer.echo(f"{_MARK[check.status]}  {check.name:<13} {lines[0]}")
        for line in lines[1:]:
            typer.echo(f"{'':20}{line}")
        if check.fix and check.status in ("fail", "warn"):
            for line in check.fix.splitlines():
                typer.echo(f"{'':20}fix: {line}")
    failed = [c.name for c in checks if c.status == "fail"]
    typer.echo(f"\n{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "\nready for go-live")


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check everything a go-live needs, each problem with its fix.

    Settings, store, M3, the mappings against M3's metadata, clock, BNG, ION inbound and outbound,
    webhook secrets. Per check: ok, or what is wrong and how to fix it. Exit 1 if a check fails."""
    from m3bng.observability.logging import configure_logging

    settings, secret_missing, failure = _load()
    if settings is None:
        assert failure is not None
        checks = [failure]
    else:
        # The report is the output: each failure is in it, with its fix; the connectors' own log
        # lines (a refused token logs an error) would only repeat it, out of order.
        configure_logging("CRITICAL", settings.log_format)
        checks = asyncio.run(diagnose(settings, webhook_secret_missing=secret_missing))
    if as_json:
        body = {
            "ok": all(c.status != "fail" for c in checks),
            "checks": [dataclasses.asdict(c) for c in checks],
        }
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        _print(checks)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)
