"""Named value transforms for field maps (no `eval`: a mapping can only name one of these).

Each transform is a pair: `pull` (system value -> canonical) and `push` (canonical -> system).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from syncd.schema import to_bool, to_decimal


@dataclass(frozen=True)
class Transform:
    pull: Callable[[Any], Any]
    push: Callable[[Any], Any]
    doc: str


def _none_safe(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else fn(v)


def _yn_pull(v: Any) -> bool:
    # Y/N fields ("OPENED") and boolean user fields, which the REST API gives as "1"/"0"
    return str(v).strip().upper() in ("Y", "1", "TRUE")


def _phones_pull(v: Any) -> tuple[str, ...]:
    # Bitrix-style multi-field: [{"ID": "1", "VALUE": "+7...", "VALUE_TYPE": "WORK"}]
    if isinstance(v, (list, tuple)):
        return tuple(str(x.get("VALUE", "")) if isinstance(x, dict) else str(x) for x in v if x)
    return (str(v),)


def _first(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return v[0] if v else None
    return v


def _money_push(v: Any) -> str:
    d = to_decimal(v)
    return f"{d.quantize(Decimal('0.01'))}"


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(lambda v: v, lambda v: v, "value unchanged"),
    "upper": Transform(_none_safe(lambda v: str(v).upper()), _none_safe(lambda v: str(v).upper()),
                       "upper-case both ways"),
    "lower": Transform(_none_safe(lambda v: str(v).lower()), _none_safe(lambda v: str(v).lower()),
                       "lower-case both ways"),
    "strip": Transform(_none_safe(lambda v: str(v).strip()), _none_safe(lambda v: str(v).strip()),
                       "trim white space"),
    "yn": Transform(_none_safe(_yn_pull), _none_safe(lambda v: "Y" if to_bool(v) else "N"),
                    "Bitrix Y/N flag <-> boolean"),
    "bool_text": Transform(_none_safe(to_bool), _none_safe(lambda v: "true" if to_bool(v) else "false"),
                           "CommerceML true/false <-> boolean"),
    "money": Transform(_none_safe(to_decimal), _none_safe(_money_push), "Decimal, two places on push"),
    "multifield": Transform(_none_safe(_phones_pull),
                            _none_safe(lambda v: [{"VALUE": x, "VALUE_TYPE": "WORK"} for x in v]),
                            "Bitrix PHONE/EMAIL list <-> list of strings"),
    "first": Transform(_none_safe(_first), lambda v: v, "first element of a list on pull"),
    "int": Transform(_none_safe(lambda v: int(to_decimal(v))), _none_safe(lambda v: int(v)),
                     "integer"),
    "str": Transform(_none_safe(str), _none_safe(str), "string both ways"),
}
