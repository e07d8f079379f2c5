"""PHP-style query strings: ``fields[TITLE]=x&filter[>ID]=5&select[]=ID`` <-> nested dicts and lists.

Bitrix24 runs on PHP, so form bodies and ``batch`` commands are decoded the way ``parse_str`` does:
brackets make nested arrays, ``[]`` appends, and an array whose keys are exactly 0..n-1 is a list
(that is what ``json_encode`` of such an array gives).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

_INT_KEY = re.compile(r"-?[1-9][0-9]*|0")
_BRACKETS = re.compile(r"\[([^\]]*)\]")


def _key(k: str) -> Any:
    return int(k) if _INT_KEY.fullmatch(k) else k


def _next_index(d: dict) -> int:
    ints = [k for k in d if isinstance(k, int)]
    return max(ints) + 1 if ints else 0


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    root: dict[Any, Any] = {}
    for name, value in pairs:
        i = name.find("[")
        if i <= 0:
            if name:
                root[name] = value
            continue
        base, rest = name[:i], name[i:]
        parts = _BRACKETS.findall(rest) if rest.endswith("]") or "[" in rest else []
        if not parts:
            root[name] = value
            continue
        node = root
        keys: list[Any] = [base] + parts
        for pos, k in enumerate(keys):
            last = pos == len(keys) - 1
            if k == "" and pos > 0:
                k = _next_index(node)
            elif pos > 0:
                k = _key(k)
            if last:
                node[k] = value
            else:
                child = node.get(k)
                if not isinstance(child, dict):
                    child = {}
                    node[k] = child
                node = child
    return _listify(root)


def _listify(v: Any) -> Any:
    if isinstance(v, dict):
        out = {k: _listify(x) for k, x in v.items()}
        if out and all(isinstance(k, int) for k in out) and sorted(out) == list(range(len(out))):
            return [out[i] for i in range(len(out))]
        return {str(k): x for k, x in out.items()}
    return v


def parse_query(qs: str) -> dict[str, Any]:
    """Decode a query string / form body with PHP bracket notation."""
    return parse_pairs(parse_qsl(qs, keep_blank_values=True))


def build_query(params: dict[str, Any], prefix: str = "") -> str:
    """Encode nested dicts/lists with PHP bracket notation (``http_build_query``)."""
    out: list[str] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}[{k}]")
        elif isinstance(value, (list, tuple)):
            for k, v in enumerate(value):
                walk(v, f"{key}[{k}]")
        else:
            if value is None:
                value = ""
            elif value is True:
                value = "1"
            elif value is False:
                value = "0"
            out.append(f"{quote(key, safe='[]')}={quote(str(value), safe='')}")

    for k, v in params.items():
        walk(v, f"{prefix}{k}")
    return "&".join(out)
