"""The layers stay visible in the tree (docs/architecture.md): ``store/`` is the only package that
builds or runs SQL, and business code never imports FastAPI. Checked on the source, so a
shortcut taken in a hurry fails here rather than in review."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import m3bng

PACKAGE = Path(m3bng.__file__).parent
# Outside store/, SQLAlchemy appears only as the session types a caller passes along.
ALLOWED_SQLALCHEMY = {"sqlalchemy.ext.asyncio"}
SQL_CALLS = {"execute", "scalar", "scalars", "stream", "add", "add_all", "merge", "delete", "get", "flush"}
NO_FASTAPI = ("flows", "inbox", "store", "connectors", "mapping", "ops", "assist")


def modules(*, outside: str | None = None, inside: tuple[str, ...] = ()) -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        top = relative.parts[0]
        if (outside is not None and top == outside) or (inside and top not in inside):
            continue
        yield str(relative), ast.parse(path.read_text(encoding="utf-8"))


def imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_sql_is_built_and_run_only_in_store() -> None:
    problems = []
    for name, tree in modules(outside="store"):
        for module in imported(tree):
            if module.split(".")[0] == "sqlalchemy" and module not in ALLOWED_SQLALCHEMY:
                problems.append(f"{name}: imports {module}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_CALLS
                and isinstance(node.func.value, ast.Name)
                and any(word in node.func.value.id for word in ("session", "conn"))
            ):
                problems.append(f"{name}:{node.lineno}: {node.func.value.id}.{node.func.attr}(…)")
    assert problems == [], "SQL outside store/:\n" + "\n".join(problems)


def test_store_depends_on_nothing_above_it() -> None:
    problems = [
        f"{name}: imports {module}"
        for name, tree in modules(inside=("store",))
        for module in imported(tree)
        if module.startswith(("m3bng.ops", "m3bng.api", "m3bng.flows", "m3bng.connectors", "m3bng.inbox"))
    ]
    assert problems == []


def test_business_code_never_imports_fastapi() -> None:
    problems = [
        f"{name}: imports {module}"
        for name, tree in modules(inside=NO_FASTAPI)
        for module in imported(tree)
        if module.split(".")[0] in {"fastapi", "starlette"}
    ]
    assert problems == []
