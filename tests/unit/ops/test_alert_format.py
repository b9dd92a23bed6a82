"""The three alert formats: what Slack, Teams and a generic receiver get for firing, a reminder,
and resolved; texts carry ids and counts, never payload content."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from m3bng.ops.alerts import ERROR_CHARS, Notice, error_excerpt, headline, render, resolved_summary

FIRED = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
RESOLVED = datetime(2026, 11, 24, 10, 45, tzinfo=UTC)

DEAD = Notice(
    key="dead_letters:order.created",
    kind="dead_letters",
    state="firing",
    summary="Flow order.created has 3 unresolved dead letters. Latest: event 42, permanent_error "
    "(missing_reference).",
    detail={
        "flow": "order.created",
        "count": 3,
        "latest": {"event_id": 42, "reason": "permanent_error", "error_class": "missing_reference"},
    },
    fired_at=FIRED,
)


def test_slack_message_has_plain_text_and_blocks() -> None:
    body = render(DEAD, "slack")
    assert body["text"] == f"[FIRING] {DEAD.summary}"
    first, fields, context = body["blocks"]
    assert first == {"type": "section", "text": {"type": "mrkdwn", "text": body["text"]}}
    assert {"type": "mrkdwn", "text": "*Count*\n3"} in fields["fields"]
    assert {"type": "mrkdwn", "text": "*Flow*\norder.created"} in fields["fields"]
    assert "dead_letters:order.created" in context["elements"][0]["text"]
    assert "2026-11-24 10:00 UTC" in context["elements"][0]["text"]


def test_slack_escapes_its_control_characters() -> None:
    notice = Notice("backlog:a<b>", "backlog", "firing", "a <b> & c", {"flow": "a<b>"}, FIRED)
    body = render(notice, "slack")
    assert body["blocks"][0]["text"]["text"] == "[FIRING] a &lt;b&gt; &amp; c"
    assert body["text"] == "[FIRING] a <b> & c"  # the fallback text is plain


def test_reminder_and_resolved_headlines() -> None:
    from dataclasses import replace

    assert headline(replace(DEAD, repeat=True)).startswith("[STILL FIRING] Flow order.created has 3")
    resolved = replace(DEAD, state="resolved", resolved_at=RESOLVED, summary=resolved_summary(DEAD))
    assert headline(resolved) == (
        "[RESOLVED] Flow order.created has no unresolved dead letters left (replayed or discarded)."
    )
    assert "resolved 2026-11-24 10:45 UTC" in render(resolved, "slack")["blocks"][-1]["elements"][0]["text"]


def test_teams_message_card() -> None:
    body = render(DEAD, "teams")
    assert body["@type"] == "MessageCard"
    assert body["@context"] == "https://schema.org/extensions"
    assert body["themeColor"] == "C62828"
    assert body["title"] == "m3bng alert firing: dead_letters:order.created"
    assert body["summary"] == f"[FIRING] {DEAD.summary}"
    assert body["text"] == DEAD.summary
    facts = {fact["name"]: fact["value"] for fact in body["sections"][0]["facts"]}
    assert facts["Count"] == "3"
    assert facts["Latest"] == "event_id: 42, reason: permanent_error, error_class: missing_reference"
    resolved = render(
        Notice(DEAD.key, DEAD.kind, "resolved", "cleared", DEAD.detail, FIRED, RESOLVED), "teams"
    )
    assert resolved["themeColor"] == "2E7D32"
    assert resolved["title"] == "m3bng alert resolved: dead_letters:order.created"


def test_teams_workflow_adaptive_card() -> None:
    body = render(DEAD, "teams_workflow")
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    title, facts, footer = card["body"]
    assert title["text"] == f"[FIRING] {DEAD.summary}" and title["color"] == "Attention"
    assert {"title": "Count", "value": "3"} in facts["facts"]
    assert footer["text"].startswith("m3bng alert dead_letters:order.created, firing since")


def test_generic_message() -> None:
    circuit = Notice(
        "circuit:m3",
        "circuit",
        "resolved",
        "Circuit to m3 is closed again: calls go through.",
        {"target": "m3", "state": "open"},
        FIRED,
        RESOLVED,
    )
    assert render(circuit, "generic") == {
        "alert": "circuit:m3",
        "kind": "circuit",
        "state": "resolved",
        "repeat": False,
        "summary": "Circuit to m3 is closed again: calls go through.",
        "detail": {"target": "m3", "state": "open"},
        "fired_at": "2026-11-24T10:00:00+00:00",
        "resolved_at": "2026-11-24T10:45:00+00:00",
    }
    json.dumps(render(DEAD, "generic"))  # JSON-ready as it is


@pytest.mark.parametrize(
    ("kind", "detail", "text"),
    [
        ("circuit", {"target": "bng"}, "Circuit to bng is closed again: calls go through."),
        (
            "backlog",
            {"flow": "order.created", "limit_minutes": 15.0},
            "Backlog in flow order.created is back under 15 min.",
        ),
        (
            "order_sla",
            {"sla_minutes": 30.0},
            "Every order received more than 30 min ago is in M3 (or was closed).",
        ),
    ],
)
def test_resolved_texts(kind: str, detail: dict[str, object], text: str) -> None:
    assert resolved_summary(Notice(f"{kind}:x", kind, "resolved", "", detail, FIRED)) == text


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="slack, teams, teams_workflow, generic"):
        render(DEAD, "email")


def test_the_error_in_an_alert_is_masked_and_short() -> None:
    error = "MI error: e-mail anna.berg@velosport.example\n  is not valid for customer 10001 " + "x" * 500
    excerpt = error_excerpt(error)
    assert excerpt is not None
    assert excerpt.startswith("MI error: e-mail a***@v***.example is not valid for customer 10001 xxx")
    assert len(excerpt) == ERROR_CHARS and excerpt.endswith("...")
    assert error_excerpt(None) is None
