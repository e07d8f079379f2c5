"""Show that the test suite can fail: apply each mutation of the core in turn and run the tests
that guard it; a mutation the tests do not catch is a gap.

    python tests/mutations/run.py [--only NAME] [--keep] [--first]

Each mutation is applied to a copy of the source tree (never to the working tree), and its guarding
tests run against that copy on SQLite (and PostgreSQL when SYNCD_TEST_POSTGRES_URL is set), all of
them (no -x, unless --first): the report names every test that caught it. The three core mutations
(priority, dedup, stale versions) and the lost wake-up are also run against the concurrency model
alone (tests/pipeline/test_interleavings.py, whose oracle comes from what people did, not from what
syncd computed), which must catch them on its own. Hypothesis does not shrink in these runs (only
caught or not is asked).

Exit code 0 when every mutation is caught (and every model-alone run catches its mutation), else 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("tests/pipeline/test_interleavings.py",)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]          # (old, new), each must occur exactly once
    tests: tuple[str, ...]
    model: bool = False                         # the model tests alone must catch it too


def _m(name: str, file: str, old: str, new: str, tests: tuple[str, ...], model: bool = False) -> Mutation:
    return Mutation(name, file, ((old, new),), tests, model)


MUTATIONS = (
    _m("priority policy inverted", "syncd/pipeline/resolve.py",
       "if rank.get(incoming.system, big) < rank.get(current.system, big):",
       "if rank.get(incoming.system, big) > rank.get(current.system, big):",
       ("tests/pipeline/test_engine.py", "tests/pipeline/test_convergence.py"), model=True),
    _m("dedup disabled", "syncd/pipeline/match.py",
       "    cands = sorted(set(candidates))\n",
       "    cands = []\n",
       ("tests/pipeline/test_engine.py", "tests/pipeline/test_write_path.py"), model=True),
    _m("stale-version check removed", "syncd/pipeline/resolve.py",
       "    return incoming is not None and applied is not None and version_key(incoming) < version_key(applied)",
       "    return False",
       ("tests/pipeline/test_engine.py",), model=True),
    _m("payload frozen at plan time", "syncd/pipeline/payload.py",
       "    changed = plan.plan_fields(mapper, em, ent.golden, shadow, held)\n",
       "    changed = {k: v for k, v in schema.decode(row['payload']).items() if k in ent.golden} "
       "or plan.plan_fields(mapper, em, ent.golden, shadow, held)\n",
       ("tests/pipeline/test_write_path.py", "tests/pipeline/test_model.py")),
    _m("claims not fenced", "syncd/pipeline/outbox.py",
       "    n = conn.execute(update(t.outbox).where(o.id == row_id, o.claim_token == token, o.status == \"sending\")",
       "    n = conn.execute(update(t.outbox).where(o.id == row_id)",
       ("tests/pipeline/test_write_path.py",)),
    _m("claims not renewed", "syncd/pipeline/outbox.py",
       "                            .values(claim_until=now + dt.timedelta(seconds=ttl))).rowcount",
       "                            .values(claim_until=now)).rowcount",
       ("tests/pipeline/test_write_path.py",)),
    _m("review resolution not re-planning dependents", "syncd/pipeline/relink.py",
       "    touched = rules.run(batch, ents, set(changes), changes, set())\n    batch.flush_entities(ents)\n"
       "    plan.plan_batch(batch, ents, touched, origin=origin)\n    outbox.unblock(conn, [old], now=utcnow())\n",
       "    touched = set(changes)\n    batch.flush_entities(ents)\n",
       ("tests/pipeline/test_write_path.py", "tests/scenarios/test_s7_s8_faults.py")),
    _m("a record read back wakes nobody", "syncd/pipeline/batch.py",
       "            self.bound_here.add(eid)\n",
       "",
       ("tests/pipeline/test_write_path.py", "tests/pipeline/test_concurrency.py")),
    _m("senders never linked to their client", "syncd/pipeline/identify.py",
       "        if person_id is not None:\n",
       "        if False:\n",
       ("tests/pipeline/test_link.py",)),
    # issue 20
    Mutation("unblock wakes only rows already blocked", "syncd/pipeline/outbox.py", (
        ('    if present(conn, on, why, row["system"]):\n        _settle(conn, row["id"], "pending"',
         '    if False:\n        _settle(conn, row["id"], "pending"'),
        ('    after_commit(conn, lambda c: _wake_if_present(c, row["id"], on, why, row["system"]))\n', "")),
        ("tests/pipeline/test_concurrency.py",), model=True),
    _m("a restart releases claims of a live instance", "syncd/store/presence.py",
       "            if not force and row.expires_at >= now and held is not None and not held.dead_here():",
       "            if False:",
       ("tests/store/test_presence.py",)),
    _m("an unanswered update is settled as sent", "syncd/pipeline/confirm.py",
       "    outbox.again(conn, row[\"id\"], at=now + dt.timedelta(seconds=delay), attempts=attempts, last_error=text)",
       "    outbox.done(conn, row[\"id\"], attempts=attempts, last_error=text)",
       ("tests/pipeline/test_write_path.py", "tests/pipeline/test_engine.py")),
    _m("a record without an id is acknowledged", "syncd/pipeline/engine.py",
       "    if not wanted and not parsed.bad:\n",
       "    if not wanted:\n",
       ("tests/pipeline/test_engine.py", "tests/connectors/onec/test_failure_answers.py")),
    # issue 21
    _m("first contact takes the newer side", "syncd/pipeline/resolve.py",
       "            winner = cur_system\n            _record_conflict(batch, ent, name, \"first contact\"",
       "            winner = decide(rule, cur, inc).winner\n"
       "            _record_conflict(batch, ent, name, \"first contact\"",
       ("tests/pipeline/test_adoption.py", "tests/acceptance/test_first_contact.py",
        "tests/acceptance/test_s1_order_to_deal.py")),
    _m("an empty list replaces the items at first contact", "syncd/pipeline/resolve.py",
       "        if first and _blank(value) and not _blank(current):\n",
       "        if first and _blank(value) and not _blank(current) and not schema.is_list(name):\n",
       ("tests/pipeline/test_stages.py", "tests/pipeline/test_adoption.py", "tests/acceptance/test_first_contact.py",
        "tests/acceptance/test_s1_order_to_deal.py")),
    _m("a new contact does not wait for the CRM's first read", "connectors/bitrix24/connector.py",
       '    read_before_create = frozenset({"contact", "company"})',
       '    read_before_create = frozenset()',
       ("tests/acceptance/test_first_contact.py",)),
    _m("a create found on a retry is taken as made before syncd", "syncd/pipeline/confirm.py",
       '        how = "found" if result.found and not retried else "created"',
       '        how = "found" if result.found else "created"',
       ("tests/pipeline/test_concurrency.py",)),
    _m("identification not serialised across instances", "syncd/pipeline/identify.py",
       '    if types and batch.conn.dialect.name == "postgresql":',
       '    if False:',
       ("tests/pipeline/test_concurrency.py",)),
    _m("audit ignores product rows", "syncd/audit.py",
       "    fields = [n for n, fm in em.fields.items() if fm.direction != \"pull\" and not fm.create_only]",
       "    fields = [n for n, fm in em.fields.items() if fm.direction != \"pull\" and not fm.create_only "
       "and not schema.is_list(n)]",
       ("tests/pipeline/test_audit.py",)),
    # issue 20, this stop: reads and look-ups the portal's rate budget no longer pays for
    _m("a create sent again skips the look-up by its key", "connectors/bitrix24/writes.py",
       "                return fn(op if first or not op.unsent else dataclasses.replace(op, unsent=False))",
       "                return fn(op)",
       ("tests/scenarios/test_core_write_path.py",)),
    _m("a create skips the look-up before the portal was read through", "syncd/pipeline/payload.py",
       "                 and bool(traits.reads.get(em.kind)) and all((system, s) in data.read for s in traits.reads[em.kind]))",
       "                 )",
       ("tests/scenarios/test_core_write_path.py",)),
    _m("a manager's edit of a record syncd just wrote is taken for its echo", "connectors/bitrix24/events.py",
       "                del got[j]\n",
       "",
       ("tests/connectors/bitrix24/test_event_reads.py", "tests/daemon/test_bitrix24_events.py")),
    # issue 22
    _m("a deal form's visitor never becomes a contact", "connectors/forms/convert.py",
       "    if not any(canon.get(c) for c in (\"lead.name\", \"lead.email\", \"lead.phone\")):\n        return None\n",
       "    return None\n",
       ("tests/connectors/forms/test_forms_posts.py",)),
    _m("a live instance's job lease or claims are taken over", "syncd/store/presence.py",
       "        if row.expires_at < time.time():\n            return True\n        held = Holder.parse(row.holder)\n"
       "        return held is not None and held.dead_here()",
       "        return True",
       ("tests/store/test_presence.py",)),
    _m("a form visitor's words rewrite what syncd holds", "syncd/pipeline/resolve.py",
       "        if rec.statement and not _blank(current) and not schema.is_list(name):\n",
       "        if False:\n",
       ("tests/pipeline/test_stages.py", "tests/connectors/forms/test_forms_posts.py")),
    _m("a deal by phone never learns its shop order's key", "syncd/pipeline/confirm.py",
       "    if op.origin is None:\n        return\n    source = op.origin[0]",
       "    if True:\n        return\n    source = op.origin[0]",
       ("tests/pipeline/test_write_path.py", "tests/acceptance/test_s3_deal_by_phone.py")),
    _m("a CRM's line without the product link drops it", "syncd/pipeline/resolve.py",
       "            value = schema.keep_uncarried(name, current, value, frozenset(fm.items))",
       "            pass",
       ("tests/pipeline/test_stages.py", "tests/scenarios/test_three_crms.py")),
    _m("a call event answered before it is committed", "connectors/calls/connector.py",
       "            await asyncio.wrap_future(self._writer.submit(ev))",
       "            self._writer.submit(ev)",
       ("tests/connectors/calls/test_calls_kill.py",)),
    _m("a chat message answered before it is committed", "connectors/messengers/common.py",
       "            await asyncio.to_thread(self._ingest, records)",
       "            asyncio.get_running_loop().run_in_executor(None, self._ingest, records)",
       ("tests/connectors/messengers/test_telegram_kill.py",)),
    _m("a second record naming a bound source stalls the pull", "syncd/pipeline/identify.py",
       " and match.origin_allows(rule, origin[0]) and not _known(batch, origin, etype):",
       " and match.origin_allows(rule, origin[0]):",
       ("tests/pipeline/test_write_path.py",)),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "artifacts",
                                    ".cache", "*.egg-info", "build", "dist")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)


def _pytest(tmp: Path, python: str, tests: tuple[str, ...], first: bool) -> tuple[int, list[str], str]:
    env = dict(os.environ, PYTHONPATH=str(tmp), SYNCD_HYPOTHESIS_EXAMPLES=os.environ.get(
        "SYNCD_HYPOTHESIS_EXAMPLES", "150"), SYNCD_HYPOTHESIS_NO_SHRINK="1", PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([python, "-m", "pytest", *(["-x"] if first else []), "-q", "-p", "no:cacheprovider",
                        "--no-header", "-o", "addopts=", *tests], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=3600)
    failed = re.findall(r"^FAILED (\S+)", r.stdout, re.M)
    return r.returncode, failed, r.stdout[-600:] + r.stderr[-600:]


def run_one(m: Mutation, python: str, keep: bool, first: bool) -> tuple[bool, list[str], bool | None, list[str], float]:
    """(caught, by which tests, caught by the models alone (None: not asked), by which, seconds)."""
    tmp = Path(tempfile.mkdtemp(prefix="syncd-mut-"))
    t0 = time.monotonic()
    try:
        _copy_tree(tmp)
        path = tmp / m.file
        text = path.read_text(encoding="utf-8")
        for old, new in m.edits:
            if text.count(old) != 1:
                return False, [f"the mutation no longer applies ({m.file} changed): fix tests/mutations/run.py"], \
                    None, [], 0.0
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
        shutil.rmtree(tmp / ".hypothesis", ignore_errors=True)
        code, failed, tail = _pytest(tmp, python, m.tests, first)
        caught = code == 1 and bool(failed)
        if code not in (0, 1):
            failed = [f"pytest exit {code}: {tail}"]
        model_caught, model_failed = None, []
        if m.model:
            shutil.rmtree(tmp / ".hypothesis", ignore_errors=True)
            mcode, model_failed, _ = _pytest(tmp, python, MODELS, first)
            model_caught = mcode == 1 and bool(model_failed)
        return caught, failed, model_caught, model_failed, time.monotonic() - t0
    finally:
        if keep:
            print(f"  kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the mutations whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the mutated copies")
    ap.add_argument("--first", action="store_true", help="stop each run at its first failing test (-x)")
    args = ap.parse_args()
    python = sys.executable
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    missed = 0
    print(f"{len(chosen)} mutations; tests on SQLite"
          + (" and PostgreSQL" if os.environ.get("SYNCD_TEST_POSTGRES_URL") else "") + "\n", flush=True)
    for m in chosen:
        caught, by, model_caught, model_by, took = run_one(m, python, args.keep, args.first)
        missed += (not caught) + (model_caught is False)
        print(f"{'caught' if caught else 'MISSED':7} {m.name:48} {took:6.0f} s  {len(by)} test(s)", flush=True)
        for name in by:
            print(f"          {name}", flush=True)
        if model_caught is not None:
            print(f"  models alone: {'caught' if model_caught else 'MISSED'} by {len(model_by)} test(s)", flush=True)
            for name in model_by:
                print(f"          {name}", flush=True)
    print(f"\n{len(chosen)} mutations, {missed} gap(s)")
    return 0 if missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
