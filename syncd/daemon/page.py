"""Server-rendered HTML for the daemon: the status page, the login form, short messages.

Plain HTML and a little CSS, no JavaScript. Every value goes through `esc` (html.escape after
the secret redactor), never straight into the markup.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

CSS = """
:root { --fg:#1d2430; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --ok:#12805c; --bad:#c0362c;
        --warn:#b54708; --accent:#2f5bd3; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header { background:#1d2430; color:#fff; padding:12px 24px; display:flex; align-items:center; gap:24px;
         flex-wrap:wrap; }
header h1 { font-size:18px; margin:0; }
header .meta { color:#c9d1e0; font-size:13px; }
header .auth { margin-left:auto; }
header a, header button.link { color:#fff; }
main { padding:16px 24px 40px; max-width:1400px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px;
          margin:0 0 16px; }
section h2 { font-size:15px; margin:0 0 8px; }
section h2 .n { color:var(--muted); font-weight:normal; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; white-space:nowrap; }
.nowrap, tr.integration td:first-child { white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr:last-child td { border-bottom:none; }
.ok { color:var(--ok); font-weight:600; } .failed, .bad { color:var(--bad); font-weight:600; }
.running { color:var(--warn); font-weight:600; }
.muted, .empty { color:var(--muted); }
.small { font-size:12px; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
form.inline { display:inline-flex; gap:4px; margin:2px 4px 2px 0; align-items:center; }
button { font:inherit; font-size:12px; padding:3px 9px; border:1px solid #b8c0cc; border-radius:5px;
         background:#fff; cursor:pointer; }
button:hover { background:#eef2fb; border-color:var(--accent); }
button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
button.link { border:none; background:none; text-decoration:underline; padding:0; font-size:13px; }
input[type=text], input[type=password] { font:inherit; font-size:12px; padding:3px 6px;
         border:1px solid #b8c0cc; border-radius:5px; }
.cand { display:block; margin:1px 0; }
.cand b { display:inline-block; min-width:3.5em; }
.notice { background:#e7f6ef; border:1px solid #a6dcc3; padding:8px 12px; border-radius:6px; margin-bottom:12px; }
.error { background:#fdecea; border:1px solid #f1b5ae; padding:8px 12px; border-radius:6px; margin-bottom:12px; }
.login { max-width:380px; margin:60px auto; }
.login input { width:100%; padding:7px; font-size:14px; margin:6px 0 12px; }
.login button { font-size:14px; padding:6px 16px; }
"""

Esc = Callable[[Any], str]


def fmt_time(v: Any) -> str:
    if v in (None, ""):
        return ""
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError:
            return v
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(v)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.1f}s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if h or d:
        parts.append(f"{h}h")
    parts.append(f"{m}m")
    if not d:
        parts.append(f"{s}s")
    return " ".join(parts)


def fmt_value(v: Any) -> str:
    if v is None:
        return "∅"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _doc(title: str, body: str, esc: Esc) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>")


def message_page(title: str, message: str, esc: Esc, *, link: str = "/") -> str:
    body = (f"<main class=\"login\"><section><h2>{esc(title)}</h2><p>{esc(message)}</p>"
            f"<p><a href=\"{esc(link)}\">Back</a></p></section></main>")
    return _doc(f"syncd · {title}", body, esc)


def login_page(esc: Esc, *, next_url: str = "/", error: str | None = None, instance: str = "") -> str:
    err = f"<div class=\"error\">{esc(error)}</div>" if error else ""
    body = (f"<main class=\"login\"><section><h2>syncd admin login</h2>"
            f"<p class=\"muted small\">{esc(instance)}</p>{err}"
            "<form method=\"post\" action=\"/login\">"
            "<label for=\"token\">Admin token</label>"
            "<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" autofocus>"
            f"<input type=\"hidden\" name=\"next\" value=\"{esc(next_url)}\">"
            "<button class=\"primary\" type=\"submit\" id=\"login-submit\">Log in</button>"
            "</form></section></main>")
    return _doc("syncd · login", body, esc)


def _csrf_input(csrf: str | None, esc: Esc) -> str:
    return f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(csrf)}\">" if csrf else ""


def _form(action: str, inner: str, csrf: str | None, esc: Esc, cls: str = "inline") -> str:
    return (f"<form class=\"{cls}\" method=\"post\" action=\"{esc(action)}\">"
            f"{_csrf_input(csrf, esc)}{inner}</form>")


def _result_cell(run: dict[str, Any] | None, esc: Esc) -> str:
    if not run:
        return "<span class=\"muted\">never</span>"
    result = run.get("result") or run.get("status") or ""
    cls = {"ok": "ok", "failed": "failed", "running": "running"}.get(result, "")
    when = fmt_time(run.get("finished_at") or run.get("started_at"))
    err = run.get("error")
    err_html = f"<div class=\"small bad\">{esc(err)}</div>" if err else ""
    return (f"<span class=\"{cls}\">{esc(result)}</span> <span class=\"muted small\">{esc(run.get('stream'))}"
            f"</span><div class=\"small muted\">{esc(when)}</div>{err_html}")


def _section(title: str, count: int | None, inner: str, esc: Esc, sid: str) -> str:
    n = f" <span class=\"n\">({count})</span>" if count is not None else ""
    return f"<section id=\"{sid}\"><h2>{esc(title)}{n}</h2>{inner}</section>"


def _table(headers: Iterable[tuple[str, str]], rows: list[str], empty: str, esc: Esc) -> str:
    if not rows:
        return f"<p class=\"empty\">{esc(empty)}</p>"
    th = "".join(f"<th class=\"{c}\">{esc(h)}</th>" for h, c in headers)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def status_page(ctx: dict[str, Any], esc: Esc) -> str:
    """ctx: instance, uptime, stats, runs, conflicts, quarantine, review, dead, csrf (None = not
    logged in), admin_enabled, notice, error."""
    csrf: str | None = ctx.get("csrf")
    stats = ctx["stats"]
    totals = stats.get("totals", {})
    out: list[str] = []

    if ctx.get("csrf"):
        auth = _form("/logout", "<span>admin</span> <button class=\"link\" type=\"submit\">Log out</button>",
                     csrf, esc)
    elif ctx.get("admin_enabled"):
        auth = "<a href=\"/login\" id=\"login-link\">Log in</a> <span class=\"small\">to resolve and replay</span>"
    else:
        auth = "<span class=\"small\">admin actions disabled (no daemon.admin_token)</span>"
    out.append(f"<header><h1>syncd</h1><span class=\"meta\">instance <b>{esc(ctx['instance'])}</b></span>"
               f"<span class=\"meta\">up {esc(fmt_duration(ctx['uptime']))}</span>"
               f"<span class=\"meta\">{esc(fmt_time(stats.get('generated_at')))}</span>"
               f"<span class=\"auth\">{auth}</span></header><main>")
    if ctx.get("notice"):
        out.append(f"<div class=\"notice\" id=\"notice\">{esc(ctx['notice'])}</div>")
    if ctx.get("error"):
        out.append(f"<div class=\"error\" id=\"error\">{esc(ctx['error'])}</div>")

    # -- integrations ------------------------------------------------------------------------------
    heads = [("Integration", ""), ("Last run", ""), ("Created", "num"), ("Updated", "num"), ("Skipped", "num"),
             ("Failed", "num"), ("Conflicts", "num"), ("Quarantined", "num"), ("Lag", "num"),
             ("Outbox pending", "num"), ("Outbox dead", "num"), ("Quarantine open", "num"),
             ("Review open", "num"), ("Last 24 h", "")]
    rows = []
    for name, it in stats.get("integrations", {}).items():
        c = it.get("counts", {})
        d = it.get("last_24h", {})
        ob = it.get("outbox", {})
        nums = "".join(f"<td class=\"num\" data-k=\"{k}\">{esc(c.get(k, 0))}</td>"
                       for k in ("created", "updated", "skipped", "failed", "conflicts", "quarantined"))
        day = " · ".join(f"{k} {d.get(k, 0)}" for k in ("created", "updated", "failed"))
        dead_cls = " bad" if ob.get("dead") else ""
        rows.append(f"<tr id=\"integration-{esc(name)}\" class=\"integration\"><td><b>{esc(name)}</b></td>"
                    f"<td>{_result_cell(it.get('last_run'), esc)}</td>{nums}"
                    f"<td class=\"num\">{esc(fmt_duration(it.get('lag_seconds')))}</td>"
                    f"<td class=\"num\" data-k=\"outbox_pending\">{esc(ob.get('pending', 0))}</td>"
                    f"<td class=\"num{dead_cls}\" data-k=\"outbox_dead\">{esc(ob.get('dead', 0))}</td>"
                    f"<td class=\"num\" data-k=\"quarantine_open\">{esc(it.get('quarantine_open', 0))}</td>"
                    f"<td class=\"num\" data-k=\"review_open\">{esc(it.get('review_open', 0))}</td>"
                    f"<td class=\"small muted\">{esc(day)}</td></tr>")
    summary = (f"<p class=\"small muted\">Open conflicts: {esc(totals.get('conflicts_open', 0))} · "
               f"outbox pending {esc(totals.get('outbox_pending', 0))}, dead {esc(totals.get('outbox_dead', 0))}"
               " · counts since start</p>")
    out.append(_section("Integrations", None, _table(heads, rows, "No integrations configured.", esc) + summary,
                        esc, "integrations"))

    # -- conflicts --------------------------------------------------------------------------------
    rows = []
    for cf in ctx["conflicts"]:
        cid = cf["id"]
        action = f"/admin/conflicts/{cid}/resolve"
        cands = "".join(f"<span class=\"cand\"><b>{esc(cd.get('system'))}</b> {esc(fmt_value(cd.get('value')))}"
                        f" <span class=\"muted small\">{esc(fmt_time(cd.get('source_time')))}</span></span>"
                        for cd in cf.get("candidates", []))
        systems: list[str] = []
        for cd in cf.get("candidates", []):
            if cd.get("system") and cd["system"] not in systems:
                systems.append(cd["system"])
        takes = "".join(f"<button type=\"submit\" name=\"take\" value=\"{esc(s)}\" class=\"take\">take {esc(s)}"
                        "</button>" for s in systems)
        acts = (_form(action, takes, csrf, esc)
                + _form(action, "<input type=\"text\" name=\"value\" placeholder=\"value\" size=\"14\">"
                        "<button type=\"submit\">set</button>", csrf, esc))
        rows.append(f"<tr id=\"conflict-{esc(cid)}\" class=\"conflict\"><td class=\"num\">{esc(cid)}</td>"
                    f"<td class=\"mono\">{esc(cf.get('entity_id'))}</td><td>{esc(cf.get('field'))}</td>"
                    f"<td>{cands}</td><td>{esc(cf.get('policy'))}</td>"
                    f"<td class=\"small nowrap\">{esc(fmt_time(cf.get('created_at')))}</td><td>{acts}</td></tr>")
    out.append(_section("Open conflicts", len(ctx["conflicts"]), _table(
        [("#", "num"), ("Entity", ""), ("Field", ""), ("Candidates", ""), ("Policy", ""), ("Since", ""),
         ("Resolve", "")], rows, "No open conflicts.", esc), esc, "conflicts"))

    # -- review ------------------------------------------------------------------------------------
    rows = []
    for rv in ctx["review"]:
        rid = rv["id"]
        action = f"/admin/review/{rid}/resolve"
        rec = rv.get("record") or {}
        fields = ", ".join(f"{k}={fmt_value(v)}" for k, v in (rec.get("fields") or {}).items())
        cands = rv.get("candidates") or []
        binds = "".join(f"<button type=\"submit\" name=\"entity_id\" value=\"{esc(c)}\">bind to {esc(c[:12])}"
                        "</button>" for c in cands if c)
        acts = (_form(action, "<input type=\"hidden\" name=\"create\" value=\"1\">"
                      "<button type=\"submit\">create new</button>", csrf, esc)
                + (_form(action, binds, csrf, esc) if binds else "")
                + _form(action, "<input type=\"text\" name=\"entity_id\" placeholder=\"entity id\" size=\"14\">"
                        "<button type=\"submit\">bind to entity id</button>", csrf, esc))
        rows.append(f"<tr id=\"review-{esc(rid)}\" class=\"review\"><td class=\"num\">{esc(rid)}</td>"
                    f"<td>{esc(rv.get('system'))}</td><td>{esc(rv.get('type'))}</td>"
                    f"<td class=\"mono\">{esc(rv.get('external_id'))}</td><td class=\"small\">{esc(fields)}</td>"
                    f"<td class=\"small\">{esc(rv.get('reason'))}</td>"
                    f"<td class=\"mono small\">{esc(', '.join(c for c in cands if c))}</td><td>{acts}</td></tr>")
    out.append(_section("Review (identify)", len(ctx["review"]), _table(
        [("#", "num"), ("System", ""), ("Type", ""), ("External id", ""), ("Record", ""), ("Reason", ""),
         ("Candidates", ""), ("Action", "")], rows, "Nothing to review.", esc), esc, "review"))

    # -- quarantine --------------------------------------------------------------------------------
    rows = []
    for q in ctx["quarantine"]:
        qid = q["id"]
        acts = _form(f"/admin/quarantine/{qid}/release", "<button type=\"submit\">release</button>", csrf, esc)
        rows.append(f"<tr id=\"quarantine-{esc(qid)}\" class=\"quarantine\"><td class=\"num\">{esc(qid)}</td>"
                    f"<td>{esc(q.get('system'))}</td><td>{esc(q.get('kind'))}</td>"
                    f"<td class=\"mono\">{esc(q.get('external_id'))}</td><td class=\"small\">{esc(q.get('reason'))}</td>"
                    f"<td class=\"small\">{esc(fmt_time(q.get('created_at')))}</td><td>{acts}</td></tr>")
    out.append(_section("Quarantine", len(ctx["quarantine"]), _table(
        [("#", "num"), ("System", ""), ("Kind", ""), ("External id", ""), ("Reason", ""), ("Created", ""),
         ("Action", "")], rows, "Quarantine is empty.", esc), esc, "quarantine"))

    # -- dead letters ------------------------------------------------------------------------------
    rows = []
    for d in ctx["dead"]:
        did = d["id"]
        acts = _form("/admin/replay", f"<input type=\"hidden\" name=\"ids\" value=\"{esc(did)}\">"
                     "<button type=\"submit\">replay</button>", csrf, esc)
        rows.append(f"<tr id=\"dead-{esc(did)}\" class=\"dead\"><td class=\"num\">{esc(did)}</td>"
                    f"<td>{esc(d.get('system'))}</td><td>{esc(d.get('entity_type'))}</td><td>{esc(d.get('op'))}</td>"
                    f"<td class=\"mono\">{esc(d.get('entity_id'))}</td><td class=\"num\">{esc(d.get('attempts'))}</td>"
                    f"<td class=\"small bad\">{esc(d.get('last_error'))}</td>"
                    f"<td class=\"small\">{esc(fmt_time(d.get('updated_at') or d.get('created_at')))}</td>"
                    f"<td>{acts}</td></tr>")
    all_btn = (_form("/admin/replay", "<button type=\"submit\">replay all</button>", csrf, esc)
               if ctx["dead"] else "")
    out.append(_section("Dead letters", len(ctx["dead"]), _table(
        [("#", "num"), ("System", ""), ("Type", ""), ("Op", ""), ("Entity", ""), ("Attempts", "num"),
         ("Last error", ""), ("When", ""), ("Action", "")], rows, "No dead letters.", esc) + all_btn,
        esc, "dead"))

    # -- runs --------------------------------------------------------------------------------------
    rows = []
    for r in ctx["runs"]:
        counts = {k: v for k, v in (r.get("counts") or {}).items() if v}
        status = r.get("status") or ""
        cls = {"ok": "ok", "failed": "failed", "running": "running"}.get(status, "")
        rows.append(f"<tr class=\"run\"><td class=\"nowrap\">{esc(fmt_time(r.get('started_at')))}</td><td>{esc(r.get('system'))}</td>"
                    f"<td>{esc(r.get('stream'))}</td><td class=\"{cls}\">{esc(status)}</td>"
                    f"<td class=\"small\">{esc(', '.join(f'{k} {v}' for k, v in counts.items()))}</td>"
                    f"<td class=\"small bad\">{esc(r.get('error'))}</td></tr>")
    out.append(_section("Recent runs", None, _table(
        [("Started", ""), ("System", ""), ("Stream", ""), ("Result", ""), ("Counts", ""), ("Error", "")],
        rows, "No runs yet.", esc), esc, "runs"))
    out.append("</main>")
    return _doc(f"syncd · {ctx['instance']}", "".join(out), esc)


def redirect_target(notice: str | None = None, error: str | None = None) -> str:
    if error:
        return "/?error=" + quote(error)
    if notice:
        return "/?notice=" + quote(notice)
    return "/"


def default_esc(v: Any) -> str:
    return "" if v is None else html.escape(str(v), quote=True)
