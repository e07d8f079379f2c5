"""Files syncd ships besides its code: the example mappings, config.example.toml, the systemd unit.

In an installed wheel they are package data under `syncd/_data/` (setup.py copies them there at
build time); in a source checkout (editable install, tests) they are read where they are
maintained, at the repository root. Both places have the same layout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_PLACES = (_PACKAGE / "_data", _PACKAGE.parent)

MAPPINGS = "mappings"
CONFIG_EXAMPLE = "config.example.toml"
UNIT = "systemd/syncd.service"


def data_path(name: str) -> Path:
    """The shipped file or folder `name` ("mappings", "config.example.toml", "systemd/syncd.service")."""
    for base in _PLACES:
        p = base / name
        if p.exists():
            return p
    raise FileNotFoundError(
        f"{name} is not shipped with this installation of syncd "
        f"(looked in {', '.join(str(b) for b in _PLACES)})"
    )


def mapping_files() -> dict[str, Path]:
    """The example mapping files by name ("sync.toml", "shop.toml", …)."""
    return {p.name: p for p in sorted(data_path(MAPPINGS).glob("*.toml"))}
