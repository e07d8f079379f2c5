"""`config.toml` -> typed settings (pydantic v2). Invalid config fails at start: file, key, reason.

Strings may reference the environment as `${NAME}` (or `${NAME:-default}`); credentials should
always come that way. Every value read from the environment is registered with the log
redactor, so it can never appear in a log line, an error or the status page.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from syncd.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaemonSettings(_Strict):
    database_url: str = "sqlite:///var/lib/syncd/syncd.db"
    listen: str = "127.0.0.1:8787"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admin_token: str | None = None
    instance: str | None = None
    mappings: list[str] = Field(default_factory=lambda: ["mappings/*.toml"])
    state_dir: str = "/var/lib/syncd"
    push_interval: float = 5.0
    rules_interval: float = 60.0
    lease_ttl: float = 120.0
    region: str = "RU"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:   # 0: any free port
            raise ValueError("expected host:port, e.g. 127.0.0.1:8787")
        return v


class PushSettings(_Strict):
    max_attempts: int = Field(8, ge=1)
    inline_tries: int = Field(3, ge=1)
    base_delay: float = Field(2.0, ge=0)
    max_delay: float = Field(900.0, ge=0)
    claim_ttl: float = Field(30.0, gt=0)


class JobSettings(_Strict):
    system: str
    stream: str
    every: str | None = None          # "30s", "5m", "1h"
    cron: str | None = None           # crontab: "*/5 * * * *"
    misfire_grace: float = 60.0

    @model_validator(mode="after")
    def _one_trigger(self) -> "JobSettings":
        if bool(self.every) == bool(self.cron):
            raise ValueError("give exactly one of `every` or `cron`")
        if self.every:
            parse_duration(self.every)
        if self.cron and len(self.cron.split()) != 5:
            raise ValueError("cron needs 5 fields: minute hour day month weekday")
        return self


class SystemSettings(BaseModel):
    """`type` picks the connector; the connector's own model validates the rest."""

    model_config = ConfigDict(extra="allow")
    type: str


class Settings(_Strict):
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    systems: dict[str, SystemSettings] = Field(default_factory=dict)
    jobs: list[JobSettings] = Field(default_factory=list)
    path: Path | None = Field(default=None, exclude=True)
    connector_settings: dict[str, Any] = Field(default_factory=dict, exclude=True)
    secrets: list[str] = Field(default_factory=list, exclude=True, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def parse_duration(s: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", s)
    if not m:
        raise ValueError(f"not a duration: {s!r} (use e.g. 30s, 5m, 1h)")
    n, unit = float(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _substitute(value: Any, key: str, env: dict[str, str], secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, f"{key}.{k}" if key else k, env, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{key}[{i}]", env, secrets) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            if env[name]:
                secrets.append(env[name])
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set", key=key)

    return _ENV.sub(repl, value)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def load_settings(path: str | Path, env: dict[str, str] | None = None, *, check_connectors: bool = True
                  ) -> Settings:
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=file) from None
    secrets: list[str] = []
    try:
        raw = _substitute(raw, "", dict(os.environ if env is None else env), secrets)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, key=exc.key) from None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(msg, file=file, key=_loc(err["loc"])) from None
    settings.path = path.resolve()
    settings.secrets = secrets
    for i, job in enumerate(settings.jobs):
        if job.system not in settings.systems:
            raise ConfigError(f"no system named {job.system!r} in [systems]", file=file, key=f"jobs[{i}].system")
    if check_connectors:
        from syncd.registry import connector_type

        for name, sys_settings in settings.systems.items():
            try:
                ctype = connector_type(sys_settings.type)
            except KeyError as exc:
                raise ConfigError(str(exc.args[0]), file=file, key=f"systems.{name}.type") from None
            extra = {k: v for k, v in sys_settings.model_dump().items() if k != "type"}
            try:
                settings.connector_settings[name] = ctype.settings.model_validate(extra)
            except ValidationError as exc:
                err = exc.errors()[0]
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                raise ConfigError(msg, file=file, key=f"systems.{name}.{_loc(err['loc'])}") from None
    return settings
