"""The status page's message catalogs and clock: every string has a Russian translation, the shipped
.mo files are the .po files compiled, the language is chosen as documented, dates are in the
configured time zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from syncd.daemon import i18n
from syncd.daemon.glance import Folded, Throughput
from syncd.daemon.i18n import Lang, negotiate, parse_accept_language
from syncd.daemon.page import glance, login_page, message_page, runs, status_page

REPO = Path(__file__).resolve().parents[2]
PO = REPO / "syncd" / "locale" / "ru" / "LC_MESSAGES" / "syncd.po"
MO = PO.with_suffix(".mo")
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


def _source_messages() -> set[str | tuple[str, ...]]:
    """What `make catalogs` extracts: every marked string of the page's modules."""
    method_map = [("syncd/daemon/**.py", "python"), ("syncd/daemon/templates/**.html", "jinja2")]
    options = {"syncd/daemon/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = set()
    for _file, _line, msg, _comments, _ctx in extract_from_dir(str(REPO), method_map, options_map=options,
                                                                keywords=KEYWORDS):
        found.add(msg)
    return found


def _catalog() -> object:
    with PO.open("rb") as f:
        return read_po(f, locale="ru")


def test_every_message_has_a_russian_translation() -> None:
    cat = _catalog()
    wanted = _source_messages()
    assert len(wanted) > 150            # the extractor found the page's strings (not an empty scan)
    missing, fuzzy, empty = [], [], []
    for msg in wanted:
        key = msg[0] if isinstance(msg, tuple) else msg
        entry = cat.get(key)            # type: ignore[attr-defined]
        if entry is None:
            missing.append(key)
        elif entry.fuzzy:
            fuzzy.append(key)
        elif not entry.string or (isinstance(entry.string, tuple) and not all(entry.string)):
            empty.append(key)
    assert (missing, fuzzy, empty) == ([], [], []), "run `make catalogs`, then translate in " + str(PO)
    plural = [m for m in cat if isinstance(m.id, tuple)]  # type: ignore[attr-defined]
    assert plural and all(len(m.string) == 3 for m in plural)     # Russian has three plural forms


def test_translations_keep_their_placeholders() -> None:
    errors = [(m.id, [str(e) for e in errs]) for m, errs in _catalog().check()]  # type: ignore[attr-defined]
    assert errors == []
    import string

    for m in _catalog():  # type: ignore[attr-defined]
        if not m.id:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strs = m.string if isinstance(m.string, tuple) else (m.string,)
        want = {f for _, f, _, _ in string.Formatter().parse(ids[-1]) if f}
        for s in strs:
            assert {f for _, f, _, _ in string.Formatter().parse(s) if f} == want, (m.id, s)


def test_shipped_mo_is_the_po_compiled() -> None:
    po = _catalog()
    with MO.open("rb") as f:
        mo = read_mo(f)
    def flat(v: object) -> object:
        return tuple(v) if isinstance(v, (list, tuple)) else v

    def pairs(cat: object) -> set[tuple[object, object]]:
        return {(flat(m.id), flat(m.string)) for m in cat if m.id}  # type: ignore[attr-defined]

    assert pairs(mo) == pairs(po), "the .mo is stale: run `make catalogs`"


def test_rendered_pages_use_only_translated_strings(tmp_path: Path) -> None:
    """Every string the page actually asks the catalog for (also ones built at run time) is there."""
    t = Lang("ru", strict=True)
    now = dt.datetime.now(dt.UTC)
    run = {"system": "crm", "stream": "deal", "status": "failed", "started_at": now, "finished_at": now,
           "counts": {k: 1 for k in ("created", "updated", "skipped", "failed", "conflicts", "quarantined",
                                     "review", "planned", "pushed", "dead", "blocked")}, "error": "boom"}
    integ = {"last_run": {"stream": "deal", "started_at": now.isoformat(), "finished_at": now.isoformat(),
                          "result": "failed", "error": "boom", "counts": {}},
             "counts": {"created": 1}, "last_24h": {"created": 2, "failed": 1}, "lag_seconds": 3725.0,
             "outbox": {"pending": 1, "blocked": 2, "dead": 3}, "quarantine_open": 1, "review_open": 1}
    ctx = {"instance": "i", "uptime": 90000.0, "logged_in": True, "admin_enabled": True, "csrf": "c" * 64,
           "notice": "n", "error": "e", "path": "/", "now": now,
           "stats": {"generated_at": now.isoformat(), "integrations": {"crm": integ, "onec": {**integ, "last_run": None}},
                     "totals": {"conflicts_open": 1}, "rules": {"warnings": 5},
                     "checks": {"crm": {"state": "pending"}, "onec": {"state": "mismatch"}},
                     "database": {"size_bytes": 5 * 1024 ** 3}},
           "throughput": {"crm": Throughput(now - dt.timedelta(hours=24))}, "lag_history": {"crm": [(now.timestamp(), 3.0)]},
           "exchanges": {"onec": now.timestamp() - 60}, "paused": {"onec": {}}, "streams": {"crm": ["deal"]},
           "types": {"crm": "bitrix24"}, "backfills": {"crm": {"id": "j1", "state": "running"}},
           "runs": [Folded([run | {"status": "ok", "error": None, "counts": {}}]), run],
           "conflicts": [{"id": 1, "entity_id": "e", "field": "person.comment", "policy": "review",
                          "candidates": [{"system": "crm", "value": "a", "source_time": now}], "created_at": now}],
           "review": [{"id": 2, "system": "crm", "type": "person", "external_id": "c9", "record": {"fields": {"a": 1}},
                       "candidates": ["x" * 32], "reason": "r", "created_at": now}],
           "quarantine": [{"id": 3, "system": "shop", "kind": "order", "external_id": "o", "reason": "r",
                           "raw": "<x/>" * 2000, "created_at": now}],
           "dead": [{"id": 4, "system": "crm", "entity_type": "person", "op": "create", "entity_id": "e",
                     "attempts": 8, "last_error": "e", "created_at": now}]}
    pages = [status_page(t, ctx, str), glance(t, ctx, str), runs(t, ctx, str),     # (no secrets to redact)
             status_page(t, {**ctx, "logged_in": False, "public_stats": True}, str),
             status_page(t, {**ctx, "logged_in": False, "admin_enabled": False}, str),
             login_page(t, str, error="x"), message_page(t, "a", "b", str)]
    for n in (1, 2, 5, 21):
        t.ngettext("{n} run with nothing to do", "{n} runs with nothing to do", n)
    t.duration(0), t.duration(59), t.duration(3600 * 30)
    assert t.missing == set()
    assert "Интеграции" in pages[0] and "Последние запуски" in pages[0]
    assert "5 предупреждений правил" in pages[0] and "1 запуск без изменений" in pages[0]
    assert "работает 1 д 1 ч" in pages[0] and "база данных 5 ГБ" in pages[0]


def test_accept_language_and_the_configured_language() -> None:
    assert parse_accept_language("en-US,en;q=0.9,ru;q=0.8") == ["en", "en", "ru"]
    assert parse_accept_language("de;q=0, ru;q=0.5, en;q=0.6") == ["en", "ru"]
    assert parse_accept_language("garbage;q=x, *") == []
    # auto: the browser's language among ours, Russian otherwise
    assert negotiate(accept_language=None) == "ru"
    assert negotiate(accept_language="de-DE,de;q=0.9") == "ru"
    assert negotiate(accept_language="de-DE,en;q=0.5,ru;q=0.4") == "en"
    assert negotiate(accept_language="ru-RU,ru;q=0.9,en;q=0.8") == "ru"
    # daemon.language set: that, whatever the browser says; the visitor's own switch wins
    assert negotiate(configured="ru", accept_language="en") == "ru"
    assert negotiate(configured="en", accept_language="ru") == "en"
    assert negotiate(configured="ru", accept_language="ru", chosen="en") == "en"
    assert negotiate(chosen="fr", accept_language="en") == "en"


def test_dates_in_the_configured_time_zone() -> None:
    utc = dt.datetime(2026, 3, 2, 21, 30, 5, tzinfo=dt.UTC)
    ru = Lang("ru")
    assert ru.time(utc) == "03.03.2026 00:30:05"                  # Moscow is UTC+3: the next day
    assert ru.time(utc.isoformat()) == ru.time(utc) == ru.time(utc.timestamp())
    assert ru.time(utc.replace(tzinfo=None)) == "03.03.2026 00:30:05"   # naive = UTC (SQLite)
    assert Lang("en").time(utc, seconds=False) == "2026-03-03 00:30"
    assert Lang("ru", "Asia/Vladivostok").time(utc) == "03.03.2026 07:30:05"
    assert Lang("en", "UTC").clock(utc) == "21:30"
    assert ru.zone_label(utc) == "Europe/Moscow, UTC+03:00"
    assert "назад" in ru.ago(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    assert Lang("en").ago(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)) == "5 minutes ago"
    assert ru.duration(None) == "—" and ru.duration(0) == "0 с" and ru.duration(125) == "2 мин 5 с"
    assert Lang("en").duration(90061) == "1 d 1 h"
    assert ru.number(1234567) == "1\xa0234\xa0567"
    assert ru.time(None) == "" and ru.time("not a date") == "not a date"


def test_unknown_language_and_missing_catalog_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown language 'de'"):
        Lang("de")
    i18n.translations.cache_clear()
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    try:
        with pytest.raises(FileNotFoundError, match="make catalogs"):
            Lang("ru")
    finally:
        monkeypatch.undo()
        i18n.translations.cache_clear()
    assert Lang("ru")._("Integrations") == "Интеграции"


def test_timezone_setting_is_checked(tmp_path: Path) -> None:
    from syncd.config import load_settings
    from syncd.errors import ConfigError

    cfg = tmp_path / "config.toml"
    cfg.write_text('[daemon]\ntimezone = "Europe/Mordor"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={})
    assert "daemon.timezone" in str(exc.value) and "Europe/Mordor" in str(exc.value)
    cfg.write_text('[daemon]\nlanguage = "de"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="daemon.language"):
        load_settings(cfg, env={})
    cfg.write_text('[daemon]\nlanguage = "en"\ntimezone = "Asia/Yekaterinburg"\npublic_stats = true\n',
                   encoding="utf-8")
    d = load_settings(cfg, env={}).daemon
    assert (d.language, d.timezone, d.public_stats) == ("en", "Asia/Yekaterinburg", True)
