"""Command line, what is there to read: the results as tables (table, runs),
what is done (status), what it costs (plan), two revisions (compare).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import settings as config


def cmd_table(args) -> int:
    params = config.load(args.params)
    from ..report import results
    from ..report import write as report
    from ..report.compare import CompareError

    named = bool(args.group)
    frames = []
    for group in args.group or list(params.groups):
        try:
            frames.append(report.read_summaries(args.reports, [group], args.rev))
        except (report.ReportError, CompareError):  # CompareError: not at --rev
            if named and group not in params.groups:  # a typo: there is no stage report@<group> to advise
                raise report.ReportError(f"no group {group!r} in {args.params}; known groups: "
                                         f"{', '.join(params.groups)}") from None  # fmt: skip
            if named:
                raise
    if not frames:
        at = f" at {args.rev}" if args.rev else ""
        raise report.ReportError(f"no group has a report{at} under {args.reports}; run `make demo` first")
    import pandas as pd

    frame = results.apply_filters(pd.concat(frames, ignore_index=True), results.parse_filters(args.filter))
    if frame.empty:
        raise results.ResultsError(f"no run matches {' '.join(args.filter)}")
    print(report.table(frame))
    return 0


def cmd_plan(args) -> int:
    params = config.load(args.params)
    from ..pipeline import estimate

    if args.tflops is None:  # no GPU named: the machine at hand
        tflops, step_ms, source = estimate.machine_rate(Path(args.params).resolve().parent)
        args.tflops, args.step_ms = tflops, args.step_ms if args.step_ms is not None else step_ms
        print(f"Hours on this machine at {args.tflops:.3g} TFLOP/s + {args.step_ms:.2g} ms/step: {source}; "
              "for a GPU give its rate: make plan TFLOPS=25 STEP_MS=2\n")  # fmt: skip
    elif args.step_ms is None:
        args.step_ms = estimate.DEFAULT_STEP_MS
    print(estimate.table(estimate.group_costs(params), args.tflops, args.step_ms))
    if args.rates:
        rates = estimate.load_rates(args.rates)
        hours = estimate.measured_hours(params, rates, args.tflops, args.step_ms)
        print(
            f"\nProjected from the rates measured on {rates.get('device', '?')} ({args.rates}; MLP packs measured, "
            f"other models at {args.tflops:g} TFLOP/s + {args.step_ms:g} ms/step):\n"
        )
        print("| group | hours |\n|---|---|")
        for name, h in hours.items():
            print(f"| {name} | {h:,.2f} |")
        print(f"| all | {sum(hours.values()):,.2f} |")
    return 0


def cmd_status(args) -> int:
    params = config.load(args.params)
    from .. import files
    from ..pipeline import status

    files.check_lock(Path(args.params).resolve().parent)  # a truncated one says so, not "params"
    for line in status.lines(params, Path(args.params).resolve().parent, use_dvc=not args.no_dvc):
        print(line)
    return 0


def cmd_runs(args) -> int:
    params = config.load(args.params)
    from ..report import results

    group = params.group(args.group)
    import pandas as pd

    runs = pd.DataFrame([{k: getattr(run, k) for k in group.sweep} for run in group.runs(params.defaults)])
    runs = results.apply_filters(runs, results.parse_filters(args.filter))
    for _, run in runs.iterrows():
        print(" ".join(f"{k}={v}" for k, v in run.items()))
    print(f"{len(runs)} of {len(group.runs(params.defaults))} runs of {args.group}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from ..report import compare

    page = compare.write(args.rev_a, args.rev_b, args.out, args.runs, args.reports, args.group, args.all)
    print(f"compared {args.rev_a} with {args.rev_b or 'the workspace'} -> {page}")
    return 0


def add_parsers(sub) -> None:
    filter_help = "keep runs whose KEY is VALUE, e.g. activation=sin, sigma=10 (repeatable; same KEY: any of)"
    s = sub.add_parser("table", help="print per-run results of reports as a Markdown table")
    s.add_argument("group", nargs="*", help="groups (default: every group with a report)")
    s.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help=filter_help)
    s.add_argument("--rev", help="read the reports of this git revision (a commit, tag or branch)")
    s.add_argument("--reports", default=Path("reports"), help="folder of the group reports (default: reports)")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("plan", help="runs and compute of every group, and hours at a stated FLOP rate")
    s.add_argument("--tflops", type=float, help="sustained rate to assume, TFLOP/s (default: this machine's, from "
                   "reports/bench.json if measured here, else a 10-second matmul probe)")  # fmt: skip
    s.add_argument("--step-ms", type=float, help="fixed cost per step to assume, ms (default 2, or make bench's)")
    s.add_argument("--rates", help="measured rates (JSON from benchmarks/device_check.sh) to project MLP packs from")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("status", help="one line per group: runs done / planned, stale, running, report")
    s.add_argument("--no-dvc", action="store_true", help="skip `dvc status` (no stale column; instant)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("runs", help="list the runs (swept settings) of a group")
    s.add_argument("group")
    s.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help=filter_help)
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("compare", help="two revisions side by side: params, metrics and curves (reports/compare/)")
    s.add_argument("rev_a", help="a git revision (commit, tag, branch, HEAD~1)")
    s.add_argument("rev_b", nargs="?", help="another revision (default: the workspace)")
    s.add_argument("--out", default=Path("reports/compare"), help="output folder (default: reports/compare)")
    s.add_argument("--runs", default=Path("runs"), help="folder of the run folders (default: runs)")
    s.add_argument("--reports", default=Path("reports"), help="folder of the group reports (default: reports)")
    s.add_argument("--group", help="only this group's runs, parameters and metrics (default: every group)")
    s.add_argument("--all", action="store_true", help="draw every group, the unchanged ones too (default: skip them)")
    s.set_defaults(func=cmd_compare)
