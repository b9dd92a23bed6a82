"""``m3bng ops …``: the ops API from a terminal or a script.

Every command is one or a few calls of ``/api/v1`` (``cli/ops_client.py``), the API the dashboard
uses too, so scopes, validation and the audit log are the server's business, never the CLI's.
Output is a plain table for people, or the API's JSON answer unchanged with ``--json``.
Exit codes: 0 ok, 1 the API refused or failed (its message on stderr), 2 wrong usage.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from m3bng.cli.ops_client import DEFAULT_URL, OpsApiError, OpsClient, QueryValue, resolve_token

ops_app = typer.Typer(
    help="Operate m3bng over its ops API: transactions, dead letters, replay, pause, alerts, audit.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Ops API tokens (made locally; no server needed).", no_args_is_help=True)
tx_app = typer.Typer(
    help="Transactions (inbound events): list, find by business key, show.", no_args_is_help=True
)
dlq_app = typer.Typer(help="Dead letters.", no_args_is_help=True)
bulk_app = typer.Typer(help="Bulk replays already started.", no_args_is_help=True)
holds_app = typer.Typer(
    help="Transactions held by an anomaly rule: list, release, discard (docs/assist.md).",
    no_args_is_help=True,
)
ops_app.add_typer(token_app, name="token")
ops_app.add_typer(tx_app, name="tx")
ops_app.add_typer(dlq_app, name="dlq")
ops_app.add_typer(bulk_app, name="bulk")
ops_app.add_typer(holds_app, name="holds")

POLL_SECONDS = 0.5
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
RELATIVE_TIME = re.compile(r"(\d+)([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Mode(enum.StrEnum):
    FROM_FAILED_STEP = "from_failed_step"
    FROM_START = "from_start"


class Kind(enum.StrEnum):
    FLOW = "flow"
    TARGET = "target"
    INSTANCE = "instance"


class Resolved(enum.StrEnum):
    FALSE = "false"
    TRUE = "true"
    ALL = "all"


class AlertState(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    ALL = "all"


@dataclass
class Cli:
    url: str
    token: str | None
    json: bool


# -- shared options ----------------------------------------------------------------------------

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer (for scripts).")]
Limit = Annotated[int | None, typer.Option(help="Rows per page (the server caps it).", min=1)]
All = Annotated[bool, typer.Option("--all", help="Follow next_cursor through every page.")]
Cursor = Annotated[str | None, typer.Option(help="Continue from a previous page's next_cursor.")]
Status = Annotated[
    list[str] | None,
    typer.Option("--status", help="pending, processing, done, dead, discarded, skipped, held (repeatable)."),
]
Type = Annotated[
    list[str] | None, typer.Option("--type", help="Event type, e.g. order.created (repeatable).")
]
Source = Annotated[str | None, typer.Option(help="bng (webhooks), ion (BODs) or poller.")]
Since = Annotated[
    str | None, typer.Option(help="At or after: ISO time, or an age like 30m, 2h, 7d (that long ago).")
]
Until = Annotated[str | None, typer.Option(help="Before: ISO time, or an age like 1h.")]
ErrorClass = Annotated[str | None, typer.Option(help="Error class, e.g. missing_reference, transient.")]
Program = Annotated[str | None, typer.Option(help="M3 program (OIS100MI) or program/transaction.")]
Key = Annotated[
    str | None, typer.Option("--key", help="Business key: BNG id, ORNO, CUNO, BODID, webhook-id.")
]
Reason = Annotated[
    str | None,
    typer.Option("--reason", help="Dead-letter reason: permanent_error, retries_exhausted, no_flow."),
]
Instance = Annotated[
    str | None, typer.Option("--instance", help="BNG instance id (m3bng ops instances lists them).")
]


@ops_app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="M3BNG_OPS_URL", help="The m3bng server.")] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="M3BNG_OPS_TOKEN",
            help="Ops token or JWT (default for a local server: ./m3bng-sandbox.ops-token).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Operate m3bng over its ops API (/api/v1): the same API and scopes as the dashboard."""
    ctx.obj = Cli(url=url, token=resolve_token(token, url), json=as_json)


def _cli(ctx: typer.Context, as_json: bool) -> Cli:
    cli: Cli = ctx.find_object(Cli) or Cli(DEFAULT_URL, None, False)
    if as_json:
        cli.json = True
    return cli


def _fail(message: str) -> NoReturn:
    typer.echo(f"m3bng ops: {message}", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def _api(cli: Cli) -> Iterator[OpsClient]:
    """An API client; an API error ends the command with exit code 1 and the API's message."""
    client = OpsClient(cli.url, cli.token)
    try:
        yield client
    except OpsApiError as exc:
        message = exc.message
        if exc.status == 401 and not cli.token:
            message += " (give one with --token or M3BNG_OPS_TOKEN)"
        _fail(f"{exc.status} {message}" if exc.status else message)
    finally:
        client.close()


def _emit(cli: Cli, data: Any, human: Callable[[], None]) -> None:
    if cli.json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        human()


def _when(value: str | None) -> str | None:
    """``2h`` → the ISO time two hours ago; anything else is passed on for the API to judge."""
    if value is None:
        return None
    match = RELATIVE_TIME.fullmatch(value.strip())
    if match is None:
        return value
    delta = timedelta(**{UNITS[match[2]]: int(match[1])})
    return (datetime.now(UTC) - delta).isoformat(timespec="seconds")


# -- plain-text tables -------------------------------------------------------------------------

_ISO = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def _cell(value: Any, width: int = 60) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    text = " ".join(str(value).split())
    match = _ISO.fullmatch(text)
    if match:
        text = f"{match[1]} {match[2]}"
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], empty: str = "(none)") -> None:
    if not rows:
        typer.echo(empty)
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(header), *(len(r[i]) for r in cells)) for i, (_, header) in enumerate(columns)]
    lines = [[header for _, header in columns], *cells]
    for line in lines:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _ms(value: float | None) -> str | None:
    if value is None:
        return None
    return "<1" if value < 1 else f"{value:.0f}"


def _listing(
    cli: Cli,
    path: str,
    params: dict[str, QueryValue],
    columns: Sequence[tuple[str, str]],
    *,
    follow: bool,
) -> None:
    with _api(cli) as api:
        items: list[dict[str, Any]] = []
        next_cursor = None
        for page in api.pages(path, params, follow=follow):
            items.extend(page.get("items", []))
            next_cursor = page.get("next_cursor")
    if cli.json:
        _emit(cli, {"items": items, "next_cursor": next_cursor}, lambda: None)
        return
    _table(items, columns)
    if next_cursor:
        typer.echo(f"(more: --all, or --cursor {next_cursor})", err=True)


# -- token, whoami -----------------------------------------------------------------------------


@token_app.command("new")
def token_new(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who or what uses it (the audit log's actor).")],
    scope: Annotated[
        str, typer.Option(help="ops:read, ops:replay, ops:admin or storefront:read.")
    ] = "ops:read",
    as_json: JsonFlag = False,
) -> None:
    """Make a new token: print it once, and the M3BNG_OPS_TOKENS entry that configures its hash."""
    from m3bng.ops.tokens import hash_token, new_token, parse_scope

    cli = _cli(ctx, as_json)
    if not TOKEN_NAME.fullmatch(name):
        raise typer.BadParameter(
            "1-64 letters, digits or . _ @ + - (no spaces or commas: the entry is space-separated)",
            param_hint="--name",
        )
    try:
        parsed = parse_scope(scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from None
    token = new_token()
    entry = f"{name} {parsed.value} {hash_token(token)}"

    def human() -> None:
        typer.echo(f"token for {name} ({parsed.value}); shown once, store it in a secret manager:")
        typer.echo(f"  {token}")
        typer.echo("add this entry to M3BNG_OPS_TOKENS (comma-separated) and restart m3bng:")
        typer.echo(f"  {entry}")

    _emit(cli, {"name": name, "scope": parsed.value, "token": token, "entry": entry}, human)


@ops_app.command()
def whoami(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Who the token belongs to and what it may do."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        me = api.get("/whoami")
    _emit(
        cli,
        me,
        lambda: typer.echo(
            f"{me['name']}  {me['scope']}  via {me['via']}  replay: {_cell(me['can_replay'])}  "
            f"personal data: {'shown' if me['sees_personal_data'] else 'masked'}"
        ),
    )


# -- transactions ------------------------------------------------------------------------------

TX_COLUMNS = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("event_type", "TYPE"),
    ("business_key", "KEY"),
    ("attempts", "TRIES"),
    ("error_class", "ERROR CLASS"),
    ("received_at", "RECEIVED"),
    ("last_error", "LAST ERROR"),
]


@tx_app.command("list")
def tx_list(
    ctx: typer.Context,
    status: Status = None,
    event_type: Type = None,
    source: Source = None,
    since: Since = None,
    until: Until = None,
    error_class: ErrorClass = None,
    program: Program = None,
    key: Key = None,
    instance: Instance = None,
    limit: Limit = None,
    cursor: Cursor = None,
    follow: All = False,
    as_json: JsonFlag = False,
) -> None:
    """Transactions, newest first."""
    params: dict[str, QueryValue] = {
        "status": status,
        "event_type": event_type,
        "source": source,
        "since": _when(since),
        "until": _when(until),
        "error_class": error_class,
        "program": program,
        "q": key,
        "instance": instance,
        "limit": limit,
        "cursor": cursor,
    }
    _listing(_cli(ctx, as_json), "/transactions", params, TX_COLUMNS, follow=follow)


@tx_app.command("find")
def tx_find(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="BNG id, M3 ORNO, CUNO, BODID, webhook-id …")],
    instance: Instance = None,
    follow: All = False,
    as_json: JsonFlag = False,
) -> None:
    """Where is it? Every transaction a business key belongs to."""
    params: dict[str, QueryValue] = {"q": key, "instance": instance}
    _listing(_cli(ctx, as_json), "/transactions", params, TX_COLUMNS, follow=follow)


@tx_app.command("show")
def tx_show(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(metavar="ID", help="Transaction (event) id.")],
    calls: Annotated[
        bool, typer.Option("--calls", help="Also print each step's request and response.")
    ] = False,
    fixes: Annotated[
        bool,
        typer.Option(
            "--fixes/--no-fixes",
            help="For a dead transaction, also list fix suggestions (reads M3's item/customer lists).",
        ),
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """One transaction: payload, mapping version, steps, dead letter, replays, business keys,
    and for a dead one the fix suggestions (``m3bng ops fix ID N`` prepares one)."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        tx = api.get(f"/transactions/{event_id}")
        if fixes and tx.get("status") == "dead":
            tx["fix_suggestions"] = api.get(f"/transactions/{event_id}/fix-suggestions")
    _emit(cli, tx, lambda: _print_tx(tx, calls=calls))


def _print_fixes(found: dict[str, Any]) -> None:
    cause = found.get("cause") or {}
    typer.echo(f"fix suggestions (cause: {cause.get('kind')}; m3bng ops fix {found.get('event_id')} N):")
    for item in found.get("suggestions") or []:
        typer.echo(f"  {item['number']}. [{item['score']:.2f}] {item['title']}")
        typer.echo(f"     why: {_cell(item.get('why'), 300)}")
        for change in item.get("edit") or []:
            typer.echo(f"     edit {change['path']}: {_cell(change['before'])} → {_cell(change['after'])}")
        if item.get("action"):
            typer.echo(f"     do: {_cell(item['action'], 400)}")
    if not found.get("suggestions"):
        typer.echo("  (none)")
    for note in found.get("notes") or []:
        typer.echo(f"  note: {note}")


def _print_tx(tx: dict[str, Any], *, calls: bool) -> None:
    typer.echo(f"transaction {tx['id']}  {tx.get('event_type')}  {tx.get('status')}")
    fields = [
        ("source", tx.get("source")),
        ("external id", tx.get("external_id")),
        ("business key", tx.get("business_key")),
        ("attempts", tx.get("attempts")),
        ("error class", tx.get("error_class")),
        ("last error", tx.get("last_error")),
        ("received", tx.get("received_at")),
        ("updated", tx.get("updated_at")),
        ("finished", tx.get("finished_at")),
        ("correlation", tx.get("correlation_id")),
    ]
    mapping = tx.get("mapping") or {}
    if mapping:
        changed = " (changed since; --from-start applies the current one)" if mapping.get("changed") else ""
        fields.append(
            ("mapping", f"{mapping.get('name') or '-'} {(mapping.get('hash') or '-')[:12]}{changed}")
        )
    for label, value in fields:
        typer.echo(f"  {label:<13}{_cell(value, 200)}")
    keys = tx.get("keys") or []
    if keys:
        typer.echo("  keys         " + ", ".join(f"{k['value']} ({k['kind']})" for k in keys))
    dead = tx.get("dead_letter")
    if dead:
        state = (
            f"resolved {_cell(dead.get('resolved_at'))} ({dead.get('resolution')})"
            if dead.get("resolved_at")
            else "open"
        )
        typer.echo(
            f"dead letter {dead['id']}: {dead.get('reason')} / {dead.get('error_class')}, "
            f"attempts {dead.get('attempts')}, {state}\n  {_cell(dead.get('error'), 500)}"
        )
    typer.echo("steps:")
    steps = [{**step, "duration_ms": _ms(step.get("duration_ms"))} for step in tx.get("steps") or []]
    _table(
        steps,
        [
            ("id", "ID"),
            ("attempt", "TRY"),
            ("name", "STEP"),
            ("operation", "OPERATION"),
            ("status", "STATUS"),
            ("duration_ms", "MS"),
            ("error_class", "ERROR CLASS"),
            ("error", "ERROR"),
        ],
    )
    if calls:
        for step in steps:
            typer.echo(f"step {step['id']} {step.get('operation')}")
            typer.echo("  request:  " + json.dumps(step.get("request"), ensure_ascii=False, default=str))
            typer.echo("  response: " + json.dumps(step.get("response"), ensure_ascii=False, default=str))
    replays = tx.get("replays") or []
    if replays:
        typer.echo("replays:")
        _table(
            replays,
            [
                ("id", "ID"),
                ("mode", "MODE"),
                ("requested_by", "BY"),
                ("created_at", "AT"),
                ("bulk_id", "BULK"),
                ("edited", "EDITED"),
            ],
        )
    for finding in tx.get("anomalies") or []:
        _print_finding(finding)
    if tx.get("checkpoint"):
        typer.echo("checkpoint: " + json.dumps(tx["checkpoint"], ensure_ascii=False, default=str))
    if tx.get("fix_suggestions"):
        _print_fixes(tx["fix_suggestions"])
    if tx.get("purged_at"):
        typer.echo(f"payload: purged by retention at {_cell(tx['purged_at'])}")
        return
    masked = " (personal data masked; ops:admin sees it)" if tx.get("personal_data_masked") else ""
    typer.echo(f"payload:{masked}")
    typer.echo(json.dumps(tx.get("payload"), indent=2, ensure_ascii=False, default=str))


# -- dead letters ------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    reason: Reason = None,
    error_class: ErrorClass = None,
    event_type: Type = None,
    source: Source = None,
    since: Since = None,
    until: Until = None,
    resolved: Annotated[
        Resolved, typer.Option(help="Open (false), resolved (true) or all.")
    ] = Resolved.FALSE,
    instance: Instance = None,
    limit: Limit = None,
    cursor: Cursor = None,
    follow: All = False,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters, newest first (open ones unless --resolved)."""
    params: dict[str, QueryValue] = {
        "reason": reason,
        "error_class": error_class,
        "event_type": event_type,
        "source": source,
        "since": _when(since),
        "until": _when(until),
        "resolved": resolved.value,
        "instance": instance,
        "limit": limit,
        "cursor": cursor,
    }
    columns = [
        ("id", "ID"),
        ("event_id", "TX"),
        ("event_type", "TYPE"),
        ("business_key", "KEY"),
        ("reason", "REASON"),
        ("error_class", "ERROR CLASS"),
        ("attempts", "TRIES"),
        ("created_at", "AT"),
        ("error", "ERROR"),
    ]
    _listing(_cli(ctx, as_json), "/dead-letters", params, columns, follow=follow)


@dlq_app.command("summary")
def dlq_summary(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Open dead letters counted by flow, reason and error class."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        summary = api.get("/dead-letters/summary")

    def human() -> None:
        typer.echo(f"{summary.get('total', 0)} open dead letters")
        _table(
            summary.get("groups") or [],
            [
                ("count", "COUNT"),
                ("event_type", "TYPE"),
                ("reason", "REASON"),
                ("error_class", "ERROR CLASS"),
            ],
            empty="",
        )

    _emit(cli, summary, human)


# -- replay, discard ---------------------------------------------------------------------------


def _read_payload(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {source}: {exc.strerror}", param_hint="--payload") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None


@ops_app.command()
def replay(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(metavar="ID", help="Transaction (event) id.")],
    from_start: Annotated[
        bool | None,
        typer.Option(
            "--from-start/--from-failed-step",
            help="From the start with the current mapping, or resume at the failed step. "
            "Default: from the failed step, or from the start with --payload.",
            show_default=False,
        ),
    ] = None,
    payload: Annotated[
        str | None,
        typer.Option(
            help='Edited payload as JSON, a file or - for stdin: the webhook body {"type", "timestamp", '
            '"data"} (same type), or {"xml": "<BOD…>"} for an ION event.'
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay one dead, skipped or discarded transaction (optionally with an edited payload)."""
    cli = _cli(ctx, as_json)
    body = {
        "mode": None
        if from_start is None
        else (Mode.FROM_START if from_start else Mode.FROM_FAILED_STEP).value,
        "payload": _read_payload(payload) if payload is not None else None,
        "reason": reason,
    }
    with _api(cli) as api:
        result = api.post(f"/transactions/{event_id}/replay", body)

    def human() -> None:
        typer.echo(
            f"replay {result.get('replay_id')}: transaction {result.get('event_id')} is "
            f"{result.get('status')} again ({result.get('mode')})"
        )
        for change in result.get("diff") or []:
            typer.echo(
                f"  {change.get('change')} {change.get('path')}: "
                f"{_cell(change.get('before'))} → {_cell(change.get('after'))}"
            )

    _emit(cli, result, human)


@ops_app.command()
def fix(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(metavar="ID", help="Transaction (event) id.")],
    number: Annotated[int, typer.Argument(metavar="N", help="The suggestion's number (tx show lists them).")],
    do_replay: Annotated[
        bool, typer.Option("--replay", help="After the dry run, replay with it (asks first unless --yes).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before replaying.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Prepare fix suggestion N as a dry run (the edited payload's diff); --replay sends it."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        prepared = api.post(f"/transactions/{event_id}/fix-suggestions/{number}/prepare")
        suggestion = prepared.get("suggestion") or {}
        request = prepared.get("replay") or {}
        body = dict(request.get("body") or {})
        typer.echo(f"suggestion {number}: {suggestion.get('title')}", err=cli.json)
        if suggestion.get("action"):
            typer.echo(f"  do first: {suggestion['action']}", err=cli.json)
        typer.echo(f"dry run: replay {prepared.get('mode')}, nothing replayed", err=cli.json)
        for change in prepared.get("diff") or []:
            typer.echo(
                f"  {change.get('change')} {change.get('path')}: "
                f"{_cell(change.get('before'))} → {_cell(change.get('after'))}",
                err=cli.json,
            )
        if not do_replay:
            _emit(cli, prepared, lambda: typer.echo(f"to replay: m3bng ops fix {event_id} {number} --replay"))
            return
        if "payload" in body and prepared.get("personal_data_masked"):
            _fail("the payload is shown masked; replaying an edited payload needs an ops:admin token")
        if not yes and not typer.confirm(f"replay transaction {event_id} with it?", err=True):
            _fail("not replayed")
        if reason:
            body["reason"] = reason
        result = api.post(request["path"].removeprefix("/api/v1"), body)
    _emit(
        cli,
        result,
        lambda: typer.echo(
            f"replay {result.get('replay_id')}: transaction {result.get('event_id')} is "
            f"{result.get('status')} again ({result.get('mode')})"
        ),
    )


@ops_app.command()
def discard(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(metavar="ID", help="Transaction (event) id.")],
    reason: Annotated[str, typer.Option(help="Why it is given up (kept in the audit log).")],
    as_json: JsonFlag = False,
) -> None:
    """Give up a transaction for good, with a reason."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        tx = api.post(f"/transactions/{event_id}/discard", {"reason": reason})
    _emit(cli, tx, lambda: typer.echo(f"transaction {tx.get('id', event_id)} is {tx.get('status')}"))


# -- anomaly holds -----------------------------------------------------------------------------

FIGURES = (
    "value",
    "median",
    "mad_log",
    "robust_z",
    "ratio",
    "max_z",
    "min_ratio",
    "history_size",
    "max_amount",
)


def _print_finding(finding: dict[str, Any]) -> None:
    """One anomaly rule that fired: rule, action, summary, the figures and the history's size."""
    detail = finding.get("detail") or {}
    ended = f" ({finding['resolution']} by {finding.get('resolved_by')})" if finding.get("resolution") else ""
    typer.echo(f"anomaly {finding.get('rule')}: {finding.get('action')}{ended}")
    typer.echo(f"  {_cell(finding.get('summary'), 300)}")
    figures = [f"{name} {detail[name]}" for name in FIGURES if detail.get(name) is not None]
    if figures:
        typer.echo("  " + ", ".join(figures))
    for row in (detail.get("history") or [])[:5]:
        typer.echo("  history: " + json.dumps(row, ensure_ascii=False, default=str))


@holds_app.command("list")
def holds_list(
    ctx: typer.Context,
    flow: Annotated[str | None, typer.Option(help="Only this flow's holds, e.g. order_to_cash.")] = None,
    rule: Annotated[
        str | None,
        typer.Option(help="Only holds by this rule: quantity, price, amount, new_customer, near_duplicate."),
    ] = None,
    limit: Limit = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Each hold's figures and history too.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Open holds, newest first, with the rules that hold them."""
    cli = _cli(ctx, as_json)
    params: dict[str, QueryValue] = {"flow": flow, "rule": rule, "limit": limit}
    with _api(cli) as api:
        result = api.get("/holds", {k: v for k, v in params.items() if v is not None})

    def human() -> None:
        items = result.get("items", [])
        rows = [
            {
                **item,
                "rules": ", ".join(item.get("rules") or []),
                "why": "; ".join(f["summary"] for f in item["findings"]),
            }
            for item in items
        ]
        _table(
            rows,
            [
                ("event_id", "ID"),
                ("held_at", "HELD"),
                ("flow", "FLOW"),
                ("business_key", "KEY"),
                ("rules", "RULES"),
                ("why", "WHY"),
            ],
        )
        if verbose:
            for item in items:
                typer.echo(f"transaction {item['event_id']}:")
                for finding in item["findings"]:
                    _print_finding(finding)

    _emit(cli, result, human)


@holds_app.command("release")
def holds_release(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(metavar="ID", help="Transaction (event) id.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a held transaction on: back in line, its hold bypassed (audited)."""
    _end_hold(_cli(ctx, as_json), event_id, "release", reason)


@holds_app.command("discard")
def holds_discard(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(metavar="ID", help="Transaction (event) id.")],
    reason: Annotated[str, typer.Option(help="Why it is given up (kept in the audit log).")],
    as_json: JsonFlag = False,
) -> None:
    """Close a held transaction without sending it, with a reason (audited)."""
    _end_hold(_cli(ctx, as_json), event_id, "discard", reason)


def _end_hold(cli: Cli, event_id: int, what: str, reason: str | None) -> None:
    """``POST /holds/{id}/release`` or ``…/discard``; prints what the transaction is now."""
    with _api(cli) as api:
        result = api.post(f"/holds/{event_id}/{what}", {"reason": reason})
    _emit(
        cli,
        result,
        lambda: typer.echo(f"transaction {event_id} {result.get('resolution')}: {result.get('status')}"),
    )


# -- bulk replay -------------------------------------------------------------------------------


@ops_app.command("bulk-replay")
def bulk_replay(
    ctx: typer.Context,
    event_type: Type = None,
    source: Source = None,
    since: Since = None,
    until: Until = None,
    error_class: ErrorClass = None,
    program: Program = None,
    key: Key = None,
    instance: Instance = None,
    dead_reason: Annotated[
        str | None,
        typer.Option(
            "--dead-reason", help="Dead-letter reason: permanent_error, retries_exhausted, no_flow."
        ),
    ] = None,
    mode: Annotated[Mode, typer.Option(help="Where each replay starts.")] = Mode.FROM_FAILED_STEP,
    rate: Annotated[
        float | None,
        typer.Option(help="Replays per second (default: the server's M3BNG_OPS_REPLAY_RATE).", min=0.01),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before starting.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Replay every dead letter a filter matches: dry run, confirm, then follow it to the end.

    Ctrl-C while it runs cancels it (events already replayed stay replayed)."""
    cli = _cli(ctx, as_json)
    bulk_filter = {
        "event_type": event_type or [],
        "source": source,
        "since": _when(since),
        "until": _when(until),
        "error_class": error_class,
        "program": program,
        "q": key,
        "reason": dead_reason,
        "instance": instance,
    }
    bulk_filter = {k: v for k, v in bulk_filter.items() if v not in (None, [], "")}
    body: dict[str, Any] = {"filter": bulk_filter, "mode": mode.value, "rate": rate, "reason": reason}
    with _api(cli) as api:
        matched = int(api.post("/replays/bulk", {**body, "dry_run": True}).get("matched", 0))
        if matched == 0:
            typer.echo("nothing to replay: no dead letter matches", err=cli.json)
            if cli.json:
                _emit(cli, {"matched": 0}, lambda: None)
            return
        typer.echo(
            f"{matched} {'dead letter matches' if matched == 1 else 'dead letters match'}", err=cli.json
        )
        if not yes and not typer.confirm(
            f"replay {'it' if matched == 1 else 'them'} ({mode.value})?", err=True
        ):
            _fail("not started, nothing replayed")
        bulk = api.post("/replays/bulk", {**body, "dry_run": False})
        bulk = _follow(api, bulk, cli=cli, ask=not yes)
    _emit(cli, bulk, lambda: typer.echo(_bulk_line(bulk)))
    if bulk.get("status") == "failed":
        raise typer.Exit(1)


def _follow(api: OpsClient, bulk: dict[str, Any], *, cli: Cli, ask: bool) -> dict[str, Any]:
    """Poll the bulk replay into a progress bar until it ends; Ctrl-C offers to cancel it."""
    bulk_id = bulk["id"]
    shown = 0
    try:
        with typer.progressbar(
            length=max(int(bulk.get("total") or 0), 1),
            label=f"bulk replay {bulk_id}",
            show_pos=True,
            file=sys.stderr if cli.json else sys.stdout,
        ) as bar:
            while True:
                progressed = int(bulk.get("replayed") or 0) + int(bulk.get("skipped") or 0)
                bar.update(progressed - shown)
                shown = progressed
                if bulk.get("status") != "running":
                    return bulk
                time.sleep(POLL_SECONDS)
                bulk = api.get(f"/replays/bulk/{bulk_id}")
    except KeyboardInterrupt:
        typer.echo("", err=True)
        cancel = True
        if ask:
            try:
                cancel = typer.confirm(
                    f"cancel bulk replay {bulk_id}? (no: it keeps running on the server)",
                    default=True,
                    err=True,
                )
            except typer.Abort:
                cancel = True
        if not cancel:
            typer.echo(f"still running; follow it with: m3bng ops bulk status {bulk_id}", err=True)
            current: dict[str, Any] = api.get(f"/replays/bulk/{bulk_id}")
            return current
        cancelled: dict[str, Any] = api.post(
            f"/replays/bulk/{bulk_id}/cancel", {"reason": "Ctrl-C in m3bng ops"}
        )
        return cancelled


def _bulk_line(bulk: dict[str, Any]) -> str:
    line = (
        f"bulk replay {bulk.get('id')}: {bulk.get('status')}, {bulk.get('replayed')} of "
        f"{bulk.get('total')} replayed, {bulk.get('skipped')} skipped ({bulk.get('mode')}"
        f"{', ' + str(bulk['rate']) + '/s' if bulk.get('rate') else ''}, by {bulk.get('requested_by')})"
    )
    return line + (f"\n  error: {bulk['error']}" if bulk.get("error") else "")


BULK_COLUMNS = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("total", "TOTAL"),
    ("replayed", "REPLAYED"),
    ("skipped", "SKIPPED"),
    ("mode", "MODE"),
    ("requested_by", "BY"),
    ("created_at", "STARTED"),
    ("finished_at", "FINISHED"),
]


@bulk_app.command("list")
def bulk_list(
    ctx: typer.Context,
    limit: Limit = None,
    cursor: Cursor = None,
    follow: All = False,
    as_json: JsonFlag = False,
) -> None:
    """Recent bulk replays, newest first."""
    _listing(
        _cli(ctx, as_json), "/replays/bulk", {"limit": limit, "cursor": cursor}, BULK_COLUMNS, follow=follow
    )


@bulk_app.command("status")
def bulk_status(
    ctx: typer.Context, bulk_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Progress of one bulk replay."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        bulk = api.get(f"/replays/bulk/{bulk_id}")
    _emit(cli, bulk, lambda: typer.echo(_bulk_line(bulk)))


@bulk_app.command("cancel")
def bulk_cancel(
    ctx: typer.Context,
    bulk_id: Annotated[int, typer.Argument(metavar="ID")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stop a bulk replay; what it already replayed stays replayed, the rest stays dead."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        bulk = api.post(f"/replays/bulk/{bulk_id}/cancel", {"reason": reason})
    _emit(cli, bulk, lambda: typer.echo(_bulk_line(bulk)))


# -- control -----------------------------------------------------------------------------------

KindArg = Annotated[
    Kind, typer.Argument(help="flow (an event type), target (m3, bng, ion) or instance (a BNG instance).")
]
NameArg = Annotated[
    str, typer.Argument(help="Event type, e.g. order.created; target, e.g. m3; or instance id, e.g. eu.")
]


def _set_paused(
    ctx: typer.Context, action: str, kind: Kind, name: str, reason: str | None, as_json: bool
) -> None:
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        state = api.post(f"/control/{action}", {"kind": kind.value, "name": name, "reason": reason})
    _emit(
        cli, state, lambda: typer.echo(f"{kind.value} {name} {'paused' if action == 'pause' else 'resumed'}")
    )


@ops_app.command()
def pause(
    ctx: typer.Context,
    kind: KindArg,
    name: NameArg,
    reason: Annotated[str, typer.Option(help="Why (shown in ops status and the audit log).")],
    as_json: JsonFlag = False,
) -> None:
    """Stop workers claiming a flow's, a target's or a BNG instance's events; they queue, nothing is lost."""
    _set_paused(ctx, "pause", kind, name, reason, as_json)


@ops_app.command()
def resume(
    ctx: typer.Context,
    kind: KindArg,
    name: NameArg,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Let workers claim a paused flow's, target's or instance's events again, in order."""
    _set_paused(ctx, "resume", kind, name, reason, as_json)


@ops_app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Flows with their backlog and oldest waiting age; targets with circuit state; what is paused."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        control = api.get("/control")

    def human() -> None:
        flows = [
            {
                **f,
                "oldest": _age(f.get("oldest_pending_age_seconds")),
                "paused": "yes" if f.get("paused") else "target" if f.get("target_paused") else "no",
            }
            for f in control.get("flows") or []
        ]
        typer.echo("flows:")
        _table(
            flows,
            [
                ("event_type", "FLOW"),
                ("source", "SOURCE"),
                ("target", "TARGET"),
                ("pending", "PENDING"),
                ("processing", "PROCESSING"),
                ("oldest", "OLDEST"),
                ("paused", "PAUSED"),
                ("reason", "REASON"),
            ],
        )
        typer.echo("targets:")
        _table(
            control.get("targets") or [],
            [("name", "TARGET"), ("circuit", "CIRCUIT"), ("paused", "PAUSED"), ("reason", "REASON")],
        )

    _emit(cli, control, human)


@ops_app.command()
def instances(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """BNG instances: paused or not, events pending and dead of each."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        answer = api.get("/instances")
    columns = [
        ("id", "INSTANCE"),
        ("description", "DESCRIPTION"),
        ("bng_host", "BNG"),
        ("paused", "PAUSED"),
        ("pending", "PENDING"),
        ("dead", "DEAD"),
        ("reason", "REASON"),
    ]
    _emit(cli, answer, lambda: _table(answer.get("items") or [], columns))


@ops_app.command()
def alerts(
    ctx: typer.Context,
    state: Annotated[AlertState, typer.Option(help="firing, resolved or all.")] = AlertState.FIRING,
    as_json: JsonFlag = False,
) -> None:
    """Alerts: backlog age, dead letters, open circuits, order SLA."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        answer = api.get("/alerts", {"state": state.value})
    columns = [
        ("key", "ALERT"),
        ("state", "STATE"),
        ("summary", "SUMMARY"),
        ("first_fired_at", "SINCE"),
        ("last_seen_at", "LAST SEEN"),
        ("resolved_at", "RESOLVED"),
    ]
    _emit(cli, answer, lambda: _table(answer.get("items") or [], columns))


@ops_app.command()
def audit(
    ctx: typer.Context,
    action: Annotated[
        list[str] | None, typer.Option(help="e.g. replay, discard, pause (repeatable).")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Token name or JWT subject.")] = None,
    target_type: Annotated[str | None, typer.Option(help="event, bulk_replay, control, …")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Target id, e.g. a transaction id.")] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = None,
    cursor: Cursor = None,
    follow: All = False,
    as_json: JsonFlag = False,
) -> None:
    """The audit log (ops:admin): who replayed, discarded, paused or purged what, and when."""
    params: dict[str, QueryValue] = {
        "action": action,
        "actor": actor,
        "target_type": target_type,
        "target_id": target,
        "since": _when(since),
        "until": _when(until),
        "limit": limit,
        "cursor": cursor,
    }
    columns = [
        ("at", "AT"),
        ("actor", "ACTOR"),
        ("action", "ACTION"),
        ("target_type", "ON"),
        ("target_id", "ID"),
        ("detail", "DETAIL"),
    ]
    _listing(_cli(ctx, as_json), "/audit", params, columns, follow=follow)


@ops_app.command()
def purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be purged.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Apply the retention settings now (ops:admin): drop old payloads, dead letters and keys."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        counts = api.post("/retention/purge", {"dry_run": dry_run})

    def human() -> None:
        typer.echo("would purge:" if dry_run else "purged:")
        for name, value in (counts or {}).items():
            if name != "dry_run":
                typer.echo(f"  {name}: {_cell(value)}")

    _emit(cli, counts, human)


@ops_app.command()
def erase(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Business key: BNG customer id, M3 CUNO, order id, BODID …")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be erased.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before erasing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Erase the personal data of every finished transaction about one business key (ops:admin)."""
    cli = _cli(ctx, as_json)
    with _api(cli) as api:
        preview = api.post("/retention/erase", {"q": key, "dry_run": True})
        if not dry_run:
            if not yes:
                typer.echo(
                    f"{preview.get('matched')} transactions about {key} ({preview.get('open')} still open, "
                    "not erased)",
                    err=True,
                )
                if not typer.confirm("erase their payloads, steps and stored state for good?", err=True):
                    _fail("not erased")
            preview = api.post("/retention/erase", {"q": key, "dry_run": False})
    counts = preview

    def human() -> None:
        typer.echo(f"{'would erase' if dry_run else 'erased'} for {key}:")
        for name, value in counts.items():
            if name not in ("dry_run", "q"):
                typer.echo(f"  {name}: {_cell(value)}")

    _emit(cli, counts, human)
