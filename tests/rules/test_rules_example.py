"""mappings/rules.toml loads as written, checks clean against a matching portal, and
`explain` describes a record with it."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

from syncd.connector import LiveSchema
from syncd.mapping.load import load_mappings
from syncd.rules import check, explain
from syncd.rules.config import parse_rules

EXAMPLE = Path(__file__).resolve().parents[2] / "mappings" / "rules.toml"
LIVE = {"crm": LiveSchema(
    users={m: {"name": m, "active": True, "present": True} for m in ("1", "2", "3", "4")},
    pipelines={"0": ["NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE"],
               "2": ["C2:NEW", "C2:PREPARATION", "C2:WON", "C2:LOSE"]})}


def test_example_loads_and_checks_clean() -> None:
    ms = load_mappings([EXAMPLE])
    cfg = parse_rules(ms.rules)
    assert [r.name for r in cfg.stages][:2] == ["invoice paid", "shipped"]
    assert len(cfg.assign["order"].chain) == 7
    assert check(ms.rules, LIVE) == []


def test_example_check_finds_a_fired_manager() -> None:
    rules = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["rules"]
    live = {"crm": LiveSchema(users=dict(LIVE["crm"].users, **{"4": {"name": "4", "active": False}}),
                              pipelines=LIVE["crm"].pipelines)}
    errors = check(rules, live)
    assert errors and all("'4' is inactive" in e for e in errors)


def test_example_explain() -> None:
    rules = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["rules"]
    lines = explain(rules, {"type": "order", "id": "e1", "fields": {
        "order.total": Decimal(5000), "order.source": "form:callback", "order.paid_percent": Decimal(100),
        "order.paid": True, "order.title": "Заказ 77"}})
    text = "\n".join(lines)
    assert "assign: big orders: condition false" in text
    assert "assign: vip and forms/#2 random" in text
    assert "stage rule 'invoice paid': set order.stage = 'PREPAYMENT_INVOICE'" in text
    assert "timer 'unpaid 24h'" not in text
