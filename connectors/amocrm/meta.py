"""What the account has set up: pipelines with their statuses, and custom fields per kind. Read once,
cached, read again when a record names an id the cache does not know (an admin added a status)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from connectors.amocrm.client import AmoClient
from syncd.errors import PermanentError

# system kind -> the API's entity type (its path and `_embedded` key)
ETYPES = {"lead": "leads", "contact": "contacts", "company": "companies"}
STREAMS = {"leads": "lead", "contacts": "contact", "companies": "company"}


@dataclass(frozen=True)
class CustomField:
    id: int
    code: str | None
    name: str
    type: str
    enums: dict[str, int] = field(default_factory=dict)     # option text -> enum id

    @property
    def key(self) -> str:
        """The field's name in syncd: its code (PHONE, SYNCD_KEY), else cf_<id>."""
        return self.code or f"cf_{self.id}"


@dataclass(frozen=True)
class Pipeline:
    id: int
    name: str
    is_main: bool
    statuses: tuple[tuple[int, str, int], ...]              # (id, name, sort), in sort order


class Catalog:
    def __init__(self, client: AmoClient, name: str) -> None:
        self.client, self.name = client, name
        self._fields: dict[str, list[CustomField]] = {}
        self._pipelines: list[Pipeline] | None = None
        self._lock = threading.Lock()

    # -- custom fields ------------------------------------------------------------------------------
    def fields(self, kind: str, *, refresh: bool = False) -> list[CustomField]:
        with self._lock:
            if refresh or kind not in self._fields:
                rows = self.client.all(f"{ETYPES[kind]}/custom_fields", "custom_fields")
                self._fields[kind] = [CustomField(int(r["id"]), r.get("code") or None, str(r.get("name") or ""),
                                                  str(r.get("type") or "text"),
                                                  {str(e["value"]): int(e["id"]) for e in r.get("enums") or []})
                                      for r in rows]
            return self._fields[kind]

    def field(self, kind: str, name: str) -> CustomField | None:
        """The custom field a syncd field name means: its code (any case) or cf_<id>; read the
        account's fields again once when it is not known (an admin may have just added it)."""
        for refresh in (False, True):
            for f in self.fields(kind, refresh=refresh):
                if (f.code and f.code.upper() == name.upper()) or name == f"cf_{f.id}":
                    return f
        return None

    def key_field(self, kind: str, code: str) -> CustomField:
        f = self.field(kind, code)
        if f is None:
            raise PermanentError(
                f"amoCRM has no {ETYPES[kind]} custom field with code {code!r}: syncd stamps its key there. "
                f"Create a text field (Настройки -> {ETYPES[kind]} -> Добавить поле, code {code}) or set "
                f"key_field", connector=self.name, code="NO_KEY_FIELD")
        return f

    # -- pipelines and statuses ---------------------------------------------------------------------
    def pipelines(self, *, refresh: bool = False) -> list[Pipeline]:
        with self._lock:
            if refresh or self._pipelines is None:
                data = self.client.get("leads/pipelines") or {}
                out = []
                for p in (data.get("_embedded") or {}).get("pipelines") or []:
                    sts = sorted(((int(s["id"]), str(s["name"]), int(s.get("sort") or 0))
                                  for s in (p.get("_embedded") or {}).get("statuses") or []), key=lambda x: x[2])
                    out.append(Pipeline(int(p["id"]), str(p["name"]), bool(p.get("is_main")), tuple(sts)))
                self._pipelines = sorted(out, key=lambda p: (not p.is_main, p.id))
            return self._pipelines

    def _pipeline(self, pid: Any) -> Pipeline | None:
        for refresh in (False, True):
            p = next((p for p in self.pipelines(refresh=refresh) if p.id == pid), None)
            if p is not None:
                return p
        return None

    def names_of(self, pid: Any, sid: Any) -> tuple[str | None, str | None]:
        """(pipeline name, status name) of a lead's ids."""
        p = self._pipeline(pid)
        if p is None:
            return None, None
        return p.name, next((n for i, n, _ in p.statuses if i == sid), None)

    def pipeline_id(self, name: str) -> int:
        for refresh in (False, True):
            p = next((p for p in self.pipelines(refresh=refresh) if p.name == name), None)
            if p is not None:
                return p.id
        known = ", ".join(repr(p.name) for p in self.pipelines())
        raise PermanentError(f"amoCRM has no pipeline named {name!r} (pipelines: {known})", connector=self.name,
                             code="UNKNOWN_PIPELINE")

    def status_id(self, pid: int, name: str) -> int:
        for refresh in (False, True):
            p = next((p for p in self.pipelines(refresh=refresh) if p.id == pid), None)
            sid = next((i for i, n, _ in p.statuses if n == name), None) if p else None
            if sid is not None:
                return sid
        p = self._pipeline(pid)
        known = ", ".join(repr(n) for _, n, _ in p.statuses) if p else ""
        raise PermanentError(f"amoCRM pipeline {p.name if p else pid!r} has no status named {name!r} "
                             f"(statuses: {known})", connector=self.name, code="UNKNOWN_STATUS")

    def main_pipeline(self) -> Pipeline:
        ps = self.pipelines()
        return next((p for p in ps if p.is_main), ps[0])
