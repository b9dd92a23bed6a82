"""The wire under the M3 and BNG clients: httpx's API on aiohttp's connections.

Why: httpx's own transport (httpcore on anyio) cost about 2 ms of CPU per request in a worker,
a quarter of an order's CPU, where aiohttp, whose HTTP parser is compiled, needs a tenth of
that (docs/benchmarks.md, "The wire"). The clients keep httpx's request and response objects,
its auth flows and test transports; only the bytes on the socket go through aiohttp.

The one thing this module must get right is the meaning of a failure, because the clients
decide from it whether a write may be sent again (connectors/m3/client.py): an error raised
before the request could leave (no connection, no free connection in time) becomes
``httpx.ConnectError``/``ConnectTimeout``; anything after it may have reached the server and
becomes a read error. aiohttp's own silent resend of an idempotent request on a dropped
keep-alive connection is switched off: M3's MI writes are GET requests, and a resent write is a
duplicate order.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport"]


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exceptions as the httpx ones the clients classify (module docstring)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # before a connection was ours: unsent
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake: unsent
        raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # reset, half an answer, a bad payload: maybe applied
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that sends through one aiohttp session, opened on first use
    (aiohttp binds it to the running event loop) and closed with the httpx client."""

    def __init__(self, *, limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> None:
        self._limits = limits
        self._ssl: ssl.SSLContext | bool = httpx.create_ssl_context() if verify is True else verify
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            ssl=self._ssl,
        )
        # Not trust_env: aiohttp would then read the proxy variables and ~/.netrc again, in a
        # thread, on every request; _proxy() reads the variables once per host.
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        # aiohttp resends an idempotent request once when a reused connection drops; an MI write
        # is a GET, so that resend could enter an order twice (module docstring). No public
        # switch exists; tests/unit/test_wire.py proves this one holds.
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None or self._session.closed:
            self._session = self._open()
        timeout = request.extensions.get("timeout", {})
        body = request.content  # the clients send bytes, never a stream
        with _as_httpx_errors(request):
            async with self._session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # httpx has quoted it; keep ";cono=…"
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as answer:
                content = await answer.read()
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            # Still encoded (auto_decompress=False): httpx decodes it by Content-Encoding, as
            # with its own transport.
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    def _proxy(self, url: httpx.URL) -> str | None:
        """The proxy HTTP(S)_PROXY and NO_PROXY name for ``url``, as httpx's transport applies
        them (trust_env), read once per scheme and host."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxy = urllib.request.getproxies_environment().get(url.scheme)
            self._proxies[key] = None if proxy is None or urllib.request.proxy_bypass(url.host) else proxy
        return self._proxies[key]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
