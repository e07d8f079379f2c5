"""Connector types by name, from the `syncd.connectors` entry points (plus the built-ins)."""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from syncd.connector import ConnectorType

BUILTIN = {
    "memory": "syncd.sandbox.memory:connector",
    "shop": "connectors.shop:connector",
    "bitrix24": "connectors.bitrix24:connector",
    "onec": "connectors.onec:connector",
    "forms": "connectors.forms:connector",
    "imap": "connectors.imap:connector",
    "amocrm": "connectors.amocrm:connector",
    "retailcrm": "connectors.retailcrm:connector",
    "telegram": "connectors.messengers:telegram",
    "vk": "connectors.messengers:vk",
    "calls": "connectors.calls:connector",
}


@lru_cache(maxsize=None)
def _available() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in entry_points(group="syncd.connectors"):
        found[ep.name] = ep.value
    return found


def connector_type(name: str) -> ConnectorType:
    target = _available().get(name)
    if target is None:
        raise KeyError(f"unknown connector type {name!r} (known: {', '.join(sorted(_available()))})")
    module, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyError(f"connector type {name!r} cannot be loaded: {exc}") from None
    return obj  # type: ignore[no-any-return]


def known_types() -> list[str]:
    return sorted(_available())
