"""The `[rules]` section of the mapping files, as typed models (every key documented in
`mappings/rules.toml`). `parse_rules(raw)` validates shapes, field names, durations and
conditions and raises ConfigError naming the key and the reason.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from syncd.errors import ConfigError
from syncd.rules import expr
from syncd.schema import ENTITY_TYPES, FIELDS, is_field

_DUR = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|min|s)", re.IGNORECASE)
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1}

# Paths a condition may read besides canonical fields: the order's client, whichever it is.
ALIASES = {
    "client.type": "the client type (company.client_type, else person.client_type)",
    "client.responsible": "the client's responsible manager (company, else person)",
    "client.id": "entity id of the client (company, else person)",
    "client.orders_count": "orders of the client in the store, this one included",
    "client.won_count": "won orders of the client in the store",
    "record.created": "true when the record was just created",
    "record.system": "the system the change came from",
}


def parse_duration(text: str | float) -> dt.timedelta:
    """"24h", "30d", "1d12h", "90m", "2w", or a number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return dt.timedelta(seconds=float(text))
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _DUR.finditer(s):
        if s[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _UNIT[m.group(2).lower()]
        pos = m.end()
    if not s or s[pos:].strip() or pos == 0:
        raise ValueError(f"bad duration {text!r} (write e.g. 30m, 24h, 14d, 2w, 1d12h)")
    return dt.timedelta(seconds=total)


def _check_field(name: str, entity: str | None = None) -> str:
    if not is_field(name):
        raise ValueError(f"unknown canonical field {name!r}")
    if entity and not name.startswith(entity + "."):
        raise ValueError(f"{name!r} is not a field of {entity!r}")
    return name


def check_paths(node: expr.Node, where: str) -> None:
    for p in expr.paths(node):
        if p in ALIASES or is_field(p):
            continue
        parts = p.split(".")
        ok = False
        for cut in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:cut])
            if is_field(head):
                spec = FIELDS[head.split(".")[0]][head]
                ok = spec.item is not None and cut == len(parts) - 1 and parts[-1] in spec.item
                break
        if not ok:
            raise ValueError(f"{where}: unknown field {p!r} in condition")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Cond(_Strict):
    """A model with an optional `when` condition, parsed once."""

    when: str | None = None                # condition; the rule (or step) applies only when it holds

    def cond(self, rule: str) -> expr.Node | None:
        return expr.parse(self.when, rule) if self.when else None


Strategy = Literal["fixed", "random", "round_robin", "least_loaded", "keep", "none", "table"]


class AssignStep(_Cond):
    strategy: Strategy | None = None      # default: fixed with `manager`, random with `group`
    name: str | None = None                # a label for stats, warnings and explain
    manager: str | None = None             # one manager id (fixed)
    group: list[str] | None = None         # manager ids (random, round_robin, least_loaded, keep)
    cap: int | None = None                 # least_loaded: managers with this many open orders are full
    only_present: bool | None = None       # default: true for random, false for the others
    unknown_presence_is_present: bool = False   # a manager with no presence reported counts as present
    rows: list[AssignStep] | None = None  # strategy = "table": first matching row wins

    @field_validator("manager", mode="before")
    @classmethod
    def _str_manager(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("group", mode="before")
    @classmethod
    def _str_group(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v

    @model_validator(mode="after")
    def _shape(self) -> AssignStep:
        s = self.kind
        if s == "fixed" and not self.manager:
            raise ValueError("strategy `fixed` needs `manager`")
        if s in ("random", "round_robin", "least_loaded") and not (self.group or self.manager):
            raise ValueError(f"strategy `{s}` needs `group = [manager ids]`")
        if s == "table" and not self.rows:
            raise ValueError("strategy `table` needs `rows = [{ when = …, manager = … }, …]`")
        if s != "table" and self.rows:
            raise ValueError("`rows` belongs to strategy `table`")
        if self.cap is not None and s != "least_loaded":
            raise ValueError("`cap` belongs to strategy `least_loaded`")
        if s == "keep" and self.manager:
            raise ValueError("strategy `keep` takes no manager (a `group` limits whom it keeps)")
        if s == "none" and (self.manager or self.group):
            raise ValueError("strategy `none` takes no manager or group")
        return self

    @property
    def kind(self) -> str:
        if self.strategy:
            return self.strategy
        if self.rows:
            return "table"
        if self.group:
            return "random"
        if self.manager:
            return "fixed"
        return "none"

    @property
    def candidates(self) -> list[str]:
        return list(self.group or ([self.manager] if self.manager else []))

    def label(self, index: int) -> str:
        return self.name or f"#{index + 1} {self.kind}"


class AssignConfig(_Strict):
    system: str | None = None              # whose users / presence (describe().users)
    field: str | None = None               # default <entity>.responsible
    override: bool = False                 # also when the created record already has a responsible
    presence_ttl: float = 60.0             # seconds the users/presence list is cached
    # what counts as an open order for least_loaded
    open_when: str = "order.canceled != true and order.status not in ['completed', 'canceled']"
    chain: list[AssignStep] = Field(default_factory=list)   # steps; the first that yields a manager wins


class DefaultsConfig(_Strict):
    """Canonical fields set on created records (when the source left them empty) and a notice."""

    fields: dict[str, Any] = Field(default_factory=dict)   # canonical field -> value ({placeholders} filled)
    notify: str | None = None              # template; sent to the responsible through `notify_system`
    notify_system: str | None = None       # default: the system of [rules.assign.<entity>]
    override: bool = False                 # set the fields even when the source gave a value

    @model_validator(mode="before")
    @classmethod
    def _split(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out: dict[str, Any] = {"fields": dict(raw.get("fields") or {})}
        for k, v in raw.items():
            if k == "fields":
                continue
            if "." in k:
                out["fields"][k] = v
            else:
                out[k] = v
        return out

    @field_validator("fields")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            _check_field(k)
        return v


class StageRule(_Cond):
    name: str                              # unique name (stats, explain)
    entity: str = "order"                  # entity type
    set: dict[str, Any]                    # canonical fields to set
    pipeline: str | None = None            # only records in this pipeline; its stage order guards
    system: str | None = None              # whose describe().pipelines gives the stage order
    order: list[str] | None = None         # or the stage order given here
    field: str = "order.stage"             # the field whose order must not go backwards
    pipeline_field: str = "order.pipeline"   # the field that holds the pipeline
    allow_backwards: bool = False          # true: may move `field` back along the stage order
    on: Literal["change", "always"] = "change"   # change: when a field the condition reads changed

    @model_validator(mode="after")
    def _fields(self) -> StageRule:
        for k in self.set:
            _check_field(k, self.entity)
        _check_field(self.field)
        _check_field(self.pipeline_field)
        if not self.when:
            raise ValueError("a stage rule needs `when`")
        return self


class TaskSpec(_Strict):
    title: str                             # template of the task's title
    description: str | None = None         # template of its text
    deadline: str | None = None            # duration from when the task is made
    responsible: str | None = None         # default: the record's (or client's) responsible

    @field_validator("deadline")
    @classmethod
    def _dur(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v


class TimerRule(_Cond):
    name: str                              # unique name (a timer fires once per record, rule, stage entry)
    entity: str = "order"                  # entity type
    after: str                             # how long the record must have been in the condition (24h, 14d)
    task: TaskSpec | None = None           # a canonical task, pushed to the system that maps `task`
    notify: str | None = None              # template of a notice to the responsible
    notify_system: str | None = None       # default: the system of [rules.assign.<entity>]
    stage_field: str | None = None         # default <entity>.stage when the entity has one

    @field_validator("after")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> TimerRule:
        if not self.when:
            raise ValueError("a timer needs `when`")
        if self.task is None and self.notify is None:
            raise ValueError("a timer needs `task` or `notify`")
        if self.stage_field:
            _check_field(self.stage_field, self.entity)
        return self


class RepeatConfig(_Strict):
    name: str = "repeat sales"             # task.rule of the tasks made
    after: str                             # how long after the one won order the task is made
    won_when: str = "order.status == 'completed'"   # what "won" means
    task: TaskSpec                         # the task for the client's responsible manager

    @field_validator("after")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v


METRICS = ("turnover", "orders_count", "first_order_at", "last_order_at", "average_order", "won_count")


class MetricsConfig(_Strict):
    window: str = "90d"                    # turnover counts orders dated within it
    # metrics to compute (person.turnover, company.orders_count, …)
    fields: list[Literal["turnover", "orders_count", "first_order_at", "last_order_at",
                         "average_order", "won_count"]] = Field(default_factory=lambda: list(METRICS))
    # whose metrics
    entities: list[Literal["person", "company"]] = Field(default_factory=lambda: ["person", "company"])
    won_when: str = "order.status == 'completed'"   # orders counted by won_count
    exclude_when: str = "order.canceled == true or order.status == 'canceled'"   # orders counted nowhere

    @field_validator("window")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v


class CrossRule(_Cond):
    """When a record of `entity` matches, update related records of `target` (matching
    `target_when`) that share the link field `via` (e.g. the same `order.company`)."""

    name: str                              # unique name (stats, explain)
    entity: str = "order"                  # entity type of the trigger record
    on: Literal["created", "change", "always"] = "created"   # when the trigger is evaluated
    target: str = "order"                  # entity type of the records to update
    via: str = "order.company"             # the link field on the trigger
    target_via: str | None = None          # the link field on the target; default = via
    target_when: str | None = None         # condition on each target record
    first: bool = False                    # only for the first record of `entity` with this `via`
                                           # value that matches `when` (e.g. the first order)
    set: dict[str, Any]                    # canonical fields to set on the targets

    @model_validator(mode="after")
    def _fields(self) -> CrossRule:
        _check_field(self.via, self.entity)
        _check_field(self.target_via or self.via, self.target)
        for k in self.set:
            _check_field(k, self.target)
        return self


class RulesConfig(_Strict):
    # [rules.assign.order] / [rules.assign.lead]: manager assignment of created records
    assign: dict[Literal["order", "lead"], AssignConfig] = Field(default_factory=dict)
    # [rules.defaults.TYPE]: canonical fields set on created records
    defaults: dict[str, DefaultsConfig] = Field(default_factory=dict)
    stages: list[StageRule] = Field(default_factory=list)   # [[rules.stages]]: stage chains from facts
    timers: list[TimerRule] = Field(default_factory=list)   # [[rules.timers]]: tasks/notices after a wait
    repeat_sales: RepeatConfig | None = None   # [rules.repeat_sales]: a task after a client's one won order
    metrics: MetricsConfig | None = None       # [rules.metrics]: customer metrics from the stored orders
    cross: list[CrossRule] = Field(default_factory=list)   # [[rules.cross]]: update related records

    @field_validator("defaults")
    @classmethod
    def _entities(cls, v: dict[str, DefaultsConfig]) -> dict[str, DefaultsConfig]:
        for ent, d in v.items():
            if ent not in ENTITY_TYPES:
                raise ValueError(f"unknown entity type {ent!r}")
            for k in d.fields:
                _check_field(k, ent)
        return v


def _key_path(loc: Any) -> str:
    out = "rules"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _conditions(cfg: RulesConfig) -> list[tuple[str, str, str]]:
    """(key, rule name, source) of every condition in the config."""
    out: list[tuple[str, str, str]] = []

    def steps(prefix: str, chain: list[AssignStep]) -> None:
        for i, st in enumerate(chain):
            if st.when:
                out.append((f"{prefix}[{i}].when", st.label(i), st.when))
            if st.rows:
                steps(f"{prefix}[{i}].rows", st.rows)

    for ent, a in cfg.assign.items():
        steps(f"rules.assign.{ent}.chain", a.chain)
        out.append((f"rules.assign.{ent}.open_when", f"assign {ent} open_when", a.open_when))
    for i, r in enumerate(cfg.stages):
        out.append((f"rules.stages[{i}].when", r.name, r.when or ""))
    for i, tr in enumerate(cfg.timers):
        out.append((f"rules.timers[{i}].when", tr.name, tr.when or ""))
    for i, c in enumerate(cfg.cross):
        if c.when:
            out.append((f"rules.cross[{i}].when", c.name, c.when))
        if c.target_when:
            out.append((f"rules.cross[{i}].target_when", c.name, c.target_when))
    if cfg.repeat_sales:
        out.append(("rules.repeat_sales.won_when", cfg.repeat_sales.name, cfg.repeat_sales.won_when))
    if cfg.metrics:
        out.append(("rules.metrics.won_when", "metrics", cfg.metrics.won_when))
        out.append(("rules.metrics.exclude_when", "metrics", cfg.metrics.exclude_when))
    return out


def parse_rules(raw: dict[str, Any] | RulesConfig | None) -> RulesConfig:
    if isinstance(raw, RulesConfig):
        return raw
    try:
        cfg = RulesConfig.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(err["msg"], key=_key_path(err["loc"])) from None
    for key, name, source in _conditions(cfg):
        try:
            check_paths(expr.parse(source, name), f"rule {name!r}")
        except expr.ExprError as exc:
            raise ConfigError(str(exc), key=key) from None
        except ValueError as exc:
            raise ConfigError(str(exc), key=key) from None
    names = [r.name for r in cfg.stages] + [r.name for r in cfg.timers] + [r.name for r in cfg.cross]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"rule name(s) used twice: {', '.join(sorted(dup))}", key="rules")
    return cfg
