"""A real daemon HTTP app on a free port, over a Runtime built from a config file on disk.

Two in-memory systems (`crm-…` and `shop-…`, unique per test because the memory peers live in a
process-global registry); the shop's type `memory_pw` is a memory connector that also takes a
password from `${SHOP_PASSWORD}` and can be told to fail with it in the error message, so the
tests can check that secrets never reach /, /stats or /metrics.
"""

from __future__ import annotations

import json
import sys
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from factories import mapping_doc  # tests/ is on pythonpath (pyproject)
from pydantic import ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse

import syncd.registry
from syncd.config import load_settings
from syncd.connector import ConnectorType, Route
from syncd.daemon.http import create_app
from syncd.daemon.runtime import Runtime
from syncd.errors import TransientError
from syncd.sandbox import memory
from syncd.sandbox.server import ServerHandle, serve_in_thread

TOKEN = "adm-9f1c2e7b5d3a4c6e8b0f"
SHOP_PASSWORD = "shop-pw-Qz7#x81kLm"


# -- a memory connector with a password and a route of its own ----------------------------------
class PasswordSettings(memory.MemorySettings):
    model_config = ConfigDict(extra="forbid")
    password: str


class PasswordConnector(memory.MemoryConnector):
    def __init__(self, name: str, system: memory.MemorySystem, password: str, batch_size: int = 500,
                 read_delay: float = 0.0) -> None:
        super().__init__(name, system, batch_size, read_delay=read_delay)
        self.password = password
        self.fail_reads = 0           # the next N reads fail with the password in the message

    def read(self, stream: str, cursor: str | None, *, since: Any = None) -> Any:
        if self.fail_reads > 0:
            self.fail_reads -= 1
            raise TransientError(f"login to https://syncd:{self.password}@shop.example/ failed", connector=self.name)
        return super().read(stream, cursor, since=since)

    def http_routes(self) -> list[Route]:
        async def ping(request: Request) -> JSONResponse:
            if request.headers.get("x-shop-password") != self.password:
                return JSONResponse({"error": "forbidden"}, status_code=403)
            return JSONResponse({"pong": self.name})
        return [Route(f"/shop/{self.name}/ping", ping, ("GET",))]


def _factory(name: str, settings: PasswordSettings, ctx: Any) -> PasswordConnector:
    system = memory._SYSTEMS.setdefault(name, memory.MemorySystem(name, tuple(settings.kinds)))
    return PasswordConnector(name, system, settings.password, settings.batch_size, settings.read_delay)


password_connector = ConnectorType("memory_pw", PasswordSettings, _factory, "memory + password (tests)")


# -- TOML --------------------------------------------------------------------------------------
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)          # \uXXXX escapes are valid TOML
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_doc(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items())


def _rename(v: Any, names: dict[str, str]) -> Any:
    if isinstance(v, str):
        return names.get(v, v)
    if isinstance(v, list):
        return [_rename(x, names) for x in v]
    if isinstance(v, dict):
        return {k: _rename(x, names) for k, x in v.items()}
    return v


# -- the environment ---------------------------------------------------------------------------
@dataclass
class Env:
    rt: Runtime
    server: ServerHandle
    crm: str
    shop: str
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.url

    def remote(self, name: str) -> memory.MemorySystem:
        return memory._SYSTEMS[name]

    def settle(self, passes: int = 4) -> None:
        for _ in range(passes):
            self.rt.sync_once()

    def shop_person(self, ext: str = "s1", **fields: Any) -> None:
        base = {"name": "Иван Петров", "email": "ivan@example.ru", "comment": "первый"}
        self.remote(self.shop).edit("person", ext, **{**base, **fields})

    def crm_id(self, ext: str = "s1") -> str:
        eid = self.rt.store.find_entity(self.shop, "person", ext)
        assert eid is not None
        crm_ext = self.rt.store.external_id(eid, self.crm)
        assert crm_ext is not None
        return crm_ext

    def make_conflict(self) -> dict[str, Any]:
        """What users do: the same person's comment edited in both systems between two syncs."""
        self.shop_person()
        self.settle()
        crm_ext = self.crm_id()
        self.remote(self.shop).edit("person", "s1", comment="из магазина")
        self.remote(self.crm).edit("person", crm_ext, comment="из CRM")
        self.settle()
        open_ = self.rt.store.list_conflicts()
        assert len(open_) == 1 and open_[0]["field"] == "person.comment", open_
        return open_[0]


def build_env(tmp_path: Path, *, admin_token: bool = True, daemon: str = "", shop: str = "",
              trace: Any = None, database_url: str | None = None) -> Env:
    """`daemon` and `shop`: extra TOML lines for [daemon] and the shop's [systems] table; `trace`:
    the app's /api/trace answer (a fake of syncd.trace); `database_url`: SQLite in tmp_path unless
    given."""
    suffix = uuid.uuid4().hex[:8]
    crm, shop_name = f"crm-{suffix}", f"shop-{suffix}"
    (tmp_path / "mappings").mkdir(exist_ok=True)
    doc = mapping_doc(systems=("crm", "shop"),
                      conflicts={"person.comment": {"policy": "review"},
                                 "order.status": {"policy": "owner", "owner": "shop"},
                                 "*": {"policy": "newest"}},
                      origin={"person": ["shop"], "order": ["shop", "crm"]})
    doc = _rename(doc, {"crm": crm, "shop": shop_name})
    (tmp_path / "mappings" / "main.toml").write_text(toml_doc(doc), encoding="utf-8")
    token_line = 'admin_token = "${SYNCD_ADMIN_TOKEN}"\n' if admin_token else ""
    (tmp_path / "config.toml").write_text(
        "[daemon]\n"
        f'database_url = "{database_url or f"sqlite:///{tmp_path}/syncd.db"}"\n'
        f"{token_line}"
        f'instance = "test-{suffix}"\n'
        'mappings = ["mappings/*.toml"]\n'
        f"{daemon}\n\n"
        "[push]\nbase_delay = 0\n\n"
        f'[systems."{crm}"]\ntype = "memory"\n\n'
        f'[systems."{shop_name}"]\ntype = "memory_pw"\npassword = "${{SHOP_PASSWORD}}"\n{shop}\n',
        encoding="utf-8")
    settings = load_settings(tmp_path / "config.toml", env={"SYNCD_ADMIN_TOKEN": TOKEN,
                                                             "SHOP_PASSWORD": SHOP_PASSWORD})
    rt = Runtime(settings)
    server = serve_in_thread(create_app(rt, trace=trace))
    return Env(rt, server, crm, shop_name, tmp_path)


_HOLDER = "syncd_tests_daemon_memory_pw"


@pytest.fixture(autouse=True)
def _memory_pw_type(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType(_HOLDER)
    mod.connector = password_connector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, _HOLDER, mod)
    monkeypatch.setitem(syncd.registry._available(), "memory_pw", f"{_HOLDER}:connector")


def _teardown(env: Env) -> None:
    env.server.stop()
    env.rt.close()
    memory._SYSTEMS.pop(env.crm, None)
    memory._SYSTEMS.pop(env.shop, None)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = build_env(tmp_path)
    yield e
    _teardown(e)


@pytest.fixture
def env_no_token(tmp_path: Path) -> Iterator[Env]:
    e = build_env(tmp_path, admin_token=False)
    yield e
    _teardown(e)
