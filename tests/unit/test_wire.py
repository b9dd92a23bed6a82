"""connectors/wire.py over a real socket: answers arrive intact, and each failure means what the
M3 client's write safety needs (unsent → connect error; maybe received → read error, never a
silent resend)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from m3bng.connectors.m3.client import M3Client, M3ClientConfig
from m3bng.connectors.m3.errors import M3UnknownOutcome
from m3bng.connectors.wire import AiohttpTransport

Handler = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw HTTP/1.1 server: ``handler(n, head, writer)`` answers the n-th request (or not) and
    says whether to keep the connection; every request head received is recorded."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                seen.append(head)
                if not await handler(len(seen), head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        srv.close()
        await srv.wait_closed()


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(extra)
    return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def client(base: str, timeout: float = 5.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4)
    return httpx.AsyncClient(base_url=base, timeout=timeout, transport=AiohttpTransport(limits=limits))


async def test_answer_headers_gzip_and_matrix_url_arrive_intact() -> None:
    async def ok(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(gzip.compress(b'{"ok": 1}'), b"content-encoding: gzip\r\nx-n: 7\r\n"))
        await writer.drain()
        return True

    async with server(ok) as (base, seen), client(base) as http:
        for _ in range(2):  # the second one on the kept-alive connection
            response = await http.get(
                "/v2/execute/OIS100MI/AddBatchHead;cono=100;divi=AAA", params={"CUOR": "A B/ü"}
            )
            assert response.status_code == 200
            assert response.json() == {"ok": 1}
            assert response.headers["x-n"] == "7"
        request_line = seen[0].split(b"\r\n")[0].decode()
        assert (
            request_line
            == "GET /v2/execute/OIS100MI/AddBatchHead;cono=100;divi=AAA?CUOR=A+B%2F%C3%BC HTTP/1.1"
        )
        posted = await http.post("/v2/execute", json={"program": "OIS100MI"})
        assert posted.json() == {"ok": 1}


async def test_no_server_is_a_connect_error() -> None:
    async with server(lambda *_: asyncio.sleep(0, False)) as (base, _):
        pass  # closed: nothing listens on that port now
    async with client(base) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/x")


@pytest.mark.parametrize("reused", [False, True])
async def test_a_dropped_connection_after_the_request_is_a_read_error_and_never_resent(reused: bool) -> None:
    """aiohttp would resend a GET once when a kept-alive connection drops; an MI write is a GET."""

    async def drop(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if reused and n == 1:
            writer.write(answer(b"{}"))
            await writer.drain()
            return True
        return False  # received, then the connection closes without an answer

    async with server(drop) as (base, seen), client(base) as http:
        if reused:
            await http.get("/first")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await http.get("/v2/execute/OIS100MI/AddBatchHead")
        await asyncio.sleep(0.05)  # a resend, had there been one, would have arrived by now
        assert sum(b"AddBatchHead" in h for h in seen) == 1


async def test_no_answer_in_time_is_a_read_timeout() -> None:
    async def never(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with server(never) as (base, _), client(base, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/slow")


async def test_m3_write_whose_connection_drops_is_an_unknown_outcome_sent_once() -> None:
    async def drop(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async with server(drop) as (base, seen):
        m3 = M3Client(M3ClientConfig(base_url=base, call_attempts=3, max_inline_wait=0.05))
        try:
            with pytest.raises(M3UnknownOutcome):
                await m3.execute("OIS100MI", "AddBatchHead", {"CUNO": "C1"})
        finally:
            await m3.aclose()
        assert len(seen) == 1


def test_proxy_from_the_environment_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "m3.internal")
    wire = AiohttpTransport(limits=httpx.Limits(max_connections=1))
    assert wire._proxy(httpx.URL("http://bng.example/api")) == "http://proxy.example:3128"
    assert wire._proxy(httpx.URL("http://m3.internal/m3api-rest")) is None
    assert wire._proxy(httpx.URL("https://bng.example/api")) is None  # no https_proxy
    monkeypatch.delenv("http_proxy")
    assert wire._proxy(httpx.URL("http://bng.example/x")) == "http://proxy.example:3128"  # read once
