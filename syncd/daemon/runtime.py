"""Everything the daemon runs, built once from Settings: store, mapper, connectors, syncer."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from typing import Any, Callable, Mapping, Sequence

import structlog

from syncd import names
from syncd.config import Settings
from syncd.connector import Batch, Connector, Health, WriteClaim
from syncd.mapping import Mapper, load_mappings
from syncd.pipeline.counts import Counts
from syncd.pipeline.push import PushPolicy
from syncd.registry import connector_type
from syncd.store import Store, utcnow
from syncd.store.presence import Presence
from syncd.store.stats import collect
from syncd.sync import Syncer

log = structlog.get_logger("syncd.runtime")

PAUSED_KEY = "daemon:paused"       # {system: {"at": iso time}}: shared by instances on one database


class _Context:
    """ConnectorContext: a connector's own state and its ways into the engine."""

    def __init__(self, rt: "Runtime", system: str) -> None:
        self.rt, self.system = rt, system

    def state_get(self, key: str, default: Any = None) -> Any:
        return self.rt.store.kv_get(f"conn:{self.system}:{key}", default)

    def state_set(self, key: str, value: Any) -> None:
        self.rt.store.kv_set(f"conn:{self.system}:{key}", value)

    def state_swap(self, key: str, expected: Any, value: Any) -> bool:
        return self.rt.store.kv_swap(f"conn:{self.system}:{key}", expected, value)

    def ingest(self, batch: Batch) -> Counts:
        return self.rt.ingest(self.system, batch)

    def trigger(self, stream: str) -> None:
        self.rt.trigger(self.system, stream)

    def peer(self, system: str) -> Connector | None:
        """Another configured system's connector (the calls connector reads the CRM's users, with
        their extensions and presence, through its describe()); None when not configured."""
        return self.rt.connectors.get(system)

    def rate_budget(self, key: str, rate: float, burst: float) -> Any:
        """A peer's request rate shared by every instance on this database (one per portal)."""
        return self.rt.store.rate_budget(key, rate, burst)

    def take_writes(self, limit: int | None = None) -> WriteClaim:
        if self.rt.is_paused(self.system):
            # a paused system gets nothing: the peer downloads an empty document, the writes wait
            return WriteClaim(f"paused-{os.urandom(8).hex()}", [])
        return self.rt.syncer.pusher.take(self.system, limit=limit)

    def settle_writes(self, token: str, results: Mapping[str, Any]) -> Counts:
        return self.rt.syncer.pusher.settle_download(self.system, token, results)

    def release_writes(self, token: str, op_ids: Sequence[str] | None = None) -> None:
        self.rt.syncer.pusher.release_download(token, op_ids)

    @property
    def store(self) -> Store:
        return self.rt.store

    @property
    def mapper(self) -> Mapper:
        return self.rt.mapper


def stable_instance(state_dir: str, base_dir: Any = None) -> str:
    """This installation's name, the same after every restart, so a restarted daemon takes back
    its own claims at once: kept in `<state_dir>/instance-id` (made on first start)."""
    path = os.path.join(state_dir, "instance-id")
    try:
        with open(path, encoding="utf-8") as f:
            name = f.read().strip()
        if name:
            return name
    except OSError:
        pass
    name = f"{socket.gethostname()}-{os.urandom(3).hex()}"
    try:
        os.makedirs(state_dir, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:
            f.write(name + "\n")
        return name
    except FileExistsError:
        return stable_instance(state_dir, base_dir)
    except OSError:
        # no writable state dir (a read-only CLI run): a name stable for this config's place
        import hashlib

        digest = hashlib.sha1(f"{state_dir}|{base_dir}".encode()).hexdigest()[:6]
        return f"{socket.gethostname()}-{digest}"


class Runtime:
    def __init__(self, settings: Settings, *, connect: bool = True) -> None:
        self.settings = settings
        d = settings.daemon
        self.started_at = utcnow()
        self.stale_repaired = 0            # blocked writes the sweep woke since start (see sweep_outbox)
        self.store = Store(d.database_url)
        # the name this process works under: the installation's, unless a live process holds it
        self.presence = Presence(self.store, d.instance or stable_instance(d.state_dir, settings.base_dir))
        self.mapper = Mapper(load_mappings(d.mappings, base=settings.base_dir))
        self.connectors: dict[str, Connector] = {}
        self.trigger_hook: Callable[[str, str], None] | None = None
        self._ingest_lock = threading.Lock()
        self._stream_locks: dict[tuple[str, str], threading.Lock] = {}
        self._stream_locks_guard = threading.Lock()
        if connect:
            for name, sys_settings in settings.systems.items():
                ctype = connector_type(sys_settings.type)
                self.connectors[name] = ctype.factory(name, settings.connector_settings[name], _Context(self, name))
        self.rules_cfg = self._parse_rules()
        # CRM pipelines, stages, sources and users by name or id (syncd.names): forms, mailboxes,
        # the CRM maps' defaults, the rules' managers and defaults — resolved at the CRM's live check
        self.name_slots = names.slots(settings, self.mapper, self.rules_cfg)
        self.names_resolved = not names.wanted(self.name_slots)
        self.rules, self.rules_tick = self._build_rules()
        p = settings.push
        self.syncer = Syncer(self.store, self.mapper, self.connectors, rules=self.rules,
                             worker=self.presence.base, presence=self.presence,
                             policy=PushPolicy(max_attempts=p.max_attempts, inline_tries=p.inline_tries,
                                               base_delay=p.base_delay, max_delay=p.max_delay,
                                               claim_ttl=p.claim_ttl),
                             intake=self._build_intake())

    @property
    def instance(self) -> str:
        """This process's name among the instances on the database (syncd.store.presence)."""
        return self.presence.name

    def _build_intake(self) -> Any:
        """The routing stage of mailboxes' mail and chats' messages (None without such a system)."""
        from syncd.pipeline.route import Router, routes_from

        routes = routes_from(self.settings)
        return Router(routes) if routes else None

    def _parse_rules(self) -> Any:
        """The rules, parsed once: the hook and the tick share them (and names resolve in them)."""
        if not self.mapper.ms.rules:
            return None
        from syncd.rules import parse_rules

        return parse_rules(dict(self.mapper.ms.rules))

    def _build_rules(self) -> tuple[Any, Any]:
        """The engine's rule hook and the scheduler's per-minute tick (timers, repeat sales, metrics)."""
        if self.rules_cfg is None:
            return None, None
        from syncd.mapping.live import canonical_views
        from syncd.rules import build_rule_hook, build_tick

        # the rules name stages canonically: each CRM's pipelines read through its value maps
        views = canonical_views(self.mapper, self.connectors)
        return (build_rule_hook(self.rules_cfg, self.store, views), build_tick(self.rules_cfg, self.store, views))

    def tick_rules(self, now: dt.datetime | None = None) -> int:
        """Evaluate timers, repeat-sales and metrics once; returns the actions taken."""
        if self.rules_tick is None:
            return 0
        lease = "job:rules:tick"
        if not self.lease(lease):
            return 0
        try:
            return int(self.rules_tick(self.syncer.engine, now or utcnow()) or 0)
        finally:
            self.store.release_lease(lease, self.instance)

    def resolve_names(self, system: str) -> list[str]:
        """Config values given by name, resolved through `system` when it is the CRM that has them
        (its live check calls this): the ids put in place, or one problem per unknown name."""
        conn = self.connectors.get(system)
        if self.names_resolved or conn is None or not hasattr(conn, "describe"):
            return []
        live = conn.describe()
        if not live.names:
            return []                       # not the CRM these names are in
        problems = names.resolve(self.name_slots, live)
        if not problems:
            self.names_resolved = True
            if self.syncer.intake is not None and hasattr(self.syncer.intake, "routes"):
                from syncd.pipeline.route import routes_from
                self.syncer.intake.routes = routes_from(self.settings)     # the mailboxes' and chats' routes, with ids
            log.info("names_resolved", system=system, names={s.where: s.resolved for s in self.name_slots
                                                             if not s.is_id()})
        return problems

    def lease(self, name: str, ttl: float | None = None) -> bool:
        """Take job lease `name` (one instance runs a job at a time). A lease held by an instance
        that is gone — its presence expired, or its process on this host no longer runs (kill -9)
        — is taken at once instead of after the rest of `daemon.lease_ttl`."""
        ttl = self.settings.daemon.lease_ttl if ttl is None else ttl
        if self.store.acquire_lease(name, self.instance, ttl):
            return True
        held = self.store.lease_holder(name)
        if held is None or held == self.instance or not self.presence.gone(held):
            return False
        if self.store.take_lease_from(name, held, self.instance, ttl):
            log.warning("lease_taken_from_dead_instance", lease=name, dead=held, instance=self.instance)
            return True
        return False

    # -- work -----------------------------------------------------------------------------------
    def ingest(self, system: str, batch: Batch) -> Counts:
        """Push connectors deliver what arrived here (1C upload, form post)."""
        run_id = self.store.start_run(system, batch.stream, self.instance)
        try:
            counts = self.syncer.engine.ingest(system, batch, run_id=run_id)
        except Exception as exc:
            self.store.finish_run(run_id, {"failed": 1}, f"{type(exc).__name__}: {exc}")
            raise
        self.store.finish_run(run_id, counts.as_dict())
        return counts

    def _stream_lock(self, system: str, stream: str) -> threading.Lock:
        with self._stream_locks_guard:
            return self._stream_locks.setdefault((system, stream), threading.Lock())

    def run_stream(self, system: str, stream: str, *, since: dt.datetime | None = None,
                   progress: Callable[..., None] | None = None, wait: bool = False) -> Counts | None:
        """One run of one stream, under a lease so one instance polls a stream at a time, and a
        lock so this process never reads one stream twice at once (a scheduled poll, a webhook's
        trigger, a backfill from the page). A run that finds the stream busy is skipped (None),
        unless `wait`: then it waits for the other run to finish."""
        lock = self._stream_lock(system, stream)
        if not lock.acquire(blocking=wait):
            log.debug("stream_busy", system=system, stream=stream)
            return None
        try:
            lease = f"job:{system}:{stream}"
            if not self.lease(lease):
                log.debug("lease_held_elsewhere", system=system, stream=stream)
                return None
            try:
                return self.syncer.pull(system, stream, since=since, progress=progress)
            finally:
                self.store.release_lease(lease, self.instance)
        finally:
            lock.release()

    def push(self, system: str, max_rows: int | None = None) -> Counts:
        return self.syncer.push(system, max_rows=max_rows)

    def push_all(self) -> Counts:
        total = Counts()
        for name in self.connectors:
            total.add(self.push(name))
        return total

    def sync_once(self, systems: list[str] | None = None, *, since: dt.datetime | None = None,
                  progress: Callable[[int], None] | None = None) -> Counts:
        total = Counts()
        for name in systems or list(self.connectors):
            for stream in self.connectors[name].streams:
                c = self.run_stream(name, stream, since=since, progress=progress)
                if c:
                    total.add(c)
        total.add(self.push_all())
        return total

    def trigger(self, system: str, stream: str) -> None:
        if self.trigger_hook is not None:
            self.trigger_hook(system, stream)
        elif not self.is_paused(system):
            threading.Thread(target=self.run_stream, args=(system, stream), daemon=True).start()

    # -- pause ----------------------------------------------------------------------------------
    def paused(self) -> dict[str, dict[str, Any]]:
        """Paused systems: nothing is pulled from them or pushed to them until resumed."""
        return dict(self.store.kv_get(PAUSED_KEY, {}) or {})

    def is_paused(self, system: str) -> bool:
        return system in self.paused()

    def set_paused(self, system: str, paused: bool) -> bool:
        """Pause or resume a system; returns whether anything changed."""
        if system not in self.connectors and system not in self.settings.systems:
            raise KeyError(f"no system {system!r}")
        with self.store.begin() as c:
            cur = dict(self.store.kv_get(PAUSED_KEY, {}, conn=c) or {})
            if paused == (system in cur):
                return False
            if paused:
                cur[system] = {"at": utcnow().isoformat()}
            else:
                cur.pop(system, None)
            self.store.kv_set(PAUSED_KEY, cur, conn=c)
        log.info("paused" if paused else "resumed", system=system)
        return True

    # -- watching -------------------------------------------------------------------------------
    def health(self) -> dict[str, Health]:
        out = {}
        for name, c in self.connectors.items():
            try:
                out[name] = c.health()
            except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
                out[name] = Health(False, f"{type(exc).__name__}: {exc}")
        return out

    def sweep_outbox(self) -> int:
        """Check the invariant "no write is blocked on a record that is there" and repair it; returns
        the writes it woke (0 unless a wake-up was missed, which is logged as the bug it is)."""
        from syncd.pipeline import outbox

        with self.store.begin() as c:
            n = outbox.sweep(c)
        if n:
            self.stale_repaired += n
            log.warning("blocked_writes_woken_by_sweep", writes=n,
                        note="they waited for records that exist; a wake-up was missed")
        return n

    def reclaim_gone(self) -> int:
        """Claims of instances that are gone (killed on this host, or their presence expired) are
        taken back now, not when each claim's `push.claim_ttl` runs out; counted as an attempt
        (outbox.reclaim). A live instance's claims are never touched."""
        from syncd.pipeline import outbox

        n = 0
        for name in outbox.claimers(self.store, exclude=self.instance):
            if self.presence.gone(name):
                k = outbox.reclaim(self.store, name)
                if k:
                    log.warning("claims_of_gone_instance_taken_back", dead=name, rows=k, instance=self.instance)
                n += k
        return n

    def audit(self, *, sample: int | None = None, systems: list[str] | None = None, repair: bool = False) -> Any:
        """Read bound records back and compare them (syncd.audit); remembered for stats and metrics."""
        from syncd import audit

        report = audit.audit(self.store, self.mapper, {n: c for n, c in self.connectors.items()
                                                       if not self.is_paused(n)},
                             systems=systems, sample=sample, repair=repair, ingest=self.syncer.engine.ingest)
        audit.remember(self.store, report, sample=sample is not None)
        return report

    def downloads(self) -> list[str]:
        """Systems that fetch syncd's writes when they connect (1C): their writes wait for them."""
        from syncd.registry import connector_type

        out = []
        for name, sys_settings in self.settings.systems.items():
            try:
                if connector_type(sys_settings.type).delivery == "download":
                    out.append(name)
            except KeyError:
                continue                    # an unknown type is config's error, said elsewhere
        return out

    def stats(self) -> dict[str, Any]:
        from syncd import audit
        from syncd.pipeline import outbox
        from syncd.store.retention import database_size

        out = collect(self.store, sorted(self.connectors) or sorted(self.settings.systems), self.started_at,
                      downloads=self.downloads())
        out["database"] = database_size(self.store)
        with self.store.read() as c:
            out["totals"]["outbox_blocked_stale"] = outbox.stale_blocked(c)
        out["totals"]["outbox_blocked_stale_repaired"] = self.stale_repaired
        last = audit.last(self.store)
        out["audit"] = last
        out["totals"]["drift_records"] = int(last["drift_records"]) if last else 0
        for name, it in out["integrations"].items():
            it["drift_records"] = int((last or {}).get("by_system", {}).get(name, 0))
        return out

    def close(self) -> None:
        self.presence.leave()
        for c in self.connectors.values():
            try:
                c.close()
            except Exception:  # noqa: BLE001
                log.warning("connector_close_failed", system=getattr(c, "name", "?"))
        self.store.close()
