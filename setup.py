"""Build hook: the wheel carries the example mappings, config.example.toml and the systemd unit.

They are maintained at the repository root (where the README points and people edit them), so
`build_py` copies them into the built package as `syncd/_data/…`; `syncd.resources` finds them
there in an installed wheel and at the root in a source checkout (editable installs, tests).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = ["config.example.toml", "config.*.toml", "mappings/*.toml", "systemd/syncd.service"]


class build_py_with_data(build_py):  # noqa: N801 - setuptools command naming
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return          # an editable install reads them from the checkout
        target = Path(self.build_lib) / "syncd" / "_data"
        found = 0
        for pattern in DATA:
            for src in sorted(ROOT.glob(pattern)):
                dst = target / src.relative_to(ROOT)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                found += 1
        if not found:
            raise SystemExit("setup.py: the example mappings, config.example.toml and the unit are missing")


setup(cmdclass={"build_py": build_py_with_data})
