"""gl_entry.created and payment.captured → GLS840MI batches, one per BNG entry/payment."""

from __future__ import annotations

import pytest

from m3bng.connectors.bng.samples import sample
from m3bng.flows.ledger import UnbalancedEntry, check_balanced
from m3bng.store import documents
from m3bng.store.models import Step
from tests.integration.flows.conftest import Service


def calls(steps: list[Step], operation: str) -> int:
    return sum(1 for s in steps if s.operation == operation)


async def test_gl_entry_becomes_one_updated_batch(service: Service) -> None:
    event = await service.settle(await service.send("gl_entry.created"))
    assert event.status == "done", event.last_error
    batch = (await service.state())["gl_posted"]["GL:GL-2026-0042"]
    assert batch["head"]["INTN"] == "BNG" and batch["head"]["DESC"] == "Marketing accrual November"
    assert [(line["LINE"], line["PARM"]) for line in batch["lines"]] == [
        ("1", "6110;12500.00;0;MKT;20261124;SEK;Campaign"),
        ("2", "2990;0;12500.00;-;20261124;SEK;Accrued expenses"),
    ]
    async with service.sessions() as session:
        assert await documents.get_xref(session, "gl_entry", "GL-2026-0042") == "GL:GL-2026-0042"


async def test_payment_becomes_bank_debit_and_receivables_credit(service: Service) -> None:
    event = await service.settle(await service.send("payment.captured"))
    assert event.status == "done", event.last_error
    batch = (await service.state())["gl_posted"]["PAY:PAY-5501"]
    assert batch["head"]["DESC"] == "Payment PAY-5501 SO-1001"
    assert [line["PARM"] for line in batch["lines"]] == [
        "1930;1116.30;0;-;20261124;SEK;card SO-1001",
        "1510;0;1116.30;-;20261124;SEK;card SO-1001",
    ]
    undated = {**sample("payment.captured"), "PaymentID": "PAY-5502", "CapturedAt": None}
    event = await service.settle(await service.send("payment.captured", undated))
    assert event.status == "done", event.last_error
    day = event.received_at.strftime("%Y%m%d")
    parms = [line["PARM"] for line in (await service.state())["gl_posted"]["PAY:PAY-5502"]["lines"]]
    assert parms[0] == f"1930;1116.30;0;-;{day};SEK;card SO-1001"  # the date keeps its place


async def test_too_long_key_dead_letters_before_sending(service: Service) -> None:
    data = {**sample("payment.captured"), "PaymentID": "PAY-" + "9" * 30}  # KEY1 is 30 characters
    event = await service.settle(await service.send("payment.captured", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "KEY1" in (dead.error or "")
    assert await service.steps(event.id) == []


async def test_duplicate_deliveries_post_one_batch(service: Service) -> None:
    first = await service.settle(await service.send("gl_entry.created", msg_id="msg_gl"))
    again = await service.settle(await service.send("gl_entry.created", msg_id="msg_gl_again"))
    assert first.status == again.status == "done" and again.checkpoint.get("already_in_m3") is True
    assert list((await service.state())["gl_posted"]) == ["GL:GL-2026-0042"]
    assert await service.steps(again.id) == []


async def test_lost_head_answer_continues_with_the_batch(service: Service) -> None:
    await service.sim.faults(
        programs=["GLS840MI/AddBatchHead"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("gl_entry.created"))
    assert event.status == "done", event.last_error
    state = await service.state()
    assert list(state["gl_posted"]) == ["GL:GL-2026-0042"] and not state["gl_batches"]
    assert len(state["gl_posted"]["GL:GL-2026-0042"]["lines"]) == 2
    steps = await service.steps(event.id)
    assert [s.error_class for s in steps if s.operation == "GLS840MI/AddBatchHead"] == [
        "unknown_outcome",
        "duplicate",  # ours: continued
    ]


async def test_lost_line_answer_does_not_double_the_line(service: Service) -> None:
    await service.sim.faults(
        programs=["GLS840MI/AddBatchLine"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("payment.captured"))
    assert event.status == "done", event.last_error
    batch = (await service.state())["gl_posted"]["PAY:PAY-5501"]
    assert [line["LINE"] for line in batch["lines"]] == ["1", "2"]


async def test_transient_error_resumes_from_the_failed_line(service: Service) -> None:
    await service.sim.faults(programs=["GLS840MI/AddBatchLine"], error_rate=1.0, limit=3)
    event = await service.settle(await service.send("gl_entry.created"))
    assert event.status == "done", event.last_error
    steps = await service.steps(event.id)
    assert calls(steps, "GLS840MI/AddBatchHead") == 1
    assert any(s.operation == "GLS840MI/AddBatchLine" and s.status == "failed" for s in steps)


async def test_someone_elses_batch_with_our_key_is_not_taken_for_ours(service: Service) -> None:
    assert (await service.settle(await service.send("gl_entry.created"))).status == "done"
    async with service.sessions.begin() as session:  # m3bng forgets it: the batch is not "ours"
        await documents.put_xref(session, "gl_entry", "other", "GL:GL-2026-0042")
    event = await service.settle(await service.send("gl_entry.created"))
    assert event.status == "dead"
    assert (await service.dead_letter(event.id)).error_class == "duplicate"


def test_unbalanced_lines_are_refused_before_sending() -> None:
    check_balanced([{"Account": "1930", "Debit": "10"}, {"Account": "1510", "Credit": "10.00"}])
    for lines, problem in [
        ([{"Debit": "10"}, {"Credit": "9"}], "must balance"),
        ([{"Debit": "10", "Credit": "10"}, {"Credit": "0"}], "one of Debit or Credit"),
        ([{"Debit": "x"}, {"Credit": "1"}], "not a number"),
        ([{"Debit": "0"}, {"Credit": "0"}], "not be zero"),
    ]:
        with pytest.raises(UnbalancedEntry, match=problem):
            check_balanced(lines)
