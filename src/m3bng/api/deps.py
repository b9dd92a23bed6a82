"""Request-scoped access to what create_app() built: no globals, everything hangs off app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from m3bng.api.errors import ApiError
from m3bng.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _refuse_declared(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"body is {declared} bytes; the limit is {limit}")


def _refuse_excess(size: int, limit: int) -> None:
    if size > limit:
        raise ApiError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """Read the raw body (signatures are computed over it) and refuse more than ``limit`` bytes
    without buffering the excess."""
    _refuse_declared(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        _refuse_excess(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_body(receive: Receive, limit: int, content_length: str | None) -> bytes:
    """``read_body`` straight from the ASGI channel, for the webhook's fast path, which builds
    no Request; ``content_length`` is the header's value (None: absent). A client gone before
    its body was read raises ``ClientDisconnect``, as ``Request.stream`` does."""
    _refuse_declared(content_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        _refuse_excess(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers as a plain dict, built once where each ``Headers.get`` scanned the
    whole list again (eight look-ups per webhook). Names are as the server gives them, in lower
    case (ASGI), and the first of a repeated header wins, as with ``Headers.get``."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


async def send_json(send: Send, status: int, body: bytes) -> None:
    """What ``Response(body, media_type="application/json")`` sends, without building one: the
    fast paths' answers (webhooks, storefront prices), where the Response object and its header
    handling were a visible part of a request's CPU."""
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
