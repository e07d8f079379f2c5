"""The status page's language and clock: message catalogs (gettext, compiled by Babel), the choice
of language per request, and dates in the configured time zone.

Source strings are English; `syncd/locale/<lang>/LC_MESSAGES/syncd.po` translates them (Russian
first: syncd's users are Russian integrators). The compiled `.mo` files ship in the package;
`make catalogs` extracts the strings, updates the `.po` files and compiles them, and
tests/daemon/test_i18n.py fails when a string has no Russian translation or a `.mo` is stale.

Strings are marked with `t._("...")` / `t.ngettext(...)` (a `Lang` called `t`), or `N_("...")`
for strings translated later. Never inside an f-string: the extractor does not look there.
"""

from __future__ import annotations

import datetime as dt
import gettext
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal
from babel.support import Translations

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "syncd"
LANGUAGES = ("ru", "en")          # what the page speaks; the first is the default
DEFAULT = "ru"
COOKIE = "syncd_lang"


def N_(message: str) -> str:
    """Marks a string for extraction, translated where it is shown."""
    return message


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of `lang` (English, the source language, needs none)."""
    if lang == "en":
        return gettext.NullTranslations()
    t = Translations.load(str(LOCALE_DIR), [lang], DOMAIN)
    if not isinstance(t, Translations):      # Babel hands back NullTranslations when the .mo is missing
        raise FileNotFoundError(f"no compiled message catalog for {lang!r} in {LOCALE_DIR} "
                                "(run `make catalogs`)")
    return t


def parse_accept_language(header: str | None) -> list[str]:
    """Language codes of an Accept-Language header, most wanted first (q=0 dropped)."""
    out: list[tuple[float, int, str]] = []
    for i, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        if not tag or tag == "*":
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if q > 0:
            out.append((-q, i, tag.split("-")[0]))
    return [code for _, _, code in sorted(out)]


def negotiate(*, configured: str = "auto", accept_language: str | None = None, chosen: str | None = None) -> str:
    """The page's language: the visitor's own choice (the switch at the top, a cookie), then
    `daemon.language` unless it is `auto`, then the browser's Accept-Language, then Russian."""
    if chosen in LANGUAGES:
        return chosen
    if configured in LANGUAGES:
        return configured
    for code in parse_accept_language(accept_language):
        if code in LANGUAGES:
            return code
    return DEFAULT


@dataclass
class Lang:
    """One request's language and time zone: translate, and format dates, durations, numbers."""

    code: str = DEFAULT
    timezone: str = "Europe/Moscow"
    strict: bool = False                     # tests: remember strings the catalog lacks
    missing: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.code not in LANGUAGES:
            raise ValueError(f"unknown language {self.code!r} (known: {', '.join(LANGUAGES)})")
        self._t = translations(self.code)
        self.tz = ZoneInfo(self.timezone)
        self.locale = Locale.parse(self.code)

    # -- messages -------------------------------------------------------------------------------
    def _(self, message: str) -> str:
        if self.strict:
            self._known(message)
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        if self.strict:
            self._known(singular, plural=True)
        return self._t.ngettext(singular, plural, n)

    def _known(self, message: str, *, plural: bool = False) -> None:
        catalog = getattr(self._t, "_catalog", None)
        if catalog is not None and message and (((message, 0) if plural else message) not in catalog):
            self.missing.add(message)

    # -- dates ----------------------------------------------------------------------------------
    def local(self, v: Any) -> dt.datetime | None:
        v = to_datetime(v)
        return None if v is None else v.astimezone(self.tz)

    def time(self, v: Any, *, seconds: bool = True) -> str:
        """A moment in the configured zone: 02.03.2026 14:05:09 (ru) / 2026-03-02 14:05:09 (en)."""
        d = to_datetime(v)
        if d is None:
            return "" if v in (None, "") else str(v)
        pattern = ("dd.MM.yyyy HH:mm" if self.code == "ru" else "yyyy-MM-dd HH:mm") + (":ss" if seconds else "")
        return format_datetime(d, pattern, tzinfo=self.tz, locale=self.locale)

    def clock(self, v: Any) -> str:
        """Only the time of day (for points on today's charts and runs)."""
        d = to_datetime(v)
        return "" if d is None else format_datetime(d, "HH:mm", tzinfo=self.tz, locale=self.locale)

    def ago(self, v: Any, now: dt.datetime | None = None) -> str:
        """"5 минут назад" / "5 minutes ago"."""
        d = to_datetime(v)
        if d is None:
            return ""
        delta = d - (now or dt.datetime.now(dt.UTC))
        return format_timedelta(delta, add_direction=True, threshold=1.0, locale=self.locale)

    def duration(self, seconds: float | None) -> str:
        """A span: "3 мин 20 с" / "3 min 20 s"; an em dash when unknown."""
        if seconds is None:
            return "—"
        s = round(seconds)
        d, rest = divmod(s, 86400)
        h, rest = divmod(rest, 3600)
        m, sec = divmod(rest, 60)
        units = [(d, self._("{n} d")), (h, self._("{n} h")), (m, self._("{n} min")), (sec, self._("{n} s"))]
        parts = [u.format(n=n) for n, u in units if n]
        return " ".join(parts[:2]) if parts else units[-1][1].format(n=0)

    def number(self, n: Any) -> str:
        try:
            return format_decimal(n, locale=self.locale)
        except (TypeError, ValueError, ArithmeticError):
            return str(n)

    def zone_label(self, now: dt.datetime | None = None) -> str:
        """"Europe/Moscow, UTC+03:00"."""
        off = (now or dt.datetime.now(dt.UTC)).astimezone(self.tz).strftime("%z")
        return f"{self.timezone}, UTC{off[:3]}:{off[3:]}"


def to_datetime(v: Any) -> dt.datetime | None:
    """An aware datetime from a datetime, an ISO string or a unix timestamp (UTC when naive)."""
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return dt.datetime.fromtimestamp(float(v), dt.UTC)
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
    if isinstance(v, dt.datetime):
        return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)
    return None


class Refusal(ValueError):
    """An action refused for a reason the operator reads: English in the API and the log, in the
    page's language on the page. `message` is a catalog msgid (mark it with N_) with {params}."""

    status = 400

    def __init__(self, message: str, **params: Any) -> None:
        self.message, self.params = message, params
        super().__init__(message.format(**params))

    def translate(self, t: Lang) -> str:
        return t._(self.message).format(**self.params)


class Conflict(Refusal):
    """The action cannot be done now (already done, already running, paused)."""

    status = 409


class NotFound(Refusal):
    status = 404
