"""BNG's events, field for field as the product brief names them (PascalCase).

Each event type has a model of its ``data``; ``validate_event_data`` is what the webhook route
uses so that a malformed order is refused with a 422 naming the field, before it is stored.
Unknown extra fields are kept (``extra="allow"``): BNG may send more than m3bng maps, and a
mapping can still reach them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from m3bng.errors import Invalid

Text = Annotated[str, Field(min_length=1, max_length=255)]


def _date_part(value: Any) -> Any:
    """BNG sends dates as ``2026-11-24`` or as a timestamp; M3 only ever takes the day."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str) and len(value) > 10 and value[10:11] in ("T", " "):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        except ValueError:
            return value
    return value


# One type, one error message ("OrderDate: Input should be a valid date"), whatever the input.
Day = Annotated[date, BeforeValidator(_date_part)]
Money = Annotated[Decimal, Field(max_digits=17, decimal_places=6)]


class BngModel(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


class Address(BngModel):
    Line1: Text | None = None
    Line2: str | None = Field(default=None, max_length=255)
    City: str | None = Field(default=None, max_length=100)
    PostalCode: str | None = Field(default=None, max_length=20)
    State: str | None = Field(default=None, max_length=50)
    Country: str | None = Field(default=None, min_length=2, max_length=3)


AddressModel = Address


class Customer(BngModel):
    CustomerID: Text
    ExternalID: str | None = Field(default=None, max_length=255)
    CompanyName: str | None = Field(default=None, max_length=255)
    FirstName: str | None = Field(default=None, max_length=100)
    LastName: str | None = Field(default=None, max_length=100)
    Email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    Phone: str | None = Field(default=None, max_length=40)
    BillingAddress: Address | None = None
    ShippingAddress: Address | None = None
    Status: str | None = Field(default=None, max_length=40)
    CreditLimit: Money | None = Field(default=None, ge=0)
    TaxExemptStatus: bool | str | None = None
    Currency: str | None = Field(default=None, min_length=3, max_length=3)

    @model_validator(mode="after")
    def _has_a_name(self) -> Customer:
        if not (self.CompanyName or self.FirstName or self.LastName):
            raise ValueError("one of CompanyName, FirstName or LastName is required")
        return self


# Aliases for fields named like their model (Order.Customer, Vendor.Address).
CustomerModel = Customer


class Product(BngModel):
    SKU: Text
    Name: Text
    Description: str | None = Field(default=None, max_length=4000)
    ProductCategory: str | None = Field(default=None, max_length=100)
    UnitOfMeasure: str | None = Field(default=None, max_length=10)
    Price: Money | None = Field(default=None, ge=0)
    Status: str | None = Field(default=None, max_length=40)


class OrderLine(BngModel):
    SKU: Text
    Quantity: Decimal = Field(gt=0, max_digits=15, decimal_places=6)
    UnitPrice: Money | None = Field(default=None, ge=0)
    Warehouse: str | None = Field(default=None, max_length=20)
    LineID: str | None = Field(default=None, max_length=64)


class Order(BngModel):
    OrderID: Text
    CustomerID: Text
    OrderDate: Day
    OrderStatus: str | None = Field(default=None, max_length=40)
    Currency: str | None = Field(default=None, min_length=3, max_length=3)
    Customer: CustomerModel | None = None
    ShippingAddress: Address | None = None
    Lines: list[OrderLine] = Field(min_length=1, max_length=2000)
    Warehouse: str | None = Field(default=None, max_length=20)


class InventoryAdjustment(BngModel):
    SKU: Text
    Warehouse: Text
    Quantity: Decimal = Field(max_digits=15, decimal_places=6)  # signed change
    Reason: str | None = Field(default=None, max_length=100)
    Location: str | None = Field(default=None, max_length=20)


class Vendor(BngModel):
    VendorID: Text
    CompanyName: Text
    Email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    Phone: str | None = Field(default=None, max_length=40)
    Address: AddressModel | None = None
    Currency: str | None = Field(default=None, min_length=3, max_length=3)
    PaymentTerms: str | None = Field(default=None, max_length=20)
    Status: str | None = Field(default=None, max_length=40)


class PurchaseOrderLine(BngModel):
    SKU: Text
    Quantity: Decimal = Field(gt=0, max_digits=15, decimal_places=6)
    UnitPrice: Money | None = Field(default=None, ge=0)


class PurchaseOrder(BngModel):
    PurchaseOrderID: Text
    VendorID: Text
    Warehouse: str | None = Field(default=None, max_length=20)
    OrderDate: Day | None = None
    DeliveryDate: Day
    Lines: list[PurchaseOrderLine] = Field(min_length=1, max_length=2000)


class SupplierInvoiceLine(BngModel):
    Description: str | None = Field(default=None, max_length=255)
    Amount: Money
    Account: str | None = Field(default=None, max_length=40)
    PurchaseOrderID: str | None = Field(default=None, max_length=64)


class SupplierInvoice(BngModel):
    InvoiceID: Text
    VendorID: Text
    InvoiceDate: Day
    DueDate: Day | None = None
    Currency: str = Field(min_length=3, max_length=3)
    Amount: Money
    Lines: list[SupplierInvoiceLine] = Field(default_factory=list, max_length=2000)


class Payment(BngModel):
    PaymentID: Text
    Amount: Money = Field(gt=0)
    Currency: str = Field(min_length=3, max_length=3)
    CapturedAt: datetime | None = None
    OrderID: str | None = Field(default=None, max_length=64)
    InvoiceID: str | None = Field(default=None, max_length=64)
    Method: str | None = Field(default=None, max_length=40)


class GlLine(BngModel):
    Account: Text
    Debit: Money = Field(default=Decimal(0), ge=0)
    Credit: Money = Field(default=Decimal(0), ge=0)
    CostCenter: str | None = Field(default=None, max_length=20)
    Description: str | None = Field(default=None, max_length=255)


class GlEntry(BngModel):
    EntryID: Text
    Date: Day
    Description: str | None = Field(default=None, max_length=255)
    Currency: str = Field(min_length=3, max_length=3)
    Lines: list[GlLine] = Field(min_length=2, max_length=2000)

    @model_validator(mode="after")
    def _balanced(self) -> GlEntry:
        debit = sum((line.Debit for line in self.Lines), Decimal(0))
        credit = sum((line.Credit for line in self.Lines), Decimal(0))
        if debit != credit:
            raise ValueError(f"debits ({debit}) and credits ({credit}) must balance")
        return self


EVENT_MODELS: dict[str, type[BngModel]] = {
    "customer.created": Customer,
    "customer.updated": Customer,
    "product.created": Product,
    "product.updated": Product,
    "order.created": Order,
    "order.updated": Order,
    "inventory.adjusted": InventoryAdjustment,
    "vendor.created": Vendor,
    "vendor.updated": Vendor,
    "purchase_order.created": PurchaseOrder,
    "supplier_invoice.created": SupplierInvoice,
    "payment.captured": Payment,
    "gl_entry.created": GlEntry,
}

EventType = Literal[
    "customer.created",
    "customer.updated",
    "product.created",
    "product.updated",
    "order.created",
    "order.updated",
    "inventory.adjusted",
    "vendor.created",
    "vendor.updated",
    "purchase_order.created",
    "supplier_invoice.created",
    "payment.captured",
    "gl_entry.created",
]


class UnknownEventType(Invalid, ValueError):
    """An event type without a model; a plugin flow may still know it (``check_event_data``)."""

    code = "unknown_event_type"


def validate_event_data(event_type: str, data: dict[str, Any]) -> BngModel:
    """Validate ``data`` for its event type; raises UnknownEventType or pydantic's ValidationError."""
    model = EVENT_MODELS.get(event_type)
    if model is None:
        known = ", ".join(sorted(EVENT_MODELS))
        raise UnknownEventType(f"unknown event type {event_type!r}; known types: {known}")
    return model.model_validate(data)


class InvalidEventData(Invalid, ValueError):
    """Event data refused before it is stored (a webhook, or an edited payload for a replay).

    ``fields`` names each problem (``[{"field": "data.OrderDate", "problem": ...}]``) so the
    answer can point at the field; ``code`` is the machine-readable reason.
    """

    def __init__(self, code: str, message: str, fields: list[dict[str, str]]) -> None:
        super().__init__(message, code=code, fields=fields)


def field_problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic's errors as ``[{"field": "data.Lines.0.Quantity", "problem": ...}]``."""
    return [
        {"field": prefix + (".".join(str(p) for p in err["loc"]) or "(body)"), "problem": str(err["msg"])}
        for err in exc.errors()
    ]


def check_event_data(event_type: str, data: dict[str, Any], *, has_flow: Callable[[], bool]) -> None:
    """Refuse an event no flow could ever apply; raises InvalidEventData.

    A type with a model (the brief's events) must match it field for field; a type that only a
    plugin flow knows (``M3BNG_FLOW_PLUGINS``, ``has_flow()`` true) is accepted as it is, the
    plugin validates it. Shared by the webhook route and edited-payload replays, so an edit is
    held to exactly what BNG's own events are.
    """
    try:
        validate_event_data(event_type, data)
    except UnknownEventType as exc:
        if has_flow():
            return
        raise InvalidEventData(
            "unknown_event_type", f"type: {exc}", [{"field": "type", "problem": "unknown event type"}]
        ) from None
    except ValidationError as exc:
        fields = field_problems(exc, "data.")
        message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        raise InvalidEventData("invalid_event", message, fields) from None


__all__ = [
    "EVENT_MODELS",
    "BngModel",
    "InvalidEventData",
    "UnknownEventType",
    "ValidationError",
    "check_event_data",
    "field_problems",
    "validate_event_data",
]
