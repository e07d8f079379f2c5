"""The `syncd` command: behaviour, output and exit codes (0 ok, 1 failed, 2 config, 3 unreachable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any
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
    code, out, _ = _run("-c", str(cfg), "--json", "sync", "--create")
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
    code, _, err = _run("-c", str(_cfg(tmp_path, names)), "sync", "--create", "nosuch")
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
    assert _run("-c", str(cfg), "sync", "--create")[0] == 0
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
    code, out, _ = _run("-c", str(cfg), "--json", "sync", "--create")
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
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--log-format", "json", "sync", "--create"],
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
    (tmp_path / "mappings" / "rules.toml").write_text("""
[rules.defaults.person]
"person.client_type" = "новый"

[[rules.stages]]
name = "vip by comment"
entity = "person"
when = "person.comment == 'VIP'"
set = { "person.client_type" = "VIP" }
field = "person.client_type"
allow_backwards = true
""", encoding="utf-8")
    assert _run("-c", str(cfg), "sync", "--create")[0] == 0
    ext = next(iter(_SYSTEMS[shop].objects["person"]))
    code, out, _ = _run("-c", str(cfg), "--json", "rules", "explain", f"{shop}:person:{ext}")
    assert code == 0
    lines = json.loads(out)
    assert any("vip by comment" in line and "does not apply" in line for line in lines), lines
    assert _run("-c", str(cfg), "rules", "explain", "nosuch")[0] == 1
    code, out, _ = _run("-c", str(cfg), "rules", "check")
    assert code == 0 and "✓" in out


# ---- exit codes ----------------------------------------------------------------------------------

def test_every_command_has_a_one_line_description_and_takes_json_after_it() -> None:
    import click

    def walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
        out = [(path, cmd)]
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                out += walk(sub, path + [name])
        return out

    for path, cmd in walk(main, []):
        short = cmd.get_short_help_str(limit=64)
        assert short and not short.endswith("..."), (path, short)
        assert any("--json" in p.opts for p in cmd.params if isinstance(p, click.Option)), path


def test_json_after_the_subcommand(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names)
    assert _run("-c", str(cfg), "sync", "--create")[0] == 0
    code, out, _ = _run("-c", str(cfg), "stats", "--json")
    assert code == 0 and json.loads(out)["integrations"][names[1]]["counts"]["created"] == 3
    code, out, _ = _run("-c", str(cfg), "replay", "--list", "--json")
    assert code == 0 and json.loads(out) == []


def test_exit_0_check_passes_and_1_check_fails(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names)
    assert _run("-c", str(cfg), "check")[0] == 0
    bad = _cfg(tmp_path, names, jobs=[{"system": names[0], "stream": "persons", "every": "30s"}])
    code, out, _ = _run("-c", str(bad), "check")
    assert code == 1 and "✗ jobs" in out


def test_exit_2_usage_and_config_errors(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names)
    assert _run("-c", str(cfg), "sync", "--no-such-option")[0] == 2
    assert _run("-c", str(cfg), "conflicts", "resolve", "1")[0] == 2
    (tmp_path / "broken.toml").write_text("[daemon\n", encoding="utf-8")
    code, _, err = _run("-c", str(tmp_path / "broken.toml"), "stats")
    assert code == 2 and "broken.toml" in err and "invalid TOML" in err


def test_exit_3_missing_sqlite_file_is_not_created(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/typo.db"})
    for cmd in (["stats"], ["sync"], ["conflicts"], ["quarantine"], ["review"], ["replay", "--list"], ["purge"]):
        code, out, err = _run("-c", str(cfg), *cmd)
        assert code == 3, (cmd, out, err)
        assert err.count("\n") == 1 and "typo.db does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "typo.db").exists()
    # --create (and `syncd run`) may create it
    code, out, _ = _run("-c", str(cfg), "--json", "sync", "--create")
    assert code == 0 and (tmp_path / "typo.db").exists()
    assert _run("-c", str(cfg), "stats")[0] == 0


def test_exit_3_unusable_database_path_is_one_line(tmp_path: Path, names: tuple[str, str]) -> None:
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "junk.db").write_text("not a database, just text " * 100, encoding="utf-8")
    cases = {f"sqlite:///{tmp_path}/a-file/sub/syncd.db": "a-file",         # a file where a folder must be
             f"sqlite:///{tmp_path}/dir.db": "is not a file",
             f"sqlite:///{tmp_path}/junk.db": "file is not a database"}
    for url, why in cases.items():
        (tmp_path / "c").mkdir(exist_ok=True)
        cfg = write_config(tmp_path / "c", systems={names[0]: {"type": "memory"}, names[1]: {"type": "memory"}},
                           daemon={"database_url": url})
        for cmd in (["stats"], ["sync", "--create"]):
            r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), *cmd], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 3, (url, cmd, r.stderr[-2000:])
            assert why in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
                r.stderr


# ---- check faults ---------------------------------------------------------------------------------

def _check(cfg: Path) -> tuple[int, list[dict[str, object]], str]:
    code, out, err = _run("-c", str(cfg), "--json", "check")
    return code, (json.loads(out) if out.strip() else []), err


def _failed(findings: list[dict[str, object]]) -> list[str]:
    return [str(f["detail"]) for f in findings if not f["ok"]]


def test_check_unknown_stream_in_jobs_names_file_and_key(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names, jobs=[{"system": names[1], "stream": "person", "every": "1m"},
                                      {"system": names[1], "stream": "orderz", "every": "1m"}])
    code, findings, _ = _check(cfg)
    assert code == 1
    assert _failed(findings) == [f"{cfg}: jobs[1].stream: system '{names[1]}' has no stream 'orderz' "
                                 f"(streams: person, order)"]


def test_check_map_for_a_kind_the_connector_lacks(tmp_path: Path, names: tuple[str, str]) -> None:
    crm, shop = names
    cfg = _cfg(tmp_path, names)
    (tmp_path / "mappings" / "extra.toml").write_text(f'''
[[maps]]
system = "{crm}"
kind = "deal"
entity = "order"
[maps.fields]
"order.number" = "number"

[[maps]]
system = "{shop}"
kind = "lead"
entity = "lead"
direction = "pull"
[maps.fields]
"lead.title" = "title"
''', encoding="utf-8")
    code, findings, _ = _check(cfg)
    failed = _failed(findings)
    extra = str(tmp_path / "mappings" / "extra.toml")
    assert code == 1 and len(failed) == 2
    assert failed[0].startswith(f"{extra}: maps[0]({crm}.deal).kind: memory system '{crm}' cannot write 'deal'")
    assert failed[1].startswith(f"{extra}: maps[1]({shop}.lead).kind: memory system '{shop}' reads no 'lead'")


def test_check_map_for_a_system_not_configured(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names)
    (tmp_path / "mappings" / "typo.toml").write_text('''
[[maps]]
system = "crn"
kind = "person"
entity = "person"
[maps.fields]
"person.name" = "name"
''', encoding="utf-8")
    code, findings, _ = _check(cfg)
    failed = _failed(findings)
    assert code == 1 and len(failed) == 1
    assert failed[0].startswith(f"{tmp_path / 'mappings' / 'typo.toml'}: maps[4](crn.person).system: "
                                f"no system named 'crn'")


@pytest.mark.parametrize("content,why", [("", "the mapping file is empty"),
                                         ("# only a comment\n", "the mapping file is empty"),
                                         (b"\xff\xfe[[maps]]", "not UTF-8 text")])
def test_check_empty_or_undecodable_mapping_file(tmp_path: Path, names: tuple[str, str], content: object,
                                                 why: str) -> None:
    cfg = _cfg(tmp_path, names)
    f = tmp_path / "mappings" / "zz.toml"
    f.write_bytes(content) if isinstance(content, bytes) else f.write_text(str(content), encoding="utf-8")
    code, _, err = _check(cfg)
    assert code == 2 and f"{f}: {why}" in err


def test_check_unreadable_mapping_file(tmp_path: Path, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    cfg = _cfg(tmp_path, names)
    real = Path.read_text

    def read_text(self: Path, *a: object, **kw: object) -> str:
        if self.name == "main.toml":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    code, _, err = _check(cfg)
    assert code == 2 and f"{tmp_path / 'mappings' / 'main.toml'}: cannot read: Permission denied" in err


def test_check_glob_matching_nothing(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names, daemon={"mappings": ["mapings/*.toml"]})
    code, _, err = _check(cfg)
    assert code == 2 and "mapings/*.toml: no mapping file matches" in err


def test_check_live_crm_fields_stages_and_managers(tmp_path: Path, names: tuple[str, str]) -> None:
    """Against a Bitrix24 portal: a user field, a stage and a manager it does not have."""
    from syncd.sandbox import bitrix24

    portal = bitrix24.start(rate_limit=False, seed=True)
    try:
        webhook = str(portal.extra["webhook_url"])
        shop = names[1]
        cfg = write_config(tmp_path, systems={"crm": {"type": "bitrix24", "webhook_url": webhook},
                                              shop: {"type": "memory"}},
                           mapping={"maps": [{"system": shop, "kind": "order", "entity": "order",
                                              "fields": {"order.number": "number"}}]})
        (tmp_path / "mappings" / "crm.toml").write_text('''
[[maps]]
system = "crm"
kind = "deal"
entity = "order"
[maps.fields]
"order.number" = "UF_CRM_NO_SUCH_FIELD"
"order.stage" = { field = "STAGE_ID", values = "deal_stage" }

[values.deal_stage]
new = "NEW"
shipped = "NO_SUCH_STAGE"

[rules.assign.order]
system = "crm"
chain = [{ name = "ghost", manager = "999" }]

[rules.defaults.order]
"order.pipeline" = "0"
"order.stage" = "NEWW"
''', encoding="utf-8")
        code, findings, _ = _check(cfg)
    finally:
        portal.stop()
    crm_file = str(tmp_path / "mappings" / "crm.toml")
    failed = _failed(findings)
    assert code == 1
    assert (f"{crm_file}: maps[0](crm.deal).fields.order.number: field 'UF_CRM_NO_SUCH_FIELD' does not exist "
            f"in crm deal") in failed
    assert any(f.startswith(f"{crm_file}: values.deal_stage.shipped: crm has no STAGE_ID 'NO_SUCH_STAGE'")
               for f in failed), failed
    assert any(f.startswith(f"{crm_file}: rules.assign.order.chain[0] (ghost)") and "999" in f for f in failed), failed
    # a default stage the pipeline does not have, with the list of what it has — in the rules' own
    # (canonical) values: this mapping translates STAGE_ID through `deal_stage`, where only "new" exists
    assert any(f.startswith(f"{crm_file}: rules.defaults.order.\"order.stage\": crm has no stage 'NEWW' of "
                            "pipeline '0' (has: new)") for f in failed), failed
    # and neither map may create: the orders and deals of this config can never flow (issue 22 #1)
    flows = [str(f["detail"]) for f in findings if f["name"] == "flows" and not f["ok"]]
    assert len(flows) == 2 and any(f.startswith(f"{shop} orders cannot become crm deals: ") for f in flows), flows
    assert len(failed) == 4 + len(flows)


def test_check_reports_a_database_not_created_yet(tmp_path: Path, names: tuple[str, str]) -> None:
    (tmp_path / "new").mkdir()
    cfg = _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/new/syncd.db",
                                        "state_dir": str(tmp_path / "state")})
    code, findings, _ = _check(cfg)
    db = [f for f in findings if f["name"] == "database"]
    assert code == 0 and len(db) == 1 and "does not exist yet" in str(db[0]["detail"])
    assert list((tmp_path / "new").iterdir()) == []          # check creates nothing
    # a folder that does not exist is a typo far more often than a wish: ✗ naming the folder
    cfg = _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/nwe/syncd.db",
                                        "state_dir": str(tmp_path / "state")})
    code, findings, _ = _check(cfg)
    db = [f for f in findings if f["name"] == "database"]
    assert code == 1 and f"the folder {tmp_path}/nwe does not exist" in str(db[0]["detail"]), db
    assert not (tmp_path / "nwe").exists()
    (tmp_path / "ro").write_text("", encoding="utf-8")
    cfg = _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/ro/x/syncd.db"})
    code, findings, _ = _check(cfg)
    db = [f for f in findings if f["name"] == "database"]
    assert code == 1 and "cannot be created" in str(db[0]["detail"])


# ---- init, purge, replay ---------------------------------------------------------------------------

def test_init_writes_config_mappings_env_and_unit(tmp_path: Path) -> None:
    import grp
    import tomllib

    group = grp.getgrgid(os.getgid()).gr_name
    code, out, err = _run("init", str(tmp_path / "etc"), "--systems", "shop,onec", "--group", group,
                          "--state-dir", str(tmp_path / "state"))
    assert code == 0, err
    etc = tmp_path / "etc"
    cfg = tomllib.loads((etc / "config.toml").read_text(encoding="utf-8"))
    assert sorted(cfg["systems"]) == ["onec", "shop"] and [j["system"] for j in cfg["jobs"]] == ["shop"]
    assert cfg["daemon"]["mappings"] == ["mappings/sync.toml", "mappings/shop.toml", "mappings/onec.toml"]
    assert cfg["daemon"]["database_url"] == f"sqlite:///${{STATE_DIRECTORY:-{tmp_path}/state}}/syncd.db"
    assert sorted(p.name for p in (etc / "mappings").iterdir()) == ["onec.toml", "shop.toml", "sync.toml"]
    assert (etc.stat().st_mode & 0o777, (etc / "config.toml").stat().st_mode & 0o777) == (0o750, 0o640)
    env = (etc / "env").read_text(encoding="utf-8")
    assert (etc / "env").stat().st_mode & 0o777 == 0o600
    assert "# SHOP_PASSWORD=" in env and "# ONEC_PASSWORD=" in env and "B24_" not in env
    token = next(line for line in env.splitlines() if line.startswith("SYNCD_ADMIN_TOKEN="))
    assert len(token) > 40
    unit = (etc / "syncd.service").read_text(encoding="utf-8")
    assert f"--config {etc}/config.toml" in unit and f"EnvironmentFile=-{etc}/env" in unit
    assert f"SupplementaryGroups={group}" in unit
    # the config loads once the secrets are given; the state dir comes from systemd when it sets it
    from syncd.config import load_settings

    s = load_settings(etc / "config.toml", env={"SHOP_PASSWORD": "x", "ONEC_PASSWORD": "y",
                                                "SYNCD_ADMIN_TOKEN": "t", "STATE_DIRECTORY": "/var/lib/syncd"})
    assert s.daemon.database_url == "sqlite:////var/lib/syncd/syncd.db"
    assert "/var/lib/syncd" not in s.secrets
    # a second init refuses to overwrite, --force overwrites all but the secrets
    (etc / "env").write_text("SHOP_PASSWORD=mine\n", encoding="utf-8")
    code, _, err = _run("init", str(etc), "--systems", "shop")
    assert code == 2 and "exists" in err
    code, out, _ = _run("init", str(etc), "--systems", "shop", "--force")
    assert code == 0 and "kept" in out and (etc / "env").read_text(encoding="utf-8") == "SHOP_PASSWORD=mine\n"
    code, _, err = _run("init", str(tmp_path / "x"), "--systems", "shop,pipedrive")
    assert code == 2 and "pipedrive" in err
    code, _, err = _run("init", str(tmp_path / "x"), "--systems", "shop,bitrix24,amocrm")
    assert code == 2 and "one CRM per configuration" in err


@pytest.mark.parametrize("crm,mapping,secret", [("amocrm", "amocrm.toml", "AMO_TOKEN"),
                                                ("retailcrm", "retailcrm.toml", "RETAILCRM_API_KEY")])
def test_init_for_amocrm_and_retailcrm_writes_their_block_mapping_and_rules(tmp_path: Path, crm: str, mapping: str,
                                                                           secret: str) -> None:
    import tomllib

    etc = tmp_path / "etc"
    code, _, err = _run("init", str(etc), "--systems", f"shop,{crm}", "--state-dir", str(tmp_path / "state"))
    assert code == 0, err
    cfg = tomllib.loads((etc / "config.toml").read_text(encoding="utf-8"))
    assert sorted(cfg["systems"]) == ["crm", "shop"] and cfg["systems"]["crm"]["type"] == crm
    assert {j["system"] for j in cfg["jobs"]} == {"shop", "crm"}
    assert cfg["daemon"]["mappings"] == ["mappings/sync.toml", "mappings/shop.toml", f"mappings/{mapping}",
                                         "mappings/rules.toml"]
    assert f"# {secret}=" in (etc / "env").read_text(encoding="utf-8")
    # the CRM has no notices: the new-deal notice is commented out, a timer's notice is a task
    rules = tomllib.loads((etc / "mappings" / "rules.toml").read_text(encoding="utf-8"))["rules"]
    assert "notify" not in rules["defaults"]["order"]
    assert all("notify" not in t and "task" in t for t in rules["timers"])
    # every connector key the block sets is one the connector knows
    from syncd.config import load_settings

    env = {"SHOP_PASSWORD": "x", "SYNCD_ADMIN_TOKEN": "t", secret: "k", "STATE_DIRECTORY": str(tmp_path / "s")}
    s = load_settings(etc / "config.toml", env=env)
    assert s.systems["crm"].type == crm


def test_purge_command(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names)
    assert _run("-c", str(cfg), "sync", "--create")[0] == 0
    time.sleep(0.2)                      # everything just written is older than 0.0864 s
    code, out, _ = _run("-c", str(cfg), "--json", "purge", "--days", "0.000001")
    data = json.loads(out)
    assert code == 0 and data["outbox"] == 3 and data["changelog"] >= 6 and data["database"]["size_bytes"] > 0
    code, out, _ = _run("-c", str(cfg), "purge")
    assert code == 0 and "purged 0 done write(s)" in out


def test_replay_pushes_and_exits_1_when_still_dead(tmp_path: Path, names: tuple[str, str]) -> None:
    crm, _shop = names
    cfg = _cfg(tmp_path, names, daemon={})
    from syncd.sandbox.memory import MemorySystem

    _SYSTEMS.setdefault(crm, MemorySystem(crm, ("person", "order"))).faults[:] = ["permanent"]
    assert _run("-c", str(cfg), "sync", "--create")[0] == 1
    _SYSTEMS[crm].faults[:] = ["permanent"]                # fails again on replay
    code, out, _ = _run("-c", str(cfg), "--json", "replay")
    data = json.loads(out)
    assert code == 1 and data["replayed"] == 1 and data["dead"] == 1
    code, out, _ = _run("-c", str(cfg), "--json", "replay", "--no-push")
    assert code == 0 and json.loads(out) == {"replayed": 1}
    code, out, _ = _run("-c", str(cfg), "--json", "replay")
    assert code == 0 and json.loads(out)["replayed"] == 0
    assert _run("-c", str(cfg), "sync")[0] == 0
    assert json.loads(_run("-c", str(cfg), "--json", "stats")[1])["totals"]["outbox_dead"] == 0


def test_a_crashing_stream_is_one_line_and_exit_1_the_others_run(tmp_path: Path, names: tuple[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.sandbox.memory import MemoryConnector

    crm, shop = names
    real = MemoryConnector.read

    def read(self, stream, cursor, *, since=None):  # type: ignore[no-untyped-def]
        if self.name == shop and stream == "order":
            raise RuntimeError("the peer sent nonsense")
        return real(self, stream, cursor, since=since)

    monkeypatch.setattr(MemoryConnector, "read", read)
    code, out, err = _run("-c", str(_cfg(tmp_path, names)), "--json", "sync", "--create")
    assert code == 1 and json.loads(out)["failed"] == 1 and json.loads(out)["created"] >= 3
    # the run's log lines (pull_crashed) come first, then one plain line for the person at the terminal
    assert f"\nfailed: {shop}/order: RuntimeError: the peer sent nonsense\n" in "\n" + err


def test_run_with_an_unknown_stream_exits_2_naming_file_and_key(tmp_path: Path, names: tuple[str, str]) -> None:
    cfg = _cfg(tmp_path, names, jobs=[{"system": names[0], "stream": "person", "every": "1m"},
                                      {"system": names[0], "stream": "deals", "every": "1m"}])
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--log-format", "json", "run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"config error: {cfg}: jobs[1].stream: system '{names[0]}' has no stream 'deals'" in r.stderr


def test_an_unusable_connector_path_is_a_config_error_not_the_database(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where 1C's spool folder goes", encoding="utf-8")
    cfg = write_config(tmp_path, systems={"onec": {"type": "onec", "login": "onec", "password": "p",
                                                   "spool_dir": str(tmp_path / "spool" / "onec")},
                                          "other": {"type": "memory"}},
                       mapping={"maps": [{"system": "other", "kind": "person", "entity": "person",
                                          "fields": {"person.name": "name"}}]})
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "sync", "--create"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(f"config error: {tmp_path / 'spool' / 'onec'}") and "Traceback" not in r.stderr


def test_one_failing_stream_does_not_stop_the_others(tmp_path: Path, names: tuple[str, str]) -> None:
    """Core issue, defect 10: a stream that fails is counted and named; the others are synced;
    the command exits 1 without a traceback."""
    crm, shop = names
    broken = f"broken{uuid.uuid4().hex[:6]}"
    cfg = write_config(tmp_path, systems={crm: {"type": "memory"}, shop: {"type": "memory", "seed": 3},
                                          broken: {"type": "memory", "read_fault": "bug"}})
    r = CliRunner().invoke(main, ["-c", str(cfg), "--json", "sync", "--create"], catch_exceptions=True)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 1
    # no crash: no line of the output is a Python traceback (logs may carry one, escaped, as data)
    assert not any(line.startswith("Traceback") for line in (r.stdout + r.stderr).splitlines())
    assert f"failed: {broken}/person: RuntimeError: injected" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["failed"] >= 1 and summary["created"] >= 3
    assert {f["system"] for f in summary["failures"]} == {broken}
    assert len(_SYSTEMS[crm].objects["person"]) == 3, "the healthy systems were synced all the same"


def test_sync_dry_run_reports_and_changes_nothing(tmp_path: Path, names: tuple[str, str]) -> None:
    """Issue 12 item 3: what would be bound, created and updated — and nothing happens."""
    crm, shop = names
    cfg = _cfg(tmp_path, names)
    code, out, _ = _run("-c", str(cfg), "--json", "sync", "--dry-run", "--create")
    assert code == 0, out
    report = json.loads(out)
    assert report["read"][shop]["created"] == 3
    assert report["writes"][crm]["create"] == 3
    assert {s["kind"] for s in report["writes"][crm]["samples"]} == {"person"}
    assert _SYSTEMS[crm].objects["person"] == {}, "a dry run wrote to the CRM"
    # nothing was kept: the real pass does it all
    code, out, _ = _run("-c", str(cfg), "--json", "sync")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["pushed"] == 3
    assert len(_SYSTEMS[crm].objects["person"]) == 3
    # a second dry run: everything is bound now, nothing to write
    code, out, _ = _run("-c", str(cfg), "--json", "sync", "--dry-run")
    report = json.loads(out)
    assert report["writes"].get(crm, {"create": 0})["create"] == 0


def test_version_and_verbose_versions_in_either_order() -> None:
    import sqlalchemy
    from lxml import etree

    code, out, _ = _run("--version")
    assert code == 0 and out.startswith("syncd, version ")
    libxml2 = ".".join(map(str, etree.LIBXML_VERSION))
    for args in (("--version", "--verbose"), ("--verbose", "--version")):
        code, out, _ = _run(*args)
        got = dict(line.split(" ", 1) for line in out.splitlines())
        assert code == 0 and got["libxml2"] == libxml2
        assert got["lxml"] == ".".join(map(str, etree.LXML_VERSION[:3]))
        assert got["sqlalchemy"] == sqlalchemy.__version__ and "psycopg" in got and "sqlite" in got


def test_check_prints_the_versions_a_support_request_needs(tmp_path: Path, names: tuple[str, str]) -> None:
    import sqlite3

    import sqlalchemy
    from lxml import etree

    code, out, _ = _run("-c", str(_cfg(tmp_path, names)), "check")
    first = out.splitlines()[0]
    assert first.startswith("✓ versions: syncd ")
    assert f"lxml {'.'.join(map(str, etree.LXML_VERSION[:3]))}" in first
    assert f"libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}" in first
    assert f"sqlalchemy {sqlalchemy.__version__}" in first and f"sqlite {sqlite3.sqlite_version}" in first
    assert "psycopg" not in first          # only the driver of the configured database


def test_a_database_url_typo_never_starts_on_an_empty_database(tmp_path: Path, names: tuple[str, str]) -> None:
    """The first start creates the database and records it in state_dir; afterwards a database_url
    that names a missing file (a typo, a lost file) is refused by run/sync --create and by check,
    naming the file, the recorded one and the config."""
    state = tmp_path / "state"
    cfg = _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/syncd.db", "state_dir": str(state)})
    code, out, err = _run("-c", str(cfg), "sync", "--create")
    assert code == 0, err
    assert (tmp_path / "syncd.db").exists() and (state / "database").exists()
    typo = _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/sycnd.db", "state_dir": str(state)})
    assert typo == cfg                                   # the same config file, edited
    code, out, err = _run("-c", str(cfg), "sync", "--create")
    assert code == 3 and not (tmp_path / "sycnd.db").exists(), (code, err)
    assert f"{tmp_path}/sycnd.db does not exist" in err and f"{tmp_path}/syncd.db" in err and str(cfg) in err, err
    code, findings, _ = _check(cfg)
    (db,) = [f for f in findings if f["name"] == "database"]
    assert code == 1 and not db["ok"] and f"{tmp_path}/syncd.db" in str(db["detail"]), db
    # the file itself lost: refused too, saying how to start again on purpose
    _cfg(tmp_path, names, daemon={"database_url": f"sqlite:///{tmp_path}/syncd.db", "state_dir": str(state)})
    (tmp_path / "syncd.db").unlink()
    code, out, err = _run("-c", str(cfg), "sync", "--create")
    assert code == 3 and "restore it, or remove its line" in err, err
    (state / "database").unlink()                        # the operator starts again on purpose
    code, out, err = _run("-c", str(cfg), "sync", "--create")
    assert code == 0 and (tmp_path / "syncd.db").exists(), err


def test_a_config_that_cannot_be_read_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """Not UTF-8, a directory: one `config error:` line naming the file and why, exit 2, no traceback."""
    bad = tmp_path / "cp1251.toml"
    bad.write_bytes("[daemon]\n# комментарий\n".encode("cp1251"))
    folder = tmp_path / "config.toml"
    folder.mkdir()
    for path, why in ((bad, "not UTF-8 text"), (folder, "is a directory, not a config file")):
        code, out, err = _run("-c", str(path), "check")
        assert code == 2 and err.strip() == f"config error: {path}: {why}" + err.strip().split(why, 1)[1], err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_check_follows_the_flows_of_the_examples_with_create_removed(tmp_path: Path) -> None:
    """Issue 22 #1: a mapping set without `create = true` (upgraded from an earlier version) made
    nothing anywhere, and check passed. The examples as they ship pass the flows check; with every
    `create` removed each flow that can no longer happen is a ✗ naming the file, the map and the fix."""
    from syncd.sandbox import bitrix24, shop

    repo = Path(__file__).resolve().parents[1]
    portal, site = bitrix24.start(rate_limit=False, seed=True), shop.start(seed=0)
    try:
        _flows_of_examples(tmp_path, repo, portal, site)
    finally:
        portal.stop()
        site.stop()


def _flows_of_examples(tmp_path: Path, repo: Path, portal: Any, site: Any) -> None:
    import re
    import shutil

    for variant in ("as shipped", "create removed"):
        d = tmp_path / variant.replace(" ", "-")
        shutil.copytree(repo / "mappings", d / "mappings")
        if variant == "create removed":
            for f in (d / "mappings").glob("*.toml"):
                f.write_text(re.sub(r"(?m)^create = true.*$", "", f.read_text(encoding="utf-8")), encoding="utf-8")
        files = ", ".join(f'"{d}/mappings/{n}"' for n in ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml"))
        (d / "config.toml").write_text(f"""[daemon]
database_url = "sqlite:///{d}/syncd.db"
state_dir = "{d}/state"
mappings = [{files}]
[systems.shop]
type = "shop"
url = "{site.extra['exchange_url']}"
login = "{site.extra['login']}"
password = "{site.extra['password']}"
[systems.crm]
type = "bitrix24"
webhook_url = "{portal.extra['webhook_url']}"
""", encoding="utf-8")
        code, findings, _ = _check(d / "config.toml")
        flows = [str(f["detail"]) for f in findings if f["name"] == "flows"]
        if variant == "as shipped":
            assert flows == [], flows
            continue
        bx = f"{d}/mappings/bitrix24.toml"
        assert code == 1
        assert f"shop orders cannot become crm deals: {bx} [[maps]] system = 'crm' kind = 'deal' has no " \
               "`create = true` (add it where new records should be made)" in flows, flows
        assert any(f.startswith("shop users cannot become crm contacts: ") for f in flows), flows
        assert any("rules.defaults.order.notify makes a notice that no map takes in 'crm'" in f for f in flows), flows


@pytest.mark.parametrize("crm", ["amocrm", "retailcrm"])
def test_check_validates_an_amocrm_or_retailcrm_account_by_name(tmp_path: Path, crm: str) -> None:
    """`syncd init --systems shop,<crm>`, the account's address and secret filled in, then `syncd check`
    against the CRM's sandbox set up for the shop: the shipped mapping passes; a stage the account
    does not have, a field it lacks and the example's managers are named."""
    import re

    if crm == "amocrm":
        from syncd.sandbox import amocrm as sandbox
        from syncd.sandbox.amocrm.demo import seed_shop
        url_key, secret_env, stage_map, bad_stage, field = "base_url", "AMO_TOKEN", "amo_stages", "Оплачен", "SHOP_ORDER"
    else:
        from syncd.sandbox import retailcrm as sandbox
        from syncd.sandbox.retailcrm.demo import seed_shop
        url_key, secret_env, stage_map, bad_stage, field = "url", "RETAILCRM_API_KEY", "retail_stages", "prepayed", \
            "customerComment"
    h = sandbox.start(rate_limit=False)
    try:
        ids = seed_shop(h.extra["state"])
        etc = tmp_path / "etc"
        assert _run("init", str(etc), "--systems", f"shop,{crm}", "--state-dir", str(tmp_path / "s"))[0] == 0
        cfg = etc / "config.toml"
        text = re.sub(rf'(?m)^{url_key} = ".*?"', f'{url_key} = "{h.url}"', cfg.read_text(encoding="utf-8"))
        # the shop is not this test's: it is left out
        text = re.sub(r"(?ms)^\[systems\.shop\].*?(?=^\[)", "", text)
        text = re.sub(r'(?ms)^\[\[jobs\]\]\nsystem = "shop".*?(?=^\[)', "", text)
        cfg.write_text(text, encoding="utf-8")
        secret = h.extra["long_lived_token"] if crm == "amocrm" else h.extra["api_key"]
        env = etc / "env"
        env.write_text(f"{secret_env}={secret}\nSYNCD_ADMIN_TOKEN={'t' * 32}\n", encoding="utf-8")
        (etc / "mappings" / "shop.toml").write_text("", encoding="utf-8")
        cfg.write_text(cfg.read_text(encoding="utf-8").replace('"mappings/shop.toml", ', ""), encoding="utf-8")
        code, findings, err = _run_check(cfg, env)
        failed = _failed(findings)
        # the shipped mapping matches the account; only the example's managers are not this account's
        assert [f for f in failed if "rules" not in f] == [], failed
        assert all("manager" in f and "unknown" in f for f in failed), failed
        # (RetailCRM's sandbox numbers its managers 2, 3, 4 like the example; amoCRM's are its own)
        assert bool(failed) == (ids["managers"] != {"2": 2, "3": 3, "4": 4}), failed
        # the account's own managers by id: nothing left
        rules = etc / "mappings" / "rules.toml"
        from syncd.demo_crm import with_managers

        rules.write_text(with_managers(rules.read_text(encoding="utf-8"), {k: str(v) for k, v in ids["managers"].items()}),
                         encoding="utf-8")
        code, findings, err = _run_check(cfg, env)
        assert code == 0 and _failed(findings) == [], (_failed(findings), err)
        # a stage and a field the account does not have are named with the file and key
        crm_map = etc / "mappings" / f"{crm}.toml"
        text = crm_map.read_text(encoding="utf-8")
        text = re.sub(r"(PREPAYMENT_INVOICE = )\"[^\"]*\"", f'\\1"{bad_stage}"', text, count=1)
        text = text.replace(f'= "{field}"', '= "NO_SUCH_FIELD"', 1)
        crm_map.write_text(text, encoding="utf-8")
        code, findings, err = _run_check(cfg, env)
        failed = _failed(findings)
        assert code == 1
        assert any(f.startswith(f"{crm_map}: values.{stage_map}.PREPAYMENT_INVOICE: crm has no status '{bad_stage}'")
                   for f in failed), failed
        assert any(str(crm_map) in f and "'NO_SUCH_FIELD' does not exist in crm" in f for f in failed), failed
    finally:
        h.stop()


def _run_check(cfg: Path, env: Path) -> tuple[int, list[dict[str, object]], str]:
    code, out, err = _run("-c", str(cfg), "--env-file", str(env), "--json", "check")
    return code, (json.loads(out) if out.strip() else []), err


def test_check_says_a_chat_channel_whose_new_senders_no_map_would_write(tmp_path: Path) -> None:
    """amoCRM keeps no leads: a Telegram channel left on target = "lead" would keep every new sender's
    message and write it nowhere; check names the key and the way out, and is quiet once it is a deal."""
    import re

    from syncd import check as checks
    from syncd.config import load_settings
    from syncd.mapping import Mapper, load_mappings

    etc = tmp_path / "etc"
    assert _run("init", str(etc), "--systems", "shop,amocrm,telegram", "--state-dir", str(tmp_path / "s"))[0] == 0
    cfg = etc / "config.toml"
    assert "mappings/messengers-amocrm.toml" in cfg.read_text(encoding="utf-8")    # the amoCRM variant
    env = {"SHOP_PASSWORD": "x", "SYNCD_ADMIN_TOKEN": "t", "AMO_TOKEN": "k", "TG_BOT_TOKEN": "1:A",
           "TG_SECRET": "tg-secret-0123456789"}

    def routes() -> list[str]:
        s = load_settings(cfg, env=env)
        mapper = Mapper(load_mappings(s.daemon.mappings, base=etc))
        return [f.detail for f in checks.check_routes(s, mapper)]

    (problem,) = routes()
    assert "systems.telegram.target: 'lead', but no map creates a lead" in problem and 'target = "deal"' in problem
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(re.sub(r'(?m)^(\[systems\.telegram\][^\[]*?)target = "lead"',
                          r'\1target = "deal"\npipeline = "0"\nstage = "NEW"', text), encoding="utf-8")
    assert routes() == []
