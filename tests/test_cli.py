"""The `syncd` command: behaviour, output and exit codes (0 ok, 1 failed, 2 config, 3 unreachable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from factories import write_config
from syncd.cli import main
from syncd.sandbox.memory import _SYSTEMS


@pytest.fixture
def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"crm{tag}", f"shop{tag}"


def _cfg(tmp_path: Path, names: tuple[str, str], **kw) -> Path:  # type: ignore[no-untyped-def]
    crm, shop = names
    return write_config(tmp_path, systems={crm: {"type": "memory"}, shop: {"type": "memory", "seed": 3}}, **kw)


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_help_lists_commands() -> None:
    code, out, _ = _run("--help")
    assert code == 0
    for cmd in ("run", "check", "sync", "backfill", "stats", "conflicts", "quarantine", "replay", "demo", "cml"):
        assert cmd in out


def test_missing_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    code, _, err = _run("-c", str(tmp_path / "nope.toml"), "stats")
    assert code == 2 and "nope.toml" in err and "config file not found" in err


def test_sync_then_stats_and_json(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names)
    code, out, _ = _run("-c", str(cfg), "--json", "sync")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["created"] >= 3 and summary["failed"] == 0
    code, out, _ = _run("-c", str(cfg), "--json", "stats")
    assert code == 0
    stats = json.loads(out)
    assert stats["integrations"][names[1]]["counts"]["created"] == 3
    assert stats["integrations"][names[0]]["counts"]["pushed"] == 3
    crm = _SYSTEMS[names[0]]
    assert sorted(o["email"] for o in crm.objects["person"].values()) == [
        f"seed{i}@{names[1]}.example.ru" for i in range(3)]
    code, out, _ = _run("-c", str(cfg), "stats")
    assert code == 0 and "syncd integrations" in out


def test_sync_unknown_integration_exits_2(tmp_path: Path, names: tuple[str, str]) -> None:
    code, _, err = _run("-c", str(_cfg(tmp_path, names)), "sync", "nosuch")
    assert code == 2 and "no integration named 'nosuch'" in err


def test_check_prints_a_line_per_system(tmp_path: Path, names: tuple[str, str]) -> None:
    code, out, _ = _run("-c", str(_cfg(tmp_path, names)), "check")
    assert code == 0
    assert "✓ database" in out and f"✓ {names[0]}" in out and f"✓ {names[1]}" in out


def test_conflicts_list_and_resolve(tmp_path: Path, names: tuple[str, str]) -> None:
    crm, shop = names
    mapping_conflicts = {"person.comment": {"policy": "review"}}
    cfg = _cfg(tmp_path, names)
    text = (tmp_path / "mappings" / "main.toml").read_text(encoding="utf-8")
    (tmp_path / "mappings" / "main.toml").write_text(
        text + "\n[conflicts.\"person.comment\"]\npolicy = \"review\"\n", encoding="utf-8")
    assert mapping_conflicts
    assert _run("-c", str(cfg), "sync")[0] == 0
    crm_id = next(iter(_SYSTEMS[crm].objects["person"]))
    crm_email = _SYSTEMS[crm].objects["person"][crm_id]["email"]
    shop_id = next(k for k, o in _SYSTEMS[shop].objects["person"].items() if o["email"] == crm_email)
    _SYSTEMS[crm].edit("person", crm_id, comment="из CRM")
    _SYSTEMS[shop].edit("person", shop_id, comment="из магазина")
    assert _run("-c", str(cfg), "sync")[0] == 0
    code, out, _ = _run("-c", str(cfg), "--json", "conflicts")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1 and rows[0]["field"] == "person.comment"
    assert _run("-c", str(cfg), "conflicts", "resolve", "999")[0] == 2        # needs --take or --value
    code, _, err = _run("-c", str(cfg), "conflicts", "resolve", "999", "--take", crm)
    assert code == 1 and "no conflict 999" in err
    code, out, _ = _run("-c", str(cfg), "conflicts", "resolve", str(rows[0]["id"]), "--take", crm)
    assert code == 0 and "resolved" in out
    assert _run("-c", str(cfg), "sync")[0] == 0
    assert _SYSTEMS[shop].objects["person"][shop_id]["comment"] == "из CRM"
    assert json.loads(_run("-c", str(cfg), "--json", "conflicts")[1]) == []


def test_replay_and_quarantine_listing(tmp_path: Path, names: tuple[str, str]) -> None:
    crm, shop = names
    cfg = _cfg(tmp_path, names)
    _SYSTEMS.setdefault(crm, __import__("syncd.sandbox.memory", fromlist=["MemorySystem"]).MemorySystem(
        crm, ("person", "order"))).faults[:] = ["permanent"]
    code, out, _ = _run("-c", str(cfg), "--json", "sync")
    assert code == 1 and json.loads(out.strip().splitlines()[-1])["dead"] == 1
    code, out, _ = _run("-c", str(cfg), "--json", "replay", "--list")
    dead = json.loads(out)
    assert len(dead) == 1 and "injected validation error" in dead[0]["last_error"]
    code, out, _ = _run("-c", str(cfg), "replay")
    assert code == 0 and "1 write(s) back" in out
    assert _run("-c", str(cfg), "sync")[0] == 0
    _SYSTEMS[shop].edit("order", "bad", number="1", status="???", total="1")
    code, out, _ = _run("-c", str(cfg), "--json", "sync")
    assert json.loads(out.strip().splitlines()[-1])["quarantined"] == 1
    rows = json.loads(_run("-c", str(cfg), "--json", "quarantine")[1])
    assert rows[0]["external_id"] == "bad" and "unknown value '???'" in rows[0]["reason"]


def test_secrets_never_reach_output(tmp_path: Path, names: tuple[str, str]) -> None:
    crm, shop = names
    secret, token, dbpass = "Pa55-w0rd-мой", "adm1n-t0ken-xyz", "db-s3cret-99"
    cfg = write_config(tmp_path, systems={crm: {"type": "memory", "password": "${MEM_PASSWORD}"},
                                          shop: {"type": "memory"}},
                       daemon={"admin_token": "${SYNCD_ADMIN_TOKEN}"})
    env = dict(os.environ, MEM_PASSWORD=secret, SYNCD_ADMIN_TOKEN=token, PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--log-format", "json", "sync"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    # an unreachable database whose URL carries a password
    (tmp_path / "bad").mkdir()
    bad = write_config(tmp_path / "bad", systems={crm: {"type": "memory"}, shop: {"type": "memory"}},
                       daemon={"database_url": "postgresql://syncd:${DB_PASS}@127.0.0.1:1/syncd"})
    r2 = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(bad), "--log-format", "json", "check"],
                        capture_output=True, text=True, env=dict(env, DB_PASS=dbpass), timeout=120)
    assert r2.returncode == 3, (r2.returncode, r2.stderr[-1000:])
    for out in (r.stdout + r.stderr, r2.stdout + r2.stderr):
        for s in (secret, token, dbpass):
            assert s not in out


def test_cml_check_prints_documents_and_fails_on_bad_files(tmp_path: Path) -> None:
    from commerceml.factories import order

    from syncd.commerceml import write_orders

    good = tmp_path / "orders.xml"
    write_orders(good, [order("1042"), order("1043")])
    bad = tmp_path / "bad.xml"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])       # truncated upload
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "cml", "check", str(good)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d.get("id") for d in docs if d.get("kind") == "order"] == ["1042", "1043"]
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "cml", "check", str(good), str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "bad.xml" in r.stderr and "line" in r.stderr


def test_rules_explain_and_check(tmp_path: Path, names: tuple[str, str]) -> None:
    crm, shop = names
    cfg = _cfg(tmp_path, names)
    (tmp_path / "mappings" / "rules.toml").write_text(f"""
[rules.defaults.person]
"person.client_type" = "новый"

[[rules.stages]]
name = "vip by comment"
entity = "person"
when = "person.comment == 'VIP'"
set = {{ "person.client_type" = "VIP" }}
field = "person.client_type"
allow_backwards = true
""", encoding="utf-8")
    assert _run("-c", str(cfg), "sync")[0] == 0
    ext = next(iter(_SYSTEMS[shop].objects["person"]))
    code, out, _ = _run("-c", str(cfg), "--json", "rules", "explain", f"{shop}:person:{ext}")
    assert code == 0
    lines = json.loads(out)
    assert any("vip by comment" in line and "does not apply" in line for line in lines), lines
    assert _run("-c", str(cfg), "rules", "explain", "nosuch")[0] == 1
    code, out, _ = _run("-c", str(cfg), "rules", "check")
    assert code == 0 and "✓" in out


def test_one_failing_stream_does_not_stop_the_others(tmp_path: Path, names: tuple[str, str]) -> None:
    """Core issue, defect 10: a stream that fails is counted and named; the others are synced;
    the command exits 1 without a traceback."""
    crm, shop = names
    broken = f"broken{uuid.uuid4().hex[:6]}"
    cfg = write_config(tmp_path, systems={crm: {"type": "memory"}, shop: {"type": "memory", "seed": 3},
                                          broken: {"type": "memory", "read_fault": "bug"}})
    r = CliRunner().invoke(main, ["-c", str(cfg), "--json", "sync"], catch_exceptions=True)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 1
    # no crash: no line of the output is a Python traceback (logs may carry one, escaped, as data)
    assert not any(line.startswith("Traceback") for line in (r.stdout + r.stderr).splitlines())
    assert f"failed: {broken}/person: RuntimeError: injected" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["failed"] >= 1 and summary["created"] >= 3
    assert {f["system"] for f in summary["failures"]} == {broken}
    assert len(_SYSTEMS[crm].objects["person"]) == 3, "the healthy systems were synced all the same"
