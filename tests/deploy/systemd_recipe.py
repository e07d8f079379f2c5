"""Performs the README's "Running under systemd" block into a temporary root, as root.

Each line of the block runs as written, with these differences only:

- absolute paths (`/opt/…`, `/etc/…`) are moved under the temporary root;
- the group is a throw-away one (`syncd-t…`), deleted afterwards, not the machine's `syncd`;
- `pip install --require-hashes -r requirements.lock` is checked offline, since tests never reach
  an index: the lock beside the wheel pins, with hashes, exactly the wheel's dependency closure at
  the versions the (locked) test environment runs (wheel_env.check_lock);
- `pip install --no-deps ./syncd-*.whl` installs the test's wheel offline (its declared
  dependencies linked from the test environment, wheel_env.py);
- `$EDITOR …` is `edit(root)`: the caller fills in the secrets and URLs, as the operator would;
- `systemctl daemon-reload && systemctl enable --now syncd` (there is no running systemd here) is
  `systemd-analyze verify` on the installed unit, then the unit's own ExecStart run the way systemd
  would run it: the environment file read as root, STATE_DIRECTORY created for the service user,
  and the process started as an unprivileged user (`nobody`) whose only extra group is the unit's
  SupplementaryGroups (setpriv), in the unit's WorkingDirectory and UMask.

Usage as a script (prints what it did; the daemon is stopped again at the end):
    python tests/deploy/systemd_recipe.py --wheel dist/syncd-*.whl
"""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wheel_env import check_lock, install_offline  # noqa: E402


def recipe_lines(readme: Path = README) -> list[str]:
    """The shell lines of the README's systemd recipe, exactly as a reader copies them."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"<!-- systemd-recipe.*?-->\s*```sh\n(.*?)```\s*<!-- /systemd-recipe -->", text, re.S)
    assert m, "README.md has no systemd-recipe block"
    return [line for line in m.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Unit:
    path: Path
    service: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> Unit:
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read(path)
        return cls(path, dict(cp["Service"]))


@dataclass
class Started:
    proc: subprocess.Popen[str]
    env: dict[str, str]
    identity: list[str]
    state_dir: Path
    journal: Path
    notify: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.journal.read_text(encoding="utf-8", errors="replace")

    def as_service_user(self, *cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command with the daemon's identity (same uid, groups, no capabilities)."""
        return subprocess.run(
            [*self.identity, *cmd], capture_output=True, text=True, timeout=60, cwd=cwd, env=self.env
        )

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def env_file(path: Path) -> dict[str, str]:
    """What systemd's EnvironmentFile= gives the service (read by PID 1, i.e. as root)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#;" and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip("'\"")
    return out


def verify_unit(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120
    )


def start_like_systemd(unit: Unit, root: Path, user: str = "nobody", ready_timeout: float = 60) -> Started:
    svc = unit.service
    pw = pwd.getpwnam(user)
    groups = [str(grp.getgrnam(g).gr_gid) for g in svc.get("SupplementaryGroups", "").split()]
    state = root / "var" / "lib" / svc["StateDirectory"]
    state.mkdir(parents=True, exist_ok=True)
    os.chown(state, pw.pw_uid, pw.pw_gid)
    os.chmod(state, int(svc.get("StateDirectoryMode", "0755"), 8))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "STATE_DIRECTORY": str(state)}
    ef = svc.get("EnvironmentFile", "").lstrip("-")
    if ef and Path(ef).exists():
        env.update(env_file(Path(ef)))
    run_dir = root / "run"
    run_dir.mkdir(exist_ok=True)
    os.chmod(run_dir, 0o755)
    sock_path = run_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    os.chmod(sock_path, 0o777)  # systemd's notify socket accepts the service's datagrams too
    sock.settimeout(0.5)
    env["NOTIFY_SOCKET"] = str(sock_path)
    identity = [
        "setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        f"--groups={','.join(groups)}" if groups else "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]
    umask = int(svc.get("UMask", "0022"), 8)
    journal = (run_dir / "journal.log").open("w")  # what journald would keep
    proc = subprocess.Popen(
        [*identity, *shlex.split(svc["ExecStart"])],
        cwd=svc.get("WorkingDirectory", "/"),
        env=env,
        stdout=journal,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.umask(umask),
    )
    journal.close()
    started = Started(proc, env, identity, state, run_dir / "journal.log")

    def listen() -> None:  # systemd's side of the notify socket, for the daemon's whole life
        with sock:
            while proc.poll() is None:
                try:
                    started.notify.append(sock.recv(4096).decode())
                except TimeoutError:
                    pass

    threading.Thread(target=listen, daemon=True, name="notify").start()
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(m.startswith("READY=1") for m in started.notify):
            break
        time.sleep(0.1)
    return started


def run_recipe(
    root: Path, wheel: Path, edit: Callable[[Path, str], None], log: Callable[[str], None] = print
) -> tuple[Unit, str]:
    """Perform the recipe up to (not including) starting the service; returns the installed unit."""
    group = f"syncd-t{uuid.uuid4().hex[:6]}"
    installed: Path | None = None
    wheel_dir = wheel.parent
    for line in recipe_lines():
        cmd = re.sub(r"(?<![\w.])/(opt|etc)/", lambda m: f"{root}/{m.group(1)}/", line)
        if re.search(r"\bgroupadd\b|--group syncd\b", cmd):
            cmd = (
                re.sub(r"\bsyncd$", group, cmd)
                if "groupadd" in cmd
                else cmd.replace("--group syncd", f"--group {group}")
            )
        log(f"$ {line}")
        if re.match(r"\S*python3 -m venv ", cmd):
            cmd = cmd.replace("python3", shlex.quote(getattr(sys, "_base_executable", sys.executable)), 1)
        elif re.search(r"/bin/pip install .*-r requirements\.lock", cmd):
            check_lock(wheel_dir / "requirements.lock", wheel)
            continue
        elif re.search(r"/bin/pip install ", cmd):
            assert "--no-deps" in cmd, "the wheel goes in after the lock, without pulling anything else"
            install_offline(Path(cmd.split()[0]).parent / "python", wheel, copy=True)
            continue
        elif cmd.startswith("$EDITOR "):
            edit(root, group)
            continue
        elif cmd.startswith("systemctl "):
            continue  # the caller verifies and starts the unit the way systemd would
        elif cmd.startswith("install ") and "/etc/systemd/system/" in cmd:
            (root / "etc" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
            installed = Path(cmd.split()[-1])
        r = subprocess.run(
            cmd,
            shell=True,
            cwd=wheel_dir,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, SYNCD_CONFIG=""),
        )
        if r.returncode != 0:
            raise AssertionError(
                f"recipe line failed ({r.returncode}): {line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            )
        if r.stdout.strip():
            log(r.stdout.rstrip())
    assert installed is not None, "the recipe installs no unit"
    return Unit.read(installed), group


def remove_group(group: str) -> None:
    if group.startswith("syncd-t"):
        subprocess.run(["groupdel", group], capture_output=True, timeout=60)


def main() -> int:  # pragma: no cover - the test drives run_recipe itself
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", required=True, type=Path)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="syncd-recipe-"))
    os.chmod(root, 0o755)

    def edit(r: Path, _group: str) -> None:
        print(f"(edit {r}/etc/syncd/env and config.toml now, then press Enter)")
        input()

    unit, group = run_recipe(root, args.wheel.resolve(), edit)
    try:
        print(verify_unit(unit.path).stderr or "systemd-analyze verify: ok")
        started = start_like_systemd(unit, root)
        print("\n".join(started.notify))
        print("exit", started.stop())
    finally:
        remove_group(group)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
