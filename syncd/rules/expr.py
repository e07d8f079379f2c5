"""A small, safe condition language over canonical fields. Parsed to an AST, never `eval`-ed.

Grammar (lowest to highest precedence)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := value (("==" | "!=" | "<" | "<=" | ">" | ">=") value
                     | "in" value | "not" "in" value)?
    value   := NUMBER | STRING | "true" | "false" | "null" | PATH | list | "(" expr ")"
    list    := "[" (value ("," value)* ","?)? "]"

A PATH is dotted (`order.paid_percent`, `order.items.kind`, `client.type`). A path that runs into
a list field (`order.items.kind`) yields every element's member; a comparison with such a
multi-value is true when *any* element satisfies it. Numbers compare as Decimal; a string that
reads as a number compares with a number; an ISO date string compares with a date-time. A
comparison with a missing value (null) is false except `== null` / `!= null`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from syncd.schema import to_datetime

__all__ = [
    "And",
    "Cmp",
    "ExprError",
    "In",
    "ListLit",
    "Lit",
    "Multi",
    "Node",
    "Not",
    "Or",
    "Path",
    "evaluate",
    "parse",
    "paths",
    "to_source",
]


class ExprError(ValueError):
    """A condition that does not parse; names the rule and the 0-based character position."""

    def __init__(self, msg: str, pos: int, source: str, rule: str | None = None) -> None:
        self.msg, self.pos, self.source, self.rule = msg, pos, source, rule
        who = f"rule {rule!r}: " if rule else ""
        pointer = f"\n    {source}\n    {' ' * pos}^" if "\n" not in source and len(source) < 200 else ""
        super().__init__(f"{who}condition {source!r}, position {pos}: {msg}{pointer}")


# -- AST ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lit:
    value: Any          # Decimal | str | bool | None


@dataclass(frozen=True)
class Path:
    name: str


@dataclass(frozen=True)
class ListLit:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class In:
    left: Node
    right: Node
    negate: bool = False


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Lit | Path | ListLit | Cmp | In | And | Or | Not

# -- tokenizer ----------------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", "none"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
""", re.VERBOSE)


@dataclass(frozen=True)
class _Tok:
    kind: str       # num | str | name | kw | op | end
    text: str
    pos: int
    value: Any = None


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def tokenize(source: str, rule: str | None = None) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(source)
    while i < n:
        m = _TOKEN.match(source, i)
        if m is None or m.end() == i:
            ch = source[i]
            if ch in "'\"":
                raise ExprError("unterminated string", i, source, rule)
            if ch == "=":
                raise ExprError("single '=': write '==' to compare", i, source, rule)
            raise ExprError(f"unexpected character {ch!r}", i, source, rule)
        kind = m.lastgroup
        text = m.group()
        if kind == "num":
            # "1.x" is a number followed by a name: refuse rather than guess
            if m.end() < n and (source[m.end()].isalpha() or source[m.end()] == "_"):
                raise ExprError(f"bad number {text + source[m.end()]!r}…", i, source, rule)
            toks.append(_Tok("num", text, i, Decimal(text)))
        elif kind == "str":
            toks.append(_Tok("str", text, i, _unquote(text)))
        elif kind == "name":
            low = text.lower()
            toks.append(_Tok("kw", low, i) if low in _KEYWORDS else _Tok("name", text, i))
        elif kind == "op":
            toks.append(_Tok("op", text, i))
        i = m.end()
    toks.append(_Tok("end", "", n))
    return toks


# -- parser -------------------------------------------------------------------------------------

_CMP = {"==", "!=", "<", "<=", ">", ">="}
_MAX_DEPTH = 60


class _Parser:
    def __init__(self, source: str, rule: str | None) -> None:
        self.source, self.rule = source, rule
        self.toks = tokenize(source, rule)
        self.i = 0
        self.depth = 0

    def err(self, msg: str, tok: _Tok | None = None) -> ExprError:
        tok = tok or self.peek()
        return ExprError(msg, tok.pos, self.source, self.rule)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return tok.kind == kind and (text is None or tok.text == text)

    def expect(self, kind: str, text: str) -> _Tok:
        if not self.at(kind, text):
            tok = self.peek()
            got = "end of condition" if tok.kind == "end" else repr(tok.text)
            raise self.err(f"expected {text!r}, got {got}")
        return self.take()

    def parse(self) -> Node:
        if self.at("end"):
            raise self.err("empty condition")
        node = self.or_()
        if not self.at("end"):
            raise self.err(f"unexpected {self.peek().text!r}")
        return node

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.err("condition nested too deeply")

    def or_(self) -> Node:
        node = self.and_()
        while self.at("kw", "or"):
            self.take()
            node = Or(node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("kw", "and"):
            self.take()
            node = And(node, self.not_())
        return node

    def not_(self) -> Node:
        if self.at("kw", "not"):
            self.take()
            self._enter()
            try:
                return Not(self.not_())
            finally:
                self.depth -= 1
        return self.cmp()

    def cmp(self) -> Node:
        left = self.value()
        tok = self.peek()
        if tok.kind == "op" and tok.text in _CMP:
            self.take()
            return Cmp(tok.text, left, self.value())
        if tok.kind == "kw" and tok.text == "in":
            self.take()
            return In(left, self.value())
        if tok.kind == "kw" and tok.text == "not" and self.toks[self.i + 1].kind == "kw" \
                and self.toks[self.i + 1].text == "in":
            self.take()
            self.take()
            return In(left, self.value(), negate=True)
        return left

    def value(self) -> Node:
        tok = self.peek()
        if tok.kind == "num" or tok.kind == "str":
            self.take()
            return Lit(tok.value)
        if tok.kind == "kw" and tok.text in ("true", "false"):
            self.take()
            return Lit(tok.text == "true")
        if tok.kind == "kw" and tok.text in ("null", "none"):
            self.take()
            return Lit(None)
        if tok.kind == "name":
            self.take()
            return Path(tok.text)
        if tok.kind == "op" and tok.text == "(":
            self.take()
            self._enter()
            try:
                node = self.or_()
            finally:
                self.depth -= 1
            self.expect("op", ")")
            return node
        if tok.kind == "op" and tok.text == "[":
            self.take()
            items: list[Node] = []
            while not self.at("op", "]"):
                items.append(self.value())
                if self.at("op", ","):
                    self.take()
                elif not self.at("op", "]"):
                    raise self.err("expected ',' or ']' in a list")
            self.expect("op", "]")
            return ListLit(tuple(items))
        if tok.kind == "end":
            raise self.err("condition ends where a value is expected")
        raise self.err(f"expected a value, got {tok.text!r}")


def parse(source: str, rule: str | None = None) -> Node:
    """Parse a condition; raises ExprError naming the rule and the position."""
    if not isinstance(source, str):
        raise ExprError("a condition must be a string", 0, repr(source), rule)
    return _Parser(source, rule).parse()


# -- printing (for explain and round-trip tests) --------------------------------------------------

_PREC = {Or: 1, And: 2, Not: 3, Cmp: 4, In: 4}


def _lit_source(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, Decimal):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    return f"'{s}'"


def to_source(node: Node) -> str:
    def wrap(child: Node, prec: int) -> str:
        text = to_source(child)
        return f"({text})" if _PREC.get(type(child), 9) <= prec else text

    if isinstance(node, Lit):
        return _lit_source(node.value)
    if isinstance(node, Path):
        return node.name
    if isinstance(node, ListLit):
        return "[" + ", ".join(to_source(x) for x in node.items) + "]"
    if isinstance(node, Cmp):
        return f"{wrap(node.left, 4)} {node.op} {wrap(node.right, 4)}"
    if isinstance(node, In):
        return f"{wrap(node.left, 4)} {'not in' if node.negate else 'in'} {wrap(node.right, 4)}"
    if isinstance(node, And):
        return f"{wrap(node.left, 1)} and {wrap(node.right, 2)}"
    if isinstance(node, Or):
        return f"{to_source(node.left)} or {wrap(node.right, 1)}"
    if isinstance(node, Not):
        return f"not {wrap(node.operand, 2)}"
    raise TypeError(f"not an expression node: {node!r}")


def paths(node: Node) -> set[str]:
    """Every field path a condition reads."""
    if isinstance(node, Path):
        return {node.name}
    if isinstance(node, Lit):
        return set()
    if isinstance(node, ListLit):
        return set().union(*(paths(x) for x in node.items)) if node.items else set()
    if isinstance(node, (Cmp, In, And, Or)):
        return paths(node.left) | paths(node.right)
    if isinstance(node, Not):
        return paths(node.operand)
    raise TypeError(f"not an expression node: {node!r}")


# -- evaluation ---------------------------------------------------------------------------------

class Multi(tuple):  # type: ignore[type-arg]
    """Values of a path through a list field: a comparison holds when any of them satisfies it."""


Resolver = Callable[[str], Any]


def resolve_path(record: Mapping[str, Any], name: str) -> Any:
    """`order.total` -> record["order.total"]; `order.items.kind` -> every item's kind."""
    if name in record:
        return record[name]
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in record:
            values = [record[head]]
            for member in parts[cut:]:
                nxt: list[Any] = []
                for v in values:
                    if isinstance(v, (list, tuple)):
                        nxt.extend(el.get(member) for el in v if isinstance(el, Mapping))
                    elif isinstance(v, Mapping):
                        nxt.append(v.get(member))
                values = nxt
            return Multi(v for v in values if v is not None)
    return None


def _num(v: Any) -> Decimal | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, Decimal):
        return v if v.is_finite() else None
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, str):
        s = v.strip().replace(",", ".")
        if not s or len(s) > 60:
            return None
        try:
            d = Decimal(s)
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None


def _when(v: Any) -> dt.datetime | None:
    if not isinstance(v, (dt.datetime, dt.date, str)):
        return None
    try:
        return to_datetime(v)          # the canonical parser: ISO with Z, naive = UTC
    except ValueError:
        return None


def _coerce(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both sides in one comparable type, or None when they cannot be compared."""
    if a is None or b is None:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, (dt.date, dt.datetime)) or isinstance(b, (dt.date, dt.datetime)):
        x, y = _when(a), _when(b)
        return None if x is None or y is None else (x, y)
    if isinstance(a, (int, float, Decimal)) or isinstance(b, (int, float, Decimal)):
        x, y = _num(a), _num(b)
        return None if x is None or y is None else (x, y)
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def compare(op: str, a: Any, b: Any) -> bool:
    """One scalar comparison with the language's coercions."""
    if op in ("==", "!="):
        if a is None or b is None:
            same = a is None and b is None
        else:
            pair = _coerce(a, b)
            same = pair is not None and pair[0] == pair[1]
        return same if op == "==" else not same
    pair = _coerce(a, b)
    if pair is None:
        return False
    x, y = pair
    try:
        if op == "<":
            return bool(x < y)
        if op == "<=":
            return bool(x <= y)
        if op == ">":
            return bool(x > y)
        if op == ">=":
            return bool(x >= y)
    except TypeError:
        return False
    raise ValueError(f"unknown operator {op}")


def _value(node: Node, get: Resolver) -> Any:
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Path):
        return get(node.name)
    if isinstance(node, ListLit):
        return [_value(x, get) for x in node.items]
    return _truth(node, get)


def _many(v: Any) -> list[Any]:
    return list(v) if isinstance(v, Multi) else [v]


def _truth(node: Node, get: Resolver) -> bool:
    if isinstance(node, And):
        return _truth(node.left, get) and _truth(node.right, get)
    if isinstance(node, Or):
        return _truth(node.left, get) or _truth(node.right, get)
    if isinstance(node, Not):
        return not _truth(node.operand, get)
    if isinstance(node, Cmp):
        lv, rv = _value(node.left, get), _value(node.right, get)
        if node.op == "!=" and (isinstance(lv, Multi) or isinstance(rv, Multi)):
            # "no element equals": the negation of the any-equals test
            return not any(compare("==", a, b) for a in _many(lv) for b in _many(rv))
        return any(compare(node.op, a, b) for a in _many(lv) for b in _many(rv))
    if isinstance(node, In):
        lv, rv = _value(node.left, get), _value(node.right, get)
        if isinstance(rv, (list, tuple)):
            pool = list(rv)
        elif rv is None:
            pool = []
        else:
            pool = [rv]
        found = any(compare("==", a, b) for a in _many(lv) for b in pool)
        return not found if node.negate else found
    if isinstance(node, Lit):
        return bool(node.value)
    if isinstance(node, Path):
        v = get(node.name)
        return any(bool(x) for x in v) if isinstance(v, Multi) else bool(v)
    if isinstance(node, ListLit):
        return bool(node.items)
    raise TypeError(f"not an expression node: {node!r}")


def evaluate(node: Node, record: Mapping[str, Any] | Resolver) -> bool:
    """Truth of a condition against a flat canonical record (or a path resolver)."""
    get = record if callable(record) else (lambda name: resolve_path(record, name))  # type: ignore[arg-type]
    return _truth(node, get)
