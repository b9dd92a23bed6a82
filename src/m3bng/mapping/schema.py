"""The mapping language, as a strict pydantic schema: about ten operations, nothing more.

A field rule is either shorthand or a mapping with exactly one *source* and optional
*modifiers* applied in a fixed order::

    CUNM: CompanyName                     # shorthand for {from: CompanyName}
    CUTM: {value: "TEMPLATE"}             # a constant
    CUA1: {concat: [FirstName, LastName], sep: " "}
    ITCL: {lookup: product_category, from: ProductCategory, default: "OTHER"}
    ORDT: {from: OrderDate, type: date}   # -> yyyyMMdd
    WHLO: {from: _line.Warehouse, default: {var: warehouse}}
    STAT: {when: [{if: "OrderStatus == 'Shipped'", then: {value: "66"}}], else: {value: "22"}}

Paths and conditions are JMESPath expressions (a small, safe, well-kept language; no eval).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Scalar = str | int | float | bool


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Case(Strict):
    if_: str = Field(alias="if", min_length=1)
    then: FieldRule

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldRule(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # sources: exactly one
    from_: str | None = Field(default=None, alias="from")
    value: Scalar | None = None
    var: str | None = None
    concat: list[FieldRule | str] | None = None
    lookup: str | None = None  # table name; the key comes from `from`
    when: list[Case] | None = None
    # modifiers
    sep: str = ""
    else_: FieldRule | None = Field(default=None, alias="else")
    default: FieldRule | Scalar | None = None
    type: Literal["str", "int", "decimal", "date", "bool"] | None = None
    date_input: str | None = None  # strptime format of the source when it is not ISO
    upper: bool = False
    lower: bool = False
    truncate: bool | int = False  # True: to M3's field length (metadata); N: to N characters
    max_length: int | None = Field(default=None, ge=1)
    required: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"from": value}
        if isinstance(value, (int, float, bool)):
            return {"value": value}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FieldRule:
        present = [
            name for name in ("from_", "value", "var", "concat", "when") if getattr(self, name) is not None
        ]
        if self.lookup is not None:
            if self.from_ is None:
                raise ValueError("lookup needs `from` (the key to look up)")
            present.remove("from_")
            present.append("lookup")
        if len(present) != 1:
            shown = [p.rstrip("_") for p in present] or ["none"]
            raise ValueError(
                "a field rule needs exactly one of from, value, var, concat, lookup, when "
                f"(found: {', '.join(shown)})"
            )
        if self.else_ is not None and self.when is None:
            raise ValueError("`else` belongs to `when`")
        if self.upper and self.lower:
            raise ValueError("upper and lower exclude each other")
        return self


class CallSpec(Strict):
    """One MI call: program, transaction and how to build its record."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # A JMESPath condition on the event: the call is made only when it holds (order.updated:
    # `if: "OrderStatus == 'Cancelled'"` → OIS100MI/DelHead).
    if_: str | None = Field(default=None, alias="if", min_length=1)
    program: str = Field(pattern=r"^[A-Z]{3}\d{3}MI$")
    transaction: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]{1,31}$")
    for_each: str | None = None  # JMESPath to a list: one call per element, bound as _line
    fields: dict[str, FieldRule] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _m3_names(cls, fields: dict[str, FieldRule]) -> dict[str, FieldRule]:
        bad = [name for name in fields if not (name.isupper() and 3 <= len(name) <= 6 and name.isalnum())]
        if bad:
            raise ValueError(
                f"M3 field names are 3-6 upper-case letters/digits (e.g. CUNO): {', '.join(bad)}"
            )
        return fields


_JSON_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class BngCallSpec(Strict):
    """One request to BNG's REST API: method, path and how to build the JSON body.

    ``path`` holds ``{Name}`` placeholders filled from ``params`` (URL-quoted); body field
    names may be dotted (``BillingAddress.City``) to build nested objects.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    if_: str | None = Field(default=None, alias="if", min_length=1)
    method: Literal["GET", "PUT", "PATCH", "POST", "DELETE"]
    path: str = Field(pattern=r"^/\S*$")
    params: dict[str, FieldRule] = Field(default_factory=dict)
    for_each: str | None = None
    fields: dict[str, FieldRule] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _json_names(cls, fields: dict[str, FieldRule]) -> dict[str, FieldRule]:
        bad = [name for name in fields if not _JSON_NAME.match(name)]
        if bad:
            raise ValueError(
                f"BNG field names are JSON names, dotted for nesting (Address.City): {', '.join(bad)}"
            )
        return fields

    @model_validator(mode="after")
    def _params_match_path(self) -> BngCallSpec:
        named = set(_PATH_PARAM.findall(self.path))
        missing = sorted(named - set(self.params))
        unused = sorted(set(self.params) - named)
        if missing:
            raise ValueError(f"path {self.path!r} names {', '.join(missing)} but params has no rule for it")
        if unused:
            raise ValueError(f"params {', '.join(unused)} do not appear in path {self.path!r}")
        return self


def _call_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "bng" if "method" in value or "path" in value else "m3"
    return "bng" if isinstance(value, BngCallSpec) else "m3"


AnyCall = Annotated[
    Annotated[CallSpec, Tag("m3")] | Annotated[BngCallSpec, Tag("bng")], Discriminator(_call_kind)
]


Action = Literal["flag", "hold", "off"]


class StatisticalRule(Strict):
    """A value judged against the key's own history with robust statistics: it is anomalous when
    its robust z-score ``|x - median| / (1.4826 * MAD)`` exceeds ``max_z`` **and** it is at least
    ``min_ratio`` times off the median (either way). The ratio keeps small, tight histories (all
    quantities 1, MAD 0) from calling a 2 an anomaly; the z-score keeps wide ones from calling
    their ordinary spread one."""

    action: Action = "flag"
    max_z: float = Field(default=6.0, gt=0)
    min_ratio: float = Field(default=4.0, ge=1)
    min_history: int = Field(default=8, ge=2, le=1000)
    # Which side counts: ``above`` the median only (an order too large is the costly mistake; a
    # small one is not), ``below`` only, or ``both``.
    direction: Literal["above", "below", "both"] = "above"


class QuantityRule(StatisticalRule):
    """A line's quantity against the last quantities of its SKU."""


class PriceRule(StatisticalRule):
    """A line's unit price against the SKU's recent unit prices: prices move less than
    quantities, so half or double the usual is already worth a look."""

    min_ratio: float = Field(default=2.0, ge=1)
    direction: Literal["above", "below", "both"] = "both"  # a price typed ×10 or ÷10


class AmountRule(StatisticalRule):
    """The order's amount against the customer's last orders: baskets vary widely (one line or
    five), so the z threshold is lower and the ratio higher than for a line."""

    max_z: float = Field(default=3.0, gt=0)
    min_ratio: float = Field(default=5.0, ge=1)


class NewCustomerRule(Strict):
    """A customer's first order (no history of that customer) above ``max_amount``."""

    action: Action = "flag"
    max_amount: float = Field(default=10_000.0, gt=0)


class NearDuplicateRule(Strict):
    """The same customer and the same lines (SKU and quantity) entered in M3 under another order
    id within ``window_minutes``."""

    action: Action = "flag"
    window_minutes: float = Field(default=10.0, gt=0, le=10_080)


class AnomalyRules(Strict):
    quantity: QuantityRule = Field(default_factory=QuantityRule)
    price: PriceRule = Field(default_factory=PriceRule)
    amount: AmountRule = Field(default_factory=AmountRule)
    new_customer: NewCustomerRule = Field(default_factory=NewCustomerRule)
    near_duplicate: NearDuplicateRule = Field(default_factory=NearDuplicateRule)


class AnomalyFields(Strict):
    """Where the rules find the order's parts in the event's data (JMESPath names)."""

    order_id: str = Field(default="OrderID", min_length=1)
    customer: str = Field(default="CustomerID", min_length=1)
    lines: str = Field(default="Lines", min_length=1)
    sku: str = Field(default="SKU", min_length=1)
    quantity: str = Field(default="Quantity", min_length=1)
    unit_price: str = Field(default="UnitPrice", min_length=1)


class AnomalySpec(Strict):
    """``anomalies:`` of an order mapping: rules over the inbound order and the history of what
    was entered in M3 (docs/mappings.md, docs/assist.md). ``history`` bounds every read: the
    last N rows of a SKU or customer; ``retention_days`` how long rows are kept."""

    history: int = Field(default=20, ge=2, le=1000)
    retention_days: int = Field(default=180, ge=1, le=3650)
    fields: AnomalyFields = Field(default_factory=AnomalyFields)
    rules: AnomalyRules = Field(default_factory=AnomalyRules)


class MappingSpec(Strict):
    version: Literal[1] = 1
    flow: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    trigger: list[str] = Field(min_length=1)
    target: Literal["m3", "bng"] = "m3"
    # Where the triggering events come from: BNG webhooks, ION BODs or the inventory poller.
    # Default: bng for mappings that write to M3, ion for mappings that write to BNG.
    source: Literal["bng", "ion", "poller"] | None = None
    # Which system holds the master copy of the objects this mapping moves. ``m3bng sync ENTITY
    # --to m3`` (an initial load from BNG into M3) runs only with a mapping that says ``bng``:
    # loading M3 from BNG where M3 is the master would overwrite M3's data with BNG's copy.
    master: Literal["m3", "bng"] = "m3"
    vars: dict[str, Scalar] = Field(default_factory=dict)
    options: dict[str, Scalar] = Field(default_factory=dict)
    lookups: dict[str, str] = Field(default_factory=dict)  # name -> file (relative to the mapping)
    # How the M3 key of a *new* object is derived from BNG's data (e.g. CUNO from CustomerID).
    # A deterministic key is what lets a create whose answer was lost be found again by a Get.
    keys: dict[str, FieldRule] = Field(default_factory=dict)
    calls: dict[str, AnyCall] = Field(min_length=1)
    # Anomaly rules run before the flow's first M3 call (flows/runtime/anomalies.py); absent: none.
    anomalies: AnomalySpec | None = None

    @property
    def event_source(self) -> str:
        return self.source or ("ion" if self.target == "bng" else "bng")


Case.model_rebuild()
FieldRule.model_rebuild()
