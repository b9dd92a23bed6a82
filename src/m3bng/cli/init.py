"""``m3bng init [DIR]``: a deployment folder for a real tenant, ready to fill in.

Why: a production installation needs a ``.env`` naming every setting, its own copy of the
mappings (tenant values differ per M3), and the ``.ionapi`` file in a known place. Assembling that
by hand from the repository is error-prone and impossible from an installed wheel, which has no
``.env.example`` and no ``mappings/`` at a findable path. This writes all three (plus a README.txt)
and prints the commands to run next; ``m3bng doctor`` then says what is still missing.

The ``.env`` is written from the repository's ``.env.example``, shipped as package data.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated

import typer


def env_example() -> str:
    """The repository's .env.example, shipped in the package (``m3bng/cli/env.example`` links to
    it, so there is one text to keep current)."""
    return (resources.files("m3bng.cli") / "env.example").read_text(encoding="utf-8")


# What a real tenant fills in: left uncommented in the written .env (empty = not set yet; doctor
# names each one still missing). Everything else is written commented out, at its default.
TENANT_SETTINGS: dict[str, str] = {
    "DATABASE_URL": "postgresql+asyncpg://m3bng:CHANGE-ME@127.0.0.1:5432/m3bng",
    "MAPPINGS_DIR": "mappings",
    "WEBHOOK_SECRETS": "",
    "IONAPI_FILE": "m3bng.ionapi",
    "BNG_BASE_URL": "",
    "BNG_API_KEY": "",
    "ION_INBOUND_TOKEN": "",
    "OPS_TOKENS": "",
    "ALERT_WEBHOOK_URL": "",
}
IONAPI_NAME = TENANT_SETTINGS["IONAPI_FILE"]

_SETTING = re.compile(r"^M3BNG_([A-Z0-9_]+)=(.*)$")


def tenant_env(database_url: str | None = None) -> str:
    """The .env for a real tenant: .env.example's text and comments, defaults commented out,
    the settings a tenant must provide left open (relative paths: .env is read from this folder)."""
    values = dict(TENANT_SETTINGS)
    if database_url:
        values["DATABASE_URL"] = database_url
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"# m3bng settings for this installation, written by `m3bng init` on {stamp}.",
        "# Read from the working directory: run m3bng from this folder (or set the variables in the",
        "# environment, which wins over this file). Uncommented lines are the ones to fill in for the",
        "# tenant; commented `# M3BNG_...` lines are the defaults, uncomment one to change it.",
        "# `m3bng doctor` checks the result and names what is still missing or wrong.",
        "# This file holds secrets: keep it readable only by the service's user.",
        "",
    ]
    lines = env_example().splitlines()
    # .env.example's own header (up to the first blank line) speaks of the sandbox: replaced above.
    start = lines.index("") + 1 if "" in lines else 0
    for line in lines[start:]:
        match = _SETTING.match(line)
        if match is None:
            out.append(line)
        elif match.group(1) in values:
            out.append(f"M3BNG_{match.group(1)}={values[match.group(1)]}")
        else:
            out.append(f"# {line}")
    return "\n".join(out) + "\n"


def default_mappings() -> Traversable:
    """The shipped mappings: package data (``m3bng/mappings``) in an installed package, else the
    repository's ``mappings/`` next to the source tree (an editable install of a checkout)."""
    packaged = resources.files("m3bng") / "mappings"
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[3] / "mappings"
    if repo.is_dir():
        return repo
    raise FileNotFoundError("the default mappings are not installed (m3bng/mappings)")


def _copy_tree(source: Traversable, target: Path) -> int:
    """Copy a resource folder (which need not be on disk: zip imports); returns files copied."""
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for entry in source.iterdir():
        if entry.name.startswith((".", "__")):
            continue  # __pycache__, __init__.py of a package-data folder, editor files
        if entry.is_dir():
            copied += _copy_tree(entry, target / entry.name)
        elif entry.name.endswith((".yaml", ".yml", ".csv", ".json", ".md")):
            (target / entry.name).write_bytes(entry.read_bytes())
            copied += 1
    return copied


def readme(folder: Path) -> str:
    """README.txt: where the .ionapi goes and how to get it, what to edit, what to run."""
    return f"""m3bng deployment folder
=======================

Written by `m3bng init`. Run every m3bng command from this folder ({folder}): the
settings are read from .env here.

1. The M3 credentials file: {IONAPI_NAME}
   Put the .ionapi file of M3's backend service here, as {folder / IONAPI_NAME}
   (or change M3BNG_IONAPI_FILE in .env). Make it readable only by the service's user.
   How to get it (docs/m3.md, section 1): in Infor OS, ION API -> Authorized Apps ->
   add a "Backend Service" app for m3bng, then "Download Credentials" with
   "Create Service Account" for the dedicated M3 integration user. The downloaded
   file (JSON with ti, cn, ci, cs, iu, pu, ot, saak, sask) is the .ionapi.

2. Settings: .env
   Fill in the uncommented lines: the PostgreSQL URL, BNG's base URL and API key,
   BNG's webhook signing secret, ION's inbound token, ops tokens, the alert webhook.
   Every other setting is listed, commented out, at its default.

3. Mappings: mappings/
   A copy of the shipped mappings. Replace the tenant values (the `vars` of each
   file: docs/m3.md section 6) and keep this folder under version control.
   `m3bng mappings check` checks them against the tenant's M3.

4. Then, from this folder:
   m3bng db upgrade     create or upgrade the database schema
   m3bng doctor         check everything a go-live needs; each problem with its fix
   m3bng serve          start the service
"""  # noqa: S608 - plain text; ruff takes its wording for SQL


def _refuse(message: str) -> None:
    typer.echo(f"m3bng init: {message}", err=True)
    raise typer.Exit(2)


def init(
    directory: Annotated[Path, typer.Argument(help="The deployment folder (new or empty).")] = Path(),
    database_url: Annotated[
        str | None,
        typer.Option(help="M3BNG_DATABASE_URL to write (default: a PostgreSQL placeholder to edit)."),
    ] = None,
) -> None:
    """Write a deployment folder for a real tenant; never overwrites.

    .env (every setting, with its comment), a copy of the default mappings to edit, README.txt
    (where the .ionapi goes and how to get it); then the next commands to run."""
    if directory.exists() and not directory.is_dir():
        _refuse(f"{directory} exists and is a file; choose a new or empty folder (nothing written)")
    if directory.is_dir() and any(directory.iterdir()):
        _refuse(f"{directory} is not empty; choose a new or empty folder (nothing written)")
    try:
        mappings = default_mappings()
    except FileNotFoundError as exc:
        _refuse(str(exc))
        return
    directory.mkdir(parents=True, exist_ok=True)
    folder = directory.resolve()
    env = folder / ".env"
    # The .env will hold secrets: created readable by its owner only.
    fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(tenant_env(database_url))
    count = _copy_tree(mappings, folder / "mappings")
    (folder / "README.txt").write_text(readme(folder), encoding="utf-8")
    typer.echo(f"wrote {env}")
    typer.echo(f"wrote {folder / 'mappings'} ({count} files: the default mappings, to edit)")
    typer.echo(f"wrote {folder / 'README.txt'}")
    typer.echo(
        f"\nnext:\n"
        f"  cd {folder}\n"
        f"  # put the .ionapi file of M3's backend service at ./{IONAPI_NAME} (README.txt says how)\n"
        f"  # fill in the uncommented lines of .env\n"
        f"  m3bng db upgrade\n"
        f"  m3bng doctor\n"
        f"  m3bng serve"
    )
