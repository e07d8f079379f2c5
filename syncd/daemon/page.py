"""Server-rendered HTML of the status page, the login form and short messages.

Every text goes through the message catalogs (`Lang`, syncd/daemon/i18n.py), every date is shown
in the configured time zone, every value goes through `esc` (the secret redactor, then
html.escape), never straight into the markup. The page carries no inline script or style (its
Content-Security-Policy forbids them): /static/page.css and /static/page.js, and the strings the
script shows are handed to it as JSON.

What is on it depends on who looks: without a login, nothing of a customer (no review records,
conflict values, quarantined records, errors or traces) — only the login form and, when
`daemon.public_stats` is on, the integrations' counts, lag and charts.

Sections (logged in): at a glance (integrations with their operations), a record's trace, review,
conflicts, quarantine, dead letters, recent runs. `glance` and `runs` are also served alone
(`/part/glance`, `/part/runs`) for the page's auto-refresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from syncd.daemon.glance import HOURS, Folded, Throughput
from syncd.daemon.i18n import LANGUAGES, N_, Lang

Esc = Callable[[Any], str]
STATIC = Path(__file__).resolve().parent / "static"
REFRESH_SECONDS = 15
RAW_SHOWN = 4000          # characters of a quarantined record shown inline (the API has it whole)

LANGUAGE_NAMES = {"ru": "Русский", "en": "English"}


@cache
def static_version(name: str) -> str:
    """A short hash of a static file, so a new release is never served from a browser's cache."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


# -- building blocks ------------------------------------------------------------------------------
def _doc(t: Lang, title: str, body: str, esc: Esc, *, script: bool = False, data: dict[str, Any] | None = None,
         csrf: str | None = None) -> str:
    head = [f"<!DOCTYPE html>\n<html lang=\"{esc(t.code)}\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\">",
            f"<link rel=\"stylesheet\" href=\"/static/page.css?v={static_version('page.css')}\">"]
    if csrf:
        head.append(f"<meta name=\"csrf\" content=\"{esc(csrf)}\">")
    if data is not None:
        # JSON inside <script type=application/json>: "</" escaped so it cannot close the element
        blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\u0021--")
        head.append(f"<script type=\"application/json\" id=\"page-data\">{blob}</script>")
    if script:
        head.append(f"<script src=\"/static/page.js?v={static_version('page.js')}\" defer></script>")
    return "".join(head) + f"</head><body>{body}</body></html>"


def _csrf_input(csrf: str | None, esc: Esc) -> str:
    return f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(csrf)}\">" if csrf else ""


def _form(action: str, inner: str, csrf: str | None, esc: Esc, cls: str = "inline") -> str:
    return (f"<form class=\"{cls}\" method=\"post\" action=\"{esc(action)}\">"
            f"{_csrf_input(csrf, esc)}{inner}</form>")


def _button(label: str, esc: Esc, *, name: str = "", value: str = "", cls: str = "", attrs: str = "") -> str:
    nv = f" name=\"{esc(name)}\" value=\"{esc(value)}\"" if name else ""
    c = f" class=\"{cls}\"" if cls else ""
    return f"<button type=\"submit\"{nv}{c}{attrs}>{esc(label)}</button>"


def _section(title: str, count: int | None, inner: str, esc: Esc, sid: str, *, refresh: str | None = None,
             tools: str = "", after: str = "") -> str:
    """A section; with `refresh`, page.js reloads its body from that URL (`after` stays put)."""
    n = f" <span class=\"n\">({count})</span>" if count is not None else ""
    r = f" data-refresh=\"{esc(refresh)}\"" if refresh else ""
    tl = f"<span class=\"tools\">{tools}</span>" if tools else ""
    return (f"<section id=\"{sid}\"{r}><h2>{esc(title)}{n}{tl}</h2><div class=\"body\">{inner}</div>"
            f"{after}</section>")


def _table(headers: Iterable[tuple[str, str]], rows: list[str], empty: str, esc: Esc) -> str:
    if not rows:
        return f"<p class=\"empty\">{esc(empty)}</p>"
    th = "".join(f"<th class=\"{c}\">{esc(h)}</th>" for h, c in headers)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def fmt_value(v: Any) -> str:
    if v is None:
        return "∅"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _num(t: Lang, v: Any) -> str:
    return t.number(v or 0)


# -- charts ---------------------------------------------------------------------------------------
CHART_W, CHART_H = 144, 34


def throughput_chart(t: Lang, tp: Throughput, esc: Esc) -> str:
    """24 hourly bars: records taken in + writes made; failures in red at the foot of the bar."""
    _ = t._
    totals = tp.total
    top = max([*totals, *tp.failed, 1])
    bw = CHART_W / HOURS
    parts = []
    for i, (n, f) in enumerate(zip(totals, tp.failed)):
        x = i * bw
        start = tp.start + dt.timedelta(hours=i)
        tip = _("{start}–{end}: {records} in, {writes} written, {failed} failed").format(
            start=t.clock(start), end=t.clock(start + dt.timedelta(hours=1)), records=t.number(tp.records_in[i]),
            writes=t.number(tp.records_out[i]), failed=t.number(f))
        h = 0 if n == 0 else max(1.5, (CHART_H - 2) * n / top)
        fh = 0 if f == 0 else max(1.5, (CHART_H - 2) * f / top)
        parts.append(f"<g><title>{esc(tip)}</title>"
                     f"<rect class=\"hit\" x=\"{x:.1f}\" y=\"0\" width=\"{bw:.1f}\" height=\"{CHART_H}\" fill=\"transparent\"/>"
                     + (f"<rect class=\"bar\" x=\"{x + 0.5:.1f}\" y=\"{CHART_H - h:.1f}\" width=\"{bw - 1:.1f}\" "
                        f"height=\"{h:.1f}\"/>" if h else "")
                     + (f"<rect class=\"fail\" x=\"{x + 0.5:.1f}\" y=\"{CHART_H - fh:.1f}\" width=\"{bw - 1:.1f}\" "
                        f"height=\"{fh:.1f}\"/>" if fh else "") + "</g>")
    label = _("Records per hour, last 24 h (peak {n})").format(n=t.number(max(totals) if totals else 0))
    return (f"<svg class=\"spark throughput\" viewBox=\"0 0 {CHART_W} {CHART_H}\" width=\"{CHART_W}\" "
            f"height=\"{CHART_H}\" role=\"img\" aria-label=\"{esc(label)}\"><title>{esc(label)}</title>"
            f"<line class=\"axis\" x1=\"0\" y1=\"{CHART_H - 0.5}\" x2=\"{CHART_W}\" y2=\"{CHART_H - 0.5}\"/>"
            f"{''.join(parts)}</svg>")


def lag_chart(t: Lang, points: list[tuple[float, float]], now: dt.datetime, esc: Esc) -> str:
    """The lag over the last 24 h as a line (sampled every few minutes by the daemon)."""
    _ = t._
    end = now.timestamp()
    start = end - HOURS * 3600
    top = max([p[1] for p in points] + [1.0])
    label = _("Lag, last 24 h (max {max})").format(max=t.duration(max([p[1] for p in points], default=0)))
    if not points:
        nodata = _("no samples yet")
        return (f"<svg class=\"spark lag-chart\" viewBox=\"0 0 {CHART_W} {CHART_H}\" width=\"{CHART_W}\" "
                f"height=\"{CHART_H}\" role=\"img\" aria-label=\"{esc(label)}\"><title>{esc(label)}</title>"
                f"<line class=\"axis\" x1=\"0\" y1=\"{CHART_H - 0.5}\" x2=\"{CHART_W}\" y2=\"{CHART_H - 0.5}\"/>"
                f"<text x=\"4\" y=\"{CHART_H - 6}\" font-size=\"10\" fill=\"#667085\">{esc(nodata)}</text></svg>")
    coords = []
    for ts, lag in points:
        x = max(0.0, min(CHART_W, (ts - start) / (end - start) * CHART_W))
        y = (CHART_H - 1) - (CHART_H - 3) * lag / top
        coords.append(f"{x:.1f},{y:.1f}")
    if len(coords) == 1:
        coords.append(coords[0].replace(coords[0].split(",")[0], f"{CHART_W:.1f}", 1))
    return (f"<svg class=\"spark lag-chart\" viewBox=\"0 0 {CHART_W} {CHART_H}\" width=\"{CHART_W}\" "
            f"height=\"{CHART_H}\" role=\"img\" aria-label=\"{esc(label)}\"><title>{esc(label)}</title>"
            f"<line class=\"axis\" x1=\"0\" y1=\"{CHART_H - 0.5}\" x2=\"{CHART_W}\" y2=\"{CHART_H - 0.5}\"/>"
            f"<polyline class=\"lag\" points=\"{' '.join(coords)}\"/></svg>")


# -- the page -------------------------------------------------------------------------------------
# how a person names a system that fetches its documents itself (stats' waiting_peer), by type
PEER_NAMES = {"onec": "1С"}
CHECK_STATES = {"pending": N_("checking…"), "ok": N_("connected"), "unreachable": N_("unreachable"),
                "mismatch": N_("mappings do not match")}
RUN_RESULTS = {"ok": N_("ok"), "failed": N_("failed"), "running": N_("running")}
COUNT_NAMES = {"created": N_("created"), "updated": N_("updated"), "skipped": N_("skipped"),
               "failed": N_("failed"), "conflicts": N_("conflicts"), "quarantined": N_("quarantined"),
               "review": N_("to review"), "planned": N_("planned"), "pushed": N_("written"), "dead": N_("dead"),
               "blocked": N_("blocked")}


def _counts_text(t: Lang, counts: dict[str, Any]) -> str:
    return ", ".join(t._(COUNT_NAMES.get(k, k)) + " " + t.number(v) for k, v in counts.items() if v)


def _header(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    _ = t._
    csrf = ctx.get("csrf")
    stats = ctx.get("stats") or {}
    meta = [_("instance {name}").format(name=ctx["instance"]), _("up {span}").format(span=t.duration(ctx["uptime"])),
            _("time zone {zone}").format(zone=t.zone_label())]
    db = (stats.get("database") or {}).get("size_bytes") if ctx.get("logged_in") else None
    if db is not None:
        meta.append(_("database {size}").format(size=_size(t, db)))
    langs = " · ".join(f"<b>{esc(LANGUAGE_NAMES[c])}</b>" if c == t.code else
                       f"<a href=\"/lang/{c}?next={esc(quote(ctx.get('path') or '/'))}\" hreflang=\"{c}\">"
                       f"{esc(LANGUAGE_NAMES[c])}</a>" for c in LANGUAGES)
    if ctx.get("logged_in"):
        auth = _form("/logout", "<span>" + esc(_("admin")) + "</span> "
                     + _button(_("Log out"), esc, cls="link", attrs=" id=\"logout\""), csrf, esc)
    elif ctx.get("admin_enabled"):
        label = _("Log in")
        auth = f"<a href=\"/login\" id=\"login-link\">{esc(label)}</a>"
    else:
        label = _("admin login disabled (no daemon.admin_token)")
        auth = f"<span class=\"small\">{esc(label)}</span>"
    metas = "".join(f"<span class=\"meta\">{esc(m)}</span>" for m in meta)
    return (f"<header><h1>syncd</h1>{metas}<span class=\"right\"><span class=\"lang\">{langs}</span>"
            f"<span class=\"auth\">{auth}</span></span></header>")


def _size(t: Lang, n: int) -> str:
    _ = t._
    units = [_("{n} B"), _("{n} KB"), _("{n} MB"), _("{n} GB")]
    v = float(n)
    for i, u in enumerate(units):
        if v < 1024 or i == len(units) - 1:
            return u.format(n=t.number(round(v, 1) if i else int(v)))
        v /= 1024
    return str(n)


def _notices(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    out = []
    if ctx.get("notice"):
        out.append(f"<div class=\"notice\" id=\"notice\" role=\"status\">{esc(ctx['notice'])}</div>")
    if ctx.get("error"):
        out.append(f"<div class=\"error\" id=\"error\" role=\"alert\">{esc(ctx['error'])}</div>")
    return "".join(out)


def _last_run_cell(t: Lang, it: dict[str, Any], exchange: float | None, esc: Esc, *, details: bool) -> str:
    _ = t._
    run = it.get("last_run")
    out = []
    if run:
        result = run.get("result") or ""
        cls = {"ok": "ok", "failed": "failed", "running": "running"}.get(result, "")
        when = run.get("finished_at") or run.get("started_at")
        res_label = _(RUN_RESULTS.get(result, result)) if result in RUN_RESULTS else result
        out.append(f"<span class=\"{cls}\">{esc(res_label)}</span> <span class=\"muted small\">{esc(run.get('stream'))}"
                   f"</span><div class=\"small muted\" title=\"{esc(t.time(when))}\">{esc(t.ago(when))}</div>")
        if details and run.get("error"):
            out.append(f"<div class=\"small bad\">{esc(run['error'])}</div>")
    if exchange is not None:
        label = _("last exchange {ago}").format(ago=t.ago(exchange))
        out.append(f"<div class=\"small exchange\" data-k=\"last_exchange\" title=\"{esc(t.time(exchange))}\">"
                   f"{esc(label)}</div>")
    if not out:
        never = _("never")
        out.append(f"<span class=\"muted\">{esc(never)}</span>")
    return "".join(out)


def glance(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    """The integrations at a glance; with operations when logged in."""
    _ = t._
    stats = ctx["stats"]
    logged_in = bool(ctx.get("logged_in"))
    checks = stats.get("checks") or {}
    paused = ctx.get("paused") or {}
    exchanges = ctx.get("exchanges") or {}
    tps: dict[str, Throughput] = ctx.get("throughput") or {}
    lags = ctx.get("lag_history") or {}
    now = ctx.get("now") or dt.datetime.now(dt.UTC)
    heads = [(_("Integration"), ""), (_("Last run"), ""), (_("Created, 24 h"), "num"), (_("Updated, 24 h"), "num"),
             (_("Failed, 24 h"), "num"), (_("Lag"), "num"), (_("Waiting"), "num"), (_("Blocked"), "num"),
             (_("Dead"), "num"), (_("Last 24 h: records per hour · lag"), "")]
    rows = []
    for name, it in stats.get("integrations", {}).items():
        day = it.get("last_24h", {})
        ob = it.get("outbox", {})
        badges = []
        chk = checks.get(name)
        if chk:
            state = chk.get("state", "")
            cls = {"ok": "ok", "unreachable": "bad", "mismatch": "bad"}.get(state, "warn")
            tip = chk.get("detail", "") if logged_in else ""
            shown = _(CHECK_STATES[state]) if state in CHECK_STATES else state
            badges.append(f"<span class=\"badge {cls}\" data-k=\"check\" title=\"{esc(tip)}\">{esc(shown)}</span>")
        if name in paused:
            paused_label = _("paused")
            badges.append(f"<span class=\"badge warn\" data-k=\"paused\">{esc(paused_label)}</span>")
        waiting = it.get("waiting_peer")
        if waiting and waiting.get("documents"):
            peer = PEER_NAMES.get(ctx.get("types", {}).get(name, ""), name)
            waiting_label = _("waiting for {peer}: {n} since {since}, last exchange {when}").format(
                peer=peer, n=t.number(waiting["documents"]), since=t.time(waiting.get("since")),
                when=t.time(waiting["last_exchange"]) if waiting.get("last_exchange") else _("never"))
            badges.append(f"<span class=\"badge warn\" data-k=\"waiting_peer\">{esc(waiting_label)}</span>")
        day_counts = it.get("last_24h", {})
        if day_counts.get("uncreated"):
            uncreated_label = _("not created elsewhere (create = false): {n}").format(
                n=t.number(day_counts["uncreated"]))
            badges.append(f"<span class=\"badge warn\" data-k=\"uncreated\">{esc(uncreated_label)}</span>")
        if it.get("drift_records"):
            drift_label = _("out of step: {n}").format(n=t.number(it["drift_records"]))
            badges.append(f"<span class=\"badge bad\" data-k=\"drift\">{esc(drift_label)}</span>")
        since = it.get("counts", {})
        since_tip = _("since start: {counts}").format(counts=_counts_text(t, since) or "—")
        nums = "".join(
            f"<td class=\"num{' bad' if k == 'failed' and day.get(k) else ''}\" data-k=\"{k}\" title=\"{esc(since_tip)}\">"
            f"{esc(_num(t, day.get(k)))}</td>" for k in ("created", "updated", "failed"))
        lag = it.get("lag_seconds")
        charts = ""
        if name in tps:
            charts = (f"<div class=\"charts\">{throughput_chart(t, tps[name], esc)}"
                      f"{lag_chart(t, lags.get(name, []), now, esc)}</div>")
        ops = f"<div class=\"actions\">{_operations(t, name, ctx, esc)}</div>" if logged_in else ""
        dead_cls = " bad" if ob.get("dead") else ""
        rows.append(
            f"<tr id=\"integration-{esc(name)}\" class=\"integration\" data-system=\"{esc(name)}\">"
            f"<td class=\"name\"><b>{esc(name)}</b> <span class=\"small muted\">{esc(ctx.get('types', {}).get(name, ''))}"
            f"</span><div>{' '.join(badges)}</div>{ops}</td>"
            f"<td class=\"last-run\">{_last_run_cell(t, it, exchanges.get(name), esc, details=logged_in)}</td>{nums}"
            f"<td class=\"num\" data-k=\"lag\">{esc(t.duration(lag))}</td>"
            f"<td class=\"num\" data-k=\"outbox_pending\">{esc(_num(t, ob.get('pending')))}</td>"
            f"<td class=\"num\" data-k=\"outbox_blocked\">{esc(_num(t, ob.get('blocked')))}</td>"
            f"<td class=\"num{dead_cls}\" data-k=\"outbox_dead\">{esc(_num(t, ob.get('dead')))}</td>"
            f"<td>{charts}</td></tr>")
    totals = stats.get("totals", {})
    summary = _("Open conflicts: {conflicts} · to review: {review} · in quarantine: {quarantine} · "
                "writes waiting: {pending}, blocked: {blocked}, dead: {dead}").format(
        conflicts=t.number(totals.get("conflicts_open", 0)), review=t.number(totals.get("review_open", 0)),
        quarantine=t.number(totals.get("quarantine_open", 0)), pending=t.number(totals.get("outbox_pending", 0)),
        blocked=t.number(totals.get("outbox_blocked", 0)), dead=t.number(totals.get("outbox_dead", 0)))
    if totals.get("outbox_waiting"):
        summary += " · " + _("waiting to be fetched: {n}").format(n=t.number(totals["outbox_waiting"]))
    last_audit = stats.get("audit")
    if last_audit:
        summary += " · " + _("out of step: {n} (audit {time})").format(
            n=t.number(last_audit.get("drift_records", 0)), time=t.time(last_audit.get("at")))
    rules = stats.get("rules") or {}
    if rules.get("warnings"):
        summary += " · " + t.ngettext("{n} rule warning", "{n} rule warnings", rules["warnings"]).format(
            n=t.number(rules["warnings"]))
    updated = _("updated {time}").format(time=t.time(stats.get("generated_at")))
    return (_table(heads, rows, _("No integrations configured."), esc)
            + f"<p class=\"small muted\">{esc(summary)} · <span class=\"updated\">{esc(updated)}</span></p>")


def _operations(t: Lang, name: str, ctx: dict[str, Any], esc: Esc) -> str:
    _ = t._
    csrf = ctx.get("csrf")
    has_streams = bool((ctx.get("streams") or {}).get(name))
    paused = name in (ctx.get("paused") or {})
    check, period = _("Check"), _("Import a period…")
    out = [f"<button type=\"button\" data-action=\"check\" data-system=\"{esc(name)}\">{esc(check)}</button>"]
    if has_streams:
        out.append(_form(f"/admin/run/{name}", _button(_("Run now"), esc, attrs=" data-k=\"run\""
                                                      + (" disabled" if paused else "")), csrf, esc))
        out.append(f"<button type=\"button\" data-action=\"backfill-open\" data-system=\"{esc(name)}\""
                   f"{' disabled' if paused else ''}>{esc(period)}</button>")
    if paused:
        out.append(_form(f"/admin/resume/{name}", _button(_("Resume"), esc, cls="primary", attrs=" data-k=\"resume\""),
                         csrf, esc))
    else:
        out.append(_form(f"/admin/pause/{name}", _button(_("Pause"), esc, attrs=" data-k=\"pause\""), csrf, esc))
    return "".join(out)


def _panels(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    """Per integration: where a check's findings and a backfill's form and progress appear (outside
    the auto-refreshed table, so a refresh never wipes them)."""
    _ = t._
    out = []
    latest = ctx.get("backfills") or {}
    default_since = (dt.datetime.now(t.tz) - dt.timedelta(days=30)).date().isoformat()
    today = dt.datetime.now(t.tz).date().isoformat()
    for name in ctx["stats"].get("integrations", {}):
        job = latest.get(name)
        running = job is not None and job["state"] in ("running", "pushing")
        has_streams = bool((ctx.get("streams") or {}).get(name))
        backfill = ""
        if has_streams:
            presets = "".join(f"<button type=\"button\" data-action=\"since\" data-days=\"{d}\">{esc(lbl)}</button>"
                              for d, lbl in ((7, _("7 days")), (30, _("30 days")), (90, _("90 days")),
                                             (365, _("a year"))))
            job_attr = f" data-job=\"{esc(job['id'])}\"" if running and job else ""
            since_label, start = _("Import records changed since"), _("Start import")
            backfill = (
                f"<div class=\"backfill\"{job_attr}><form class=\"inline backfill-form\" method=\"post\" "
                f"action=\"/admin/backfill/{esc(name)}\">{_csrf_input(ctx.get('csrf'), esc)}"
                f"<label>{esc(since_label)} <input type=\"date\" name=\"since\" "
                f"value=\"{default_since}\" max=\"{today}\" required></label>{presets}"
                f"{_button(start, esc, cls='primary', attrs=' data-k=start-backfill')}</form>"
                f"<div class=\"progress\" hidden><progress max=\"100\" value=\"0\"></progress>"
                f"<span class=\"progress-text small\"></span><div class=\"progress-detail small muted\"></div></div></div>")
        title, close = _("Operations: {system}").format(system=name), _("close")
        out.append(f"<div class=\"panel\" id=\"panel-{esc(name)}\" data-system=\"{esc(name)}\""
                   f"{'' if running else ' hidden'}><h3>{esc(title)}<button type=\"button\" class=\"link close\" "
                   f"data-action=\"panel-close\">{esc(close)}</button></h3>"
                   f"<div class=\"check-result\" hidden></div>{backfill}</div>")
    return f"<div id=\"panels\">{''.join(out)}</div>"


def _trace_section(t: Lang, esc: Esc) -> str:
    _ = t._
    placeholder = _("order number, phone, e-mail, ИНН or an id in any system")
    show = _("Show the story")
    inner = (f"<form class=\"inline\" id=\"trace-form\" role=\"search\"><input type=\"search\" name=\"q\" "
             f"id=\"trace-q\" size=\"48\" placeholder=\"{esc(placeholder)}\" required>"
             f"{_button(show, esc, cls='primary', attrs=' id=trace-submit')}</form>"
             "<div id=\"trace-result\" aria-live=\"polite\"></div>")
    return _section(_("A record's story"), None, inner, esc, "trace")


def _review_section(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    _ = t._
    csrf = ctx.get("csrf")
    rows = []
    for rv in ctx["review"]:
        rid = rv["id"]
        action = f"/admin/review/{rid}/resolve"
        rec = rv.get("record") or {}
        fields = ", ".join(f"{k}={fmt_value(v)}" for k, v in (rec.get("fields") or {}).items())
        cands = [c for c in (rv.get("candidates") or []) if c]
        binds = "".join(_button(_("bind to {id}").format(id=c[:12]), esc, name="entity_id", value=c) for c in cands)
        placeholder, find = _("name, phone, e-mail or ИНН"), _("Find")
        search = (f"<form class=\"inline entity-search\" data-review=\"{esc(rid)}\" data-type=\"{esc(rv.get('type'))}\">"
                  f"<input type=\"search\" name=\"q\" size=\"26\" placeholder=\"{esc(placeholder)}\">"
                  f"{_button(find, esc)}</form><ul class=\"results\" hidden></ul>")
        acts = (_form(action, "<input type=\"hidden\" name=\"create\" value=\"1\">"
                      + _button(_("create new"), esc, attrs=" data-k=create"), csrf, esc)
                + (_form(action, binds, csrf, esc) if binds else "") + search)
        rows.append(f"<tr id=\"review-{esc(rid)}\" class=\"review\"><td class=\"num\">{esc(rid)}</td>"
                    f"<td>{esc(rv.get('system'))}</td><td>{esc(rv.get('type'))}</td>"
                    f"<td class=\"mono\">{esc(rv.get('external_id'))}</td><td class=\"small\">{esc(fields)}</td>"
                    f"<td class=\"small\">{esc(rv.get('reason'))}</td>"
                    f"<td class=\"small nowrap\">{esc(t.time(rv.get('created_at')))}</td><td>{acts}</td></tr>")
    return _section(_("To review: who is this?"), len(ctx["review"]), _table(
        [("#", "num"), (_("System"), ""), (_("Type"), ""), (_("External id"), ""), (_("Record"), ""),
         (_("Reason"), ""), (_("Since"), ""), (_("Decision"), "")], rows, _("Nothing to review."), esc), esc, "review")


def _conflicts_section(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    _ = t._
    csrf = ctx.get("csrf")
    rows = []
    for cf in ctx["conflicts"]:
        cid = cf["id"]
        action = f"/admin/conflicts/{cid}/resolve"
        cands = "".join(f"<span class=\"cand\"><b>{esc(cd.get('system'))}</b> {esc(fmt_value(cd.get('value')))}"
                        f" <span class=\"muted small\">{esc(t.time(cd.get('source_time')))}</span></span>"
                        for cd in cf.get("candidates", []))
        systems: list[str] = []
        for cd in cf.get("candidates", []):
            if cd.get("system") and cd["system"] not in systems:
                systems.append(cd["system"])
        takes = "".join(_button(_("take {system}").format(system=s), esc, name="take", value=s, cls="take")
                        for s in systems)
        value = _("value")
        acts = (_form(action, takes, csrf, esc)
                + _form(action, f"<input type=\"text\" name=\"value\" placeholder=\"{esc(value)}\" size=\"14\">"
                        + _button(_("set"), esc), csrf, esc))
        rows.append(f"<tr id=\"conflict-{esc(cid)}\" class=\"conflict\"><td class=\"num\">{esc(cid)}</td>"
                    f"<td class=\"mono\">{esc(cf.get('entity_id'))}</td><td>{esc(cf.get('field'))}</td>"
                    f"<td>{cands}</td><td>{esc(cf.get('policy'))}</td>"
                    f"<td class=\"small nowrap\">{esc(t.time(cf.get('created_at')))}</td><td>{acts}</td></tr>")
    return _section(_("Conflicts"), len(ctx["conflicts"]), _table(
        [("#", "num"), (_("Entity"), ""), (_("Field"), ""), (_("Values"), ""), (_("Policy"), ""), (_("Since"), ""),
         (_("Decision"), "")], rows, _("No open conflicts."), esc), esc, "conflicts")


def _quarantine_section(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    _ = t._
    csrf = ctx.get("csrf")
    rows = []
    for q in ctx["quarantine"]:
        qid = q["id"]
        raw = q.get("raw") or ""
        shown = raw[:RAW_SHOWN]
        more = ""
        if len(raw) > RAW_SHOWN:
            more = (f"<a href=\"/api/quarantine/{esc(qid)}\">"
                    + esc(_("whole record ({n} characters)").format(n=t.number(len(raw)))) + "</a>")
        as_received = _("record as received")
        raw_html = (f"<details><summary class=\"small\">{esc(as_received)}</summary>"
                    f"<pre class=\"raw\">{esc(shown)}</pre>{more}</details>") if raw else ""
        acts = _form(f"/admin/quarantine/{qid}/release", _button(_("take in again"), esc, attrs=" data-k=release"),
                     csrf, esc)
        rows.append(f"<tr id=\"quarantine-{esc(qid)}\" class=\"quarantine\"><td class=\"num\">{esc(qid)}</td>"
                    f"<td>{esc(q.get('system'))}</td><td>{esc(q.get('kind'))}</td>"
                    f"<td class=\"mono\">{esc(q.get('external_id'))}</td><td class=\"small\">{esc(q.get('reason'))}"
                    f"{raw_html}</td><td class=\"small nowrap\">{esc(t.time(q.get('created_at')))}</td>"
                    f"<td>{acts}</td></tr>")
    return _section(_("Quarantine"), len(ctx["quarantine"]), _table(
        [("#", "num"), (_("System"), ""), (_("Kind"), ""), (_("External id"), ""), (_("Reason"), ""),
         (_("Since"), ""), (_("Action"), "")], rows, _("Quarantine is empty."), esc), esc, "quarantine")


def _dead_section(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    _ = t._
    csrf = ctx.get("csrf")
    rows = []
    for d in ctx["dead"]:
        did = d["id"]
        acts = _form("/admin/replay", f"<input type=\"hidden\" name=\"ids\" value=\"{esc(did)}\">"
                     + _button(_("send again"), esc, attrs=" data-k=replay"), csrf, esc)
        rows.append(f"<tr id=\"dead-{esc(did)}\" class=\"dead\"><td class=\"num\">{esc(did)}</td>"
                    f"<td>{esc(d.get('system'))}</td><td>{esc(d.get('entity_type'))}</td><td>{esc(d.get('op'))}</td>"
                    f"<td class=\"mono\">{esc(d.get('entity_id'))}</td><td class=\"num\">{esc(d.get('attempts'))}</td>"
                    f"<td class=\"small bad\">{esc(d.get('last_error'))}</td>"
                    f"<td class=\"small nowrap\">{esc(t.time(d.get('updated_at') or d.get('created_at')))}</td>"
                    f"<td>{acts}</td></tr>")
    all_btn = (_form("/admin/replay", _button(_("send all again"), esc, attrs=" data-k=replay-all"), csrf, esc)
               if ctx["dead"] else "")
    return _section(_("Writes that failed (dead letters)"), len(ctx["dead"]), _table(
        [("#", "num"), (_("System"), ""), (_("Type"), ""), (_("Operation"), ""), (_("Entity"), ""),
         (_("Attempts"), "num"), (_("Last error"), ""), (_("When"), ""), (_("Action"), "")], rows,
        _("No failed writes."), esc) + all_btn, esc, "dead")


def runs(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    """Recent runs, newest first; stretches of runs that did nothing folded into one line."""
    _ = t._
    rows = []
    for r in ctx["runs"]:
        if isinstance(r, Folded):
            n = len(r.runs)
            text = t.ngettext("{n} run with nothing to do", "{n} runs with nothing to do", n).format(n=t.number(n))
            span = _("{first} – {last}").format(first=t.time(r.first), last=t.time(r.last))
            streams = ", ".join(f"{name} ×{k}" for name, k in r.streams)
            rows.append(f"<tr class=\"folded\"><td class=\"nowrap\">{esc(span)}</td>"
                        f"<td colspan=\"3\">{esc(text)}</td><td colspan=\"2\">{esc(streams)}</td></tr>")
            continue
        status = r.get("status") or ""
        cls = {"ok": "ok", "failed": "failed", "running": "running"}.get(status, "")
        label = _(RUN_RESULTS[status]) if status in RUN_RESULTS else status
        rows.append(f"<tr class=\"run\"><td class=\"nowrap\">{esc(t.time(r.get('started_at')))}</td>"
                    f"<td>{esc(r.get('system'))}</td><td>{esc(r.get('stream'))}</td><td class=\"{cls}\">{esc(label)}</td>"
                    f"<td class=\"small\">{esc(_counts_text(t, r.get('counts') or {}))}</td>"
                    f"<td class=\"small bad\">{esc(r.get('error'))}</td></tr>")
    return _table([(_("Started"), ""), (_("System"), ""), (_("Stream"), ""), (_("Result"), ""), (_("Counts"), ""),
                   (_("Error"), "")], rows, _("No runs yet."), esc)


def script_strings(t: Lang) -> dict[str, str]:
    """What page.js shows, translated here (the script has no strings of its own)."""
    _ = t._
    return {
        "checking": _("Checking…"), "check_ok": _("All checks passed."), "check_failed": _("Some checks failed."),
        "reading": _("reading"), "waiting": _("waiting"),
        "done": _("done"), "failed": _("failed"), "pushing": _("writing to the systems"),
        "records_read": _("records read: {n}"), "writes_left": _("writes left: {n} of {total}"),
        "backfill_done": _("Import finished."), "backfill_failed": _("Import failed:"),
        "searching": _("Searching…"), "no_results": _("Nothing found."), "bind": _("Bind to this one"),
        "trace_loading": _("Looking for the record…"), "trace_none": _("No record found for “{q}”."),
        "trace_ids": _("Ids"), "trace_open": _("open"), "trace_events": _("What happened"),
        "trace_no_events": _("No events kept for this record (older ones are purged after the retention period)."),
        "kind_change": _("change"), "kind_decision": _("decision"), "kind_write": _("write"), "kind_hold": _("held"),
        "error": _("Error:"), "session_ended": _("Your session has ended; log in again."),
        "refresh_failed": _("could not refresh: {error}"),
        # the fields a search result shows (syncd.daemon.search.SHOWN)
        "f_email": _("e-mail"), "f_phone": _("phone"), "f_inn": _("ИНН"), "f_kpp": _("КПП"),
        "f_number": _("number"), "f_total": _("total"), "f_status": _("status"), "f_company": _("company"),
    }


def status_page(t: Lang, ctx: dict[str, Any], esc: Esc) -> str:
    """The whole page. ctx: instance, uptime, stats, logged_in, admin_enabled, public_stats, csrf,
    notice, error, path; logged in also runs, conflicts, quarantine, review, dead, throughput,
    lag_history, exchanges, paused, streams, types, backfills."""
    _ = t._
    logged_in = bool(ctx.get("logged_in"))
    out = [_header(t, ctx, esc), "<main>", _notices(t, ctx, esc)]
    if not logged_in:
        if ctx.get("admin_enabled"):
            out.append(_login_box(t, esc, next_url="/", error=None, instance=""))
        else:
            msg = _("The page shows records only after an admin login, and no admin token is configured: set "
                    "`admin_token = \"${SYNCD_ADMIN_TOKEN}\"` under [daemon] in config.toml and restart syncd.")
            out.append(f"<section id=\"no-login\"><p>{esc(msg)}</p></section>")
        if ctx.get("public_stats"):
            out.append(_section(_("Integrations"), None, glance(t, ctx, esc), esc, "integrations",
                                refresh="/part/glance"))
        out.append("</main>")
        return _doc(t, _("syncd · {instance}").format(instance=ctx["instance"]), "".join(out), esc,
                    script=bool(ctx.get("public_stats")), data={"lang": t.code, "timezone": t.timezone,
                                                               "refresh": REFRESH_SECONDS,
                                                               "strings": script_strings(t)})
    counts = {"review": len(ctx["review"]), "conflicts": len(ctx["conflicts"]),
              "quarantine": len(ctx["quarantine"]), "dead": len(ctx["dead"])}
    toc_items = [("integrations", _("Integrations"), None), ("trace", _("A record's story"), None),
                 ("review", _("To review"), counts["review"]), ("conflicts", _("Conflicts"), counts["conflicts"]),
                 ("quarantine", _("Quarantine"), counts["quarantine"]), ("dead", _("Failed writes"), counts["dead"]),
                 ("runs", _("Recent runs"), None)]
    toc = "".join(f"<a href=\"#{sid}\">{esc(label)}</a>" + (f" <span class=\"n\">{n}</span>" if n else "")
                  for sid, label, n in toc_items)
    out.append(f"<nav class=\"toc\">{toc}</nav>")
    check_label, auto_label = _("Check all connections"), _("auto-refresh")
    check_all = (f"<button type=\"button\" data-action=\"check-all\">{esc(check_label)}</button> "
                 f"<label><input type=\"checkbox\" id=\"auto-refresh\" checked> {esc(auto_label)}</label>")
    all_title, close = _("Connection check: everything"), _("close")
    panel_all = (f"<div class=\"panel\" id=\"panel-all\" hidden><h3>{esc(all_title)}<button type=\"button\" "
                 f"class=\"link close\" data-action=\"panel-close\">{esc(close)}</button></h3>"
                 "<div class=\"check-result\"></div></div>")
    out.append(_section(_("Integrations"), None, glance(t, ctx, esc), esc, "integrations", refresh="/part/glance",
                        tools=check_all, after=panel_all + _panels(t, ctx, esc)))
    out.append(_trace_section(t, esc))
    out.append(_review_section(t, ctx, esc))
    out.append(_conflicts_section(t, ctx, esc))
    out.append(_quarantine_section(t, ctx, esc))
    out.append(_dead_section(t, ctx, esc))
    out.append(_section(_("Recent runs"), None, runs(t, ctx, esc), esc, "runs", refresh="/part/runs"))
    out.append("</main>")
    data = {"lang": t.code, "timezone": t.timezone, "refresh": REFRESH_SECONDS, "strings": script_strings(t)}
    return _doc(t, _("syncd · {instance}").format(instance=ctx["instance"]), "".join(out), esc, script=True,
                data=data, csrf=ctx.get("csrf"))


def _login_box(t: Lang, esc: Esc, *, next_url: str, error: str | None, instance: str) -> str:
    _ = t._
    err = f"<div class=\"error\" id=\"login-error\">{esc(error)}</div>" if error else ""
    inst = f"<p class=\"muted small\">{esc(instance)}</p>" if instance else ""
    hint = _("Records, errors and traces are shown after logging in with the admin token "
             "(daemon.admin_token).")
    title, label, submit = _("Log in to syncd"), _("Admin token"), _("Log in")
    return (f"<section class=\"login\" id=\"login\"><h2>{esc(title)}</h2>{inst}{err}"
            f"<p class=\"small muted\">{esc(hint)}</p>"
            "<form method=\"post\" action=\"/login\">"
            f"<label for=\"token\">{esc(label)}</label>"
            "<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" autofocus required>"
            f"<input type=\"hidden\" name=\"next\" value=\"{esc(next_url)}\">"
            f"<button class=\"primary\" type=\"submit\" id=\"login-submit\">{esc(submit)}</button>"
            "</form></section>")


def login_page(t: Lang, esc: Esc, *, next_url: str = "/", error: str | None = None, instance: str = "") -> str:
    body = "<main>" + _login_box(t, esc, next_url=next_url, error=error, instance=instance) + "</main>"
    return _doc(t, t._("syncd · login"), body, esc)


def message_page(t: Lang, title: str, message: str, esc: Esc, *, link: str = "/") -> str:
    back = t._("Back")
    body = (f"<main class=\"login\"><section><h2>{esc(title)}</h2><p>{esc(message)}</p>"
            f"<p><a href=\"{esc(link)}\">{esc(back)}</a></p></section></main>")
    return _doc(t, "syncd · " + title, body, esc)


def redirect_target(notice: str | None = None, error: str | None = None, anchor: str = "") -> str:
    frag = f"#{anchor}" if anchor else ""
    if error:
        return "/?error=" + quote(error) + frag
    if notice:
        return "/?notice=" + quote(notice) + frag
    return "/" + frag


def default_esc(v: Any) -> str:
    return "" if v is None else html.escape(str(v), quote=True)
