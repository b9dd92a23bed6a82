"""A small synchronous client for the ops API (``/api/v1``), for ``m3bng ops …`` and scripts.

It is the same HTTP API the dashboard uses, so the CLI can do nothing the API does not allow:
scopes, validation and the audit log all stay on the server. Every failure, whether the server
answered with an error or could not be reached, becomes one ``OpsApiError`` whose message is the
API's own ``{"error": {"message"}}`` when there is one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from m3bng.errors import M3bngError

DEFAULT_URL = "http://127.0.0.1:8080"
SANDBOX_TOKEN_FILE = "m3bng-sandbox.ops-token"  # noqa: S105 (a file name, not a secret)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
TIMEOUT = httpx.Timeout(30.0, connect=5.0)

QueryValue = str | int | float | bool | list[str] | None


class OpsApiError(M3bngError):
    """The API refused or failed a request, or could not be reached. ``status`` is what the
    server answered (0 when none came): read from its answer, for the message and the hints."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.body = status, code, message, body


def resolve_token(token: str | None, url: str, cwd: Path | None = None) -> str | None:
    """The token given, else the sandbox's admin token file in the working directory.

    The sandbox file is read only for a server on this machine: the sandbox token must never be
    sent to a remote host someone pointed ``--url`` at."""
    if token:
        return token.strip()
    host = (urlsplit(url).hostname or "").lower()
    if host not in LOOPBACK_HOSTS:
        return None
    path = (cwd or Path.cwd()) / SANDBOX_TOKEN_FILE
    if path.is_file():
        text = path.read_text().strip()
        return text or None
    return None


class OpsClient:
    """``get``/``post`` return the decoded JSON answer or raise ``OpsApiError``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "m3bng-ops-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url + "/api/v1", headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(cls) -> OpsClient:
        url = os.environ.get("M3BNG_OPS_URL") or DEFAULT_URL
        return cls(url, resolve_token(os.environ.get("M3BNG_OPS_TOKEN"), url))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, QueryValue] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def request(
        self, method: str, path: str, *, params: Mapping[str, QueryValue] | None = None, json: Any = None
    ) -> Any:
        query = {k: _query_value(v) for k, v in (params or {}).items() if v not in (None, [], "")}
        try:
            response = self._http.request(method, path, params=query, json=json)
        except httpx.TimeoutException:
            raise OpsApiError(0, "timeout", f"{self.base_url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise OpsApiError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from None
        if response.is_success:
            try:
                return response.json() if response.content else None
            except ValueError:
                raise OpsApiError(
                    response.status_code, "bad_response", f"{method} {path}: the answer is not JSON"
                ) from None
        raise _error(response)

    def pages(self, path: str, params: Mapping[str, QueryValue], *, follow: bool) -> Iterator[dict[str, Any]]:
        """One page, or with ``follow`` every page until ``next_cursor`` is null."""
        query = dict(params)
        while True:
            page: dict[str, Any] = self.get(path, query)
            yield page
            cursor = page.get("next_cursor")
            if not follow or not cursor:
                return
            query["cursor"] = cursor


def _query_value(value: QueryValue) -> str | list[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def _error(response: httpx.Response) -> OpsApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return OpsApiError(
            response.status_code, str(error.get("code") or "error"), str(error["message"]), body
        )
    text = response.text.strip()[:300] or response.reason_phrase
    return OpsApiError(response.status_code, "http_error", f"HTTP {response.status_code}: {text}", body)
