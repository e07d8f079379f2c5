"""Third-party amoCRM and RetailCRM clients, installed unmodified into their own venv, for checking
syncd's sandboxes of those APIs (issue 24): `amocrm-api` 2.6.1 and `aioamocrm` 0.1.1 (amoCRM API v4),
`retailcrm` 5.3.0 (RetailCRM's official client, API v5).

They live apart from syncd's environment because `retailcrm` pins `requests~=2.32.4`, older than
syncd's lock. The venv is cached under ``.cache/`` keyed by the versions (``.ci/run`` prepares it
with ``python3 tests/sandbox/crm_clients.py install``); a test runs a small script in it as a
separate process (`run`), talking to the sandbox over HTTP, and reads back one JSON line.

Standard library only at import time: ``.ci/run`` runs this file before syncd's venv exists.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path
from typing import Any

REQUIREMENTS = ("amocrm-api==2.6.1", "aioamocrm==0.1.1", "retailcrm==5.3.0")
ROOT = Path(__file__).resolve().parents[2]


def venv_dir() -> Path:
    base = Path(os.environ.get("SYNCD_CACHE_DIR") or ROOT / ".cache")
    tag = "-".join(r.replace("==", "") for r in REQUIREMENTS)
    return base / f"crm-clients-{tag}-py{sys.version_info[0]}{sys.version_info[1]}"


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
        subprocess.run([str(py), "-c", "import amocrm.v2, aioamocrm, retailcrm"], check=True)
        ok.write_text(" ".join(REQUIREMENTS) + "\n")
    return py


def run(script: str, *, timeout: float = 120.0, **params: Any) -> Any:
    """Run `script` (Python, dedented) with the clients' venv; `params` are in the global `P`. The
    script prints its result as its last line of output, one JSON value, which is returned."""
    py = ensure_venv()
    code = "import json, sys\nP = json.loads(sys.argv[1])\n" + textwrap.dedent(script)
    r = subprocess.run([str(py), "-c", code, json.dumps(params)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"client script failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    if not lines:
        raise AssertionError(f"client script printed nothing; stderr:\n{r.stderr[-2000:]}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python3 tests/sandbox/crm_clients.py install")
    print(ensure_venv())
