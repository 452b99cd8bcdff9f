"""Command line, the run keys: what decides a run's numbers, and new keys
after a change that moves code without changing a number.

    python -m extreme_memorization fingerprint [--out fingerprint.txt]
    python -m extreme_memorization rekey [--dry-run]
"""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_fingerprint(args) -> int:
    from ..pipeline import rekey

    if args.out:
        changed = rekey.write_fingerprint(Path(args.out))
        print(f"{args.out}: {'written' if changed else 'unchanged'}", file=sys.stderr)
    else:
        from ..training import fingerprint

        print(fingerprint.describe(), end="")
    return 0


def cmd_rekey(args) -> int:
    from ..pipeline import rekey

    counts = rekey.rekey(Path.cwd(), dry_run=args.dry_run)
    verb = "would get" if args.dry_run else "got"
    line = f"{counts['rekeyed']} runs {verb} a new key, {counts['current']} had it already"
    if not args.dry_run:
        line += (
            f"; {counts['stored']} filed into the run store; {counts['stages']} stages recorded in dvc.lock"
            "; the reports follow their run folders: `make reproduce` remakes them (`make reproduce GROUPS=GROUP` "
            "for one)"
        )
    print(line)
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("fingerprint", help="what decides a run's numbers besides settings and data (code, versions)")
    s.add_argument("--out", help="write it to this file (the DVC stage fingerprint: fingerprint.txt)")
    s.set_defaults(func=cmd_fingerprint)

    s = sub.add_parser("rekey", help="new run keys after code moved without a number changing (dvc.lock, run.json)")
    s.add_argument("--dry-run", action="store_true", help="count the runs whose key would change; write nothing")
    s.set_defaults(func=cmd_rekey)
