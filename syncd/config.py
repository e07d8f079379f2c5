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
# Paths systemd hands a unit (StateDirectory= -> STATE_DIRECTORY …): not secrets, and masking them
# would hide every path in the logs.
NOT_SECRET = frozenset({"STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY",
                        "CONFIGURATION_DIRECTORY", "CREDENTIALS_DIRECTORY", "HOME"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaemonSettings(_Strict):
    """The daemon itself: database, HTTP, logs, mappings, timers."""

    # SQLite file (WAL), or postgresql://… to share the work between instances
    database_url: str = "sqlite:///var/lib/syncd/syncd.db"
    # host:port of the HTTP endpoints: /healthz, /stats, /metrics, the page, 1C exchange, webhooks
    listen: str = "127.0.0.1:8787"
    # auto: console in a terminal, JSON lines otherwise
    log_format: Literal["auto", "json", "console"] = "auto"
    # info: starts, stops and the runs that did something; debug: everything
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admin_token: str | None = None         # Bearer token (or page login) for admin actions; none: refused
    # this instance's name in runs, leases and claims, held by one live process at a time
    # (default: made on first start, kept in <state_dir>/instance-id)
    instance: str | None = None
    # mapping files or globs, relative to config.toml; each must match a file
    mappings: list[str] = Field(default_factory=lambda: ["mappings/*.toml"])
    state_dir: str = "/var/lib/syncd"      # files syncd keeps besides the database (1C upload spool)
    push_interval: float = 5.0             # seconds between outbox drains (pulls push as they commit)
    rules_interval: float = 60.0           # seconds between evaluations of timers, repeat sales, metrics
    lease_ttl: float = 120.0               # seconds a job's lease lasts (one instance polls a stream at a time)
    region: str = "RU"                     # country of phone numbers without a code (E.164 match keys)
    # done writes, runs and change-log rows older than this many days are purged daily; 0 keeps all
    retention_days: float = Field(90.0, ge=0)
    # the status page's language: auto (the browser's Accept-Language, Russian when it names
    # neither), ru or en; a visitor may still switch with the page's link
    language: Literal["auto", "ru", "en"] = "auto"
    timezone: str = "Europe/Moscow"        # IANA time zone of the dates on the status page
    # show the integrations' counts, lag and charts on the status page without a login; records,
    # errors and traces always need one
    public_stats: bool = False
    # seconds between scheduled audits (syncd audit on a sample): bound records read back from every
    # system and compared; its finding is syncd_drift_records on /metrics, /stats and the page. 0: off
    audit_interval: float = Field(3600.0, ge=0)
    audit_sample: int = Field(200, ge=1)   # records compared per system in each scheduled audit

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:   # 0: any free port
            raise ValueError("expected host:port, e.g. 127.0.0.1:8787")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name, e.g. Europe/Moscow)") from None
        return v


class PushSettings(_Strict):
    """Retries of writes: transient faults back off with jitter, then dead letters."""

    max_attempts: int = Field(8, ge=1)     # attempts, then the write goes to dead letters (`syncd replay`)
    inline_tries: int = Field(3, ge=1)     # tries inside one claim (short waits, honouring Retry-After)
    base_delay: float = Field(2.0, ge=0)   # outbox backoff: base_delay * 2^attempts seconds, jittered
    max_delay: float = Field(900.0, ge=0)  # longest backoff, seconds
    claim_ttl: float = Field(30.0, gt=0)   # seconds a claim lasts unrenewed: a dead instance's writes are taken after this


class JobSettings(_Strict):
    """One `[[jobs]]` entry: when a stream of a system is polled."""

    system: str                       # a name from [systems]
    stream: str                       # one of that system's streams (`syncd check` lists them)
    every: str | None = None          # interval: "30s", "5m", "1h" (give `every` or `cron`)
    cron: str | None = None           # crontab, 5 fields, UTC: "*/5 * * * *"
    misfire_grace: float = 60.0       # seconds a late run may still start

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
    type: str                         # connector type: shop, bitrix24, onec, memory


class Settings(_Strict):
    """config.toml."""

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)   # [daemon]
    push: PushSettings = Field(default_factory=PushSettings)         # [push]
    systems: dict[str, SystemSettings] = Field(default_factory=dict)  # [systems.NAME] one per system
    jobs: list[JobSettings] = Field(default_factory=list)           # [[jobs]], schedules of the streams
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
            if env[name] and name not in NOT_SECRET:
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
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=file) from None
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
