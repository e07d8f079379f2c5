"""The forms suite's world: a Bitrix24 sandbox portal set up as an integrator does, and `syncd run`
as a real process with site forms, posted to over real HTTP.

The portal is made through the sandbox's control API (a fresh portal with its own managers) and
its public REST (an existing client created with `crm.contact.add`), never the demo's seed. What a
test checks it reads through the portal's public REST (`crm.lead.list`), as a user would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from daemonproc import SyncdProcess


REPO = Path(__file__).resolve().parents[3]
ADMIN = "forms-admin-token-0123"

# the forms of the suite's daemon: name -> settings (TOML values)
BASE_FORM: dict[str, Any] = {
    "fields": {"your_name": "lead.name", "tel": "lead.phone", "mail": "lead.email", "msg": "lead.comment",
               "firm": "lead.company_name"},
    "required": ["tel"], "responsible": None, "source": "WEB", "rate_limit": 0, "duplicate_window": 600,
}


def form(token: str, **over: Any) -> dict[str, Any]:
    out = {**BASE_FORM, "token": token, **over}
    return {k: v for k, v in out.items() if v is not None}


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


class Portal:
    """A fresh sandbox portal: its admin's control API and its public REST (inbound webhook)."""

    def __init__(self, sandbox_url: str, name: str | None = None) -> None:
        self.control = sandbox_url + "/_sandbox"
        self.name = name or "forms-" + uuid.uuid4().hex[:8]
        info = self._call("POST", "/portals", {"name": self.name, "rate_limit": False})
        self.webhook_url = str(info["webhook_url"])
        self.http = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(method, self.control + path, json=body, timeout=30)
        assert r.status_code < 300, f"{method} {path} -> {r.status_code} {r.text}"
        return r.json()

    def add_user(self, name: str, last_name: str, **more: Any) -> str:
        u = self._call("POST", f"/{self.name}/users", {"name": name, "last_name": last_name, "online": True,
                                                        "workday": "OPENED", **more})
        return str(u["ID"] if "ID" in u else u["id"])

    def add_userfield(self, entity: str, name: str, type_: str, label: str) -> None:
        self._call("POST", f"/{self.name}/userfields", {"entity": entity, "field_name": name, "type": type_,
                                                         "label": label})

    def add_pipeline(self, name: str, stages: list[dict[str, str]]) -> int:
        return int(self._call("POST", f"/{self.name}/pipelines", {"name": name, "stages": stages})["id"])

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        r = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=30)
        body = r.json()
        assert "error" not in body, f"{method}: {body}"
        return body["result"]

    def leads(self, **flt: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            r = self.http.post(self.webhook_url + "crm.lead.list.json", json={
                "filter": flt, "select": ["*", "PHONE", "EMAIL"], "order": {"ID": "ASC"}, "start": start},
                timeout=30).json()
            assert "error" not in r, r
            out += r["result"]
            if "next" not in r:
                return out
            start = r["next"]

    def lead_count(self) -> int:
        r = self.http.post(self.webhook_url + "crm.lead.list.json", json={"select": ["ID"]}, timeout=30).json()
        return int(r["total"])


def write_config(tmp: Path, port: int, webhook_url: str, forms: dict[str, dict[str, Any]], *,
                 rules: str = "", db_url: str | None = None, push_interval: float = 0.2) -> Path:
    maps = [str(REPO / "mappings" / n) for n in ("sync.toml", "bitrix24.toml", "forms.toml")]
    if rules:
        (tmp / "rules.toml").write_text(rules, encoding="utf-8")
        maps.append(str(tmp / "rules.toml"))
    lines = ["[daemon]", f'database_url = "{db_url or f"sqlite:///{tmp}/syncd.db"}"',
             f'listen = "127.0.0.1:{port}"', f"mappings = {_toml(maps)}", f'state_dir = "{tmp}"',
             f"push_interval = {push_interval}", f'admin_token = "{ADMIN}"', "retention_days = 0", "",
             "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{webhook_url}"', "",
             "[systems.forms]", 'type = "forms"', ""]
    for name, fs in forms.items():
        lines.append(f"[systems.forms.form.{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in fs.items()]
        lines.append("")
    path = tmp / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Daemon(SyncdProcess):
    """`syncd run` serving the forms: the shared process helper, ready when /healthz answers."""

    def __init__(self, cfg: Path, port: int) -> None:
        super().__init__(cfg, port=port)

    def start(self) -> None:
        super().start()
        self.ready(30)

    def post(self, name: str, data: Any = None, *, json_body: Any = None, token: str | None = None,
             headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        h = dict(headers or {})
        if token is not None:
            h["X-Syncd-Token"] = token
        return self.http.post(f"{self.url}/hooks/forms/{name}", data=data, json=json_body, headers=h,
                              timeout=30, **kw)

    def person_known(self, db: str, email: str) -> bool:
        """Set-up readiness only (never an assertion): the daemon has pulled the existing contact."""
        return bool(_query(db, "SELECT 1 FROM match_keys WHERE type = 'person' AND key = :k", k=f"email:{email}"))

    def admin(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN}", **kw.pop("headers", {})}
        return self.http.request(method, self.url + path, headers=headers, timeout=30, **kw)


def _query(db: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Read the daemon's store (a SQLite file path or a database URL)."""
    from sqlalchemy import create_engine, text

    from syncd.store.db import normalize_url

    url = db if "://" in db else f"sqlite:///{db}"
    eng = create_engine(normalize_url(url))
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), params)]
    finally:
        eng.dispose()


def stored_fields(db: str | Path, system: str, submission_id: str, etype: str | None = None) -> dict[str, Any] | None:
    """The golden record syncd keeps for a submission (what the daemon committed), or None. A deal
    form's post is two records (the deal and its visitor): `etype` says which."""
    rows = _query(str(db), "SELECT e.fields, e.hold FROM bindings b JOIN entities e ON e.id = b.entity_id "
                           "WHERE b.system = :s AND b.external_id = :x" + (" AND b.type = :t" if etype else ""),
                  s=system, x=submission_id, **({"t": etype} if etype else {}))
    if not rows:
        return None
    return {**json.loads(rows[0][0]), "_hold": rows[0][1]}


def wait_leads(portal: Portal, n: int, timeout: float = 20.0, **flt: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = portal.leads(**flt)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.1)
