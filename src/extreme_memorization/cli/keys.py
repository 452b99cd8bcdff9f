"""Command line, the run keys: what decides a run's numbers, and new keys
after a change that moves code without changing a number.

    python -m extreme_memorization fingerprint [--out fingerprint.txt]
    python -m extreme_memorization rekey [--dry-run]
    python -m extreme_memorization golden [--write]
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


def cmd_golden(args) -> int:
    from ..pipeline import golden
    from ..training import fingerprint

    backend = fingerprint.backend_name()
    if args.write:
        count = golden.write(Path.cwd())
        print(f"{count} runs of the golden battery pinned under {backend} in {golden.FILE}")
    else:
        count = golden.check(Path.cwd(), backend)
        print(f"{count} runs of the golden battery give the pinned numbers under {backend}")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("fingerprint", help="what decides a run's numbers besides settings and data (code, versions)")
    s.add_argument("--out", help="write it to this file (the DVC stage fingerprint: fingerprint.txt)")
    s.set_defaults(func=cmd_fingerprint)

    s = sub.add_parser("rekey", help="new run keys after code moved without a number changing (dvc.lock, run.json)")
    s.add_argument("--dry-run", action="store_true", help="count the runs whose key would change; write nothing")
    s.set_defaults(func=cmd_rekey)

    s = sub.add_parser("golden", help="a tiny run per activation x loss x loss_scaling against its pinned numbers")
    s.add_argument(
        "--write", action="store_true", help="pin this code's numbers under this backend (golden-battery.json)"
    )
    s.set_defaults(func=cmd_golden)
