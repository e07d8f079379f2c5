"""Show that the test suite can fail: apply each mutation of the core in turn and run the tests
that guard it; a mutation the tests do not catch is a gap.

    python tests/mutations/run.py [--only NAME] [--keep]

Each mutation is applied to a copy of the source tree (never to the working tree), and the
guarding tests run against that copy on SQLite (and PostgreSQL when SYNCD_TEST_POSTGRES_URL is
set). The report prints one line per mutation: caught (with the first failing test) or MISSED.
Exit code 0 when every mutation is caught, 1 otherwise.
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


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "priority policy inverted", "syncd/pipeline/resolve.py",
        "if rank.get(incoming.system, big) < rank.get(current.system, big):",
        "if rank.get(incoming.system, big) > rank.get(current.system, big):",
        ("tests/pipeline/test_engine.py", "tests/pipeline/test_convergence.py")),
    Mutation(
        "dedup disabled", "syncd/pipeline/identify.py",
        "    cands = sorted(set(candidates))\n",
        "    cands = []\n",
        ("tests/pipeline/test_engine.py", "tests/pipeline/test_write_path.py")),
    Mutation(
        "stale-version check removed", "syncd/pipeline/resolve.py",
        "    return incoming is not None and applied is not None and version_key(incoming) < version_key(applied)",
        "    return False",
        ("tests/pipeline/test_engine.py",)),
    Mutation(
        "payload frozen at plan time", "syncd/pipeline/payload.py",
        "    changed = plan.plan_fields(mapper, em, ent.golden, shadow, held)\n",
        "    changed = {k: v for k, v in schema.decode(row['payload']).items() if k in ent.golden} "
        "or plan.plan_fields(mapper, em, ent.golden, shadow, held)\n",
        ("tests/pipeline/test_write_path.py", "tests/pipeline/test_model.py")),
    Mutation(
        "claims not fenced", "syncd/pipeline/outbox.py",
        "    n = conn.execute(update(t.outbox).where(t.outbox.c.id == row_id, t.outbox.c.claim_token == token,\n"
        "                                            t.outbox.c.status == \"sending\")",
        "    n = conn.execute(update(t.outbox).where(t.outbox.c.id == row_id)",
        ("tests/pipeline/test_write_path.py",)),
    Mutation(
        "claims not renewed", "syncd/pipeline/outbox.py",
        "                            .values(claim_until=now + dt.timedelta(seconds=ttl))).rowcount",
        "                            .values(claim_until=now)).rowcount",
        ("tests/pipeline/test_write_path.py",)),
    Mutation(
        "review resolution not re-planning dependents", "syncd/pipeline/holds.py",
        "    br._apply_rules(ents, touched)\n    br.flush_entities(ents)\n    br.plan(ents, touched, origin=origin)\n"
        "    outbox.unblock(conn, [old], now=utcnow())\n",
        "    br.flush_entities(ents)\n",
        ("tests/pipeline/test_write_path.py", "tests/scenarios/test_s7_s8_faults.py")),
    Mutation(
        "a record read back wakes nobody", "syncd/pipeline/engine.py",
        "            self._bound_here.add(eid)\n",
        "",
        ("tests/pipeline/test_write_path.py",)),
    Mutation(
        "senders never linked to their client", "syncd/pipeline/engine.py",
        "            if person_id is not None:\n",
        "            if False:\n",
        ("tests/pipeline/test_link.py",)),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "artifacts",
                                    ".cache", "*.egg-info", "build")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)


def run_one(m: Mutation, python: str, keep: bool) -> tuple[bool, str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="syncd-mut-"))
    try:
        _copy_tree(tmp)
        path = tmp / m.file
        text = path.read_text(encoding="utf-8")
        if text.count(m.old) != 1:
            return False, f"the mutation no longer applies ({m.file} changed): fix tests/mutations/run.py", 0.0
        path.write_text(text.replace(m.old, m.new), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(tmp), SYNCD_HYPOTHESIS_EXAMPLES=os.environ.get(
            "SYNCD_HYPOTHESIS_EXAMPLES", "30"), PYTHONDONTWRITEBYTECODE="1")
        t0 = time.monotonic()
        r = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
                            "-o", "addopts=", *m.tests], cwd=tmp, env=env, capture_output=True, text=True,
                           timeout=3600)
        took = time.monotonic() - t0
        failed = re.findall(r"^FAILED (\S+)", r.stdout, re.M)
        if r.returncode == 0:
            return False, "no test failed", took
        if r.returncode not in (1,):
            return False, f"pytest exit {r.returncode}: {r.stdout[-400:]}{r.stderr[-400:]}", took
        return True, failed[0] if failed else "(a test failed)", took
    finally:
        if keep:
            print(f"  kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the mutations whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the mutated copies")
    args = ap.parse_args()
    python = sys.executable
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    missed = 0
    print(f"{len(chosen)} mutations; tests on SQLite"
          + (" and PostgreSQL" if os.environ.get("SYNCD_TEST_POSTGRES_URL") else "") + "\n")
    for m in chosen:
        caught, detail, took = run_one(m, python, args.keep)
        missed += not caught
        print(f"{'caught' if caught else 'MISSED':7} {m.name:48} {took:6.0f} s  {detail}", flush=True)
    print(f"\n{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 0 if missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
