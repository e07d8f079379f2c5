"""Invalid config fails at start with the file, the key path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import mapping_doc, mapping_toml, write_config
from syncd.config import load_settings
from syncd.errors import ConfigError
from syncd.mapping import load_mappings


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")


def _error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return info.value


def test_valid_config_loads(tmp_path: Path) -> None:
    path = write_config(tmp_path, daemon={"admin_token": "${TOKEN}"})
    s = load_settings(path, env={"TOKEN": "s3cr3t-admin"})
    assert s.daemon.admin_token == "s3cr3t-admin"
    assert "s3cr3t-admin" in s.secrets            # registered for redaction
    assert len(s.connector_settings) == 2


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    _edit(path, "[daemon]\n", "[daemon]\nlisten_adress = \"x\"\n")
    e = _error(path)
    assert e.key == "daemon.listen_adress" and e.reason == "unknown key" and e.file == str(path)


def test_missing_env_var_names_variable_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, daemon={"admin_token": "${SYNCD_ADMIN_TOKEN}"})
    e = _error(path, env={})
    assert e.key == "daemon.admin_token" and "SYNCD_ADMIN_TOKEN is not set" in e.reason


def test_env_default_is_used(tmp_path: Path) -> None:
    path = write_config(tmp_path, daemon={"log_level": "${LEVEL:-warning}"})
    assert load_settings(path, env={}).daemon.log_level == "warning"


def test_bad_listen_address(tmp_path: Path) -> None:
    path = write_config(tmp_path, daemon={"listen": "localhost"})
    e = _error(path)
    assert e.key == "daemon.listen" and "host:port" in e.reason


def test_unknown_connector_type(tmp_path: Path) -> None:
    path = write_config(tmp_path, systems={"crm": {"type": "bitrix42"}, "shop": {"type": "memory"}})
    e = _error(path)
    assert e.key == "systems.crm.type" and "unknown connector type 'bitrix42'" in e.reason


def test_connector_setting_unknown_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, systems={"crm": {"type": "memory", "batchsize": 5}, "shop": {"type": "memory"}})
    e = _error(path)
    assert e.key == "systems.crm.batchsize" and e.reason == "unknown key"


def test_job_names_unknown_system(tmp_path: Path) -> None:
    path = write_config(tmp_path, jobs=[{"system": "nope", "stream": "person", "every": "30s"}])
    e = _error(path)
    assert e.key == "jobs[0].system" and "no system named 'nope'" in e.reason


def test_job_needs_exactly_one_trigger(tmp_path: Path) -> None:
    path = write_config(tmp_path, systems={"crm": {"type": "memory"}, "shop": {"type": "memory"}},
                        jobs=[{"system": "crm", "stream": "person", "every": "30s", "cron": "* * * * *"}])
    e = _error(path)
    assert e.key == "jobs[0]" and "exactly one of `every` or `cron`" in e.reason


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[daemon]\nlisten = \n", encoding="utf-8")
    e = _error(path)
    assert "invalid TOML" in e.reason and "line 2" in e.reason


@pytest.mark.parametrize("change, key, reason", [
    (lambda d: d["maps"][0]["fields"].update({"person.nick": "nick"}), "fields.person.nick",
     "unknown canonical field 'person.nick'"),
    (lambda d: d["maps"][1]["fields"]["order.status"].update({"values": "stages"}), "fields.order.status.values",
     "unknown value map 'stages'"),
    (lambda d: d["maps"][1]["fields"]["order.total"].update({"transform": "eval"}), "fields.order.total.transform",
     "unknown transform 'eval'"),
    (lambda d: d["maps"][0].update({"entity": "deal"}), "maps[0].entity", "unknown entity type 'deal'"),
    (lambda d: d["conflicts"].update({"order.status": {"policy": "owner"}}), "conflicts.order.status",
     "policy `owner` needs"),
])
def test_mapping_errors_name_file_key_reason(tmp_path: Path, change, key: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    doc = mapping_doc()
    change(doc)
    f = tmp_path / "m.toml"
    f.write_text(mapping_toml(doc), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_mappings([f])
    e = info.value
    assert key in (e.key or ""), e
    assert reason in e.reason, e
    if not key.startswith("conflicts"):
        assert e.file == str(f)


def test_example_config_and_mappings_load() -> None:
    root = Path(__file__).resolve().parent.parent
    env = {k: "x" for k in ("SYNCD_ADMIN_TOKEN", "SHOP_PASSWORD", "B24_WEBHOOK_URL", "B24_APP_TOKEN",
                            "ONEC_PASSWORD", "MAIL_PASSWORD")}
    env["B24_WEBHOOK_URL"] = "https://portal.example.ru/rest/1/abc/"
    env["FORM_CALLBACK_TOKEN"] = "form-token-0123"
    env.update(PBX_SECRET="x", TG_BOT_TOKEN="123:AA", TG_SECRET="tg-secret-0123456789", VK_SECRET="vksecret1", VK_TOKEN="x")
    s = load_settings(root / "config.example.toml", env=env)
    assert s.systems
    assert s.connector_settings["forms"].form["callback"].require_consent is True
    load_mappings(s.daemon.mappings, base=root)
    mail = s.connector_settings["mail"]       # the documented mailbox block validates as written
    assert mail.tls == "implicit" and mail.password.get_secret_value() == "x" and mail.target == "lead"
    assert s.daemon.retention_days == 90
    # the PBX and the messengers' blocks validate as written
    assert s.connector_settings["calls"].vendor == "zadarma" and s.connector_settings["vk"].group_id == 218000000
    assert s.connector_settings["telegram"].secret_token.get_secret_value() == "tg-secret-0123456789"
    assert s.daemon.database_url == "sqlite:////var/lib/syncd/syncd.db"        # STATE_DIRECTORY unset
    s = load_settings(root / "config.example.toml", env=dict(env, STATE_DIRECTORY="/var/lib/private/syncd"))
    assert s.daemon.database_url == "sqlite:////var/lib/private/syncd/syncd.db"
    assert s.daemon.state_dir == "/var/lib/private/syncd"
    assert "/var/lib/private/syncd" not in s.secrets          # a path systemd hands us, not a secret


def test_retention_days(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, daemon={"retention_days": 0}), env={}).daemon.retention_days == 0
    e = _error(write_config(tmp_path, daemon={"retention_days": -1}))
    assert e.key == "daemon.retention_days" and "greater than or equal to 0" in e.reason


@pytest.mark.parametrize("content, reason", [
    ("", "the mapping file is empty"),
    ("\n# nothing but a comment\n", "the mapping file is empty"),
    (b"\xc3\x28 = 1", "not UTF-8 text"),
])
def test_empty_or_undecodable_mapping_file(tmp_path: Path, content: object, reason: str) -> None:
    f = tmp_path / "m.toml"
    f.write_bytes(content) if isinstance(content, bytes) else f.write_text(str(content), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_mappings([f])
    assert info.value.file == str(f) and reason in info.value.reason


def test_mapping_glob_must_match_and_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_mappings(["maps/*.toml"], base=tmp_path)
    assert info.value.file == str(tmp_path / "maps/*.toml") and info.value.reason == "no mapping file matches"
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_mappings(["d.toml"], base=tmp_path)
    assert "is a directory" in info.value.reason
