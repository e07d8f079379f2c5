"""The `syncd` command (`syncd --help`). Exit codes and what every command shares: `base`; each
group of commands is a module here, registered on import."""

from __future__ import annotations

from syncd.cli import daemon, decisions, explain, setup, state, sync  # noqa: F401  (they register their commands)
from syncd.cli.base import _with_json_option, main

_with_json_option(main)

__all__ = ["main"]
