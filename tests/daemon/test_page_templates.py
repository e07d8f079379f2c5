"""The status page's templates: autoescaping everywhere, the redactor on every value, nothing marked
safe by hand (issue 23)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from syncd.daemon import page
from syncd.daemon.i18n import Lang

TEMPLATES = Path(page.__file__).resolve().parent / "templates"


def test_every_template_parses_and_none_marks_text_safe() -> None:
    names = sorted(p.name for p in TEMPLATES.glob("*.html"))
    assert {"doc.html", "status.html", "glance.html", "runs.html", "login.html", "message.html"} <= set(names)
    for name in names:
        page.ENV.get_template(name)                                   # parses
        text = (TEMPLATES / name).read_text(encoding="utf-8")
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|Markup\(", text), name
    assert page.ENV.autoescape is True
    source = Path(page.__file__).read_text(encoding="utf-8")
    assert source.count("Markup(") == 1                              # the page's JSON blob, "</" escaped


def test_values_are_redacted_then_escaped_on_every_page() -> None:
    t = Lang("en")
    secret = "s3cr3t-shop-password"
    redact = lambda s: s.replace(secret, "***")                      # noqa: E731
    nasty = f"<script>alert(1)</script> {secret}"
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    ctx = {"instance": nasty, "uptime": 1.0, "logged_in": True, "admin_enabled": True, "csrf": "c" * 8,
           "notice": nasty, "error": nasty, "path": "/", "now": now,
           "stats": {"generated_at": now.isoformat(), "integrations": {"crm": {
               "last_run": {"stream": "s", "started_at": now.isoformat(), "result": "failed", "error": nasty},
               "outbox": {}, "last_24h": {}, "counts": {}}}, "totals": {}},
           "runs": [{"system": "crm", "stream": "s", "status": "failed", "started_at": now, "error": nasty}],
           "conflicts": [{"id": 1, "entity_id": "e", "field": "person.comment", "policy": "review",
                          "candidates": [{"system": "crm", "value": nasty, "source_time": now}], "created_at": now}],
           "review": [], "quarantine": [{"id": 3, "system": "shop", "kind": "order", "external_id": "o",
                                          "reason": nasty, "raw": nasty, "created_at": now}], "dead": []}
    pages = [page.status_page(t, ctx, redact), page.login_page(t, redact, error=nasty, instance=nasty),
             page.message_page(t, nasty, nasty, redact)]
    for html in pages:
        assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert secret not in html and "***" in html
