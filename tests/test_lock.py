"""The lock files are what pyproject.toml asks for, and what this environment runs.

requirements-dev.lock (make install, CI) and requirements.lock (the README's deploy steps) pin every
package with hashes; the runtime lock is the dev lock's pins for syncd's own dependencies, so what
CI tests is what a user installs. `make lock` regenerates both.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from deploy.wheel_env import lock_pins

ROOT = Path(__file__).resolve().parents[1]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_every_pin_has_hashes_and_the_runtime_lock_is_the_dev_locks_pins() -> None:
    dev, run = lock_pins(ROOT / "requirements-dev.lock"), lock_pins(ROOT / "requirements.lock")
    assert dev and run
    assert all(n > 0 for _, n in dev.values()) and all(n > 0 for _, n in run.values())
    assert {k: v for k, (v, _) in run.items()} == {k: dev[k][0] for k in run}


def test_the_locks_satisfy_pyproject() -> None:
    dev, run = lock_pins(ROOT / "requirements-dev.lock"), lock_pins(ROOT / "requirements.lock")
    p = project()
    for lock, reqs in ((run, p["dependencies"]), (dev, p["dependencies"] + p["optional-dependencies"]["test"])):
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            assert name in lock, f"{req.name} is not pinned: run `make lock`"
            assert req.specifier.contains(lock[name][0], prereleases=True), \
                f"{req.name}=={lock[name][0]} is outside {req.specifier}: run `make lock`"


def test_this_environment_runs_the_locked_versions() -> None:
    wrong = []
    for name, (v, _) in lock_pins(ROOT / "requirements-dev.lock").items():
        try:
            got = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name} missing (locked {v})")
            continue
        if Version(got) != Version(v):
            wrong.append(f"{name} {got} (locked {v})")
    assert not wrong, "this venv is not the lock's (`make install`): " + ", ".join(wrong)
