"""Lead intake (issue 14): site form posts and mailbox mails, each against its anchor of the same run.

    python bench/intake.py [--only forms|mail] [--seconds 60] [--rate 200] [--n 2000] [--pg URL]

forms: posts/s with p50/p99 answered by a running `syncd run` over loopback, paced at --rate for
       --seconds (goal 200 posts/s for 60 s, p99 < 200 ms), then every 200 counted as a lead in the
       sandbox portal after the drain; anchor: a bare Starlette endpoint on the same uvicorn and
       loopback (bench/intake_forms.py).
mail:  mails/s through the imap connector (read, parse, ingest, route, commit) from a real Dovecot;
       anchor: a bare imapclient UID FETCH BODY.PEEK[] loop over the same folder (goal >= 0.5x;
       bench/intake_mail.py).

Prints each part's figures, then one JSON line with both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import intake_forms  # noqa: E402  (the two parts live beside this script)
import intake_mail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", choices=("forms", "mail"), help="run one part")
    ap.add_argument("--seconds", type=float, default=60.0, help="forms: paced phase length (goal: 60)")
    ap.add_argument("--rate", type=float, default=200.0, help="forms: offered posts/s (goal: 200)")
    ap.add_argument("--n", type=int, default=2000, help="mail: mails in the folder")
    ap.add_argument("--pg", metavar="URL", help="forms: PostgreSQL server instead of SQLite")
    a = ap.parse_args(argv)
    out: dict[str, Any] = {}
    if a.only in (None, "forms"):
        fargs = ["--seconds", str(a.seconds), "--rate", str(a.rate)] + (["--pg", a.pg] if a.pg else [])
        f = intake_forms.run(intake_forms.parser().parse_args(fargs))
        p, s, anc, d = f["paced"], f["saturation"], f["anchor"], f["drain"]
        print(f"forms ({f['store']}): paced {p['posts_per_s']} posts/s, p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms; "
              f"saturation {s['posts_per_s']} posts/s vs bare endpoint {anc['posts_per_s']} -> ratio "
              f"{f['ratio_vs_anchor']}; {d['leads_in_portal']}/{d['expected_leads']} leads after the drain; "
              f"goal {'met' if f['goal_met'] else 'NOT met'}")
        out["forms"] = f
    if a.only in (None, "mail"):
        m = intake_mail.run(intake_mail.parse_args(["--n", str(a.n)]))
        print(f"mail: {m['mails_per_s']} mails/s vs bare UID FETCH {m['anchor_mails_per_s']} mails/s -> ratio "
              f"{m['ratio']} (goal >= {intake_mail.GOAL}: {'met' if m['meets_goal'] else 'NOT met'}); parsing alone "
              f"{m['parse_only_mails_per_s']} mails/s")
        out["mail"] = m
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
