"""The simulated tenant behind the ION API gateway, as an ASGI app.

URL layout as on a real tenant (facts.md §1–2)::

    POST /{ti}/as/token.oauth2                              password / refresh_token grants
    POST /{ti}/as/revoke_token.oauth2
    GET  /{ti}/M3/m3api-rest/v2/execute/{PROG}/{TRANS};cono=..;maxrecs=..?FIELD=...   (v2)
    POST /{ti}/M3/m3api-rest/v2/execute                   multi-transaction (one program)
    GET  /{ti}/M3/m3api-rest/execute/{PROG}/{TRANS};metadata=true?FIELD=...         (v1)

    GET  /{ti}/IONSERVICES/api/ion/messaging/service/ping
    POST /{ti}/IONSERVICES/api/ion/messaging/service/v3/multipartMessage   (ConfirmBODs to ION)

plus a control API under ``/_sim/`` (state, seed, reset, faults, locks, calls, stats, and
``ion/messages``: what was sent to ION) that a real tenant does not have. Works mounted under a
prefix (``app.mount("/_sim/m3", sim)``).

Companies: as in M3 all data is per company (CONO). ``Runtime.state`` is the default company (the
seed file's ``cono``); ``POST /_sim/seed`` with ``"company"`` creates and seeds another one. A call
runs in the company its ``cono`` option names (matrix ``;cono=`` or, for the bulk endpoint, query
``?cono=`` or body ``cono``); none means the default one, an unknown one is an MI error.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
import zlib
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from m3bng.sim.m3.config import Faults, M3SimConfig
from m3bng.sim.m3.programs import MIError, State, execute, load_seed
from m3bng.sim.m3.specs import PROGRAMS


@dataclass
class Runtime:
    config: M3SimConfig
    state: State = field(default_factory=State)
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (monotonic)
    refresh_tokens: set[str] = field(default_factory=set)
    outage_until: float = 0.0
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    ion_messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    stats: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    rng: random.Random = field(default_factory=random.Random)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    companies: dict[str, State] = field(default_factory=dict)  # CONO -> State, besides ``state``

    def company(self, cono: str | int | None) -> State:
        """The state a call naming this company runs against: the default one (``state``) for no
        company or its own CONO, another seeded one, or M3's MI error for an unknown company."""
        key = _cono_key(cono)
        if not key or key == _cono_key(self.state.cono):
            return self.state
        state = self.companies.get(key)
        if state is None:
            # Text, code and field are the simulator's own: what a real tenant answers for a
            # company that does not exist is unverified.
            raise MIError(f"Company {key} does not exist", code="XRE0103", field="CONO")
        return state

    def seed_company(self, cono: str | int, data: dict[str, Any], divi: str | None = None) -> State:
        """Seed the company ``cono`` (the default one or another, created on first use)."""
        key = _cono_key(cono)
        data = {k: v for k, v in data.items() if k not in ("cono", "company", "divi")}
        if not key or key == _cono_key(self.state.cono):
            state = self.state
        else:
            state = self.companies.setdefault(key, State(cono=key))
        if divi:
            state.divi = str(divi)
        state.seed(data)
        return state

    def reset(self) -> None:
        self.state = State()
        self.state.seed(load_seed(self.config.seed_file))
        self.companies.clear()
        self.faults = self.config.faults.model_copy(deep=True)
        self.outage_until = (
            time.monotonic() + self.faults.outage_seconds if self.faults.outage_seconds else 0.0
        )
        self.calls.clear()
        self.ion_messages.clear()
        self.stats.clear()
        self.max_in_flight = 0
        self.rng.seed(self.config.random_seed)


def _cono_key(cono: str | int | None) -> str:
    """A company number as the simulator keys it: ``100``, ``"100"`` and ``"0100"`` are one."""
    text = "" if cono is None else str(cono).strip()
    return str(int(text)) if text.isdigit() else text


# -- OAuth ------------------------------------------------------------------------------------------


async def token(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    form = await request.form()
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        import base64

        client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
    if client_id != rt.config.client_id or client_secret != rt.config.client_secret:
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    grant = form.get("grant_type")
    if grant == "password":
        if form.get("username") != rt.config.saak or form.get("password") != rt.config.sask:
            return JSONResponse({"error": "invalid_grant", "error_description": "bad service account"}, 400)
    elif grant == "refresh_token":
        if form.get("refresh_token") not in rt.refresh_tokens:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown refresh token"}, 400)
    else:
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    rt.stats["token_requests"] += 1
    access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    rt.tokens[access] = time.monotonic() + rt.config.token_lifetime_seconds
    rt.refresh_tokens.add(refresh)
    return JSONResponse(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(rt.config.token_lifetime_seconds),
            "refresh_token": refresh,
        }
    )


async def revoke(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    form = await request.form()
    value = str(form.get("token") or request.query_params.get("token") or "")
    rt.tokens.pop(value, None)
    rt.refresh_tokens.discard(value)
    rt.stats["revocations"] += 1
    return Response(status_code=200)


def _authorised(rt: Runtime, request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        return False
    expiry = rt.tokens.get(auth[7:])
    return expiry is not None and time.monotonic() < expiry


def _gateway_401() -> Response:
    return JSONResponse(
        {"error": "invalid_token", "error_description": "The access token is invalid or expired"}, 401
    )


# -- MI REST ----------------------------------------------------------------------------------------


def _split(rest: str) -> tuple[str, str, dict[str, str]]:
    """``PROG/TRANS;a=1;b=2`` → program, transaction, matrix parameters."""
    path, *matrix = rest.split(";")
    program, _, transaction = path.strip("/").partition("/")
    options = dict(part.split("=", 1) for part in matrix if "=" in part)
    return program, transaction, {k.lower(): v for k, v in options.items()}


_OPTION_NAMES = {
    "cono",
    "divi",
    "maxrecs",
    "returncols",
    "excludempty",
    "metadata",
    "extendedresult",
    "format",
    "righttrim",
}


async def _guard(rt: Runtime, program: str, *transactions: str) -> Response | str | int | None:
    """Apply the configured faults (see ``_inject``) to a call of these transactions (several for
    a bulk call: a fault aimed at one of them hits the whole request, as a lost answer would)."""
    faults = rt.faults
    if not any(faults.applies_to(program, transaction) for transaction in transactions):
        return None
    if faults.limit and rt.stats["faults_injected"] >= faults.limit:
        return None
    outcome = await _inject(rt, faults)
    if outcome is not None:
        rt.stats["faults_injected"] += 1
    return outcome


async def _inject(rt: Runtime, faults: Faults) -> Response | str | int | None:
    """A response to send instead of running the transaction, or what to do after running it:
    "drop" (hold the answer back), "reset" (cut the connection), a gateway status, or None."""
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if rt.outage_until and time.monotonic() < rt.outage_until:
        return JSONResponse({"message": "Service Unavailable"}, status_code=503)
    if faults.throttle.rate and rt.rng.random() < faults.throttle.rate:
        return JSONResponse(
            {"message": "Too Many Requests"},
            status_code=429,
            headers={"Retry-After": f"{faults.throttle.retry_after:g}"},
        )
    if faults.error_rate and rt.rng.random() < faults.error_rate:
        return JSONResponse({"message": "Internal Server Error"}, status_code=500)
    if faults.timeout_rate and rt.rng.random() < faults.timeout_rate:
        await asyncio.sleep(faults.timeout_seconds)
        return JSONResponse({"message": "Gateway Timeout"}, status_code=504)
    if faults.gateway_rate and rt.rng.random() < faults.gateway_rate:
        if faults.gateway_after:
            return faults.gateway_status
        return _gateway_error(faults.gateway_status)
    if faults.reset_rate and rt.rng.random() < faults.reset_rate:
        return "reset"
    if faults.drop_response_rate and rt.rng.random() < faults.drop_response_rate:
        return "drop"
    return None


_GATEWAY_TEXT = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _gateway_error(status: int) -> Response:
    return JSONResponse({"message": _GATEWAY_TEXT.get(status, "Gateway Error")}, status_code=status)


class _CutConnection(Response):
    """Starts an answer, then ends without finishing it: the server closes the connection and
    the client sees the peer hang up mid-answer, as after a reset."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"results": [', "more_body": True})


async def _after(rt: Runtime, fault: Response | str | int | None, response: Response) -> Response:
    """What the caller gets once the transaction has run: its answer, or a fault instead."""
    if fault == "drop":
        rt.stats["dropped_responses"] += 1
        await asyncio.sleep(rt.faults.drop_seconds)
    elif fault == "reset":
        rt.stats["reset_connections"] += 1
        return _CutConnection()
    elif isinstance(fault, int):
        rt.stats["gateway_errors_after"] += 1
        return _gateway_error(fault)
    return response


async def _run(
    rt: Runtime, program: str, transaction: str, record: dict[str, str], options: Mapping[str, str]
) -> list[dict[str, str]]:
    """Run one transaction in the company the call's ``cono`` option names (see Runtime.company)."""
    async with rt.lock:  # M3 applies one transaction at a time per record; keep the state consistent
        cono, divi = options.get("cono"), options.get("divi")
        call: dict[str, Any] = {"program": program, "transaction": transaction, "record": record}
        try:
            state = rt.company(cono)
            call.update(cono=state.cono, divi=str(divi or state.divi))
            rows = execute(state, program, transaction, record, maxrecs=_maxrecs(options))
        except MIError as exc:
            call.setdefault("cono", _cono_key(cono))
            call.setdefault("divi", str(divi or ""))
            rt.calls.append({**call, "outcome": "error", "error": exc.message})
            rt.stats["mi_errors"] += 1
            raise
        rt.calls.append({**call, "outcome": "ok"})
        return rows


DEFAULT_MAXRECS = 100  # what a list answers when the caller sends no maxrecs (0 = all)


def _maxrecs(options: Mapping[str, str]) -> int:
    return int(options.get("maxrecs") or DEFAULT_MAXRECS)


def _select(rows: list[dict[str, str]], options: dict[str, str]) -> list[dict[str, str]]:
    maxrecs = _maxrecs(options)
    if maxrecs:
        rows = rows[:maxrecs]
    if options.get("returncols"):
        cols = options["returncols"].split(",")
        rows = [{c: r.get(c, "") for c in cols} for r in rows]
    return rows


def _v2_error(exc: MIError, transaction: str) -> dict[str, Any]:
    return {
        "transaction": transaction,
        "errorMessage": exc.message.ljust(60),
        "errorType": exc.error_type,
        "errorCode": exc.code or None,
        "errorField": exc.field or None,
        "errorCfg": None,
    }


async def mi_v2(request: Request) -> Response:
    return await _mi(request, version=2)


async def mi_v1(request: Request) -> Response:
    return await _mi(request, version=1)


async def _answer(
    rt: Runtime, version: int, program: str, transaction: str, record: dict[str, str], options: dict[str, str]
) -> Response:
    """Run the transaction and answer as M3 does in the requested API version."""
    try:
        rows = _select(await _run(rt, program, transaction, record, options), options)
    except MIError as exc:
        if version == 1:
            body = {
                "@type": exc.error_type,
                "@code": exc.code or None,
                "@field": exc.field or None,
                "@cfg": None,
                "Message": exc.message.ljust(60),
            }
            return JSONResponse(body)
        if rt.faults.v2_error_style == "http200":
            result = _v2_error(exc, transaction)
            return JSONResponse(
                {
                    "results": [result],
                    "wasTerminated": False,
                    "nrOfSuccessfullTransactions": 0,
                    "nrOfFailedTransactions": 1,
                }
            )
        return JSONResponse(_v2_error(exc, transaction), status_code=400)
    if version == 1:
        return JSONResponse(_v1_body(program, transaction, rows))
    return JSONResponse(
        {
            "results": [{"transaction": transaction, "records": rows}],
            "wasTerminated": False,
            "nrOfSuccessfullTransactions": 1,
            "nrOfFailedTransactions": 0,
        }
    )


async def _mi(request: Request, *, version: int) -> Response:
    rt: Runtime = request.app.state.sim
    if request.path_params["ti"] != rt.config.ti:
        return JSONResponse({"message": f"unknown tenant {request.path_params['ti']}"}, status_code=404)
    if not _authorised(rt, request):
        return _gateway_401()
    program, transaction, options = _split(request.path_params["rest"])
    # Options are lower case (``cono``, ``maxrecs``); fields are M3 names (``CONO`` is a field).
    record = {k: v for k, v in request.query_params.items() if k not in _OPTION_NAMES}
    options.update({k: v for k, v in request.query_params.items() if k in _OPTION_NAMES})
    rt.stats["mi_calls"] += 1
    rt.stats[f"{program}/{transaction}"] += 1
    rt.in_flight += 1
    rt.max_in_flight = max(rt.max_in_flight, rt.in_flight)
    try:
        fault = await _guard(rt, program, transaction)
        if isinstance(fault, Response):
            return fault
        return await _after(rt, fault, await _answer(rt, version, program, transaction, record, options))
    finally:
        rt.in_flight -= 1


def _v1_body(program: str, transaction: str, rows: list[dict[str, str]]) -> dict[str, Any]:
    """v1 answer: values right-padded to their field length, Metadata from the field list."""
    outputs = PROGRAMS[program][transaction].outputs
    names = list(rows[0]) if rows else []
    return {
        "Program": program,
        "Transaction": transaction,
        "Metadata": {
            "Field": [
                {
                    "@name": n,
                    "@type": outputs[n].type,
                    "@length": outputs[n].length,
                    "@description": outputs[n].description,
                }
                for n in names
            ]
        },
        "MIRecord": [
            {
                "RowIndex": index,
                "NameValue": [{"Name": k, "Value": v.ljust(outputs[k].length or 0)} for k, v in row.items()],
            }
            for index, row in enumerate(rows)
        ],
    }


async def mi_bulk(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    if not _authorised(rt, request):
        return _gateway_401()
    try:
        body = await request.json()
        program = str(body["program"])
        transactions = list(body["transactions"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"errorMessage": "Invalid bulk request body", "errorType": "InvalidRequest"}, 400)
    rt.stats["mi_calls"] += 1
    rt.in_flight += 1
    rt.max_in_flight = max(rt.max_in_flight, rt.in_flight)
    try:
        fault = await _guard(rt, program, *{str(entry.get("transaction", "")) for entry in transactions})
        if isinstance(fault, Response):
            return fault
        options = {k.lower(): v for k, v in request.query_params.items()}
        for name in ("cono", "divi"):  # the company: query parameters first, then the JSON body
            if not options.get(name) and body.get(name) not in (None, ""):
                options[name] = str(body[name])
        results, failed = [], 0
        for entry in transactions:
            transaction = str(entry.get("transaction", ""))
            record = {str(k): str(v) for k, v in (entry.get("record") or {}).items()}
            rt.stats[f"{program}/{transaction}"] += 1
            try:
                rows = _select(await _run(rt, program, transaction, record, options), options)
                cols = entry.get("selectedColumns")
                if cols:
                    rows = [{c: r.get(c, "") for c in cols} for r in rows]
                results.append({"transaction": transaction, "records": rows, "parameters": record})
            except MIError as exc:
                failed += 1
                results.append({**_v2_error(exc, transaction), "parameters": record})
        answer = JSONResponse(
            {
                "results": results,
                "wasTerminated": False,
                "nrOfSuccessfullTransactions": len(results) - failed,
                "nrOfFailedTransactions": failed,
            }
        )
        return await _after(rt, fault, answer)
    finally:
        rt.in_flight -= 1


# -- ION messaging (what an application sends to ION: ConfirmBODs) -------------------------------

ION_MESSAGING = "/{ti}/IONSERVICES/api/ion/messaging"
_ION_REQUIRED = ("documentName", "messageId", "fromLogicalId")


def _ion_denied(rt: Runtime, request: Request) -> Response | None:
    if request.path_params["ti"] != rt.config.ti:
        return JSONResponse({"message": f"unknown tenant {request.path_params['ti']}"}, status_code=404)
    if not _authorised(rt, request):
        return _gateway_401()
    return None


async def ion_ping(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    return _ion_denied(rt, request) or JSONResponse({"status": "ok"})


async def _part_bytes(value: UploadFile | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return await value.read()


async def ion_message(request: Request) -> Response:
    """IMS v3 as ION answers it: 202 when accepted, 400 for an invalid message.

    Faults apply only when ``faults.programs`` names ``ION`` (MI fault tests are not affected).
    """
    rt: Runtime = request.app.state.sim
    denied = _ion_denied(rt, request)
    if denied is not None:
        return denied
    if "ION" in rt.faults.programs:
        fault = await _guard(rt, "ION", "multipartMessage")
        if isinstance(fault, Response):
            return fault
    try:
        async with request.form(max_part_size=16 * 1024 * 1024) as form:
            raw_parameters = await _part_bytes(form.get("ParameterRequest"))
            payload = await _part_bytes(form.get("MessagePayload"))
    except Exception as exc:  # starlette's MultiPartException, or a body that is no form at all
        return JSONResponse({"message": f"invalid multipart message: {exc}"}, status_code=400)
    try:
        parameters = json.loads(raw_parameters or b"")
    except ValueError:
        return JSONResponse({"message": "ParameterRequest is missing or not JSON"}, status_code=400)
    missing = [key for key in _ION_REQUIRED if not (isinstance(parameters, dict) and parameters.get(key))]
    if missing:
        return JSONResponse({"message": f"ParameterRequest lacks {', '.join(missing)}"}, status_code=400)
    if not payload:
        return JSONResponse({"message": "MessagePayload is missing"}, status_code=400)
    document = parameters.get("document") or {}
    if str(document.get("encoding") or "NONE").upper() == "DEFLATE":
        payload = zlib.decompress(payload)
    rt.ion_messages.append(
        {
            "documentName": parameters["documentName"],
            "messageId": parameters["messageId"],
            "tenant": request.headers.get("x-tenantid"),
            "parameters": parameters,
            "xml": payload.decode(document.get("characterSet") or "utf-8"),
        }
    )
    rt.stats["ion_messages"] += 1
    return Response(status_code=202)


async def get_ion_messages(request: Request) -> Response:
    return JSONResponse(list(request.app.state.sim.ion_messages))


# -- control API ------------------------------------------------------------------------------------


async def get_state(request: Request) -> Response:
    """The default company's state, or with ``?company=200`` that company's."""
    rt: Runtime = request.app.state.sim
    try:
        state = rt.company(request.query_params.get("company"))
    except MIError as exc:
        return JSONResponse({"error": exc.message}, status_code=404)
    return JSONResponse(state.snapshot())


async def reset(request: Request) -> Response:
    request.app.state.sim.reset()
    return JSONResponse({"status": "reset"})


async def seed(request: Request) -> Response:
    """Add data to the default company, or with ``"company"`` (and optionally ``"divi"``) in the
    body to that company, created if it does not exist yet."""
    rt: Runtime = request.app.state.sim
    data = await request.json()
    if isinstance(data, dict) and data.get("company") not in (None, ""):
        state = rt.seed_company(data["company"], data, data.get("divi"))
        return JSONResponse({"status": "seeded", "company": state.cono, "divi": state.divi})
    rt.state.seed(data)
    return JSONResponse({"status": "seeded"})


async def faults(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    if request.method == "PUT":
        try:
            rt.faults = Faults.model_validate(await request.json())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        rt.outage_until = time.monotonic() + rt.faults.outage_seconds if rt.faults.outage_seconds else 0.0
        rt.stats["faults_injected"] = 0
    return JSONResponse(rt.faults.model_dump())


async def locks(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    body = await request.json()
    keys = {str(k) for k in body.get("lock", [])}
    rt.state.locks |= keys
    rt.state.locks -= {str(k) for k in body.get("unlock", [])}
    return JSONResponse({"locks": sorted(rt.state.locks)})


async def expire_tokens(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    rt.tokens = dict.fromkeys(rt.tokens, 0.0)
    return JSONResponse({"expired": len(rt.tokens)})


async def get_calls(request: Request) -> Response:
    return JSONResponse(list(request.app.state.sim.calls))


async def get_stats(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    return JSONResponse(
        {
            **rt.stats,
            "token_requests": rt.stats["token_requests"],
            "mi_calls": rt.stats["mi_calls"],
            "in_flight": rt.in_flight,
            "max_in_flight": rt.max_in_flight,
            "valid_tokens": sum(1 for exp in rt.tokens.values() if exp > time.monotonic()),
        }
    )


def create_app(config: M3SimConfig | None = None) -> Starlette:
    runtime = Runtime(config or M3SimConfig())
    runtime.reset()
    routes = [
        Route("/{ti}/as/token.oauth2", token, methods=["POST"]),
        Route("/{ti}/as/revoke_token.oauth2", revoke, methods=["POST", "GET"]),
        Route("/{ti}/M3/m3api-rest/v2/execute", mi_bulk, methods=["POST"]),
        Route("/{ti}/M3/m3api-rest/v2/execute/{rest:path}", mi_v2, methods=["GET", "POST"]),
        Route("/{ti}/M3/m3api-rest/execute/{rest:path}", mi_v1, methods=["GET", "POST"]),
        Route(f"{ION_MESSAGING}/service/ping", ion_ping),
        Route(f"{ION_MESSAGING}/service/v3/multipartMessage", ion_message, methods=["POST"]),
        Route("/_sim/state", get_state),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/seed", seed, methods=["POST"]),
        Route("/_sim/faults", faults, methods=["GET", "PUT"]),
        Route("/_sim/locks", locks, methods=["POST"]),
        Route("/_sim/tokens/expire", expire_tokens, methods=["POST"]),
        Route("/_sim/calls", get_calls),
        Route("/_sim/stats", get_stats),
        Route("/_sim/ion/messages", get_ion_messages),
    ]
    app = Starlette(routes=routes)
    app.state.sim = runtime
    return app
