"""syncd from its wheel, in a fresh venv holding only the wheel's declared dependencies, in an empty
directory: `syncd init` writes a config that loads, `syncd demo --until-synced` flows with 1C."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no virtualenv of ours: the fresh venv must stand on its own."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **extra}


def test_wheel_carries_mappings_example_config_and_unit(syncd_wheel: Path) -> None:
    names = set(zipfile.ZipFile(syncd_wheel).namelist())
    for want in (
        "syncd/_data/config.example.toml",
        "syncd/_data/systemd/syncd.service",
        "syncd/_data/mappings/sync.toml",
        "syncd/_data/mappings/shop.toml",
        "syncd/_data/mappings/bitrix24.toml",
        "syncd/_data/mappings/onec.toml",
        "syncd/_data/mappings/rules.toml",
        "syncd/migrations/script.py.mako",
    ):
        assert want in names, want
    assert not any(n.startswith("tests/") for n in names)


def test_init_and_demo_from_the_wheel_in_an_empty_directory(wheel_venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    syncd = str(wheel_venv / "bin" / "syncd")
    r = subprocess.run(
        [syncd, "init", "conf", "--systems", "shop,bitrix24,onec", "--state-dir", "state"],
        cwd=work,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    conf = work / "conf"
    assert sorted(p.name for p in (conf / "mappings").iterdir()) == [
        "bitrix24.toml",
        "onec.toml",
        "rules.toml",
        "shop.toml",
        "sync.toml",
    ]
    assert (conf / "env").stat().st_mode & 0o777 == 0o600
    # with the secrets filled in, the config loads in the installed package (mappings included)
    secrets = {
        "SHOP_PASSWORD": "p1",
        "B24_WEBHOOK_URL": "https://b24.example.ru/rest/1/code/",
        "B24_APP_TOKEN": "t",
        "ONEC_PASSWORD": "p2",
    }
    load = (
        "import sys; from syncd.config import load_settings; from syncd.mapping import load_mappings; "
        "s = load_settings(sys.argv[1]); ms = load_mappings(s.daemon.mappings, base=s.base_dir); "
        "print(sorted(s.systems), len(ms.maps), s.daemon.database_url)"
    )
    r = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", load, str(conf / "config.toml")],
        cwd=work,
        env=_clean_env(**secrets, SYNCD_ADMIN_TOKEN="x" * 20),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("['crm', 'onec', 'shop']") and f"sqlite:///{work}/state/syncd.db" in r.stdout

    r = subprocess.run(
        [syncd, "demo", "--until-synced", "--port", "0", "--timeout", "240"],
        cwd=work,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    lines = r.stdout.strip().splitlines()
    assert any("1C exchange" in line for line in lines), "the demo ran without 1C"
    assert any(", in 1C" in line for line in lines)
    stats = json.loads(lines[-1])
    from syncd.sandbox import dovecot

    # the demo's site form, its phone system and Telegram bot, and its mailbox where Dovecot is
    # installed (.ci/run installs it)
    assert set(stats["integrations"]) == {"crm", "onec", "shop", "forms", "calls", "telegram"} | (
        {"mail"} if dovecot.available() else set())
    assert any(line.strip().startswith("call +7") for line in lines)
    if dovecot.available():
        assert any(line.strip().startswith("mail -> lead") for line in lines)
    assert stats["totals"]["outbox_pending"] == 0 and stats["totals"]["outbox_dead"] == 0
    assert sorted(p.name for p in work.iterdir()) == ["conf"]  # the demo kept to its temp dir

    # the status page's compiled Russian catalog and its script ship in the wheel
    page = (
        "from syncd.daemon.i18n import Lang; from syncd.daemon import page; "
        "print(Lang('ru')._('Integrations'), (page.STATIC / 'page.js').stat().st_size > 0)"
    )
    r = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", page], cwd=work, env=_clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["Интеграции", "True"], r.stderr
