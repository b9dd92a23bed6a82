"""The simulated M3 business logic: state plus one handler per MI transaction.

Which transactions exist, their input fields (mandatory flags, types, lengths) and their output
fields come from Infor's published metadata (``mi_metadata.json``, see specs.py), never from what
m3bng sends: a field a transaction does not list is refused, a mandatory one must be there, and an
answer carries only the transaction's output fields. Behaviour copied from real M3 where it
matters to an integration: batch orders get a temporary number that ``Confirm`` replaces by the
real one (``GetOrderNo`` maps one to the other), "already exists" and "does not exist" come back
as MI errors with a field, and a record can be locked. A transaction the metadata lists but the
simulator does not implement answers ``NotImplementedInSimulator``, never a made-up success.

Message texts follow real M3 texts where public sources show them (docs/m3.md, "Error
classes"); the 7-character codes below are the simulator's own, and m3bng does not depend on
them (unverified against a tenant):

    XMA0001  <FIELD> must be entered                 (mandatory field empty)
    XLE0001  Input field <FIELD> is too long (max n) (errorType InputFieldTooLong)
    XNU0001  <FIELD> must be numeric
    XDT0001  <FIELD> is not a valid date (yyyyMMdd)
    XIF0001  Input field <FIELD> is not defined for transaction <TX>
    XRE0103  <what> <key> does not exist
    XRE0104  <what> <key> already exists
    XLK0001  Record is reserved by another user
    XBL0001  Item <ITNO> is blocked for sales    (item status 50 or above)
"""

from __future__ import annotations

import bisect
import copy
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from m3bng.errors import M3bngError
from m3bng.sim.m3.specs import PROGRAMS, Transaction

SEED_FILE = Path(__file__).with_name("seed.yaml")
Record = dict[str, str]


class MIError(M3bngError):
    def __init__(
        self, message: str, *, code: str = "", field: str = "", error_type: str = "ServerReturnedNOK"
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.field, self.error_type = message, code, field, error_type


@dataclass
class State:
    """Everything one company (CONO) of the simulated tenant holds; reset and seeded through the
    control API. The tenant (app.Runtime) holds one State per company: data and number series
    are per company, as in M3."""

    cono: str = "100"
    divi: str = "AAA"
    customers: dict[str, Record] = field(default_factory=dict)
    items: dict[str, Record] = field(default_factory=dict)
    stock: dict[str, Record] = field(default_factory=dict)  # key "WHLO/ITNO"
    warehouses: dict[str, Record] = field(default_factory=dict)
    suppliers: dict[str, Record] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # temporary ORNO -> head + lines
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # real ORNO -> head + lines
    deleted_orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # DelHead'ed, for tests
    po_entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # MSGN -> entry
    purchase_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # INBN -> head + lines
    gl_batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # KEY1 -> head + lines
    gl_posted: dict[str, dict[str, Any]] = field(default_factory=dict)  # UpdBatch'ed batches
    invoices: dict[str, Record] = field(default_factory=dict)
    # Storefront reads (OIS320MI GetPriceLine): price list lines keyed "PRRF/CUCD/ITNO/QTLB" and
    # discount models by DISY. The simulator's own pricing, not M3's (see ois320_price_line).
    prices: dict[str, Record] = field(default_factory=dict)
    discounts: dict[str, Record] = field(default_factory=dict)
    adjustments: list[Record] = field(default_factory=list)
    locks: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)
    # The sorted keys of the tables the lists page by (M3's index): rows are added and changed,
    # never removed, so the same number of rows is the same keys.
    _index: dict[int, tuple[int, list[str]]] = field(default_factory=dict, repr=False, compare=False)

    def key_index(self, rows: dict[str, Any]) -> list[str]:
        """``rows``' keys in order, sorted again only when rows were added."""
        known = self._index.get(id(rows))
        if known is None or known[0] != len(rows):
            known = (len(rows), sorted(rows))
            self._index[id(rows)] = known
        return known[1]

    def next_number(self, name: str, start: int) -> int:
        self.counters[name] = self.counters.get(name, start) + 1
        return self.counters[name]

    def seed(self, data: dict[str, Any]) -> None:
        for row in data.get("customers", []):
            self.customers[str(row["CUNO"])] = _strings(row)
        for row in data.get("items", []):
            self.items[str(row["ITNO"])] = _strings(row)
        for row in data.get("warehouses", []):
            self.warehouses[str(row["WHLO"])] = _strings(row)
        for row in data.get("stock", []):
            self.stock[f"{row['WHLO']}/{row['ITNO']}"] = _strings(row)
        for row in data.get("suppliers", []):
            self.suppliers[str(row["SUNO"])] = _strings(row)
        for row in data.get("invoices", []):
            self.invoices[f"{row['YEA4']}/{row['IVNO']}"] = _strings(row)
        for row in data.get("prices", []):
            price = _strings(row)
            price.setdefault("QTLB", "1")
            self.prices[f"{price['PRRF']}/{price['CUCD']}/{price['ITNO']}/{price['QTLB']}"] = price
        for row in data.get("discounts", []):
            self.discounts[str(row["DISY"])] = _strings(row)
        # Orders and batch orders entered before (a customer with a long order history):
        # {"head": {ORNO, CUNO, CUOR, …}, "lines": [{ITNO, ORQT, CUPO, …}]}.
        for order in data.get("orders", []):
            head = {"STAT": "22", "ORSL": "22", "ORST": "22", **_strings(order["head"])}
            lines = [_strings(line) for line in order.get("lines", [])]
            self.orders[head["ORNO"]] = {
                "head": head,
                "lines": lines,
                "batch": head.get("TEMP", ""),
                # delivery lines (MHDISL): {PONR, DLIX, TRQT, PGRS …}, read by LstDelLineByCO
                "deliveries": [_strings(d) for d in order.get("deliveries", [])],
            }
        for batch in data.get("batches", []):
            head = {"STAT": "10", **_strings(batch["head"])}
            self.batches[head["ORNO"]] = {
                "head": head,
                "lines": [_strings(x) for x in batch.get("lines", [])],
            }
        if "cono" in data:
            self.cono = str(data["cono"])
        if "divi" in data:
            self.divi = str(data["divi"])

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "customers": self.customers,
                "items": self.items,
                "stock": self.stock,
                "warehouses": self.warehouses,
                "suppliers": self.suppliers,
                "batches": self.batches,
                "orders": self.orders,
                "deleted_orders": self.deleted_orders,
                "po_entries": self.po_entries,
                "purchase_orders": self.purchase_orders,
                "invoice_batches": self.invoice_batches,
                "gl_batches": self.gl_batches,
                "gl_posted": self.gl_posted,
                "invoices": self.invoices,
                "prices": self.prices,
                "discounts": self.discounts,
                "adjustments": self.adjustments,
                "locks": sorted(self.locks),
            }
        )


def _strings(row: dict[str, Any]) -> Record:
    return {str(k): "" if v is None else str(v) for k, v in row.items()}


def load_seed(path: Path | None = None) -> dict[str, Any]:
    data = yaml.safe_load((path or SEED_FILE).read_text())
    return data if isinstance(data, dict) else {}


# -- input validation, as M3 does it before running a transaction ----------------------------------

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def lookup(program: str, transaction: str) -> Transaction:
    if program not in PROGRAMS:
        raise MIError(f"Program {program} does not exist", error_type="ProgramNotFound")
    spec = PROGRAMS[program].get(transaction)
    if spec is None:
        raise MIError(
            f"Transaction {transaction} does not exist in {program}", error_type="TransactionNotFound"
        )
    return spec


def validate(program: str, transaction: str, record: Record) -> Record:
    """The record as M3 checks it before running anything: names, lengths, types, mandatory."""
    spec = lookup(program, transaction)
    clean: Record = {}
    for name, value in record.items():
        f = spec.inputs.get(name)
        if f is None:
            raise MIError(
                f"Input field {name} is not defined for transaction {transaction}", code="XIF0001", field=name
            )
        value = value.rstrip()
        if f.type == "N":
            if value and not _NUMBER.match(value):
                raise MIError(f"{name} must be numeric", code="XNU0001", field=name)
            digits = len(value.lstrip("-").replace(".", ""))
            if f.length is not None and digits > f.length:
                raise MIError(
                    f"Input field {name} is too long (max {f.length})",
                    code="XLE0001",
                    field=name,
                    error_type="InputFieldTooLong",
                )
        elif f.length is not None and len(value) > f.length:
            raise MIError(
                f"Input field {name} is too long (max {f.length})",
                code="XLE0001",
                field=name,
                error_type="InputFieldTooLong",
            )
        if value and f.type == "D":
            try:
                datetime.strptime(value, "%Y%m%d")
            except ValueError:
                raise MIError(f"{name} is not a valid date (yyyyMMdd)", code="XDT0001", field=name) from None
        clean[name] = value
    for name, f in spec.inputs.items():
        if f.mandatory and not clean.get(name):
            raise MIError(f"{name} must be entered", code="XMA0001", field=name)
    return clean


def shape(spec: Transaction, rows: list[Record]) -> list[Record]:
    """Only the transaction's output fields, in its order: M3 answers nothing else."""
    if not spec.outputs:
        return []
    return [{name: row.get(name, "") for name in spec.outputs} for row in rows]


def _missing(what: str, key: str, field_name: str) -> MIError:
    return MIError(f"{what} {key} does not exist", code="XRE0103", field=field_name)


def _find(table: dict[str, Any], r: Record, field_name: str, what: str) -> Any:
    """The row ``r[field_name]`` names, or M3's "<what> <key> does not exist" error."""
    row = table.get(r[field_name])
    if row is None:
        raise _missing(what, r[field_name], field_name)
    return row


def _exists(what: str, key: str, field_name: str) -> MIError:
    return MIError(f"{what} {key} already exists", code="XRE0104", field=field_name)


def _check_lock(state: State, key: str) -> None:
    if key in state.locks:
        raise MIError("Record is reserved by another user", code="XLK0001")


# -- handlers ---------------------------------------------------------------------------------------

Handler = Callable[[State, Record], Iterable[Record]]
HANDLERS: dict[tuple[str, str], Handler] = {}


def handler(program: str, transaction: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[(program, transaction)] = fn
        return fn

    return register


def _key_order(state: State, rows: dict[str, Any], start: str = "") -> Iterator[tuple[str, Any]]:
    """The rows from ``start`` on in key order, lazily: a list call reads (and shapes) only the
    ``maxrecs`` it answers, as M3 reads a page from an index, not the rest of the table."""
    keys = state.key_index(rows)
    for key in keys[bisect.bisect_left(keys, start) :]:
        yield key, rows[key]


@handler("CRS610MI", "Add")
def crs610_add(state: State, r: Record) -> list[Record]:
    template = _find(state.customers, r, "CUTM", "Customer template")
    cuno = r.get("CUNO") or f"{state.next_number('cuno', 20000)}"
    if cuno in state.customers:
        raise _exists("Customer number", cuno, "CUNO")
    customer = {k: v for k, v in template.items()}
    customer.update({k: v for k, v in r.items() if k != "CUTM" and v != ""})
    customer["CUNO"] = cuno
    customer.setdefault("STAT", "20")
    state.customers[cuno] = customer
    return [{"CUNO": cuno}]


@handler("CRS610MI", "ChgBasicData")
def crs610_chg(state: State, r: Record) -> list[Record]:
    customer = _find(state.customers, r, "CUNO", "Customer number")
    _check_lock(state, f"CUNO/{r['CUNO']}")
    customer.update({k: v for k, v in r.items() if v != ""})
    return [{"CUNO": r["CUNO"]}]


@handler("CRS610MI", "GetBasicData")
def crs610_get(state: State, r: Record) -> list[Record]:
    customer = _find(state.customers, r, "CUNO", "Customer number")
    return [{"CONO": state.cono, "DIVI": state.divi, **customer}]


@handler("CRS610MI", "LstByNumber")
def crs610_list(state: State, r: Record) -> Iterator[Record]:
    return ({"CONO": state.cono, **c} for _, c in _key_order(state, state.customers, r.get("CUNO", "")))


@handler("CRS610MI", "LstByName")
def crs610_by_name(state: State, r: Record) -> list[Record]:
    """Customers whose name (CUNM) is the given one or after it, in name order (then number):
    a caller pages by the last name, as M3 lists page by key."""
    start = r.get("CUNM", "")
    rows = sorted((c.get("CUNM", ""), k, c) for k, c in state.customers.items() if c.get("CUNM", "") >= start)
    return [{"CONO": state.cono, **c} for _, _, c in rows]


@handler("CRS610MI", "LstBySearchKey")
def crs610_by_search_key(state: State, r: Record) -> list[Record]:
    """Customers whose search key (ALCU) starts at the given one, in ALCU order."""
    start = r.get("ALCU", "")
    rows = sorted((c.get("ALCU", ""), k, c) for k, c in state.customers.items() if c.get("ALCU", "") >= start)
    return [{"CONO": state.cono, **c} for _, _, c in rows]


@handler("MMS200MI", "AddItmBasic")
def mms200_add(state: State, r: Record) -> list[Record]:
    if r["ITNO"] in state.items:
        raise _exists("Item number", r["ITNO"], "ITNO")
    state.items[r["ITNO"]] = dict(r)
    return []


@handler("MMS200MI", "UpdItmBasic")
def mms200_upd(state: State, r: Record) -> list[Record]:
    item = _find(state.items, r, "ITNO", "Item number")
    _check_lock(state, f"ITNO/{r['ITNO']}")
    item.update({k: v for k, v in r.items() if v != ""})
    return []


@handler("MMS200MI", "LstItmByItm")
def mms200_list(state: State, r: Record) -> Iterator[Record]:
    """Items from the given ITNO on, in ITNO order (a caller pages by the last key)."""
    return (dict(item) for _, item in _key_order(state, state.items, r.get("ITNO", "")))


@handler("MMS200MI", "GetItmBasic")
def mms200_get(state: State, r: Record) -> list[Record]:
    item = _find(state.items, r, "ITNO", "Item number")
    return [dict(item)]


def _balance(state: State, whlo: str, itno: str) -> Record:
    row = state.stock.get(f"{whlo}/{itno}")
    if row is None:
        raise _missing("Item/warehouse", f"{itno}/{whlo}", "ITNO")
    stqt, alqt = float(row.get("STQT") or 0), float(row.get("ALQT") or 0)
    item = state.items.get(itno, {})
    return {
        "CONO": state.cono,
        "WHLO": whlo,
        "ITNO": itno,
        "ITDS": item.get("ITDS", ""),
        "STQT": _num(stqt),
        "ALQT": _num(alqt),
        "AV01": _num(stqt - alqt),
        "AVAL": _num(stqt - alqt),
    }


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.6f}".rstrip("0")


@handler("MMS200MI", "GetItmWhsBal")
def mms200_balance(state: State, r: Record) -> list[Record]:
    if r["ITNO"] not in state.items:
        raise _missing("Item number", r["ITNO"], "ITNO")
    return [_balance(state, r["WHLO"], r["ITNO"])]


@handler("OIS100MI", "GetATP")
def ois100_atp(state: State, r: Record) -> list[Record]:
    """Available to promise on the requested date. UNVERIFIED logic (the metadata gives only the
    fields): the simulator has no planned receipts or issues, so ATP is the allocatable balance
    on every date, and AVTD (A8, "ATP - days") echoes the requested date or today."""
    item = state.items.get(r["ITNO"])
    if item is None:
        raise _missing("Item number", r["ITNO"], "ITNO")
    balance = _balance(state, r["WHLO"], r["ITNO"])
    return [
        {
            "AVTQ": balance["AV01"],
            "UNMS": item.get("UNMS", ""),
            "AVTD": r.get("DWDT") or datetime.now().strftime("%Y%m%d"),
        }
    ]


@handler("MMS080MI", "LstItemWarehous")
def mms080_list(state: State, r: Record) -> list[Record]:
    """Every item of the warehouses FWHL..TWHL, by warehouse and item: the transaction has no
    start-item input, so a caller that wants them all asks with maxrecs=0."""
    rows = []
    for key in sorted(state.stock):
        whlo, itno = key.split("/", 1)
        if r["FWHL"] <= whlo <= r["TWHL"]:
            rows.append(_balance(state, whlo, itno))
    return rows


@handler("MMS850MI", "AddAdjust")
def mms850_adjust(state: State, r: Record) -> list[Record]:
    if not r.get("ITNO"):
        raise MIError("Item number must be entered", code="XMA0001", field="ITNO")
    if r["ITNO"] not in state.items:
        raise _missing("Item number", r["ITNO"], "ITNO")
    if r["WHLO"] not in state.warehouses:
        raise _missing("Warehouse", r["WHLO"], "WHLO")
    key = f"{r['WHLO']}/{r['ITNO']}"
    _check_lock(state, key)
    row = state.stock.setdefault(key, {"WHLO": r["WHLO"], "ITNO": r["ITNO"], "STQT": "0", "ALQT": "0"})
    new = float(row.get("STQT") or 0) + float(r.get("QLQT") or 0)
    if new < 0:
        raise MIError(
            f"Adjustment makes on-hand balance of {r['ITNO']} negative", code="XQT0002", field="QLQT"
        )
    row["STQT"] = _num(new)
    state.adjustments.append(dict(r))
    msnr = f"{state.next_number('msnr', 900000):015d}"
    return [{"CONO": state.cono, "MSNR": msnr, "MSLN": "1", "MSGS": "1"}]


# -- customer orders by batch entry ----------------------------------------------------------------


def _item_for_sale(state: State, itno: str) -> None:
    item = state.items.get(itno)
    if item is None:
        raise _missing("Item number", itno, "ITNO")
    if (item.get("STAT") or "20") >= "50":
        raise MIError(f"Item {itno} is blocked for sales", code="XBL0001", field="ITNO")


@handler("OIS100MI", "AddBatchHead")
def ois100_add_head(state: State, r: Record) -> list[Record]:
    if r["CUNO"] not in state.customers:
        raise _missing("Customer number", r["CUNO"], "CUNO")
    if r.get("WHLO") and r["WHLO"] not in state.warehouses:
        raise _missing("Warehouse", r["WHLO"], "WHLO")
    orno = f"T{state.next_number('batch', 100):09d}"
    state.batches[orno] = {"head": {**r, "ORNO": orno, "STAT": "10"}, "lines": []}
    return [{"ORNO": orno}]


@handler("OIS100MI", "AddBatchLine")
def ois100_add_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.batches, r, "ORNO", "Batch order")
    _item_for_sale(state, r["ITNO"])
    if r.get("ORQT") and float(r["ORQT"]) <= 0:
        raise MIError("Ordered quantity must be greater than zero", code="XQT0001", field="ORQT")
    ponr = str(len(batch["lines"]) + 1)
    batch["lines"].append({**r, "PONR": ponr, "POSX": "0"})
    return [{"PONR": ponr, "POSX": "0"}]


@handler("OIS100MI", "LstBatchLine")
def ois100_batch_lines(state: State, r: Record) -> list[Record]:
    batch = _find(state.batches, r, "ORNO", "Batch order")
    return [dict(line) for line in batch["lines"]]


@handler("OIS100MI", "GetBatchLine")
def ois100_batch_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.batches, r, "ORNO", "Batch order")
    for line in batch["lines"]:
        if line["PONR"] == r["PONR"].lstrip("0") and line["POSX"] == (r.get("POSX") or "0"):
            return [dict(line)]
    raise _missing("Order line", f"{r['ORNO']}/{r['PONR']}", "PONR")


@handler("OIS100MI", "GetBatchHead")
def ois100_batch_head(state: State, r: Record) -> list[Record]:
    return [dict(_find(state.batches, r, "ORNO", "Batch order")["head"])]


@handler("OIS100MI", "LstBatchHead")
def ois100_batch_heads(state: State, r: Record) -> list[Record]:
    """The customer's batch heads not yet confirmed, in batch number order."""
    if r["CUNO"] not in state.customers:
        raise _missing("Customer number", r["CUNO"], "CUNO")
    return [dict(b["head"]) for _, b in sorted(state.batches.items()) if b["head"]["CUNO"] == r["CUNO"]]


@handler("OIS100MI", "Confirm")
def ois100_confirm(state: State, r: Record) -> list[Record]:
    batch = _find(state.batches, r, "ORNO", "Batch order")
    if not batch["lines"]:
        raise MIError(f"Batch order {r['ORNO']} has no lines", code="XLN0001", field="ORNO")
    orno = f"{state.next_number('orno', 1000000):010d}"
    head = {**batch["head"], "ORNO": orno, "STAT": "22", "ORSL": "22", "ORST": "22"}
    state.orders[orno] = {"head": head, "lines": batch["lines"], "batch": r["ORNO"]}
    for line in batch["lines"]:  # allocate stock where there is some
        row = state.stock.get(f"{line.get('WHLO') or head.get('WHLO')}/{line['ITNO']}")
        if row is not None:
            row["ALQT"] = _num(float(row.get("ALQT") or 0) + float(line.get("ORQT") or 0))
    del state.batches[r["ORNO"]]  # a confirmed batch is gone: a second Confirm finds nothing
    return [{"ORNO": orno, "STAT": "22"}]


@handler("OIS100MI", "GetOrderNo")
def ois100_order_no(state: State, r: Record) -> list[Record]:
    """The order a batch became; blank while the batch is not confirmed (unverified detail)."""
    for orno, order in state.orders.items():
        if order["batch"] == r["ORNO"]:
            return [{"ORNR": orno}]
    if r["ORNO"] in state.batches:
        return [{"ORNR": ""}]
    raise _missing("Batch order", r["ORNO"], "ORNO")


@handler("OIS100MI", "GetHead")
def ois100_get_head(state: State, r: Record) -> list[Record]:
    order = _find(state.orders, r, "ORNO", "Order number")
    return [{"DIVI": state.divi, **order["head"]}]


@handler("OIS100MI", "LstHead")
def ois100_list_head(state: State, r: Record) -> list[Record]:
    if r["CUNO"] not in state.customers:
        raise _missing("Customer number", r["CUNO"], "CUNO")
    rows = []
    for _, order in sorted(state.orders.items()):
        head = order["head"]
        if head["CUNO"] != r["CUNO"]:
            continue
        if (r.get("ORSL") and head["ORSL"] < r["ORSL"]) or (r.get("ORST") and head["ORST"] > r["ORST"]):
            continue
        rows.append(dict(head))
    return rows


@handler("OIS100MI", "LstLine")
def ois100_list_line(state: State, r: Record) -> list[Record]:
    order = _find(state.orders, r, "ORNO", "Order number")
    return [{"CUOR": order["head"].get("CUOR", ""), **line} for line in order["lines"]]


@handler("OIS100MI", "LstDelLineByCO")
def ois100_delivery_lines(state: State, r: Record) -> list[Record]:
    """The delivery lines (MHDISL) of one order line, from the seeded ``deliveries``."""
    order = _find(state.orders, r, "ORNO", "Order number")
    return [
        {"RIDN": r["ORNO"], "RIDL": d.get("PONR", ""), "RORC": "3", **d}
        for d in order.get("deliveries", [])
        if d.get("PONR") == r["PONR"] and (not r.get("POSX") or d.get("POSX", "0") == r["POSX"])
    ]


# -- OIS320MI price inquiry -------------------------------------------------------------------------


def _dec(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


@handler("OIS320MI", "GetPriceLine")
def ois320_price_line(state: State, r: Record) -> list[Record]:
    """The price of one order line for a customer. Inputs and outputs are the metadata's; the
    pricing itself is the simulator's own and UNVERIFIED against M3 (M3's price origin sequence,
    price list tables, campaigns and six-step discount models are not in the facts):

    * the price list is PRRF if given, else the customer's (its seeded PRRF), in the customer's
      currency unless CUCD is given;
    * the line of that list with the highest quantity break (QTLB) at or under ORQA (default 1);
    * one discount: the customer's discount model (DISY) as a percentage (DIP1) with its text;
    * NETP = SAPR − discount per unit, LNAM = NETP × ORQA.
    """
    customer = _find(state.customers, r, "CUNO", "Customer number")
    item = _find(state.items, r, "ITNO", "Item number")
    prrf = r.get("PRRF") or customer.get("PRRF", "")
    cucd = r.get("CUCD") or customer.get("CUCD", "")
    quantity = _dec(r.get("ORQA")) or 1.0
    lines = [
        p
        for p in state.prices.values()
        if p["PRRF"] == prrf and p["CUCD"] == cucd and p["ITNO"] == r["ITNO"] and _dec(p["QTLB"]) <= quantity
    ]
    if not lines:
        raise MIError(
            f"Sales price for item {r['ITNO']} does not exist in price list {prrf or '(none)'} {cucd}",
            code="XRE0103",
            field="ITNO",
        )
    line = max(lines, key=lambda p: _dec(p["QTLB"]))
    sapr = _dec(line["SAPR"])
    disy = r.get("DISY") or customer.get("DISY", "")
    model = state.discounts.get(disy, {})
    percent = _dec(model.get("DIP1"))
    per_unit = round(sapr * percent / 100, 4)
    net = round(sapr - per_unit, 4)
    return [
        {
            "WHLO": r.get("WHLO", ""),
            "SAPR": _num(sapr),
            "NETP": _num(net),
            "LNAM": _num(round(net * quantity, 2)),
            "ORDT": r.get("ORDT") or datetime.now().strftime("%Y%m%d"),
            "ORQA": _num(quantity),
            "PRRF": prrf,
            "PRRO": prrf,
            "DISY": disy,
            "CUCD": cucd,
            "SPUN": item.get("UNMS", ""),
            "ALUN": item.get("UNMS", ""),
            "DIP1": _num(percent),
            "DPR1": _num(per_unit),
            "DIA1": _num(round(per_unit * quantity, 2)),
            "TX81": model.get("TX81", "")[:8],
            "NTCD": "0",
            "TINC": "0",
        }
    ]


@handler("OIS100MI", "DelBatchHead")
def ois100_delete_batch(state: State, r: Record) -> list[Record]:
    if state.batches.pop(r["ORNO"], None) is None:
        raise _missing("Batch order", r["ORNO"], "ORNO")
    return []


@handler("OIS100MI", "DelHead")
def ois100_delete_order(state: State, r: Record) -> list[Record]:
    order = _find(state.orders, r, "ORNO", "Order number")
    _check_lock(state, f"ORNO/{r['ORNO']}")
    if order["head"]["ORST"] >= "33":  # picked or beyond: M3 refuses to delete
        raise MIError(
            f"Order {r['ORNO']} cannot be deleted, highest status is {order['head']['ORST']}",
            code="XOR0033",
            field="ORNO",
        )
    state.deleted_orders[r["ORNO"]] = state.orders.pop(r["ORNO"])
    return []


@handler("OIS100MI", "LstErrMsgOrder")
def ois100_errors(state: State, r: Record) -> list[Record]:
    if r["ORNO"] not in state.batches:
        raise _missing("Batch order", r["ORNO"], "ORNO")
    return []


# -- suppliers, purchasing, payables, GL -----------------------------------------------------------


@handler("CRS620MI", "AddSupplier")
def crs620_add(state: State, r: Record) -> list[Record]:
    if r["SUNO"] in state.suppliers:
        raise _exists("Supplier", r["SUNO"], "SUNO")
    state.suppliers[r["SUNO"]] = {**r, "CONO": state.cono, "STAT": r.get("STAT") or "20"}
    return []


@handler("CRS620MI", "UpdSupplier")
def crs620_update(state: State, r: Record) -> list[Record]:
    supplier = _find(state.suppliers, r, "SUNO", "Supplier")
    _check_lock(state, f"SUNO/{r['SUNO']}")
    supplier.update({k: v for k, v in r.items() if v != ""})
    return []


@handler("CRS620MI", "LstByNumber")
def crs620_list(state: State, r: Record) -> Iterator[Record]:
    """Suppliers from the given SUNO on, in SUNO order (a caller pages by the last key)."""
    return ({"CONO": state.cono, **s} for _, s in _key_order(state, state.suppliers, r.get("SUNO", "")))


@handler("CRS620MI", "GetBasicData")
def crs620_get(state: State, r: Record) -> list[Record]:
    supplier = _find(state.suppliers, r, "SUNO", "Supplier")
    return [{"CONO": state.cono, **supplier}]


@handler("PPS370MI", "StartEntry")
def pps370_start(state: State, r: Record) -> list[Record]:
    msgn = f"{state.next_number('msgn', 5000000):015d}"
    state.po_entries[msgn] = {"BAOR": r["BAOR"], "head": None, "lines": [], "finished": False}
    return [{"MSGN": msgn}]


def _entry(state: State, msgn: str) -> dict[str, Any]:
    entry = state.po_entries.get(msgn)
    if entry is None:
        raise _missing("Message number", msgn, "MSGN")
    if entry["finished"]:
        raise MIError(f"Entry {msgn} is already finished", code="XMS0002", field="MSGN")
    return entry


@handler("PPS370MI", "AddHead")
def pps370_head(state: State, r: Record) -> list[Record]:
    entry = _entry(state, r["MSGN"])
    if r["SUNO"] not in state.suppliers:
        raise _missing("Supplier", r["SUNO"], "SUNO")
    if r["WHLO"] not in state.warehouses:
        raise _missing("Warehouse", r["WHLO"], "WHLO")
    puno = f"{state.next_number('puno', 3000000):010d}"
    entry["head"] = {**r, "PUNO": puno}
    return [{"PUNO": puno}]


@handler("PPS370MI", "AddLine")
def pps370_line(state: State, r: Record) -> list[Record]:
    entry = _entry(state, r["MSGN"])
    if entry["head"] is None:
        raise MIError("Order head must be added first", code="XMS0003", field="MSGN")
    if r["ITNO"] not in state.items:
        raise _missing("Item number", r["ITNO"], "ITNO")
    pnli = str((len(entry["lines"]) + 1) * 10)
    entry["lines"].append({**r, "PNLI": pnli})
    return [{"PUNO": entry["head"]["PUNO"], "PNLI": pnli}]


@handler("PPS370MI", "FinishEntry")
def pps370_finish(state: State, r: Record) -> list[Record]:
    entry = _entry(state, r["MSGN"])
    if entry["head"] is None or not entry["lines"]:
        raise MIError("Entry has no order head or no lines", code="XMS0004", field="MSGN")
    entry["finished"] = True
    puno = entry["head"]["PUNO"]
    state.purchase_orders[puno] = {"head": {**entry["head"], "PUST": "20"}, "lines": entry["lines"]}
    return []


@handler("PPS370MI", "DeleteEntry")
def pps370_delete(state: State, r: Record) -> list[Record]:
    _entry(state, r["MSGN"])
    del state.po_entries[r["MSGN"]]
    return []


@handler("PPS200MI", "GetHead")
def pps200_get_head(state: State, r: Record) -> list[Record]:
    order = _find(state.purchase_orders, r, "PUNO", "Purchase order")
    return [{"CONO": state.cono, "DIVI": state.divi, **order["head"]}]


@handler("APS450MI", "AddHead")
def aps450_head(state: State, r: Record) -> list[Record]:
    if r["SUNO"] not in state.suppliers:
        raise _missing("Supplier", r["SUNO"], "SUNO")
    for batch in state.invoice_batches.values():
        if r.get("SINO") and batch["head"].get("SINO") == r["SINO"] and batch["head"]["SUNO"] == r["SUNO"]:
            raise _exists("Supplier invoice", r["SINO"], "SINO")
    inbn = str(state.next_number("inbn", 700000))
    head = {**r, "INBN": inbn, "SPYN": r.get("SPYN") or r["SUNO"], "IBTP": "10", "SUPA": "10"}
    state.invoice_batches[inbn] = {"head": head, "lines": []}
    return [{"INBN": inbn}]


@handler("APS450MI", "AddLine")
def aps450_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.invoice_batches, r, "INBN", "Invoice batch")
    trno = str(len(batch["lines"]) + 1)
    batch["lines"].append({**r, "TRNO": trno})
    return [{"TRNO": trno}]


@handler("APS450MI", "LstInvBySupInv")
def aps450_by_supplier_invoice(state: State, r: Record) -> list[Record]:
    return [
        dict(batch["head"])
        for _, batch in sorted(state.invoice_batches.items())
        if batch["head"]["SUNO"] == r["SUNO"]
        and batch["head"].get("SINO") == r["SINO"]
        and batch["head"]["SPYN"] == r["SPYN"]
    ]


@handler("APS450MI", "GetHead")
def aps450_get_head(state: State, r: Record) -> list[Record]:
    return [dict(_find(state.invoice_batches, r, "INBN", "Invoice batch")["head"])]


@handler("APS450MI", "LstLines")
def aps450_lines(state: State, r: Record) -> list[Record]:
    batch = _find(state.invoice_batches, r, "INBN", "Invoice batch")
    return [dict(line) for line in batch["lines"]]


@handler("GLS840MI", "AddBatchHead")
def gls840_head(state: State, r: Record) -> list[Record]:
    if r["KEY1"] in state.gl_batches or r["KEY1"] in state.gl_posted:
        raise _exists("Batch", r["KEY1"], "KEY1")
    state.gl_batches[r["KEY1"]] = {"head": dict(r), "lines": []}
    return [{"CONO": state.cono}]


@handler("GLS840MI", "AddBatchLine")
def gls840_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.gl_batches, r, "KEY1", "Batch")
    if any(line["LINE"] == r["LINE"] for line in batch["lines"]):
        raise _exists("Batch line", r["LINE"], "LINE")
    batch["lines"].append(dict(r))
    return [{"CONO": state.cono}]


@handler("GLS840MI", "UpdBatch")
def gls840_update(state: State, r: Record) -> list[Record]:
    """Posts the batch: it leaves the interface, so a second UpdBatch finds nothing (unverified)."""
    batch = _find(state.gl_batches, r, "KEY1", "Batch")
    if not batch["lines"]:
        raise MIError(f"Batch {r['KEY1']} has no lines", code="XLN0001", field="KEY1")
    state.gl_posted[r["KEY1"]] = state.gl_batches.pop(r["KEY1"])
    return [{"CONO": state.cono}]


@handler("OIS350MI", "LstInvHead")
def ois350_list(state: State, r: Record) -> list[Record]:
    start = int(r.get("IVNO") or 0)
    return [
        dict(inv)
        for _, inv in sorted(state.invoices.items())
        if inv.get("YEA4") == r["YEA4"] and int(inv.get("IVNO") or 0) >= start
    ]


@handler("OIS350MI", "LstInvHeadByPay")
def ois350_list_by_payer(state: State, r: Record) -> list[Record]:
    """One payer's invoices of a year from invoice number IVNO on, by invoice number: the key a
    caller pages with (the next page starts after the last IVNO it got). A seeded invoice without
    PYNO is paid by its customer (UNVERIFIED simplification)."""
    start = int(r.get("IVNO") or 0)
    rows = []
    for inv in sorted(state.invoices.values(), key=lambda i: int(i.get("IVNO") or 0)):
        payer = inv.get("PYNO") or inv.get("CUNO", "")
        if inv.get("YEA4") != r["YEA4"] or payer != r["PYNO"] or int(inv.get("IVNO") or 0) < start:
            continue
        customer = state.customers.get(inv.get("CUNO", ""), {})
        rows.append(
            {
                "PYNO": payer,
                "IDAT": inv.get("IDAT") or inv.get("IVDT", ""),
                "AMT1": inv.get("AMT1") or inv.get("CUAM", ""),
                "CUNM": customer.get("CUNM", ""),
                "INST": inv.get("INST", ""),
                "RAFC": inv.get("RAFC") or inv.get("CUAM", ""),
                **inv,
            }
        )
    return rows


@handler("OIS350MI", "GetInvHead")
def ois350_get(state: State, r: Record) -> list[Record]:
    invoice = state.invoices.get(f"{r['YEA4']}/{r['IVNO']}")
    if invoice is None:
        raise _missing("Invoice", r["IVNO"], "IVNO")
    return [dict(invoice)]


# -- metadata and the connection check -------------------------------------------------------------


@handler("MRS001MI", "LstTransactions")
def mrs001_transactions(state: State, r: Record) -> list[Record]:
    if r["MINM"] not in PROGRAMS:
        raise _missing("Program", r["MINM"], "MINM")
    return [
        {"MINM": r["MINM"], "TRNM": t.name, "TRDS": t.description, "STAT": "20"}
        for t in PROGRAMS[r["MINM"]].values()
    ]


@handler("MRS001MI", "LstFields")
def mrs001_fields(state: State, r: Record) -> list[Record]:
    """Fields as MRS001MI lists them; LENG 0 where no public source gives the length."""
    spec = PROGRAMS.get(r["MINM"], {}).get(r["TRNM"])
    if spec is None:
        raise _missing("Transaction", f"{r['MINM']}/{r['TRNM']}", "TRNM")
    fields = spec.inputs if r["TRTP"] == "I" else spec.outputs if r["TRTP"] == "O" else None
    if fields is None:
        raise MIError(f"Transaction type {r['TRTP']} is invalid", code="XTT0001", field="TRTP")
    return [
        {
            "MINM": r["MINM"],
            "TRNM": r["TRNM"],
            "TRTP": r["TRTP"],
            "FLNM": f.name,
            "FLDS": f.description,
            "LENG": str(f.length or 0),
            "TYPE": f.type,
            "MAND": "1" if f.mandatory else "0",
        }
        for f in fields.values()
    ]


@handler("MNS150MI", "GetUserData")
def mns150_user(state: State, r: Record) -> list[Record]:
    return [
        {
            "USID": "M3BNG",
            "CONO": state.cono,
            "DIVI": state.divi,
            "FACI": "A01",
            "WHLO": "100",
            "DTFM": "YMD",
            "TIZO": "UTC",
        }
    ]


def execute(
    state: State, program: str, transaction: str, record: Record, *, maxrecs: int = 0
) -> list[Record]:
    """Validate, run and shape one transaction, as M3 would; a list stops at ``maxrecs`` records
    (0: all) before they are shaped, as M3 stops reading there, so a page costs the simulator
    what is on it, not the whole rest of the table (a key-paged load, docs/benchmarks.md)."""
    clean = validate(program, transaction, record)
    spec = lookup(program, transaction)
    fn = HANDLERS.get((program, transaction))
    if fn is None:
        raise MIError(
            f"{program}/{transaction} exists in M3 but is not implemented by the simulator",
            error_type="NotImplementedInSimulator",
        )
    rows = fn(state, clean)  # a list of key-paged rows is an iterator, read as far as needed
    return shape(spec, list(itertools.islice(rows, maxrecs)) if maxrecs else list(rows))
