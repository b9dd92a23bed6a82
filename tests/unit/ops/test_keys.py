"""Business keys an event is found by ("where is order X")."""

from __future__ import annotations

from m3bng.ops.keys import event_keys


def test_bng_order_keys_include_ids_and_checkpointed_m3_keys() -> None:
    keys = event_keys(
        source="bng",
        external_id="msg_1",
        business_key="order:SO-1001",
        payload={"type": "order.created", "data": {"OrderID": "SO-1001", "CustomerID": "C-9", "Lines": []}},
        checkpoint={"ORNO": "0000012345", "batch_orno": "T1", "head_sent": True},
    )
    assert keys["so-1001"] == "order_id"
    assert keys["c-9"] == "customer_id"
    assert keys["0000012345"] == "orno"
    assert keys["msg_1"] == "external_id"
    assert "true" not in keys and "t1" not in keys  # flags and lower-case internals are not keys


def test_bod_keys_include_bodid_and_document_id() -> None:
    keys = event_keys(
        source="ion",
        external_id="infor-nid:infor:770:AAA:1000123:5?SalesOrder&verb=Sync",
        business_key="SalesOrder:770_AAA:1000123",
        payload={"bod": {"document_id": "1000123"}, "data": {"CustomerParty": {"CUNO": "10001"}}},
        checkpoint={},
    )
    assert keys["infor-nid:infor:770:aaa:1000123:5?salesorder&verb=sync"] == "bodid"
    assert keys["1000123"] == "salesorder_id"
    assert keys["10001"] == "cuno"
