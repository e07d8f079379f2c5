"""The README's systemd recipe works as written: performed into a temporary root (systemd_recipe.py),
the unit passes `systemd-analyze verify`, and syncd started the way the unit says — as an
unprivileged user whose only extra group is the unit's SupplementaryGroups — reads its config and
mappings, creates its database in the state directory, answers /healthz, and can read nothing it
should not (the env file) nor change its config."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
import requests

from systemd_recipe import recipe_lines, remove_group, run_recipe, start_like_systemd, verify_unit

pytestmark = pytest.mark.slow

NEEDS = ("setpriv", "groupadd", "groupdel", "systemd-analyze")


@pytest.fixture
def root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the recipe is performed as root (groupadd, chown, setpriv)")
    missing = [c for c in NEEDS if shutil.which(c) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} (.ci/run installs Debian's systemd and util-linux)")
    # under /tmp (not pytest's 0700 tmp_path): the service user must be able to walk into it
    path = Path(tempfile.mkdtemp(prefix="syncd-recipe-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def peers() -> Iterator[object]:
    from syncd.demo import Peers

    p = Peers(shop_orders=2)
    yield p
    p.stop()


def test_the_recipe_block_is_what_the_test_performs() -> None:
    lines = recipe_lines()
    assert lines[0].startswith("python3 -m venv /opt/syncd/.venv")
    assert any(line.startswith("groupadd") for line in lines)
    assert any("syncd init /etc/syncd" in line and "--group syncd" in line for line in lines)
    assert lines[-1].startswith("systemctl daemon-reload")


def test_readme_recipe_into_a_temporary_root(root: Path, peers: object, syncd_wheel: Path) -> None:
    from syncd.sandbox.server import free_port

    port = free_port()
    b24 = peers.b24.extra["state"].portal().info()  # type: ignore[attr-defined]
    shop = peers.shop.extra  # type: ignore[attr-defined]

    def edit(r: Path, _group: str) -> None:
        """What the operator types into env and config.toml."""
        etc = r / "etc" / "syncd"
        env = (etc / "env").read_text(encoding="utf-8")
        for name, value in {
            "SHOP_PASSWORD": shop["password"],
            "B24_WEBHOOK_URL": peers.b24_webhook,  # type: ignore[attr-defined]
            "B24_APP_TOKEN": b24.get("application_token", "none"),
            "ONEC_PASSWORD": "1c-exchange-pass",
        }.items():
            env = env.replace(f"# {name}=", f"{name}={value}")
        (etc / "env").write_text(env, encoding="utf-8")
        cfg = (etc / "config.toml").read_text(encoding="utf-8")
        cfg = cfg.replace(
            'url = "https://shop.example.ru/bitrix/admin/1c_exchange.php"', f'url = "{shop["exchange_url"]}"'
        )
        cfg = re.sub(r'(?m)^login = "syncd"', f'login = "{shop["login"]}"', cfg)
        cfg = cfg.replace('listen = "127.0.0.1:8787"', f'listen = "127.0.0.1:{port}"')
        (etc / "config.toml").write_text(cfg, encoding="utf-8")
        assert tomllib.loads(cfg)["systems"]["shop"]["url"] == shop["exchange_url"]

    unit, group = run_recipe(root, syncd_wheel, edit, log=lambda _s: None)
    try:
        etc = root / "etc" / "syncd"
        gid = grp.getgrnam(group).gr_gid
        assert (etc.stat().st_mode & 0o777, etc.stat().st_gid) == (0o750, gid)
        assert ((etc / "config.toml").stat().st_mode & 0o777, (etc / "config.toml").stat().st_gid) == (
            0o640,
            gid,
        )
        assert ((etc / "env").stat().st_mode & 0o777, (etc / "env").stat().st_uid) == (0o600, 0)

        svc = unit.service
        assert svc["ExecStart"].startswith(f"{root}/opt/syncd/.venv/bin/syncd --config {etc}/config.toml")
        assert svc["SupplementaryGroups"] == group and svc["DynamicUser"] == "yes"
        r = verify_unit(unit.path)
        # verify exits 0 on an unknown key or a bad value and only warns: any output is a finding
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr

        started = start_like_systemd(unit, root)
        try:
            assert any(m.startswith("READY=1") for m in started.notify), (
                started.proc.poll(),
                started.output()[-3000:],
            )
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
            assert health["db"] is True
            db = started.state_dir / "syncd.db"
            assert db.exists() and db.stat().st_uid == pwd.getpwnam("nobody").pw_uid
            # what it needs it can read ...
            assert started.as_service_user("cat", str(etc / "config.toml")).returncode == 0
            assert started.as_service_user("cat", str(etc / "mappings" / "sync.toml")).returncode == 0
            # ... and nothing else: not the secrets, not a change to its own config
            r = started.as_service_user("cat", str(etc / "env"))
            assert r.returncode != 0 and "Permission denied" in r.stderr
            r = started.as_service_user("touch", str(etc / "config.toml"))
            assert r.returncode != 0 and "Permission denied" in r.stderr
            r = started.as_service_user("touch", str(etc / "new.toml"))
            assert r.returncode != 0
        finally:
            code = started.stop()
        out = started.output()
        assert code == 0, out[-3000:]
        # the first line is syncd's own, and no secret from env reached the log
        first = out.strip().splitlines()[0]
        assert '"logger": "syncd"' in first and '"event": "starting"' in first, first
        assert "1c-exchange-pass" not in out
    finally:
        remove_group(group)


def test_verify_flags_what_systemd_would_ignore(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is only a warning to systemd-analyze."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("missing systemd-analyze (.ci/run installs Debian's systemd)")
    from syncd.init import unit_text

    good = tmp_path / "syncd.service"
    good.write_text(unit_text(Path("/etc/syncd"), "/bin/true", "syncd"), encoding="utf-8")
    r = verify_unit(good)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(good.read_text(encoding="utf-8").replace("WatchdogSec=", "WatchdogSecs="), encoding="utf-8")
    r = verify_unit(bad)
    assert "Unknown key" in r.stderr
