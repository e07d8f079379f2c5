"""Logging set-up: structlog, JSON lines in production, console in a terminal; secrets never logged.

One output path: structlog events and stdlib `logging` records (uvicorn, apscheduler, sqlalchemy,
`warnings`) both end in one `logging.StreamHandler` whose `structlog.stdlib.ProcessorFormatter`
renders them the same way. Every event passes `redact_secrets` *before* it leaves structlog's chain
(so no handler ever sees a secret) and stdlib records pass it in the formatter's pre-chain.
Exceptions are formatted to text (`format_exc_info`) before redaction, so secrets in exception
messages and tracebacks are masked too. (This trades rich/pretty tracebacks in the console for
safety: a pretty traceback renders after redaction and can show locals.)

Usage::

    configure_logging(fmt=config.log_format, level="info")
    register_secret(os.environ["ONEC_PASSWORD"])
    log = structlog.get_logger(__name__)
    with bind_run("shop-b24", "orders", run_id):
        log.info("pulled", count=12)
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote, quote_plus

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "MASK",
    "REDACTING_PROCESSORS",
    "bind_run",
    "clear_secrets",
    "configure_logging",
    "is_sensitive_key",
    "redact_secrets",
    "redact_text",
    "register_secret",
    "unregister_secret",
]

MASK = "***"
_MIN_SECRET_LEN = 4

# --- what is secret -------------------------------------------------------------------------------

_SENSITIVE_KEY_RE = re.compile(
    r"token|passw|pwd|secret|authorization|auth(?!or)|webhook|api[_-]?key|apikey|cookie|sessid|"
    r"private[_-]?key|credential",
    re.IGNORECASE,
)
# keys that contain a sensitive word but are not secrets
_NOT_SENSITIVE_KEYS = frozenset({"event", "level", "timestamp", "logger", "integration", "stream", "run_id"})


def is_sensitive_key(key: object) -> bool:
    """True for a key whose value must never be logged (token, password, secret, cookie, ...)."""
    return isinstance(key, str) and key not in _NOT_SENSITIVE_KEYS and bool(_SENSITIVE_KEY_RE.search(key))


_KEY_WORDS = r"[\w.-]*(?:token|passw\w*|pwd|secret|authorization|auth(?!or)\w*|api[_-]?key|apikey|" \
             r"cookie|sessid|webhook\w*|credentials?)[\w.-]*"

_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # Bitrix24 inbound webhook: https://portal.bitrix24.ru/rest/1/abc123def456/crm.deal.list
    (re.compile(r"(/rest/\d+/)([A-Za-z0-9_]{4,})(?=/|$|[\s?#\"'<>),;\]}])"), r"\g<1>" + MASK),
    # user:password@ in URLs
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)"), r"\g<1>" + MASK + r"\g<3>"),
    # Authorization: <scheme> <credentials> / "Authorization": "Bearer ..." / Cookie: a=b; c=d
    (re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
                r"(?:(basic|bearer|digest|negotiate|token|oauth)\s+)?[^\s\"',;}]+"),
     lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK),
    (re.compile(r"(?i)(\b(?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n}]+"), r"\g<1>" + MASK),
    # bare "Basic dXNlcjpw..." / "Bearer eyJ..." (capitalised scheme, or any case with a digit/symbol)
    (re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9._~+/-]{6,}=*"), r"\g<1> " + MASK),
    (re.compile(r"\b(basic|bearer|BASIC|BEARER)\s+(?=[A-Za-z0-9._~+/=-]*[0-9=+/._~-])[A-Za-z0-9._~+/-]{6,}=*"),
     r"\g<1> " + MASK),
    # key=value / "key": "value" / key: value for sensitive keys (query strings, JSON text, messages)
    (re.compile(r"(?i)(\b" + _KEY_WORDS + r"[\"']?\s*(?:=|:\s*)[\"']?)(?!\*\*\*|(?i:basic|bearer|digest|negotiate|token|oauth)\s)([^\s\"'&,;}\])]+)"),
     r"\g<1>" + MASK),
)

# --- registry of concrete secret values -----------------------------------------------------------

_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_re: re.Pattern[str] | None = None


def _rebuild() -> None:
    global _secrets_re
    long_ones = sorted((s for s in _secrets if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True)
    _secrets_re = re.compile("|".join(re.escape(s) for s in long_ones)) if long_ones else None


def register_secret(value: object) -> None:
    """Mask this concrete value (a password or token read from the environment) wherever it appears.

    Its URL-encoded forms are registered too. Values shorter than 4 characters are masked only where
    they are a whole string value (masking every "abc" substring would wreck the logs). None and ""
    are ignored.
    """
    if value is None:
        return
    s = str(value)
    if not s.strip():
        return
    with _lock:
        _secrets.update({s, quote(s, safe=""), quote_plus(s, safe="")})
        _rebuild()


def unregister_secret(value: object) -> None:
    """Stop masking a value registered with `register_secret` (e.g. a rotated token)."""
    if value is None:
        return
    s = str(value)
    with _lock:
        _secrets.difference_update({s, quote(s, safe=""), quote_plus(s, safe="")})
        _rebuild()


def clear_secrets() -> None:
    """Forget all registered secrets (tests)."""
    with _lock:
        _secrets.clear()
        _rebuild()


# --- redaction ------------------------------------------------------------------------------------

def redact_text(s: str) -> str:
    """Mask secrets inside one string: registered values, webhook codes, credentials in URLs and headers."""
    if not s:
        return s
    if s in _secrets:
        return MASK
    rx = _secrets_re
    if rx is not None:
        s = rx.sub(MASK, s)
    for pattern, repl in _PATTERNS:
        s = pattern.sub(repl, s)
    return s


_PLAIN = (int, float, bool, type(None))


def _redact_value(v: Any, depth: int = 0) -> Any:
    if isinstance(v, str):
        return redact_text(v)
    if isinstance(v, _PLAIN):
        return v
    if depth > 20:
        return MASK
    if isinstance(v, Mapping):
        return {k: (MASK if is_sensitive_key(k) and v[k] is not None else _redact_value(v[k], depth + 1))
                for k in v}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_redact_value(x, depth + 1) for x in v]
        return items if isinstance(v, list) else tuple(items)
    if isinstance(v, (bytes, bytearray)):
        text = bytes(v).decode("utf-8", "replace")
        red = redact_text(text)
        return v if red == text else red
    if isinstance(v, BaseException):
        text = f"{type(v).__name__}: {v}"
        return redact_text(text)
    # other objects (URL objects, pydantic models, ...): renderers will str()/repr() them
    try:
        text = str(v)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return f"<unprintable {type(v).__name__}>"
    red = redact_text(text)
    return v if red == text else red


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask sensitive keys (also nested) and secrets inside any string value.

    Run it after `format_exc_info` so exception text is covered.
    """
    for key in list(event_dict):
        if key in ("_record", "_from_structlog", "_logger", "_name"):
            continue
        value = event_dict[key]
        if is_sensitive_key(key) and value is not None:
            event_dict[key] = MASK
        elif key == "exc_info":
            continue  # formatted (and redacted) by format_exc_info before us
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


# --- configuration --------------------------------------------------------------------------------

_TIMESTAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")

#: pass to `structlog.testing.capture_logs(processors=...)` to see events as they would be written
REDACTING_PROCESSORS = (merge_contextvars, structlog.processors.format_exc_info, redact_secrets)


_FIRST_KEYS = ("timestamp", "level", "logger", "event")


def _order_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger, event first: easier to read JSON lines by eye."""
    out = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    out.update(event_dict)
    return out


# httpx logs every request's URL at info, and a Telegram Bot API URL carries the bot's token: only
# its warnings come through (and everything at debug, redacted like the rest)
_CHATTY = ("alembic", "apscheduler.executors", "apscheduler.jobstores", "httpx", "httpcore")


class _SyncdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` installed, so a second call replaces it."""


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001
        return False


def configure_logging(fmt: str = "auto", level: str = "info", stream: IO[str] | None = None) -> None:
    """Configure structlog and stdlib logging.

    fmt: "json" (one JSON object per line: timestamp ISO UTC, level, event, logger, bound keys),
    "console" (pretty, for a terminal) or "auto" (console when `stream` is a TTY, else JSON).
    level: debug, info, warning, error, critical. stream: defaults to sys.stderr.
    May be called again (tests, reload): it replaces its own handler and leaves others alone.
    """
    fmt = (fmt or "auto").lower()
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, got {fmt!r}")
    levelno = logging.getLevelName(str(level).upper())
    if not isinstance(levelno, int):
        raise ValueError(f"unknown log level {level!r}")  # noqa: TRY004
    if stream is None:
        stream = sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not _is_tty(stream))

    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False, default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(stream))

    shared = [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _TIMESTAMPER,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.format_exc_info,
            redact_secrets,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([_order_keys] if use_json else []), renderer],
    )
    handler = _SyncdHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _SyncdHandler):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(levelno)
    logging.captureWarnings(True)  # sqlalchemy & co. warnings -> "py.warnings" logger -> same output
    # libraries that install their own handlers log through ours instead
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    # Their routine news is not the operator's: Alembic's plugin set-up and "Context impl
    # SQLiteImpl" on every start, APScheduler's "Running job"/"executed successfully" on every
    # tick. syncd logs what matters itself (start, runs that did something); their warnings and
    # errors still come through, and `debug` shows everything.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(levelno if levelno <= logging.DEBUG else max(levelno, logging.WARNING))


@contextmanager
def bind_run(integration: str, stream: str, run_id: str | int) -> Iterator[None]:
    """Every log line inside (structlog or stdlib, same thread/task) carries integration, stream, run_id."""
    with bound_contextvars(integration=integration, stream=stream, run_id=str(run_id)):
        yield
