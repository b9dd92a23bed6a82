"""Expected failures of any ``m3bng`` command: one line on stderr and exit 2, never a traceback
(``m3bng --debug`` shows it). Its own module so that ``m3bng sim`` (``m3bng.sim.cli``) answers
a busy port the way ``serve`` does without importing the whole command."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    import uvicorn


class CliState:
    """Options of the ``m3bng`` command itself (set by its callback), read on a failure."""

    debug = False


def fail(message: str, exc: BaseException | None = None) -> NoReturn:
    """An expected failure (missing file, server down, bad input): one line on stderr and exit 2,
    so that an operator reads what to fix rather than a traceback. ``--debug`` re-raises the
    original exception, for the cases where the line is not enough."""
    if CliState.debug and exc is not None:
        raise exc
    typer.echo(f"m3bng: {message}", err=True)
    raise typer.Exit(2) from None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says it listens or starts a worker: a second
    server on a busy port must stop here, not after its banner (and, for ``serve``, a worker on
    the shared store)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", exc)
    sock.set_inheritable(True)
    return sock


def serve_on(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run uvicorn on a socket bound by `bind`; exit 3 when its start-up (lifespan) failed, as
    ``uvicorn.run`` does."""
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise typer.Exit(3)
