// syncd status page: auto-refresh, connection checks, backfill progress, the entity search of the
// review panel and a record's trace. Vanilla JS, no framework. Every string shown comes from the
// page's JSON (translated on the server); data from the server is put in with textContent, never
// as markup.
(function () {
  "use strict";
  var dataEl = document.getElementById("page-data");
  if (!dataEl) return;
  var D = JSON.parse(dataEl.textContent);
  var S = D.strings || {};
  var csrfMeta = document.querySelector('meta[name="csrf"]');
  var CSRF = csrfMeta ? csrfMeta.content : null;
  var LOCALE = D.lang === "ru" ? "ru-RU" : "en-GB";
  var numberFmt = new Intl.NumberFormat(LOCALE);
  var timeFmt = new Intl.DateTimeFormat(LOCALE, {timeZone: D.timezone, year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"});

  function fmt(s, vars) {
    return String(s || "").replace(/\{(\w+)\}/g, function (m, k) { return vars && k in vars ? vars[k] : m; });
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) { if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]); }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function when(v) {
    if (v === null || v === undefined || v === "") return "";
    var d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
    return isNaN(d.getTime()) ? String(v) : timeFmt.format(d);
  }
  function request(method, url, body) {
    var opts = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (CSRF && method !== "GET") opts.headers["X-CSRF-Token"] = CSRF;
    return fetch(url, opts).then(function (r) {
      if (r.status === 401) { sessionEnded(); throw new Error(S.session_ended); }
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
        return j;
      });
    });
  }
  var ended = false;
  function sessionEnded() {
    if (ended || !CSRF) return;
    ended = true;
    window.location.reload();
  }
  function showError(box, err) {
    box.textContent = "";
    box.appendChild(el("div", {"class": "error"}, S.error + " " + (err && err.message ? err.message : err)));
  }

  // -- auto-refresh ---------------------------------------------------------------------------
  function refreshOn() {
    var box = document.getElementById("auto-refresh");
    return !box || box.checked;
  }
  function refresh() {
    if (!refreshOn() || document.hidden) return;
    document.querySelectorAll("section[data-refresh]").forEach(function (sec) {
      var body = sec.querySelector(".body");
      var active = document.activeElement;
      if (!body || (body.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName))) return;   // typing
      fetch(sec.getAttribute("data-refresh"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) {
          if (r.status === 401 || r.status === 403) { sessionEnded(); return null; }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) { if (html !== null) body.innerHTML = html; })   // our own server-rendered, escaped markup
        .catch(function (err) {
          var u = sec.querySelector(".updated");
          if (u) u.textContent = fmt(S.refresh_failed, {error: err.message});
        });
    });
  }
  if (D.refresh) setInterval(refresh, D.refresh * 1000);
  window.syncdRefresh = refresh;          // "now", for the browser test (and the curious)

  // -- panels: check and backfill -----------------------------------------------------------------
  function panel(system) { return document.getElementById(system ? "panel-" + system : "panel-all"); }
  function openPanel(p) { if (p) { p.hidden = false; } return p; }

  function renderFindings(box, findings) {
    box.textContent = "";
    var ok = findings.every(function (f) { return f.ok; });
    box.appendChild(el("p", {"class": ok ? "ok" : "bad"}, ok ? S.check_ok : S.check_failed));
    var ul = el("ul", {"class": "findings"});
    findings.forEach(function (f) {
      var li = el("li", {"class": f.ok ? "finding ok-line" : "finding bad-line"});
      li.appendChild(el("span", {"class": f.ok ? "ok" : "bad"}, f.ok ? "✓ " : "✗ "));
      li.appendChild(el("b", null, f.name + ": "));
      li.appendChild(document.createTextNode(f.detail));
      ul.appendChild(li);
    });
    box.appendChild(ul);
  }
  function runCheck(system) {
    var p = openPanel(panel(system));
    var box = p.querySelector(".check-result");
    box.hidden = false;
    box.textContent = S.checking;
    request("POST", system ? "/admin/check/" + encodeURIComponent(system) : "/admin/check", {})
      .then(function (j) { renderFindings(box, j.findings || []); })
      .catch(function (err) { showError(box, err); });
  }

  function renderProgress(wrap, job) {
    var prog = wrap.querySelector(".progress");
    prog.hidden = false;
    var bar = prog.querySelector("progress");
    bar.value = job.percent;
    var state = job.state === "running" ? S.reading : job.state === "pushing" ? S.pushing :
      job.state === "done" ? S.done : S.failed;
    var text = job.percent + " % · " + state + " · " + fmt(S.records_read, {n: numberFmt.format(job.records_read)});
    if (job.state === "pushing" && job.pending_start) {
      text += " · " + fmt(S.writes_left, {n: numberFmt.format(job.pending_now || 0),
                                          total: numberFmt.format(job.pending_start)});
    }
    prog.querySelector(".progress-text").textContent = text;
    var detail = prog.querySelector(".progress-detail");
    detail.textContent = job.streams.map(function (s) {
      var st = {waiting: S.waiting, reading: S.reading, done: S.done, failed: S.failed}[s.state] || s.state;
      return s.stream + ": " + st + " (" + numberFmt.format(s.read) + (s.total ? " / " + numberFmt.format(s.total) : "") + ")";
    }).join(" · ");
    wrap.setAttribute("data-state", job.state);
    if (job.state === "done") {
      detail.textContent += " — " + S.backfill_done;
    } else if (job.state === "failed") {
      detail.textContent += " — " + S.backfill_failed + " " + (job.error || "");
    }
  }
  function pollBackfill(wrap, id) {
    wrap.setAttribute("data-job", id);
    var form = wrap.querySelector("form");
    if (form) form.querySelector("button[type=submit]").disabled = true;
    function tick() {
      request("GET", "/api/backfill/" + encodeURIComponent(id)).then(function (job) {
        renderProgress(wrap, job);
        if (job.state === "running" || job.state === "pushing") {
          setTimeout(tick, 700);
        } else {
          wrap.removeAttribute("data-job");
          if (form) form.querySelector("button[type=submit]").disabled = false;
        }
      }).catch(function (err) { showError(wrap.querySelector(".progress-detail"), err); });
    }
    tick();
  }

  // -- the review panel's entity search ---------------------------------------------------------------
  function bindTo(reviewId, entityId) {
    var f = el("form", {method: "post", action: "/admin/review/" + encodeURIComponent(reviewId) + "/resolve"});
    f.appendChild(el("input", {type: "hidden", name: "entity_id", value: entityId}));
    f.appendChild(el("input", {type: "hidden", name: "csrf", value: CSRF}));
    document.body.appendChild(f);
    f.submit();
  }
  function renderEntities(ul, reviewId, items) {
    ul.textContent = "";
    ul.hidden = false;
    if (!items.length) { ul.appendChild(el("li", {"class": "empty"}, S.no_results)); return; }
    items.forEach(function (it) {
      var li = el("li", {"class": "entity", "data-entity": it.id});
      li.appendChild(el("span", {"class": "label"}, it.label || it.id));
      var f = it.fields || {};
      Object.keys(f).forEach(function (k) { li.appendChild(el("span", {"class": "small"}, (S["f_" + k] || k) + ": " + f[k])); });
      var b = it.bindings || {};
      li.appendChild(el("span", {"class": "small muted mono"},
        Object.keys(b).map(function (s) { return s + ": " + b[s]; }).join(", ")));
      var btn = el("button", {type: "button", "class": "primary", "data-action": "bind", "data-review": reviewId,
                              "data-entity": it.id}, S.bind);
      li.appendChild(btn);
      ul.appendChild(li);
    });
  }

  // -- a record's trace ---------------------------------------------------------------------------------
  function safeUrl(u) { return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null; }
  function renderValue(v) { return v !== null && typeof v === "object" ? JSON.stringify(v) : String(v); }
  function renderTrace(box, data, q) {
    box.textContent = "";
    var recs = (data && data.records) || [];
    if (!recs.length) { box.appendChild(el("p", {"class": "empty"}, fmt(S.trace_none, {q: q}))); return; }
    recs.forEach(function (r) {
      var div = el("div", {"class": "record", "data-entity": r.entity_id});
      var h = el("h3");
      h.appendChild(el("span", null, (r.type || "") + " "));
      h.appendChild(el("span", {"class": "mono small"}, r.entity_id || ""));
      div.appendChild(h);
      var ids = el("div", {"class": "ids"});
      ids.appendChild(el("b", null, S.trace_ids + ": "));
      var links = r.links || {};
      Object.keys(r.ids || {}).forEach(function (sys) {
        var span = el("span", {"class": "id"});
        span.appendChild(document.createTextNode(sys + ": "));
        span.appendChild(el("span", {"class": "mono"}, r.ids[sys]));
        var url = safeUrl(links[sys]);
        if (url) {
          span.appendChild(document.createTextNode(" "));
          span.appendChild(el("a", {href: url, target: "_blank", rel: "noopener noreferrer", "class": "ext-link"},
                              S.trace_open + " ↗"));
        }
        ids.appendChild(span);
      });
      div.appendChild(ids);
      var events = r.events || [];
      if (!events.length) {
        div.appendChild(el("p", {"class": "empty small"}, S.trace_no_events));
      } else {
        var ol = el("ol", {"class": "timeline", "aria-label": S.trace_events});
        events.forEach(function (ev) {
          var li = el("li", {"class": "event k-" + (ev.kind || "other")});
          li.appendChild(el("span", {"class": "when"}, when(ev.at)));
          li.appendChild(el("span", {"class": "badge"}, S["kind_" + ev.kind] || ev.kind || ""));
          if (ev.system) li.appendChild(el("b", {"class": "small"}, " " + ev.system + " "));
          li.appendChild(el("span", {"class": "summary"}, ev.summary || ""));
          var det = ev.details || {};
          var keys = Object.keys(det);
          if (keys.length) {
            var dl = el("dl");
            keys.forEach(function (k) { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, renderValue(det[k]))); });
            li.appendChild(dl);
          }
          ol.appendChild(li);
        });
        div.appendChild(ol);
      }
      box.appendChild(div);
    });
  }

  // -- events ---------------------------------------------------------------------------------------
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-action]");
    if (!b) return;
    var action = b.getAttribute("data-action");
    var system = b.getAttribute("data-system");
    if (action === "check") { runCheck(system); }
    else if (action === "check-all") { runCheck(null); }
    else if (action === "backfill-open") {
      var p = openPanel(panel(system));
      var input = p && p.querySelector("input[name=since]");
      if (input) input.focus();
    }
    else if (action === "since") {
      var d = new Date(Date.now() - Number(b.getAttribute("data-days")) * 86400000);
      var form = b.closest("form");
      form.querySelector("input[name=since]").value = d.toISOString().slice(0, 10);
    }
    else if (action === "panel-close") { b.closest(".panel").hidden = true; }
    else if (action === "bind") { b.disabled = true; bindTo(b.getAttribute("data-review"), b.getAttribute("data-entity")); }
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.classList.contains("backfill-form")) {
      e.preventDefault();
      var wrap = form.closest(".backfill");
      var since = form.querySelector("input[name=since]").value;
      request("POST", form.getAttribute("action"), {since: since})
        .then(function (j) { pollBackfill(wrap, j.job.id); })
        .catch(function (err) { var pr = wrap.querySelector(".progress"); pr.hidden = false; showError(pr.querySelector(".progress-detail"), err); });
    } else if (form.classList.contains("entity-search")) {
      e.preventDefault();
      var q = form.querySelector("input[name=q]").value.trim();
      var ul = form.parentNode.querySelector("ul.results");
      if (!q) return;
      ul.hidden = false;
      ul.textContent = S.searching;
      var url = "/api/entities?q=" + encodeURIComponent(q) + "&type=" + encodeURIComponent(form.getAttribute("data-type") || "");
      request("GET", url).then(function (j) { renderEntities(ul, form.getAttribute("data-review"), j.results || []); })
        .catch(function (err) { showError(ul, err); });
    } else if (form.id === "trace-form") {
      e.preventDefault();
      var tq = form.querySelector("input[name=q]").value.trim();
      var box = document.getElementById("trace-result");
      if (!tq) return;
      box.textContent = S.trace_loading;
      request("GET", "/api/trace?q=" + encodeURIComponent(tq)).then(function (j) { renderTrace(box, j, tq); })
        .catch(function (err) { showError(box, err); });
    }
  });

  // a backfill started before this page was loaded: follow it
  document.querySelectorAll(".backfill[data-job]").forEach(function (w) { pollBackfill(w, w.getAttribute("data-job")); });
})();
