"""The status page, the login form and short messages: Jinja2 templates (syncd/daemon/templates/)
fed by the views built here.

Autoescaping is on for every template, and every value passes the secret redactor on its way out
(the environment's `finalize`): nothing is escaped by hand and nothing is marked safe but markup
the templates build themselves. Every text goes through the message catalogs (`Lang`,
syncd/daemon/i18n.py; in templates `_()` and `ngettext()`, extracted by Babel's Jinja2 extractor),
every date is shown in the configured time zone. The page carries no inline script or style (its
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

import contextvars
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from syncd.daemon.glance import HOURS, Folded, Throughput
from syncd.daemon.i18n import LANGUAGES, N_, Lang

Redact = Callable[[str], str]
STATIC = Path(__file__).resolve().parent / "static"
REFRESH_SECONDS = 15
RAW_SHOWN = 4000          # characters of a quarantined record shown inline (the API has it whole)

LANGUAGE_NAMES = {"ru": "Русский", "en": "English"}
# how a person names a system that fetches its documents itself (stats' waiting_peer), by type
PEER_NAMES = {"onec": "1С"}
CHECK_STATES = {"pending": N_("checking…"), "ok": N_("connected"), "unreachable": N_("unreachable"),
                "mismatch": N_("mappings do not match")}
RUN_RESULTS = {"ok": N_("ok"), "failed": N_("failed"), "running": N_("running")}
COUNT_NAMES = {"created": N_("created"), "updated": N_("updated"), "skipped": N_("skipped"),
               "failed": N_("failed"), "conflicts": N_("conflicts"), "quarantined": N_("quarantined"),
               "review": N_("to review"), "planned": N_("planned"), "pushed": N_("written"), "dead": N_("dead"),
               "blocked": N_("blocked")}


@cache
def static_version(name: str) -> str:
    """A short hash of a static file, so a new release is never served from a browser's cache."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


# -- the environment --------------------------------------------------------------------------------
_REDACT: contextvars.ContextVar[Redact | None] = contextvars.ContextVar("syncd_page_redact", default=None)


def _finalize(v: Any) -> Any:
    """Every `{{ value }}` on its way out: nothing for None, the secret redactor for text (markup
    the templates built passes as it is; autoescaping follows)."""
    if v is None:
        return ""
    if isinstance(v, Markup):
        return v
    s = v if isinstance(v, str) else str(v)
    redact = _REDACT.get()
    return redact(s) if redact is not None else s


def _page_json(data: Any) -> Markup:
    """JSON inside <script type=application/json>: "</" escaped so it cannot close the element."""
    return Markup(json.dumps(data, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\u0021--"))


ENV = Environment(loader=PackageLoader("syncd.daemon", "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True, finalize=_finalize, extensions=["jinja2.ext.i18n"])
ENV.filters["page_json"] = _page_json
ENV.globals["static_version"] = static_version
ENV.install_null_translations()       # the language is given per render (`_`, `ngettext` of its Lang)


def _render(name: str, t: Lang, redact: Redact, **ctx: Any) -> str:
    """Render with `redact` (the secret redactor; required, so no page is ever rendered without it)."""
    token = _REDACT.set(redact)
    try:
        return ENV.get_template(name).render(t=t, _=t._, gettext=t._, ngettext=t.ngettext, **ctx)
    finally:
        _REDACT.reset(token)


# -- values ---------------------------------------------------------------------------------------
def fmt_value(v: Any) -> str:
    if v is None:
        return "∅"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _num(t: Lang, v: Any) -> str:
    return t.number(v or 0)


def _counts_text(t: Lang, counts: dict[str, Any]) -> str:
    return ", ".join(t._(COUNT_NAMES.get(k, k)) + " " + t.number(v) for k, v in counts.items() if v)


def _size(t: Lang, n: int) -> str:
    _ = t._
    units = [_("{n} B"), _("{n} KB"), _("{n} MB"), _("{n} GB")]
    v = float(n)
    for i, u in enumerate(units):
        if v < 1024 or i == len(units) - 1:
            return u.format(n=t.number(round(v, 1) if i else int(v)))
        v /= 1024
    return str(n)


# -- charts ---------------------------------------------------------------------------------------
CHART_W, CHART_H = 144, 34


def throughput_chart(t: Lang, tp: Throughput) -> dict[str, Any]:
    """24 hourly bars: records taken in + writes made; failures in red at the foot of the bar."""
    _ = t._
    totals = tp.total
    top = max([*totals, *tp.failed, 1])
    bw = CHART_W / HOURS
    bars = []
    for i, (n, f) in enumerate(zip(totals, tp.failed)):
        x = i * bw
        start = tp.start + dt.timedelta(hours=i)
        tip = _("{start}–{end}: {records} in, {writes} written, {failed} failed").format(
            start=t.clock(start), end=t.clock(start + dt.timedelta(hours=1)), records=t.number(tp.records_in[i]),
            writes=t.number(tp.records_out[i]), failed=t.number(f))
        h = 0 if n == 0 else max(1.5, (CHART_H - 2) * n / top)
        fh = 0 if f == 0 else max(1.5, (CHART_H - 2) * f / top)
        bars.append({"tip": tip, "x": f"{x:.1f}", "w": f"{bw:.1f}", "x1": f"{x + 0.5:.1f}", "w1": f"{bw - 1:.1f}",
                     "bar": (f"{CHART_H - h:.1f}", f"{h:.1f}") if h else None,
                     "fail": (f"{CHART_H - fh:.1f}", f"{fh:.1f}") if fh else None})
    label = _("Records per hour, last 24 h (peak {n})").format(n=t.number(max(totals) if totals else 0))
    return {"w": CHART_W, "h": CHART_H, "axis": CHART_H - 0.5, "label": label, "bars": bars}


def lag_chart(t: Lang, points: list[tuple[float, float]], now: dt.datetime) -> dict[str, Any]:
    """The lag over the last 24 h as a line (sampled every few minutes by the daemon)."""
    end = now.timestamp()
    start = end - HOURS * 3600
    top = max([p[1] for p in points] + [1.0])
    label = t._("Lag, last 24 h (max {max})").format(max=t.duration(max([p[1] for p in points], default=0)))
    coords = []
    for ts, lag in points:
        x = max(0.0, min(CHART_W, (ts - start) / (end - start) * CHART_W))
        y = (CHART_H - 1) - (CHART_H - 3) * lag / top
        coords.append(f"{x:.1f},{y:.1f}")
    if len(coords) == 1:
        coords.append(coords[0].replace(coords[0].split(",")[0], f"{CHART_W:.1f}", 1))
    return {"w": CHART_W, "h": CHART_H, "axis": CHART_H - 0.5, "label": label, "points": " ".join(coords)}


# -- views ----------------------------------------------------------------------------------------
def _badges(t: Lang, name: str, it: dict[str, Any], ctx: dict[str, Any], logged_in: bool) -> list[dict[str, Any]]:
    _ = t._
    out = []
    chk = (ctx["stats"].get("checks") or {}).get(name)
    if chk:
        state = chk.get("state", "")
        out.append({"cls": {"ok": "ok", "unreachable": "bad", "mismatch": "bad"}.get(state, "warn"), "k": "check",
                    "tip": chk.get("detail", "") if logged_in else "",
                    "text": _(CHECK_STATES[state]) if state in CHECK_STATES else state})
    if name in (ctx.get("paused") or {}):
        out.append({"cls": "warn", "k": "paused", "tip": None, "text": _("paused")})
    waiting = it.get("waiting_peer")
    if waiting and waiting.get("documents"):
        peer = PEER_NAMES.get(ctx.get("types", {}).get(name, ""), name)
        out.append({"cls": "warn", "k": "waiting_peer", "tip": None,
                    "text": _("waiting for {peer}: {n} since {since}, last exchange {when}").format(
                        peer=peer, n=t.number(waiting["documents"]), since=t.time(waiting.get("since")),
                        when=t.time(waiting["last_exchange"]) if waiting.get("last_exchange") else _("never"))})
    day = it.get("last_24h", {})
    if day.get("uncreated"):
        out.append({"cls": "warn", "k": "uncreated", "tip": None,
                    "text": _("not created elsewhere (create = false): {n}").format(n=t.number(day["uncreated"]))})
    if it.get("drift_records"):
        out.append({"cls": "bad", "k": "drift", "tip": None,
                    "text": _("out of step: {n}").format(n=t.number(it["drift_records"]))})
    return out


def _last_run(t: Lang, it: dict[str, Any], details: bool) -> dict[str, Any] | None:
    run = it.get("last_run")
    if not run:
        return None
    result = run.get("result") or ""
    when = run.get("finished_at") or run.get("started_at")
    return {"cls": {"ok": "ok", "failed": "failed", "running": "running"}.get(result, ""),
            "label": t._(RUN_RESULTS[result]) if result in RUN_RESULTS else result, "stream": run.get("stream"),
            "time": t.time(when), "ago": t.ago(when), "error": run.get("error") if details else None}


def glance_view(t: Lang, ctx: dict[str, Any]) -> dict[str, Any]:
    """The integrations' rows and the summary line under them."""
    _ = t._
    stats = ctx["stats"]
    logged_in = bool(ctx.get("logged_in"))
    exchanges = ctx.get("exchanges") or {}
    tps: dict[str, Throughput] = ctx.get("throughput") or {}
    lags = ctx.get("lag_history") or {}
    now = ctx.get("now") or dt.datetime.now(dt.UTC)
    rows = []
    for name, it in stats.get("integrations", {}).items():
        day = it.get("last_24h", {})
        ob = it.get("outbox", {})
        exchange = exchanges.get(name)
        rows.append({
            "name": name, "type": ctx.get("types", {}).get(name, ""), "badges": _badges(t, name, it, ctx, logged_in),
            "ops": logged_in, "has_streams": bool((ctx.get("streams") or {}).get(name)),
            "paused": name in (ctx.get("paused") or {}),
            "run": _last_run(t, it, logged_in),
            "exchange": None if exchange is None else {
                "time": t.time(exchange), "label": _("last exchange {ago}").format(ago=t.ago(exchange))},
            "nums": [(k, _num(t, day.get(k))) for k in ("created", "updated", "failed")], "failed": day.get("failed"),
            "since_tip": _("since start: {counts}").format(counts=_counts_text(t, it.get("counts", {})) or "—"),
            "lag": t.duration(it.get("lag_seconds")), "pending": _num(t, ob.get("pending")),
            "blocked": _num(t, ob.get("blocked")), "dead": _num(t, ob.get("dead")), "dead_bad": bool(ob.get("dead")),
            "throughput": throughput_chart(t, tps[name]) if name in tps else None,
            "lag_chart": lag_chart(t, lags.get(name, []), now) if name in tps else None})
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
    return {"rows": rows, "summary": summary, "updated": _("updated {time}").format(time=t.time(stats.get("generated_at")))}


def runs_view(t: Lang, runs_: list[Any]) -> list[dict[str, Any]]:
    _ = t._
    out: list[dict[str, Any]] = []
    for r in runs_:
        if isinstance(r, Folded):
            n = len(r.runs)
            out.append({"folded": True, "span": _("{first} – {last}").format(first=t.time(r.first), last=t.time(r.last)),
                        "text": t.ngettext("{n} run with nothing to do", "{n} runs with nothing to do", n).format(
                            n=t.number(n)),
                        "streams": ", ".join(f"{name} ×{k}" for name, k in r.streams)})
            continue
        status = r.get("status") or ""
        out.append({"folded": False, "started": t.time(r.get("started_at")), "system": r.get("system"),
                    "stream": r.get("stream"), "cls": {"ok": "ok", "failed": "failed", "running": "running"}.get(status, ""),
                    "label": _(RUN_RESULTS[status]) if status in RUN_RESULTS else status,
                    "counts": _counts_text(t, r.get("counts") or {}), "error": r.get("error")})
    return out


def _header_view(t: Lang, ctx: dict[str, Any]) -> dict[str, Any]:
    _ = t._
    meta = [_("instance {name}").format(name=ctx["instance"]), _("up {span}").format(span=t.duration(ctx["uptime"])),
            _("time zone {zone}").format(zone=t.zone_label())]
    db = ((ctx.get("stats") or {}).get("database") or {}).get("size_bytes") if ctx.get("logged_in") else None
    if db is not None:
        meta.append(_("database {size}").format(size=_size(t, db)))
    return {"meta": meta, "langs": [(c, LANGUAGE_NAMES[c], c == t.code) for c in LANGUAGES],
            "path": quote(ctx.get("path") or "/")}


def _panels_view(t: Lang, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    latest = ctx.get("backfills") or {}
    default_since = (dt.datetime.now(t.tz) - dt.timedelta(days=30)).date().isoformat()
    today = dt.datetime.now(t.tz).date().isoformat()
    out = []
    for name in ctx["stats"].get("integrations", {}):
        job = latest.get(name)
        running = job is not None and job["state"] in ("running", "pushing")
        out.append({"name": name, "running": running, "job": job["id"] if running and job else None,
                    "has_streams": bool((ctx.get("streams") or {}).get(name)), "default_since": default_since,
                    "today": today})
    return out


def _holds_view(t: Lang, ctx: dict[str, Any]) -> dict[str, Any]:
    review = [{"id": rv["id"], "system": rv.get("system"), "type": rv.get("type"), "external_id": rv.get("external_id"),
               "fields": ", ".join(f"{k}={fmt_value(v)}" for k, v in ((rv.get("record") or {}).get("fields") or {}).items()),
               "candidates": [c for c in (rv.get("candidates") or []) if c], "reason": rv.get("reason"),
               "since": t.time(rv.get("created_at"))} for rv in ctx["review"]]
    conflicts = []
    for cf in ctx["conflicts"]:
        systems: list[str] = []
        for cd in cf.get("candidates", []):
            if cd.get("system") and cd["system"] not in systems:
                systems.append(cd["system"])
        conflicts.append({"id": cf["id"], "entity_id": cf.get("entity_id"), "field": cf.get("field"),
                          "policy": cf.get("policy"), "since": t.time(cf.get("created_at")), "systems": systems,
                          "candidates": [{"system": cd.get("system"), "value": fmt_value(cd.get("value")),
                                          "time": t.time(cd.get("source_time"))} for cd in cf.get("candidates", [])]})
    quarantine = []
    for q in ctx["quarantine"]:
        raw = q.get("raw") or ""
        quarantine.append({"id": q["id"], "system": q.get("system"), "kind": q.get("kind"),
                           "external_id": q.get("external_id"), "reason": q.get("reason"), "raw": raw[:RAW_SHOWN],
                           "raw_len": t.number(len(raw)) if len(raw) > RAW_SHOWN else None,
                           "since": t.time(q.get("created_at"))})
    dead = [{"id": d["id"], "system": d.get("system"), "entity_type": d.get("entity_type"), "op": d.get("op"),
             "entity_id": d.get("entity_id"), "attempts": d.get("attempts"), "last_error": d.get("last_error"),
             "when": t.time(d.get("updated_at") or d.get("created_at"))} for d in ctx["dead"]]
    return {"review": review, "conflicts": conflicts, "quarantine": quarantine, "dead": dead}


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


# -- pages ----------------------------------------------------------------------------------------
def glance(t: Lang, ctx: dict[str, Any], redact: Redact) -> str:
    """The integrations at a glance; with operations when logged in (/part/glance)."""
    return _render("glance.html", t, redact, g=glance_view(t, ctx), csrf=ctx.get("csrf"))


def runs(t: Lang, ctx: dict[str, Any], redact: Redact) -> str:
    """Recent runs (/part/runs)."""
    return _render("runs.html", t, redact, runs=runs_view(t, ctx["runs"]))


def status_page(t: Lang, ctx: dict[str, Any], redact: Redact) -> str:
    """The whole page. ctx: instance, uptime, stats, logged_in, admin_enabled, public_stats, csrf,
    notice, error, path; logged in also runs, conflicts, quarantine, review, dead, throughput,
    lag_history, exchanges, paused, streams, types, backfills."""
    _ = t._
    logged_in = bool(ctx.get("logged_in"))
    data = {"lang": t.code, "timezone": t.timezone, "refresh": REFRESH_SECONDS, "strings": script_strings(t)}
    view: dict[str, Any] = dict(
        title=_("syncd · {instance}").format(instance=ctx["instance"]), header=_header_view(t, ctx),
        logged_in=logged_in, admin_enabled=bool(ctx.get("admin_enabled")), public_stats=bool(ctx.get("public_stats")),
        notice=ctx.get("notice"), error=ctx.get("error"), csrf=ctx.get("csrf") if logged_in else None, data=data,
        script=logged_in or bool(ctx.get("public_stats")))
    if logged_in or ctx.get("public_stats"):
        view["g"] = glance_view(t, ctx)
    if logged_in:
        holds = _holds_view(t, ctx)
        view.update(holds, runs=runs_view(t, ctx["runs"]), panels=_panels_view(t, ctx), toc=[
            ("integrations", _("Integrations"), None), ("trace", _("A record's story"), None),
            ("review", _("To review"), len(holds["review"])), ("conflicts", _("Conflicts"), len(holds["conflicts"])),
            ("quarantine", _("Quarantine"), len(holds["quarantine"])), ("dead", _("Failed writes"), len(holds["dead"])),
            ("runs", _("Recent runs"), None)])
    return _render("status.html", t, redact, **view)


def login_page(t: Lang, redact: Redact, *, next_url: str = "/", error: str | None = None,
               instance: str = "") -> str:
    return _render("login.html", t, redact, title=t._("syncd · login"), csrf=None, data=None, script=False,
                   next_url=next_url, error=error, instance=instance)


def message_page(t: Lang, title: str, message: str, redact: Redact, *, link: str = "/") -> str:
    return _render("message.html", t, redact, title="syncd · " + title, heading=title, message=message, link=link,
                   csrf=None, data=None, script=False)


def redirect_target(notice: str | None = None, error: str | None = None, anchor: str = "") -> str:
    frag = f"#{anchor}" if anchor else ""
    if error:
        return "/?error=" + quote(error) + frag
    if notice:
        return "/?notice=" + quote(notice) + frag
    return "/" + frag
