"""The simulated M3 business logic: state plus one handler per MI transaction.

Behaviour copied from real M3 where it matters to an integration: fields are checked against the
transaction's specification before anything happens (mandatory, length, number, date), batch
orders get a temporary number that ``Confirm`` replaces by the real one, "already exists" and
"does not exist" come back as MI errors with a code and a field, and a record can be locked.

Error codes are M3-style (7 characters) but invented for the simulator; m3bng classifies errors
by message and type, never by these codes:

    XMA0001  <FIELD> must be entered                 (mandatory field empty)
    XLE0001  Input field <FIELD> is too long (max n) (errorType InputFieldTooLong)
    XNU0001  <FIELD> must be numeric
    XDT0001  <FIELD> is not a valid date (yyyyMMdd)
    XRE0103  <what> <key> does not exist
    XRE0101  <what> <key> already exists
    XLK0001  Record is reserved by another user
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from m3bng.sim.m3.specs import INPUTS, TRANSACTIONS

SEED_FILE = Path(__file__).with_name("seed.yaml")
Record = dict[str, str]


class MIError(Exception):
    def __init__(
        self, message: str, *, code: str = "", field: str = "", error_type: str = "ServerReturnedNOK"
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.field, self.error_type = message, code, field, error_type


@dataclass
class State:
    """Everything the simulated tenant holds; reset and seeded through the control API."""

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
    invoices: dict[str, Record] = field(default_factory=dict)
    adjustments: list[Record] = field(default_factory=list)
    locks: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)

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
                "invoices": self.invoices,
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


def validate(program: str, transaction: str, record: Record) -> Record:
    spec = INPUTS.get((program, transaction))
    if spec is None:
        if program not in TRANSACTIONS:
            raise MIError(f"Program {program} does not exist", error_type="ProgramNotFound")
        raise MIError(
            f"Transaction {transaction} does not exist in {program}", error_type="TransactionNotFound"
        )
    clean: Record = {}
    for name, value in record.items():
        if name not in spec:
            continue  # M3 ignores fields a transaction does not take
        f = spec[name]
        value = value.rstrip()
        if len(value) > f.length and f.type != "N":
            raise MIError(
                f"Input field {name} is too long (max {f.length})",
                code="XLE0001",
                field=name,
                error_type="InputFieldTooLong",
            )
        if value and f.type == "N" and not _NUMBER.match(value):
            raise MIError(f"{name} must be numeric", code="XNU0001", field=name)
        if value and f.type == "D":
            try:
                datetime.strptime(value, "%Y%m%d")
            except ValueError:
                raise MIError(f"{name} is not a valid date (yyyyMMdd)", code="XDT0001", field=name) from None
        clean[name] = value
    for name, f in spec.items():
        if f.mandatory and not clean.get(name):
            raise MIError(f"{name} must be entered", code="XMA0001", field=name)
    return clean


def _missing(what: str, key: str, field_name: str) -> MIError:
    return MIError(f"{what} {key} does not exist", code="XRE0103", field=field_name)


def _find(table: dict[str, Any], r: Record, field_name: str, what: str) -> Any:
    """The row ``r[field_name]`` names, or M3's "<what> <key> does not exist" error."""
    row = table.get(r[field_name])
    if row is None:
        raise _missing(what, r[field_name], field_name)
    return row


def _exists(what: str, key: str, field_name: str) -> MIError:
    return MIError(f"{what} {key} already exists", code="XRE0101", field=field_name)


def _check_lock(state: State, key: str) -> None:
    if key in state.locks:
        raise MIError("Record is reserved by another user", code="XLK0001")


# -- handlers ---------------------------------------------------------------------------------------

Handler = Callable[[State, Record], list[Record]]
HANDLERS: dict[tuple[str, str], Handler] = {}


def handler(program: str, transaction: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[(program, transaction)] = fn
        return fn

    return register


@handler("CRS610MI", "Add")
def crs610_add(state: State, r: Record) -> list[Record]:
    template = _find(state.customers, r, "CUTM", "Customer template")
    cuno = r.get("CUNO") or f"{state.next_number('cuno', 20000)}"
    if cuno in state.customers:
        raise _exists("Customer number", cuno, "CUNO")
    customer = {k: v for k, v in template.items()}
    customer.update({k: v for k, v in r.items() if k != "CUTM"})
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
def crs610_list(state: State, r: Record) -> list[Record]:
    start = r.get("CUNO", "")
    return [dict(c) for k, c in sorted(state.customers.items()) if k >= start]


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


@handler("MMS200MI", "GetItmBasic")
def mms200_get(state: State, r: Record) -> list[Record]:
    item = _find(state.items, r, "ITNO", "Item number")
    return [dict(item)]


def _balance(state: State, whlo: str, itno: str) -> Record:
    row = state.stock.get(f"{whlo}/{itno}")
    if row is None:
        raise _missing("Item/warehouse", f"{itno}/{whlo}", "ITNO")
    stqt, alqt = float(row.get("STQT") or 0), float(row.get("ALQT") or 0)
    return {
        "CONO": state.cono,
        "WHLO": whlo,
        "ITNO": itno,
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


@handler("MMS080MI", "LstItemWarehous")
def mms080_list(state: State, r: Record) -> list[Record]:
    rows = []
    for key in sorted(state.stock):
        whlo, itno = key.split("/", 1)
        if r["FWHL"] <= whlo <= r["TWHL"] and (not r.get("FITN") or itno >= r["FITN"]):
            rows.append(_balance(state, whlo, itno))
    return rows


@handler("MMS850MI", "AddAdjust")
def mms850_adjust(state: State, r: Record) -> list[Record]:
    if r["ITNO"] not in state.items:
        raise _missing("Item number", r["ITNO"], "ITNO")
    if r["WHLO"] not in state.warehouses:
        raise _missing("Warehouse", r["WHLO"], "WHLO")
    key = f"{r['WHLO']}/{r['ITNO']}"
    _check_lock(state, key)
    row = state.stock.setdefault(key, {"WHLO": r["WHLO"], "ITNO": r["ITNO"], "STQT": "0", "ALQT": "0"})
    new = float(row.get("STQT") or 0) + float(r["QLQT"])
    if new < 0:
        raise MIError(
            f"Adjustment makes on-hand balance of {r['ITNO']} negative", code="XQT0002", field="QLQT"
        )
    row["STQT"] = _num(new)
    state.adjustments.append(dict(r))
    return []


@handler("OIS100MI", "AddBatchHead")
def ois100_add_head(state: State, r: Record) -> list[Record]:
    if r["CUNO"] not in state.customers:
        raise _missing("Customer number", r["CUNO"], "CUNO")
    if r.get("WHLO") and r["WHLO"] not in state.warehouses:
        raise _missing("Warehouse", r["WHLO"], "WHLO")
    orno = f"T{state.next_number('batch', 100):09d}"
    state.batches[orno] = {"head": {**r, "ORNO": orno}, "lines": []}
    return [{"ORNO": orno}]


@handler("OIS100MI", "AddBatchLine")
def ois100_add_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.batches, r, "ORNO", "Batch order")
    if r["ITNO"] not in state.items:
        raise _missing("Item number", r["ITNO"], "ITNO")
    if r.get("ORQT") and float(r["ORQT"]) <= 0:
        raise MIError("Ordered quantity must be greater than zero", code="XQT0001", field="ORQT")
    ponr = str(len(batch["lines"]) + 1)
    batch["lines"].append({**r, "PONR": ponr})
    return [{"PONR": ponr, "POSX": "0"}]


@handler("OIS100MI", "Confirm")
def ois100_confirm(state: State, r: Record) -> list[Record]:
    batch = _find(state.batches, r, "ORNO", "Batch order")
    if not batch["lines"]:
        raise MIError(f"Batch order {r['ORNO']} has no lines", code="XLN0001", field="ORNO")
    orno = f"{state.next_number('orno', 1000000):010d}"
    head = {**batch["head"], "ORNO": orno, "STAT": "22", "ORSL": "22", "ORST": "22", "TEMP": r["ORNO"]}
    state.orders[orno] = {"head": head, "lines": batch["lines"], "batch": r["ORNO"]}
    for line in batch["lines"]:  # allocate stock where there is some
        row = state.stock.get(f"{line.get('WHLO') or head.get('WHLO')}/{line['ITNO']}")
        if row is not None:
            row["ALQT"] = _num(float(row.get("ALQT") or 0) + float(line.get("ORQT") or 0))
    del state.batches[r["ORNO"]]
    return [{"ORNO": orno, "STAT": "22"}]


@handler("OIS100MI", "GetOrderNo")
def ois100_order_no(state: State, r: Record) -> list[Record]:
    for orno, order in state.orders.items():
        if order["batch"] == r["ORNO"]:
            return [{"ORNR": orno}]
    raise _missing("Batch order", r["ORNO"], "ORNO")


@handler("OIS100MI", "GetHead")
def ois100_get_head(state: State, r: Record) -> list[Record]:
    order = _find(state.orders, r, "ORNO", "Order number")
    return [{k: v for k, v in order["head"].items() if k != "TEMP"}]


@handler("OIS100MI", "LstHead")
def ois100_list_head(state: State, r: Record) -> list[Record]:
    if r["CUNO"] not in state.customers:
        raise _missing("Customer number", r["CUNO"], "CUNO")
    rows = []
    for order in state.orders.values():
        head = order["head"]
        if head["CUNO"] != r["CUNO"] or (r.get("CUOR") and head.get("CUOR") != r["CUOR"]):
            continue
        if (r.get("ORSL") and head["ORSL"] < r["ORSL"]) or (r.get("ORST") and head["ORST"] > r["ORST"]):
            continue
        rows.append({k: v for k, v in head.items() if k != "TEMP"})
    return rows


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


@handler("CRS620MI", "AddSupplier")
def crs620_add(state: State, r: Record) -> list[Record]:
    if r["SUNO"] in state.suppliers:
        raise _exists("Supplier", r["SUNO"], "SUNO")
    state.suppliers[r["SUNO"]] = {**r, "STAT": r.get("STAT") or "20"}
    return []


@handler("CRS620MI", "UpdSupplier")
def crs620_update(state: State, r: Record) -> list[Record]:
    supplier = _find(state.suppliers, r, "SUNO", "Supplier")
    _check_lock(state, f"SUNO/{r['SUNO']}")
    supplier.update({k: v for k, v in r.items() if v != ""})
    return []


@handler("CRS620MI", "GetBasicData")
def crs620_get(state: State, r: Record) -> list[Record]:
    supplier = _find(state.suppliers, r, "SUNO", "Supplier")
    return [dict(supplier)]


@handler("PPS370MI", "StartEntry")
def pps370_start(state: State, r: Record) -> list[Record]:
    msgn = f"{state.next_number('msgn', 5000000):010d}"
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
    puno = r.get("PUNO") or f"{state.next_number('puno', 3000000):010d}"
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
    state.invoice_batches[inbn] = {"head": {**r, "INBN": inbn}, "lines": []}
    return [{"INBN": inbn}]


@handler("APS450MI", "AddLine")
def aps450_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.invoice_batches, r, "INBN", "Invoice batch")
    batch["lines"].append(dict(r))
    return []


@handler("APS450MI", "LstInvBySupInv")
def aps450_by_supplier_invoice(state: State, r: Record) -> list[Record]:
    return [
        dict(batch["head"])
        for batch in state.invoice_batches.values()
        if batch["head"]["SUNO"] == r["SUNO"] and batch["head"].get("SINO") == r["SINO"]
    ]


@handler("APS450MI", "LstLines")
def aps450_lines(state: State, r: Record) -> list[Record]:
    batch = _find(state.invoice_batches, r, "INBN", "Invoice batch")
    return [{"INBN": r["INBN"], "TRNO": str(n), **line} for n, line in enumerate(batch["lines"], 1)]


@handler("GLS840MI", "AddBatchHead")
def gls840_head(state: State, r: Record) -> list[Record]:
    if r["KEY1"] in state.gl_batches:
        raise _exists("Batch", r["KEY1"], "KEY1")
    state.gl_batches[r["KEY1"]] = {"head": dict(r), "lines": [], "updated": False}
    return []


@handler("GLS840MI", "AddBatchLine")
def gls840_line(state: State, r: Record) -> list[Record]:
    batch = _find(state.gl_batches, r, "KEY1", "Batch")
    if any(line["LINE"] == r["LINE"] for line in batch["lines"]):
        raise _exists("Batch line", r["LINE"], "LINE")
    batch["lines"].append(dict(r))
    return []


@handler("GLS840MI", "UpdBatch")
def gls840_update(state: State, r: Record) -> list[Record]:
    batch = _find(state.gl_batches, r, "KEY1", "Batch")
    if not batch["lines"]:
        raise MIError(f"Batch {r['KEY1']} has no lines", code="XLN0001", field="KEY1")
    batch["updated"] = True
    return []


@handler("OIS350MI", "LstInvHead")
def ois350_list(state: State, r: Record) -> list[Record]:
    return [
        dict(inv)
        for inv in state.invoices.values()
        if inv.get("YEA4") == r["YEA4"] and (not r.get("CUNO") or inv.get("CUNO") == r["CUNO"])
    ]


@handler("OIS350MI", "GetInvHead")
def ois350_get(state: State, r: Record) -> list[Record]:
    invoice = state.invoices.get(f"{r['YEA4']}/{r['IVNO']}")
    if invoice is None:
        raise _missing("Invoice", r["IVNO"], "IVNO")
    return [dict(invoice)]


@handler("MRS001MI", "LstTransactions")
def mrs001_transactions(state: State, r: Record) -> list[Record]:
    if r["MINM"] not in TRANSACTIONS:
        raise _missing("Program", r["MINM"], "MINM")
    return [
        {"MINM": r["MINM"], "TRNM": t, "TRDS": t, "SIMU": "S" if "Lst" not in t else "M"}
        for t in TRANSACTIONS[r["MINM"]]
    ]


@handler("MRS001MI", "LstFields")
def mrs001_fields(state: State, r: Record) -> list[Record]:
    spec = INPUTS.get((r["MINM"], r["TRNM"]))
    if spec is None:
        raise _missing("Transaction", f"{r['MINM']}/{r['TRNM']}", "TRNM")
    if r["TRTP"] != "I":
        return []
    return [
        {
            "FLNM": f.name,
            "FLDS": f.description or f.name,
            "LENG": str(f.length),
            "TYPE": f.type,
            "MAND": "1" if f.mandatory else "0",
        }
        for f in spec.values()
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


def execute(state: State, program: str, transaction: str, record: Record) -> list[Record]:
    clean = validate(program, transaction, record)
    fn = HANDLERS.get((program, transaction))
    if fn is None:
        raise MIError(
            f"Transaction {transaction} does not exist in {program}", error_type="TransactionNotFound"
        )
    return fn(state, clean)
