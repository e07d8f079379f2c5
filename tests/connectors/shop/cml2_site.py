"""A real third-party shop site for the shop connector's tests: django-cml2 1.0.0.4 on Django 3.2.

django-cml2 is installed unmodified into its own venv (cached under ``.cache/`` keyed by the versions,
so tests do not reinstall it; ``.ci/run`` prepares it with ``python3 tests/connectors/shop/cml2_site.py
install``). Each test site is a copy of ``django_cml2_site/`` (settings, urls with cml's urls, the
orders app and its cml delegate as django-cml2's README describes) with its own SQLite file and media
folder, started as a separate ``manage.py runserver`` process on loopback.

Standard library only at import time: ``.ci/run`` runs this file before syncd's venv exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

CML2_VERSION = "1.0.0.4"
REQUIREMENTS = (f"django-cml2=={CML2_VERSION}", "Django>=3.2,<3.3", "django-appconf",
                # imported by django-cml2 but not declared in its setup.py
                "six", "lxml")
ROOT = Path(__file__).resolve().parents[3]
SITE_TEMPLATE = Path(__file__).with_name("django_cml2_site")
LOGIN, PASSWORD = "1c", "secret"


def venv_dir() -> Path:
    base = Path(os.environ.get("SYNCD_CACHE_DIR") or ROOT / ".cache")
    return base / f"django-cml2-{CML2_VERSION}-django3.2-py{sys.version_info[0]}{sys.version_info[1]}"


def ensure_venv() -> Path:
    """The venv's python; created once (under a file lock, so parallel runs wait for one install)."""
    d = venv_dir()
    py = d / "bin" / "python"
    ok = d / ".installed"
    if ok.exists() and py.exists():
        return py
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ok.exists() and py.exists():
            return py
        shutil.rmtree(d, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(d)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
                       check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        subprocess.run([str(py), "-c", "import cml, django, lxml, six, appconf"], check=True)
        ok.write_text(" ".join(REQUIREMENTS) + "\n")
    return py


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cml2Site:
    """One running site: ``url`` is its exchange endpoint (``/cml/1c_exchange.php``)."""

    def __init__(self, workdir: Path) -> None:
        self.python = ensure_venv()
        self.dir = workdir / "site"
        self.data = workdir / "data"
        shutil.copytree(SITE_TEMPLATE, self.dir, ignore=shutil.ignore_patterns("__pycache__"))
        self.data.mkdir(parents=True)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO"))},
                    "CML2_SITE_DATA": str(self.data), "PYTHONDONTWRITEBYTECODE": "1"}
        self.manage("migrate", "-v0")
        self.manage("seed_site", "--login", LOGIN, "--password", PASSWORD)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/cml/1c_exchange.php"
        self.login, self.password = LOGIN, PASSWORD
        self.log = open(self.data / "server.log", "wb")
        self.proc = subprocess.Popen([str(self.python), "manage.py", "runserver", f"127.0.0.1:{self.port}",
                                      "--noreload"], cwd=self.dir, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"django-cml2 site exited: {(self.data / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("django-cml2 site did not start in 30 s")
            time.sleep(0.1)

    def manage(self, *args: str) -> str:
        r = subprocess.run([str(self.python), "manage.py", *args], cwd=self.dir, env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)}: {r.stdout[-2000:]}")
        return r.stdout

    @property
    def uploads(self) -> Path:
        """Where django-cml2 stores `mode=file` uploads (CML_UPLOAD_ROOT = MEDIA_ROOT/cml/tmp)."""
        return self.data / "media" / "cml" / "tmp"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: cml2_site.py install")
    print(ensure_venv())
