"""One realistic ``data`` payload per BNG event type.

They are the examples in ``docs/bng.md``, the default body of ``m3bng webhook send TYPE`` and the
starting point of the flow tests, so the documentation, the sandbox demo and the tests all show
the same thing, and a model change that breaks an example is caught by the tests.
"""

from __future__ import annotations

import copy
from typing import Any

_ADDRESS = {
    "Line1": "Storgatan 1",
    "City": "Stockholm",
    "PostalCode": "11122",
    "Country": "SE",
}

_SAMPLES: dict[str, dict[str, Any]] = {
    "customer.created": {
        "CustomerID": "C-2001",
        "ExternalID": "shop-88123",
        "CompanyName": "Velo Sport AB",
        "FirstName": "Anna",
        "LastName": "Berg",
        "Email": "anna.berg@velosport.example",
        "Phone": "+46 8 123 456",
        "BillingAddress": _ADDRESS,
        "ShippingAddress": _ADDRESS,
        "Status": "Active",
        "CreditLimit": "50000.00",
        "TaxExemptStatus": False,
        "Currency": "SEK",
    },
    "product.created": {
        "SKU": "BIKE-500",
        "Name": "Trail bike 500",
        "Description": "Aluminium trail bike, 29 inch wheels",
        "ProductCategory": "Bikes",
        "UnitOfMeasure": "PCS",
        "Price": "899.00",
        "Status": "Active",
    },
    "order.created": {
        "OrderID": "SO-1001",
        "CustomerID": "10001",
        "OrderDate": "2026-11-24",
        "OrderStatus": "New",
        "Currency": "SEK",
        "Warehouse": "100",
        "Lines": [
            {"LineID": "1", "SKU": "BIKE-100", "Quantity": "2", "UnitPrice": "499.00"},
            {"LineID": "2", "SKU": "HELMET-1", "Quantity": "1", "UnitPrice": "59.90"},
            {"LineID": "3", "SKU": "TUBE-26", "Quantity": "3", "UnitPrice": "19.50"},
        ],
    },
    "inventory.adjusted": {
        "SKU": "BIKE-100",
        "Warehouse": "100",
        "Quantity": "-2",
        "Reason": "Damaged in warehouse",
    },
    "vendor.created": {
        "VendorID": "V-300",
        "CompanyName": "Nordic Parts Oy",
        "Email": "orders@nordicparts.example",
        "Phone": "+358 9 555 0101",
        "Address": {"Line1": "Mannerheimintie 5", "City": "Helsinki", "PostalCode": "00100", "Country": "FI"},
        "Currency": "EUR",
        "PaymentTerms": "30",
        "Status": "Active",
    },
    "purchase_order.created": {
        "PurchaseOrderID": "PO-7001",
        "VendorID": "S1001",
        "Warehouse": "100",
        "OrderDate": "2026-11-24",
        "DeliveryDate": "2026-12-05",
        "Lines": [
            {"SKU": "BIKE-100", "Quantity": "10", "UnitPrice": "310.00"},
            {"SKU": "TUBE-26", "Quantity": "50", "UnitPrice": "7.25"},
        ],
    },
    "supplier_invoice.created": {
        "InvoiceID": "INV-88-2026",
        "VendorID": "S1001",
        "InvoiceDate": "2026-11-20",
        "DueDate": "2026-12-20",
        "Currency": "EUR",
        "Amount": "3462.50",
        "Lines": [
            {
                "Description": "Trail bikes",
                "Amount": "3100.00",
                "Account": "4010",
                "PurchaseOrderID": "PO-7001",
            },
            {
                "Description": "Inner tubes",
                "Amount": "362.50",
                "Account": "4010",
                "PurchaseOrderID": "PO-7001",
            },
        ],
    },
    "payment.captured": {
        "PaymentID": "PAY-5501",
        "Amount": "1116.30",
        "Currency": "SEK",
        "CapturedAt": "2026-11-24T10:15:00Z",
        "OrderID": "SO-1001",
        "Method": "card",
    },
    "gl_entry.created": {
        "EntryID": "GL-2026-0042",
        "Date": "2026-11-24",
        "Description": "Marketing accrual November",
        "Currency": "SEK",
        "Lines": [
            {"Account": "6110", "Debit": "12500.00", "CostCenter": "MKT", "Description": "Campaign"},
            {"Account": "2990", "Credit": "12500.00", "Description": "Accrued expenses"},
        ],
    },
}
_SAMPLES["customer.updated"] = {**_SAMPLES["customer.created"], "Phone": "+46 8 999 000"}
_SAMPLES["product.updated"] = {**_SAMPLES["product.created"], "Price": "949.00"}
_SAMPLES["order.updated"] = {**_SAMPLES["order.created"], "OrderStatus": "Cancelled"}
_SAMPLES["vendor.updated"] = {**_SAMPLES["vendor.created"], "PaymentTerms": "45"}


def sample(event_type: str) -> dict[str, Any]:
    """A fresh copy of the example ``data`` for ``event_type`` (KeyError for unknown types)."""
    return copy.deepcopy(_SAMPLES[event_type])


def event_types() -> list[str]:
    return sorted(_SAMPLES)
