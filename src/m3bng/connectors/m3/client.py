"""The M3 MI REST client: the one way m3bng calls M3.

``execute()`` runs one MI transaction and returns its records or raises a classified error
(see errors.py). Around every call: the concurrency cap, the maintenance windows, the circuit
breaker, short in-call retries (tenacity) for transient failures, a Prometheus sample and one
structured log line. Durable retries are the worker's business, not this module's.

A write whose request left m3bng but whose answer did not prove what happened raises
``M3UnknownOutcome`` and is *never* resent here: M3 has no idempotency keys, so the flow reads
M3 (the write's read-back) before it sends anything again. Only failures that prove the request
never reached M3 are retried blindly: no connection, a 401/429 from the gateway, 403/404. A 5xx
(the gateway's 502/503/504 as much as M3's 500), a read timeout, a reset or a half answer may
come after M3 committed the write (docs/m3.md, "Unknown outcomes").
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

from m3bng.config import Settings
from m3bng.connectors.limits import Gate
from m3bng.connectors.m3.auth import IonApiAuth, TokenManager
from m3bng.connectors.m3.errors import (
    M3DataError,
    M3Error,
    M3ProgramError,
    M3RecordLocked,
    M3Throttled,
    M3TransientError,
    M3Unavailable,
    M3UnknownOutcome,
    classify_mi_error,
)
from m3bng.connectors.m3.ionapi import IonApiCredentials, load_ionapi
from m3bng.connectors.m3.protection import (
    CircuitBreaker,
    CircuitState,
    MaintenanceWindow,
    maintenance_seconds_left,
)
from m3bng.connectors.protection import inline_retrying
from m3bng.connectors.wire import AiohttpTransport
from m3bng.observability import metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")
READ_PREFIXES = ("Get", "Lst", "Sel", "Search", "List")
MiValue = str | int | float | Decimal | date | bool | None


LIST_PREFIXES = ("Lst", "Sel", "Search", "List")
COMPANY_FIELDS = ("CONO", "DIVI")


def is_read(transaction: str) -> bool:
    return transaction.startswith(READ_PREFIXES)


def is_list(transaction: str) -> bool:
    return transaction.startswith(LIST_PREFIXES)


def format_value(value: MiValue) -> str | None:
    """MI wants dates as yyyyMMdd and decimals with a dot, whatever the locale."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


@dataclass(frozen=True)
class MIResult:
    program: str
    transaction: str
    records: list[dict[str, str]] = field(default_factory=list)

    @property
    def record(self) -> dict[str, str]:
        """The single record of a Get/Add transaction ({} when M3 returned none)."""
        return self.records[0] if self.records else {}


@dataclass(frozen=True)
class M3ClientConfig:
    base_url: str
    api_version: str = "v2"
    cono: int | None = None
    divi: str | None = None
    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_concurrency: int = 8
    call_attempts: int = 3
    max_inline_wait: float = 10.0
    circuit_failures: int = 5
    circuit_reset_seconds: float = 30.0
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, base_url: str) -> M3ClientConfig:
        return cls(
            base_url=base_url.rstrip("/"),
            api_version=settings.m3_api_version,
            cono=settings.m3_cono,
            divi=settings.m3_divi,
            timeout=settings.m3_timeout,
            connect_timeout=settings.m3_connect_timeout,
            max_concurrency=settings.m3_max_concurrency,
            call_attempts=settings.m3_call_attempts,
            max_inline_wait=settings.m3_max_inline_wait,
            circuit_failures=settings.m3_circuit_failures,
            circuit_reset_seconds=settings.m3_circuit_reset_seconds,
            maintenance_windows=tuple(MaintenanceWindow.parse(w) for w in settings.m3_maintenance_windows),
        )


class M3Client:
    def __init__(
        self,
        config: M3ClientConfig,
        *,
        tokens: TokenManager | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        # Shared with the ION client (ConfirmBODs go through the same gateway): connectors/ion.
        self.transport = transport
        self.credentials: IonApiCredentials | None = None
        limits = httpx.Limits(max_connections=config.max_concurrency * 2)
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            auth=IonApiAuth(tokens) if tokens is not None else None,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=limits,
            transport=transport or AiohttpTransport(limits=limits),
            headers={"Accept": "application/json"},
        )
        self._company: dict[str, str] | None = None
        # Calls in flight; resized when the cap is shared between worker processes (shares.py).
        self.gate = Gate(config.max_concurrency)
        self.breaker = CircuitBreaker(
            "m3",
            failure_threshold=config.circuit_failures,
            reset_seconds=config.circuit_reset_seconds,
            on_change=metrics.set_circuit_state,
        )

    @classmethod
    def from_ionapi(
        cls,
        settings: Settings,
        credentials: IonApiCredentials,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> M3Client:
        tokens = TokenManager(credentials, timeout=settings.m3_timeout, transport=transport)
        config = M3ClientConfig.from_settings(settings, settings.m3_base_url or credentials.m3_base_url)
        client = cls(config, tokens=tokens, transport=transport)
        client.credentials = credentials
        return client

    @classmethod
    def from_settings(cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> M3Client:
        """Production wiring: the .ionapi file is loaded (and checked) here, at start-up."""
        if settings.ionapi_file is None:
            raise ValueError("M3BNG_IONAPI_FILE is not set")
        return cls.from_ionapi(settings, load_ionapi(settings.ionapi_file), transport)

    def for_company(self, cono: int | None, divi: str | None) -> M3Client:
        """This client running its calls in another company/division (a BNG instance's,
        instances.py): the same connections, token, concurrency cap and circuit breaker, since
        it is the same M3 tenant. Closed with the client it came from, never on its own."""
        if cono == self.config.cono and divi == self.config.divi:
            return self
        view = copy.copy(self)
        view.config = replace(self.config, cono=cono, divi=divi)
        view._company = None
        return view

    def split_lane(self, slots: int) -> M3Client:
        """Keep ``slots`` of this client's concurrency cap for a lane of its own (the storefront's
        reads) and return that lane: the same connections, token and circuit breaker (it is the
        same M3), but a gate of its own, so the lane's callers queue behind each other and never
        take a slot the rest of m3bng needs, nor the other way round. This client keeps the
        remainder. Closed with this client, never on its own."""
        if not 0 < slots < self.gate.size:
            raise ValueError(f"a lane needs 1..{self.gate.size - 1} of {self.gate.size} slots, not {slots}")
        self.gate.size -= slots
        lane = copy.copy(self)
        lane.gate = Gate(slots)
        return lane

    async def aclose(self) -> None:
        if self.tokens is not None:
            await self.tokens.revoke()
        await self._http.aclose()

    # -- public calls -----------------------------------------------------------------------------

    async def company(self) -> dict[str, str]:
        """CONO and DIVI the calls run in: the configured ones, else the service account's
        defaults (MNS150MI GetUserData), asked once."""
        if self._company is None:
            cono = "" if self.config.cono is None else str(self.config.cono)
            divi = self.config.divi or ""
            if not cono or not divi:
                user = (await self.execute("MNS150MI", "GetUserData")).record
                cono, divi = cono or user.get("CONO", ""), divi or user.get("DIVI", "")
            self._company = {"CONO": cono, "DIVI": divi}
        return self._company

    async def execute(
        self,
        program: str,
        transaction: str,
        record: Mapping[str, MiValue] | None = None,
        *,
        maxrecs: int | None = None,
        returncols: Sequence[str] | None = None,
        cono: int | None = None,
        divi: str | None = None,
    ) -> MIResult:
        """Run one transaction; reads are retried on transient errors, writes only when unsent."""
        fields = {k: v for k, v in ((k, format_value(v)) for k, v in (record or {}).items()) if v is not None}
        matrix = self._matrix(maxrecs=maxrecs, returncols=returncols, cono=cono, divi=divi)
        version = "v2/execute" if self.config.api_version == "v2" else "execute"
        url = f"/{version}/{quote(program)}/{quote(transaction)}{matrix}"

        async def send() -> MIResult:
            response = await self._http.get(url, params=fields)
            return self._parse_single(program, transaction, response)

        return await self._call(program, transaction, send, write=not is_read(transaction))

    async def execute_many(
        self,
        program: str,
        calls: Sequence[tuple[str, Mapping[str, MiValue]]],
        *,
        maxrecs: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[MIResult | M3Error]:
        """Several transactions of one program in one v2 POST; each result or error in order.

        A failure of one transaction does not stop the others, so the caller gets a per-record
        answer (used for bulk work such as many order lines or balance reads). ``columns``: only
        these output fields of each transaction (``selectedColumns``, facts.md §1.5), so that M3
        sends and m3bng parses what the caller reads (GetPriceLine has 95 outputs).
        """
        if self.config.api_version != "v2":
            return [await self._execute_or_error(program, t, r, maxrecs) for t, r in calls]
        body: dict[str, Any] = {
            "program": program,
            "transactions": [
                {
                    "transaction": t,
                    "record": {k: f for k, v in r.items() if (f := format_value(v)) is not None},
                    **({"selectedColumns": list(columns)} if columns else {}),
                }
                for t, r in calls
            ],
        }
        params: dict[str, str] = {}
        if self.config.cono is not None:
            params["cono"] = body["cono"] = str(self.config.cono)
        if self.config.divi:
            params["divi"] = body["divi"] = self.config.divi
        if maxrecs is not None:
            params["maxrecs"] = str(maxrecs)
        transaction = f"[{len(calls)}×]"

        async def send() -> list[MIResult | M3Error]:
            response = await self._http.post("/v2/execute", params=params, json=body)
            return self._parse_many(program, [t for t, _ in calls], response)

        write = not all(is_read(t) for t, _ in calls)
        return await self._call(program, transaction, send, write=write)

    async def _execute_or_error(
        self, program: str, transaction: str, record: Mapping[str, MiValue], maxrecs: int | None
    ) -> MIResult | M3Error:
        try:
            return await self.execute(program, transaction, record, maxrecs=maxrecs)
        except M3Error as exc:
            return exc

    # -- the guarded call -------------------------------------------------------------------------

    async def _call(
        self, program: str, transaction: str, send: Callable[[], Awaitable[T]], *, write: bool
    ) -> T:
        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, M3TransientError) and not isinstance(exc, M3UnknownOutcome)

        retrying = inline_retrying(
            retryable, attempts=self.config.call_attempts, max_wait=self.config.max_inline_wait
        )
        async for attempt in retrying:
            with attempt:
                return await self._guarded(
                    program, transaction, send, write, attempt.retry_state.attempt_number
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _guarded(
        self, program: str, transaction: str, send: Callable[[], Awaitable[T]], write: bool, attempt: int
    ) -> T:
        waiting = maintenance_seconds_left(list(self.config.maintenance_windows))
        if waiting is not None:
            raise M3Unavailable(
                "M3 maintenance window", retry_after=waiting, program=program, transaction=transaction
            )
        async with self.gate:
            blocked = self.breaker.before_call()
            if blocked is not None:
                raise M3Unavailable(
                    "circuit open after repeated M3 failures",
                    retry_after=blocked,
                    program=program,
                    transaction=transaction,
                )
            started = time.perf_counter()
            outcome = "ok"
            try:
                result = await self._send(program, transaction, send, write)
            except M3Error as exc:
                outcome = str(getattr(exc, "error_class", "error"))
                if isinstance(exc, M3TransientError | M3Unavailable) and not isinstance(exc, M3Throttled):
                    if outcome != "locked":
                        self.breaker.record_failure()
                        if self.breaker.state is CircuitState.OPEN and not isinstance(
                            exc, M3Unavailable | M3UnknownOutcome
                        ):
                            # This failure opened the circuit (or a probe failed): M3 is down,
                            # not this event's data. The event waits without using an attempt,
                            # so an outage never drains the retry schedule into dead letters.
                            outcome = "target_down"
                            raise M3Unavailable(
                                f"M3 is not answering ({exc.mi_message}); circuit open",
                                retry_after=self.breaker.reset_seconds,
                                program=program,
                                transaction=transaction,
                            ) from exc
                    else:
                        self.breaker.record_neutral()
                else:
                    self.breaker.record_neutral()
                raise
            else:
                self.breaker.record_success()
                return result
            finally:
                elapsed = time.perf_counter() - started
                metrics.observe_m3_call(program, transaction, outcome, elapsed)
                log.info(
                    "m3.call",
                    program=program,
                    transaction=transaction,
                    outcome=outcome,
                    attempt=attempt,
                    duration_ms=round(elapsed * 1000, 1),
                )

    async def _send(self, program: str, transaction: str, send: Callable[[], Awaitable[T]], write: bool) -> T:
        try:
            return await send()
        except M3TransientError as exc:
            # An answer that proves nothing ran (429, an MI "record locked") is retried as is;
            # any other (a 5xx, a body that is no answer) may have come after M3 committed.
            if write and not isinstance(exc, M3Throttled | M3RecordLocked | M3UnknownOutcome):
                raise M3UnknownOutcome(
                    f"sent, and {exc.mi_message}; the write may or may not be applied",
                    program=program,
                    transaction=transaction,
                    retry_after=exc.retry_after,
                ) from None
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise M3TransientError(
                f"could not reach M3 ({type(exc).__name__})", program=program, transaction=transaction
            ) from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if write:
                raise M3UnknownOutcome(
                    f"sent, but no answer from M3 ({type(exc).__name__}); it may or may not be applied",
                    program=program,
                    transaction=transaction,
                ) from None
            raise M3TransientError(
                f"no answer from M3 ({type(exc).__name__})", program=program, transaction=transaction
            ) from None
        except httpx.TransportError as exc:
            raise M3TransientError(
                f"transport error talking to M3 ({type(exc).__name__})",
                program=program,
                transaction=transaction,
            ) from None

    def _matrix(
        self, *, maxrecs: int | None, returncols: Sequence[str] | None, cono: int | None, divi: str | None
    ) -> str:
        parts = []
        if self.config.api_version == "v1":
            parts.append("metadata=true")
        if maxrecs is not None:
            parts.append(f"maxrecs={maxrecs}")
        if returncols:
            parts.append("returncols=" + ",".join(returncols))
        company = cono if cono is not None else self.config.cono
        if company is not None:
            parts.append(f"cono={company}")
        division = divi if divi is not None else self.config.divi
        if division:
            parts.append(f"divi={quote(division)}")
        return "".join(f";{p}" for p in parts)

    # -- parsing ----------------------------------------------------------------------------------

    def _check_http(self, program: str, transaction: str, response: httpx.Response) -> Any:
        """Return the JSON body of a response that may carry MI content; raise for the rest."""
        status = response.status_code
        where: dict[str, Any] = {"program": program, "transaction": transaction}
        if status == 401:
            raise M3Unavailable(
                "the ION API gateway refused the token (401) after renewal", retry_after=300, **where
            )
        if status == 429:
            raise M3Throttled("M3 throttled the call (429)", retry_after=_retry_after(response), **where)
        if status >= 500:
            raise M3ServerError(status, retry_after=_retry_after(response), **where)
        if status in (403, 404):
            raise M3ProgramError(
                f"HTTP {status}: {'not authorised for' if status == 403 else 'no such'} MI program or path",
                **where,
            )
        try:
            return response.json()
        except ValueError:
            if status >= 400:
                raise M3DataError(f"HTTP {status}: {response.text[:300]}", **where) from None
            raise M3TransientError(
                f"M3 answered HTTP {status} with a body that is not JSON", **where
            ) from None

    def _parse_single(self, program: str, transaction: str, response: httpx.Response) -> MIResult:
        body = self._check_http(program, transaction, response)
        if not isinstance(body, dict):
            raise M3TransientError(
                "M3 answered with an unexpected JSON shape", program=program, transaction=transaction
            )
        if "results" in body or "errorMessage" in body or "nrOfFailedTransactions" in body:
            results = parse_v2(program, [transaction], body)
            outcome = results[0]
            if isinstance(outcome, M3Error):
                raise outcome
            return outcome
        return parse_v1(program, transaction, body)

    def _parse_many(
        self, program: str, transactions: list[str], response: httpx.Response
    ) -> list[MIResult | M3Error]:
        body = self._check_http(program, "[bulk]", response)
        if not isinstance(body, dict):
            raise M3TransientError(
                "M3 answered with an unexpected JSON shape", program=program, transaction="[bulk]"
            )
        return parse_v2(program, transactions, body)


class M3ServerError(M3TransientError):
    """HTTP 5xx from M3 or its gateway: a read may be retried, a write's outcome is unknown."""

    def __init__(self, status: int, *, program: str, transaction: str, retry_after: float | None) -> None:
        super().__init__(
            f"M3 answered HTTP {status}", program=program, transaction=transaction, retry_after=retry_after
        )
        self.status = status


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _trim(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(k): (v.rstrip() if isinstance(v, str) else "" if v is None else str(v)) for k, v in record.items()
    }


def parse_v2(program: str, transactions: list[str], body: dict[str, Any]) -> list[MIResult | M3Error]:
    """v2 body → one MIResult or M3Error per transaction (HTTP 200 and HTTP 400 shapes alike)."""
    results = body.get("results")
    if not isinstance(results, list) or not results:
        # HTTP 400 style: the error sits at the top level.
        message = body.get("errorMessage") or body.get("terminationReason") or body.get("message")
        error = classify_mi_error(
            program,
            transactions[0] if transactions else "",
            str(message or "M3 returned no results"),
            code=body.get("errorCode"),
            field=body.get("errorField"),
            error_type=body.get("errorType") or body.get("terminationErrorType"),
        )
        return [error for _ in transactions] or [error]
    out: list[MIResult | M3Error] = []
    for index, result in enumerate(results):
        transaction = str(
            result.get("transaction") or (transactions[index] if index < len(transactions) else "")
        )
        message = result.get("errorMessage")
        if message or result.get("errorType") or result.get("errorCode"):
            out.append(
                classify_mi_error(
                    program,
                    transaction,
                    str(message or ""),
                    code=result.get("errorCode"),
                    field=result.get("errorField"),
                    error_type=result.get("errorType"),
                )
            )
        else:
            out.append(MIResult(program, transaction, [_trim(r) for r in result.get("records") or []]))
    if body.get("wasTerminated") and len(out) < len(transactions):
        reason = str(body.get("terminationReason") or "M3 terminated the request")
        out.extend(classify_mi_error(program, t, reason) for t in transactions[len(out) :])
    return out


def parse_v1(program: str, transaction: str, body: dict[str, Any]) -> MIResult:
    """v1 body: ``MIRecord[].NameValue[]``, or a bare ``@type: ServerReturnedNOK`` object."""
    error = body.get("ErrorMessage") if isinstance(body.get("ErrorMessage"), dict) else None
    if error is None and ("@type" in body or "@code" in body):
        error = body
    if error is not None:
        raise classify_mi_error(
            program,
            transaction,
            str(error.get("Message") or ""),
            code=error.get("@code"),
            field=error.get("@field"),
            error_type=error.get("@type"),
        )
    records = []
    for row in body.get("MIRecord") or []:
        records.append(_trim({nv.get("Name"): nv.get("Value") for nv in row.get("NameValue") or []}))
    return MIResult(program, str(body.get("Transaction") or transaction), records)
