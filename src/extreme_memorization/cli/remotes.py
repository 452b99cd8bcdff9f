"""Command line: moving trained runs between machines, through a DVC remote
(push, pull) and the run store (store).

    python -m extreme_memorization push|pull [-r REMOTE]
    python -m extreme_memorization store
"""

from __future__ import annotations

from pathlib import Path


def cmd_push(args) -> int:
    from ..pipeline import remotes

    return remotes.push(Path(args.params).resolve().parent, args.remote)


def cmd_pull(args) -> int:
    from ..pipeline import remotes

    return remotes.pull(Path(args.params).resolve().parent, args.remote)


def cmd_store(args) -> int:
    from ..training import store

    root = Path(args.params).resolve().parent
    kept = store.root(root)
    if kept is None:
        print("the run store is off (EM_REUSE_RUNS=0, or no DVC repository here)")
        return 0
    added, missing = store.import_runs(root / "runs", root / "weights", kept)
    total = sum(1 for p in kept.iterdir() if not p.name.startswith(".")) if kept.is_dir() else 0
    print(
        f"run store {kept}: {total} runs ({added} added now"
        + (f"; {missing} runs here lack weights: `make pull` fetches them from a DVC remote" if missing else "")
        + ")"
    )
    return 0


def add_parsers(sub) -> None:
    for verb, func, what in (
        ("push", cmd_push, "send the weights and the run-cache to a DVC remote"),
        ("pull", cmd_pull, "fetch what was pushed, and file the pulled runs in the run store"),
    ):
        s = sub.add_parser(verb, help=f"{what} (probes the remote first)")
        s.add_argument("-r", "--remote", help="the DVC remote (default: the one set with dvc remote add -d)")
        s.set_defaults(func=func)

    s = sub.add_parser("store", help="file this workspace's runs in the run store (after a plain dvc pull)")
    s.set_defaults(func=cmd_store)
