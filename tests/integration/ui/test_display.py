"""How the console names API keys, lays out a trace and renders pages with parts
missing (no server needed)."""

from __future__ import annotations

import hashlib

from controlplane.auth.roles import Role
from controlplane.auth.service import Principal
from controlplane.store.models import SpanRow
from controlplane.ui.controllers import template_config
from controlplane.ui.display import Redactor, handles, is_handle, key_handle, short
from controlplane.ui.service import ActionPage, PoliciesPage, Subject
from controlplane.ui.waterfall import layout


def test_a_key_handle_is_a_stable_sha256_prefix() -> None:
    handle = key_handle("key_3")
    assert handle == "key:" + hashlib.sha256(b"key_3").hexdigest()[:12]
    assert is_handle(handle) and not is_handle("key_3")
    assert key_handle("key_3") == handle


def test_the_redactor_replaces_whole_key_ids_in_text_and_json() -> None:
    redact = Redactor(["key_3", None])
    handle = key_handle("key_3")
    assert redact.text("revoked key_3, not key_30.") == f"revoked {handle}, not key_30."
    assert redact.value({"key_3": ["key_3", 1, {"v": "x key_3"}]}) == {
        key_handle("key_3"): [key_handle("key_3"), 1, {"v": f"x {key_handle('key_3')}"}]
    }
    assert handles.lookup(key_handle("key_3")) == "key_3"
    assert Redactor([]).text("key_3") == "key_3"


def test_short_revisions() -> None:
    assert short("0123456789abcdef0123") == "0123456789ab"
    assert short("content-e2869bc4ce907730") == "content-e2869bc4"
    assert short(None) == ""


def span(span_id: str, parent: str | None, start: int, end: int, **attributes: str) -> SpanRow:
    return SpanRow(
        trace_id="t" * 32,
        span_id=span_id,
        parent_id=parent,
        name=attributes.pop("name", span_id),
        kind="internal",
        start_ns=start,
        end_ns=end,
        status="unset",
        status_message=None,
        attributes=attributes,
        service="tollgate",
    )


def test_waterfall_orders_the_tree_and_folds_other_verdicts() -> None:
    spans = [
        span("req", "remote", 0, 100),
        span("in2", "req", 5, 60, **{"tollgate.verdict_id": "v2"}),
        span("ev2", "in2", 40, 50, **{"tollgate.verdict_id": "v2"}),
        span("in1", "req", 2, 60, **{"tollgate.verdict_id": "v1", "note": "key_3"}),
        span("ev1", "in1", 30, 40, **{"tollgate.verdict_id": "v1"}),
        span("rec", "req", 60, 100),
    ]
    folded = layout("t" * 32, spans, Redactor(["key_3"]), verdict_id="v1")
    assert [(b.span_id, b.depth) for b in folded.bars] == [
        ("req", 0),
        ("in1", 1),
        ("ev1", 2),
        ("rec", 1),
    ]
    assert folded.hidden == 2
    req, in1, ev1, rec = folded.bars
    assert (req.left, req.width) == (0.0, 100.0)
    assert (ev1.left, ev1.width) == (30.0, 10.0)
    assert rec.left == 60.0 and in1.mine and not rec.mine
    assert ("note", key_handle("key_3")) in in1.attributes
    everything = layout("t" * 32, spans, Redactor(), verdict_id="v1", show_all=True)
    assert len(everything.bars) == 6 and everything.hidden == 0
    assert layout("t" * 32, [], Redactor()).bars == []


def test_key_ids_named_in_connector_errors_become_handles() -> None:
    error = "revoke_key api_key:key_9: refused by the gateway; block ip:192.0.2.1: down"
    shown = Redactor().text(error)
    assert "key_9" not in shown
    assert f"api_key:{key_handle('key_9')}: refused" in shown and "ip:192.0.2.1" in shown
    assert Redactor().text(shown) == shown, "a handle is not hashed again"


def test_pages_render_when_parts_of_the_story_are_missing() -> None:
    """An action whose verdict, decision, explanation or spans are gone still renders."""
    engine = template_config().instance
    assert engine is not None
    common = {
        "principal": Principal("tok_1", "ana", Role.AUDITOR),
        "path": "/console",
        "csrf": "token-of-the-sign-out-form",
    }
    action = {
        "id": "act_1",
        "type": "block",
        "target": Subject("ip", "192.0.2.1", "/console/subject?kind=ip&value=192.0.2.1"),
        "state": "pending",
        "shadow": True,
        "rule": "intel.known_range",
        "reason": "shared range",
        "provider": "lab-z",
        "created": "",
        "expires": "never",
        "revision": "r",
        "params": {},
        "trace_id": "ab" * 16,
        "updated": "",
    }
    missing = "revision r was never recorded"
    page = ActionPage(action, None, None, None, missing, [], [], None, False)
    html = engine.get_template("action.html").render(page=page, **common)
    assert "could not be re-run" in html and "No spans stored" in html
    assert "No connector serves provider lab-z" in html and "none" in html
    empty = PoliciesPage(active=None, revisions=[], activations=[])
    html = engine.get_template("policies.html").render(page=empty, **common)
    assert "No revision recorded yet" in html
    html = engine.get_template("connectors.html").render(connectors=[], **common)
    assert "No connector is configured" in html
    html = engine.get_template("audit.html").render(report={"error": "bad key"}, **common)
    assert "bad key" in html
