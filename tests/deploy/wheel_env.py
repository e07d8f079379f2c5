"""A fresh virtualenv with syncd installed from its wheel, offline, holding only what the wheel
declares: its Requires-Dist, followed transitively, taken from the test interpreter's own
environment (no index is ever asked). A dependency the wheel forgets is missing there too.

    wheel = build_wheel(dist_dir)            # sdist, then the wheel from the sdist (python -m build)
    venv = make_venv(path, wheel)            # path/bin/syncd, path/bin/python
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(dist_dir: Path) -> Path:
    """Build syncd as a release would: an sdist, then the wheel from it (setuptools from this venv)."""
    dist_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist_dir), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheels = sorted(dist_dir.glob("syncd-*.whl"))
    assert wheels, r.stdout[-2000:]
    shutil.copy2(ROOT / "requirements.lock", dist_dir / "requirements.lock")   # as `make wheel` does
    return wheels[-1]


_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)")


def lock_pins(path: Path) -> dict[str, tuple[str, int]]:
    """A pip-compile lock file: canonical name → (version, number of hashes)."""
    out: dict[str, tuple[str, int]] = {}
    name = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line)
        if m:
            name = canonicalize_name(m.group(1))
            out[name] = (m.group(2), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            v, n = out[name]
            out[name] = (v, n + 1)
    return out


def check_lock(lock: Path, wheel: Path) -> None:
    """Offline stand-in for `pip install --require-hashes -r requirements.lock` before the wheel:
    the lock pins, with hashes, exactly the packages the wheel's dependencies close over, at the
    versions this (locked) test environment runs — so the deployed venv is the tested one."""
    assert lock.exists(), f"{lock.name} is not beside the wheel (make wheel copies it into dist/)"
    pins = lock_pins(lock)
    needed = {k: d.version for k, d in closure(wheel_requirements(wheel)).items()}
    needed = {canonicalize_name(k): v for k, v in needed.items()}
    assert set(pins) == set(needed), f"lock vs wheel closure: {sorted(set(pins) ^ set(needed))}"
    wrong = {k: (pins[k][0], v) for k, v in needed.items() if Version(pins[k][0]) != Version(v)}
    assert not wrong, f"locked vs tested versions: {wrong}"
    assert all(n > 0 for _, n in pins.values()), "every pin needs its hashes (--require-hashes)"


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8")
    return [
        Requirement(line.split(":", 1)[1].strip())
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate(dict(default_environment(), extra=e)) for e in (extras or {""}))


def closure(reqs: list[Requirement], extras: set[str] = frozenset()) -> dict[str, Distribution]:  # type: ignore[assignment]
    """The installed distributions `reqs` need (markers evaluated, requested extras followed)."""
    found: dict[str, Distribution] = {}
    todo = [(r, set(extras)) for r in reqs]
    while todo:
        req, want = todo.pop()
        if not _applies(req, want):
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            raise AssertionError(f"{req} is not installed in the test environment") from None
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found and not req.extras:
            continue
        found[key] = dist
        for sub in dist.requires or []:
            todo.append((Requirement(sub), set(req.extras)))
    return found


def make_venv(path: Path, wheel: Path, *, with_pip: bool = False) -> Path:
    """A venv at `path` with the wheel installed and exactly its dependency closure linked in."""
    subprocess.run(
        [sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(path)],
        check=True,
        timeout=300,
    )
    install_offline(path / "bin" / "python", wheel)
    return path


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    return Path(out)


def install_offline(python: Path, wheel: Path, *, copy: bool = False) -> None:
    """pip-install the wheel alone into `python`'s environment, then link in its dependency closure.

    copy: copy the dependencies instead of linking them (a venv another user must read, whatever
    the permissions along the path of the test environment).
    """
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    target = site_packages(python)
    for dist in closure(wheel_requirements(wheel)).values():
        base = Path(str(dist.locate_file(""))).resolve()
        # each top-level entry the distribution installed: its packages, modules and .dist-info
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            src, dst = base / top, target / top
            if not src.exists() or dst.exists():
                continue
            if not copy:
                os.symlink(src, dst)
            elif src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "check", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, "the wheel's dependencies are not satisfied:\n" + r.stdout + r.stderr
