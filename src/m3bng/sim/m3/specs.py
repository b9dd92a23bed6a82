"""Field specifications of the simulated MI transactions, as MRS001MI would describe them.

Written compactly: ``NAME[!]TYPE LENGTH`` with ``!`` for mandatory, types A (alphanumeric),
N (numeric) and D (date, yyyyMMdd). Names, mandatory flags and lengths follow the field lists in
shared/infor/samples/m3_mi_fields_from_M3H5.txt (one real tenant's metadata); inputs whose length
the samples do not give use the length of the same field in the output lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    length: int
    mandatory: bool = False
    description: str = ""


_TOKEN = re.compile(r"([A-Z0-9]{4})\s*(!?)([AND])(\d+)")


def _parse(spec: str) -> tuple[Field, ...]:
    return tuple(
        Field(name, kind, int(length), bang == "!") for name, bang, kind, length in _TOKEN.findall(spec)
    )


_INPUTS: dict[tuple[str, str], str] = {
    (
        "CRS610MI",
        "Add",
    ): "CUTM!A10 CUNM!A36 CUA1!A36 CONO N3 DIVI A3 LNCD A2 CUNO A10 CUA2A36 CUA3A36 CUA4A36 "
    "PONO A10 PHNO A16 PHN2A16 TFNO A16 CUTP N1 ALCU A10 YREF A30 YRE2A30 MAIL A50 CSCD A3 ECAR A2 STAT A2 "
    "TOWN A20 CUCD A3",
    (
        "CRS610MI",
        "ChgBasicData",
    ): "CUNO!A10 CONO N3 DIVI A3 CUNM A36 CUA1A36 CUA2A36 CUA3A36 CUA4A36 PONO A10 "
    "PHNO A16 YREF A30 MAIL A50 CSCD A3 STAT A2 TOWN A20",
    ("CRS610MI", "GetBasicData"): "CUNO!A10 CONO N3",
    ("CRS610MI", "LstByNumber"): "CONO N3 CUNO A10",
    ("MMS200MI", "AddItmBasic"): "STAT!A2 ITNO!A15 ITDS!A30 RESP!A10 UNMS!A3 ITTY!A3 MABU!N1 PRVG!A5 CONO N3 "
    "FUDS A60 ITGR A8 ITCL A5 BUAR A3 NEWE N11 GRWE N11",
    (
        "MMS200MI",
        "UpdItmBasic",
    ): "ITNO!A15 CONO N3 STAT A2 ITDS A30 FUDS A60 UNMS A3 ITGR A8 ITCL A5 NEWE N11",
    ("MMS200MI", "GetItmBasic"): "ITNO!A15 CONO N3 LNCD A2",
    ("MMS200MI", "GetItmWhsBal"): "WHLO!A3 ITNO!A15 CONO N3",
    ("MMS080MI", "LstItemWarehous"): "FWHL!A3 TWHL!A3 CONO N3 FITN A15 TITN A15",
    (
        "MMS850MI",
        "AddAdjust",
    ): "PRFL!A10 E0PA!A17 WHLO!A3 ITNO!A15 QLQT!N15 CONO N3 WHSL A10 BANO A20 RSCD A3",
    (
        "OIS100MI",
        "AddBatchHead",
    ): "CUNO!A10 CONO N3 ORTP A3 RLDT D8 FACI A3 CUOR A20 MODL A3 TEDL A3 YREF A30 "
    "TEPY A3 ADID A6 CUCD A3 ORDT D8 WHLO A3",
    (
        "OIS100MI",
        "AddBatchLine",
    ): "ORNO!A10 ITNO!A15 CONO N3 ORQT N15 WHLO A3 DWDT D8 SAPR N17 ALUN A3 CUOR A20",
    ("OIS100MI", "Confirm"): "ORNO!A10 CONO N3 CTYP N1",
    ("OIS100MI", "GetHead"): "ORNO!A10 CONO N3",
    ("OIS100MI", "LstHead"): "CUNO!A10 CONO N3 ORSL A2 ORST A2 CUOR A20",
    ("OIS100MI", "GetOrderNo"): "ORNO!A10 CONO N3",
    ("OIS100MI", "DelBatchHead"): "ORNO!A10 CONO N3",
    ("OIS100MI", "DelHead"): "ORNO!A10 CONO N3",
    ("OIS100MI", "LstErrMsgOrder"): "ORNO!A10 CONO N3",
    ("CRS620MI", "AddSupplier"): "SUNO!A10 SUNM!A36 SUTY!N1 CSCD!A3 LNCD!A2 CUCD!A3 TEPY!A3 CONO N3 SUCO A10 "
    "SUA1 A36 SUA2 A36 TOWN A20 PONO A10 PHNO A16 MAIL A50 STAT A2",
    (
        "CRS620MI",
        "UpdSupplier",
    ): "SUNO!A10 CONO N3 SUNM A36 CSCD A3 CUCD A3 TEPY A3 SUA1 A36 TOWN A20 PHNO A16 MAIL A50 STAT A2",
    ("CRS620MI", "GetBasicData"): "SUNO!A10 CONO N3",
    ("PPS370MI", "StartEntry"): "BAOR!A10 CONO N3",
    (
        "PPS370MI",
        "AddHead",
    ): "MSGN!A10 FACI!A3 WHLO!A3 SUNO!A10 DWDT!D8 CONO N3 ORTY A3 CUCD A3 PUNO A10 YRE1 A30",
    ("PPS370MI", "AddLine"): "MSGN!A10 ITNO!A15 ORQA!N15 CONO N3 PUNO A10 PUPR N17 DWDT D8",
    ("PPS370MI", "FinishEntry"): "MSGN!A10 CONO N3",
    ("PPS200MI", "GetHead"): "PUNO!A10 CONO N3",
    ("APS450MI", "AddHead"): "SUNO!A10 IVDT!D8 CONO N3 DIVI A3 SINO A24 CUCD A3 CUAM N17 DUDT D8 SPYN A10",
    ("APS450MI", "AddLine"): "INBN!N10 RDTP!N1 CONO N3 DIVI A3 NLAM N17 AIT1 A8 VTXT A40 PUNO A10",
    ("APS450MI", "LstInvBySupInv"): "SUNO!A10 SINO!A24 CONO N3 DIVI A3",
    ("APS450MI", "LstLines"): "INBN!N10 CONO N3 DIVI A3",
    ("GLS840MI", "AddBatchHead"): "KEY1!A30 INTN!A10 CONO N3 DIVI A3 DESC A40",
    ("GLS840MI", "AddBatchLine"): "KEY1!A30 LINE!N7 PARM!A254 CONO N3 DIVI A3",
    ("GLS840MI", "UpdBatch"): "KEY1!A30 CONO N3 DIVI A3",
    ("OIS350MI", "LstInvHead"): "YEA4!N4 CONO N3 DIVI A3 IVNO N9 CUNO A10",
    ("OIS350MI", "GetInvHead"): "YEA4!N4 IVNO!N9 CONO N3 DIVI A3",
    ("MRS001MI", "LstTransactions"): "MINM!A10",
    ("MRS001MI", "LstFields"): "MINM!A10 TRNM!A15 TRTP!A1",
    ("MNS150MI", "GetUserData"): "",
}

INPUTS: dict[tuple[str, str], dict[str, Field]] = {
    key: {f.name: f for f in _parse(spec)} for key, spec in _INPUTS.items()
}

# Output widths used to pad v1 values the way M3 does (right-padded to the field length).
OUTPUT_LENGTHS: dict[str, int] = {
    "CUNO": 10, "CUNM": 36, "CUA1": 36, "CUA2": 36, "TOWN": 20, "PONO": 10, "PHNO": 16, "MAIL": 50,
    "CSCD": 3, "STAT": 2, "ITNO": 15, "ITDS": 30, "FUDS": 60, "UNMS": 3, "ITCL": 5, "ITTY": 3, "ORNO": 10,
    "ORTP": 3, "CUOR": 20, "WHLO": 3, "SUNO": 10, "SUNM": 36, "PUNO": 10, "MSGN": 10, "INBN": 10,
}  # fmt: skip

TRANSACTIONS: dict[str, list[str]] = {}
for _program, _transaction in INPUTS:
    TRANSACTIONS.setdefault(_program, []).append(_transaction)
