"""A world for the 1C exchange tests: a memory CRM, syncd (engine + onec endpoint served over HTTP), 1C."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route as StarletteRoute

from connectors.onec import OneCConnector, OneCSettings
from syncd.connector import Batch
from syncd.keys.generate import make_account, make_bik, make_corr_account, make_inn, make_kpp, make_ogrn
from syncd.mapping import Mapper, load_mappings
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.sandbox.onec import OneCClient
from syncd.sandbox.server import ServerHandle, serve_in_thread
from syncd.store import Store
from syncd.sync import Syncer

ROOT = Path(__file__).resolve().parents[3]
LOGIN, PASSWORD = "exchange", "s3cret-пароль"

CRM_MAPPING = """
[[maps]]
system = "crm"
kind = "order"
entity = "order"
create = true
[maps.fields]
"order.number" = "number"
"order.title" = "title"
"order.total" = { field = "total", transform = "money" }
"order.status" = { field = "stage", values = "crm_stages" }
"order.company" = "company_id"
"order.customer" = "contact_id"
"order.to_onec" = { field = "to_1c", transform = "bool_text" }
"order.paid" = { field = "paid", transform = "bool_text" }
"order.paid_at" = "paid_at"
"order.shipped" = { field = "shipped", transform = "bool_text" }
"order.shipment_number" = "shipment_no"
"order.signed" = { field = "signed", transform = "bool_text" }
"order.posted" = { field = "posted", transform = "bool_text" }
"order.onec_number" = "number_1c"
"order.items" = { field = "rows", items = { name = "name", quantity = "qty", price = "price" } }

[[maps]]
system = "crm"
kind = "company"
entity = "company"
create = true
[maps.fields]
"company.name" = "title"
"company.inn" = "inn"
"company.kpp" = "kpp"
"company.ogrn" = "ogrn"
"company.legal_address" = "address"
"company.email" = "email"
"company.phone" = "phone"
"company.bank_accounts" = { field = "banks", items = { account = "acc", bik = "bik", corr_account = "corr", bank_name = "bank" } }

[[maps]]
system = "crm"
kind = "person"
entity = "person"
create = true
[maps.fields]
"person.name" = "name"
"person.email" = "email"
"person.phone" = "phone"

[values.crm_stages]
map = { new = "NEW", paid = "PREPAYMENT_INVOICE", shipped = "EXECUTING", completed = "WON", canceled = "LOSE" }
default_pull = "new"

[identity.company]
keys = ["inn_kpp", "email", "phone"]
origin = ["crm"]
[identity.person]
keys = ["email", "phone"]
origin = ["crm"]
[identity.order]
keys = ["number"]
origin = ["crm"]

[conflicts."*"]
policy = "newest"
"""


class Ctx:
    """ConnectorContext over a store and a syncer (what the daemon's runtime gives a connector)."""

    def __init__(self, store: Store, system: str = "onec") -> None:
        self.store, self.system = store, system
        self.syncer: Syncer | None = None
        self.ingested: list[Any] = []

    def state_get(self, key: str, default: Any = None) -> Any:
        return self.store.kv_get(f"conn:{self.system}:{key}", default)

    def state_set(self, key: str, value: Any) -> None:
        self.store.kv_set(f"conn:{self.system}:{key}", value)

    def state_swap(self, key: str, expected: Any, value: Any) -> bool:
        return self.store.kv_swap(f"conn:{self.system}:{key}", expected, value)

    def ingest(self, batch: Batch) -> Any:
        assert self.syncer is not None
        self.ingested.append(batch)
        return self.syncer.engine.ingest(self.system, batch)

    def trigger(self, stream: str) -> None:
        return None

    def take_writes(self, limit: int | None = None) -> Any:
        assert self.syncer is not None
        return self.syncer.pusher.take(self.system, limit=limit)

    def settle_writes(self, token: str, results: Any) -> Any:
        assert self.syncer is not None
        return self.syncer.pusher.settle_download(self.system, token, results)

    def release_writes(self, token: str, op_ids: Any = None) -> None:
        assert self.syncer is not None
        self.syncer.pusher.release_download(token, op_ids)


def requisites(seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    bik = make_bik(rng=rng)
    return {"inn": make_inn(rng=rng), "kpp": make_kpp(rng=rng), "ogrn": make_ogrn(rng=rng), "bik": bik,
            "account": make_account(bik, rng=rng), "corr": make_corr_account(bik, rng=rng)}


@dataclass
class World:
    tmp: Path
    store: Store
    crm: MemorySystem
    mapper: Mapper
    settings: dict[str, Any] = field(default_factory=dict)
    ctx: Ctx | None = None
    onec: OneCConnector | None = None
    syncer: Syncer | None = None
    server: ServerHandle | None = None
    clients: list[OneCClient] = field(default_factory=list)
    worker: str = "w"
    twins: list[World] = field(default_factory=list)
    owns_store: bool = False

    def start(self) -> World:
        """(Re)build the endpoint on the same store and spool, and serve it (a daemon (re)start)."""
        if self.server is not None:
            self.server.stop()
        self.ctx = Ctx(self.store)
        opts = {"login": LOGIN, "password": PASSWORD, "spool_dir": str(self.tmp / "spool"), **self.settings}
        self.onec = OneCConnector("onec", OneCSettings(**opts), self.ctx)
        self.syncer = Syncer(self.store, self.mapper, {"crm": MemoryConnector("crm", self.crm), "onec": self.onec},
                             policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0), worker=self.worker)
        self.ctx.syncer = self.syncer
        app = Starlette(routes=[StarletteRoute(r.path, r.endpoint, methods=list(r.methods))
                                for r in self.onec.http_routes()])
        self.server = serve_in_thread(app)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + self.onec.settings.path  # type: ignore[union-attr]

    def client(self, **kw: Any) -> OneCClient:
        c = OneCClient(self.url, kw.pop("login", LOGIN), kw.pop("password", PASSWORD), **kw)
        self.clients.append(c)
        return c

    def twin(self, **settings: Any) -> World:
        """A second syncd instance on the same database (its own Store, engine, endpoint and
        server), with the same settings (spool_dir included) unless overridden."""
        other = World(self.tmp, Store(self.store.url), self.crm, self.mapper, {**self.settings, **settings},
                      worker=f"{self.worker}-{len(self.twins) + 2}", owns_store=True)
        self.twins.append(other.start())
        return other

    def sync(self) -> None:
        assert self.syncer is not None
        self.syncer.until_quiet()

    def stop(self) -> None:
        for t in self.twins:
            t.stop()
        for c in self.clients:
            c.close()
        if self.server is not None:
            self.server.stop()
        if self.owns_store:
            self.store.close()


def make_world(tmp: Path, store: Store, **settings: Any) -> World:
    (tmp / "crm.toml").write_text(CRM_MAPPING, encoding="utf-8")
    mapper = Mapper(load_mappings([ROOT / "mappings" / "onec.toml", tmp / "crm.toml"]))
    crm = MemorySystem("crm", ("company", "person", "order"))
    return World(tmp, store, crm, mapper, settings).start()


def crm_deal(world: World, *, number: str = "D-1001", to_1c: bool = True, seed: int = 1) -> dict[str, Any]:
    """A company and a deal typed into the CRM by a manager."""
    r = requisites(seed)
    world.crm.edit("company", f"co-{seed}", title=f"ООО \"Ромашка-{seed}\"", inn=r["inn"], kpp=r["kpp"],
                   ogrn=r["ogrn"], address="119991, Москва, ул. Лесная, д. 5", email=f"zakaz{seed}@romashka.example",
                   banks=[{"acc": r["account"], "bik": r["bik"], "corr": r["corr"], "bank": "ПАО Сбербанк"}])
    world.crm.edit("order", f"deal-{number}", number=number, title=f"Сделка {number}", total="5880.00",
                   stage="NEW", company_id=f"co-{seed}", to_1c="true" if to_1c else "false",
                   rows=[{"name": "Кружка керамическая 350 мл", "qty": "12", "price": "490.00"}])
    return r


def waiting(world: World) -> dict[str, int]:
    """Writes for 1C still to be confirmed by it, by entity type (open outbox rows of `onec`)."""
    from sqlalchemy import func, select

    from syncd.store import tables as t

    with world.store.read() as c:
        return dict(c.execute(select(t.outbox.c.entity_type, func.count()).where(
            t.outbox.c.system == "onec", t.OPEN_WRITES).group_by(t.outbox.c.entity_type)).all())
