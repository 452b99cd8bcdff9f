"""Command line: one subcommand per DVC stage.

    python -m extreme_memorization validate
    python -m extreme_memorization add-group NAME --dataset D [--npz PATH] [--activation A ...] [--sigma S ...]
    python -m extreme_memorization prepare DATASET [--out PATH]
    python -m extreme_memorization train GROUP --set KEY=VALUE ... --out PACK_DIR [--weights PACK_DIR]
    python -m extreme_memorization report GROUP [GROUP ...] --runs DIR --out DIR
    python -m extreme_memorization table [GROUP ...] [--filter KEY=VALUE ...] [--rev REV]
    python -m extreme_memorization plan [--tflops R] [--step-ms T]
    python -m extreme_memorization status [--no-dvc]
    python -m extreme_memorization runs GROUP [--filter KEY=VALUE ...]
    python -m extreme_memorization compare REV_A [REV_B] [--group GROUP]
    python -m extreme_memorization gpu-check
    python -m extreme_memorization push|pull [-r REMOTE]
    python -m extreme_memorization store
    python -m extreme_memorization slurm GROUP [--dry-run] [--partition P] ... [--sbatch=OPTION]
    python -m extreme_memorization local [GROUP ...] [--jobs N] [--gpus LIST] [--dry-run]

Heavy imports (TensorFlow, Keras) happen inside the subcommands, so a bad
params.yaml is reported in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from . import cli_elsewhere, config, files, own_data


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise config.ConfigError(f"--set {pair!r} is not KEY=VALUE")
        if key in config.TEXT_FIELDS:
            out[key] = value  # labels=true is the text 'true', not a boolean
        else:
            # DVC writes a null from params.yaml as None, and numbers as
            # Python prints them (1e-05): read by params.yaml's YAML 1.2 rules.
            out[key] = None if value == "None" else config.yaml_value(value, f"--set {key}")
    return out


def cmd_validate(args) -> int:
    from . import pipeline

    params = config.load(args.params)
    total = 0
    for name, group in params.groups.items():
        n = len(group.runs(params.defaults))
        total += n
        varied = [f"{k} {v}" for k, v in group.sweep.items() if len(v) > 1]
        if not args.stamp:  # as the DVC stage validate: only the verdict
            print(f"{name}: {n} runs, {group.run.get('epochs', params.defaults['epochs'])} epochs; {'; '.join(varied) or 'one run'}")
    root = Path(args.params).resolve().parent
    if (root / "dvc.yaml").is_file():
        pipeline.check(params, config.read_yaml(root / "dvc.yaml"))
        from .data import DataError

        for name, path in pipeline.missing_own_files(params, root):
            if args.data:  # dvc repro would stop at prepare-own@<name> with a bare "No such file"
                raise DataError(own_data.missing_line(name, path))
            print(f"warning: {own_data.missing_line(name, path)} (dvc repro stops at prepare-own@{name} until then)")
        for line in own_data.unversioned(params, root):
            print(f"warning: {line}")
        where = "params.yaml and dvc.yaml agree"
    else:
        where = f"no dvc.yaml beside {args.params}: the stages are not checked"
    if args.stamp:
        pipeline.write_stamp(Path(args.stamp))
    print(f"{args.params} is valid: {len(params.groups)} groups, {total} runs; {where}")
    return 0


def cmd_add_group(args) -> int:
    from . import pipeline

    root = Path(args.params).resolve().parent
    sweep, run, own = {}, {}, {}
    given = [args.dataset, args.sigma, args.activation, args.model, args.loss, args.labels, args.seed, args.npz, args.set]
    if any(v is not None and v != [] for v in given):
        if not args.dataset:
            raise config.ConfigError("add-group needs --dataset NAME (a built-in dataset or your own with --npz PATH)")
        if args.npz:
            if len(args.dataset) != 1:
                raise config.ConfigError("--npz PATH names the file of one dataset; give one --dataset with it")
            own[args.dataset[0]] = args.npz
        sweep = {
            "dataset": args.dataset, "model": args.model or ["mlp"], "activation": args.activation or ["relu"],
            "loss": args.loss or ["cross_entropy"], "labels": args.labels or ["true"],
            "sigma": [None if v in ("null", "None") else config.yaml_value(v, "--sigma") for v in args.sigma or ["null"]],
            "seed": [config.yaml_value(v, "--seed") for v in args.seed or ["0"]],
        }  # fmt: skip
        if sweep["sigma"] == [None]:
            run["init"] = "glorot"
        run.update(_overrides(args.set))
        for key in run:
            if key in config.AXES:
                raise config.ConfigError(f"--set {key}=... is an axis of the run; give it as --{key}")
    comment = f"{args.name}: added by `add-group`; edit its run and sweep here."
    for line in pipeline.add_group(root, args.name, sweep, run, own, comment):
        print(f"added {line}")
    for path in own.values():  # under DVC, so that make push / make pull carry it to a collaborator's clone
        print(own_data.track(root, path))
    print(f"run it: dvc repro report@{args.name}")
    return 0


def cmd_prepare(args) -> int:
    from . import data

    params = config.load(args.params)
    out = args.out or data.prepared_path(args.dataset)
    ds = data.build(args.dataset, params.data)
    data.save(ds, out)
    print(
        f"{args.dataset}: {len(ds.y_train)} train / {len(ds.y_test)} test examples of shape {ds.input_shape}, "
        f"{ds.num_classes} classes -> {out}"
    )
    return 0


def cmd_train(args) -> int:
    from . import packs, progress

    progress.starters()  # who started the training, found before DVC could be killed during the imports
    params = config.load(args.params)
    runs = packs.members(params, args.group, _overrides(args.set))
    files.check_writable(args.out, "--out")
    if args.weights:
        files.check_writable(args.weights, "--weights")
    from . import data, training
    from .progress import Interrupted

    dataset_path = args.data or data.prepared_path(runs[0].dataset)
    index, count = packs.position(params, args.group, runs[0])
    stage = packs.stage_name(args.group, runs[0])
    title = f"[{stage}, stage {index}/{count} of group {args.group}]"
    try:
        training.train_pack(runs, args.group, dataset_path, args.out, packs.pack_name(runs[0]), title, args.weights)
    except Interrupted as exc:
        print(f"{title} {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (files.OutputError, OSError) as exc:  # a full disk: one line, and no half-written run left
        error = files.as_output_error(exc, args.out)
        if error is None:
            raise
        files.drop_unfinished_runs(args.out, args.weights, error.path)
        raise error from None
    return 0


def cmd_report(args) -> int:
    params = config.load(args.params)
    files.check_writable(args.out, "--out")
    from . import report

    report.write(params, args.group, args.runs, args.out, args.figures, args.metrics)
    return 0


def cmd_table(args) -> int:
    params = config.load(args.params)
    from . import report, results
    from .compare import CompareError

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
    from . import plan

    print(plan.table(plan.group_costs(params), args.tflops, args.step_ms))
    if args.rates:
        rates = plan.load_rates(args.rates)
        hours = plan.measured_hours(params, rates, args.tflops, args.step_ms)
        print(f"\nProjected from the rates measured on {rates.get('device', '?')} ({args.rates}; MLP packs measured, "
              f"other models at {args.tflops:g} TFLOP/s + {args.step_ms:g} ms/step):\n")
        print("| group | hours |\n|---|---|")
        for name, h in hours.items():
            print(f"| {name} | {h:,.2f} |")
        print(f"| all | {sum(hours.values()):,.2f} |")
    return 0


def cmd_status(args) -> int:
    params = config.load(args.params)
    from . import status

    for line in status.lines(params, Path(args.params).resolve().parent, use_dvc=not args.no_dvc):
        print(line)
    return 0


def cmd_runs(args) -> int:
    params = config.load(args.params)
    from . import results

    group = params.group(args.group)
    import pandas as pd

    runs = pd.DataFrame([{k: getattr(run, k) for k in group.sweep} for run in group.runs(params.defaults)])
    runs = results.apply_filters(runs, results.parse_filters(args.filter))
    for _, run in runs.iterrows():
        print(" ".join(f"{k}={v}" for k, v in run.items()))
    print(f"{len(runs)} of {len(group.runs(params.defaults))} runs of {args.group}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from . import compare

    page = compare.write(args.rev_a, args.rev_b, args.out, args.runs, args.reports, args.group)
    print(f"compared {args.rev_a} with {args.rev_b or 'the workspace'} -> {page}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extreme_memorization", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params.yaml",
                   help="the configuration (default: params.yaml); the default runs/, reports/, data/prepared/ and "
                   "checkpoints/ are those of its folder")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="check params.yaml and list the experiment groups")
    s.add_argument("--data", action="store_true", help="also fail when a file of data.own is missing")
    s.add_argument("--stamp", help="when valid, write this file (constant text): the DVC stage validate's output")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("add-group", help="add an experiment group: params.yaml section, train stage, report entry")
    s.add_argument("name", help="the group's name (an existing group of params.yaml: add what dvc.yaml lacks)")
    s.add_argument("--dataset", nargs="+", help="dataset(s): built-in or your own (then with --npz)")
    s.add_argument("--npz", help="your .npz file for the dataset: added to data.own, versioned with dvc add")
    s.add_argument("--model", nargs="+", help=f"{' | '.join(config.MODELS)} (default mlp)")
    s.add_argument("--activation", nargs="+", help=f"{' | '.join(config.ACTIVATIONS)} (default relu)")
    s.add_argument("--loss", nargs="+", help=f"{' | '.join(config.LOSSES)} (default cross_entropy)")
    s.add_argument("--labels", nargs="+", help="true | shuffled (default true)")
    s.add_argument("--sigma", nargs="+", help="stddev(s) of W1 (init normal); null or none given: init glorot")
    s.add_argument("--seed", nargs="+", help="seed(s) (default 0)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting (epochs=300, width=256)")
    s.set_defaults(func=cmd_add_group)

    s = sub.add_parser("prepare", help="build data/prepared/DATASET.npz")
    s.add_argument("dataset", help=f"{', '.join(config.DATASETS)} or a name of data.own in params.yaml")
    s.add_argument("--out", help="output .npz (default data/prepared/DATASET.npz)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="train one pack of an experiment group (its runs that differ in sigma and seed)")
    s.add_argument("group")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the pack's value of a swept axis")
    s.add_argument("--data", help="prepared .npz (default data/prepared/<dataset>.npz)")
    s.add_argument("--out", required=True, help="pack directory (one folder per run inside)")
    s.add_argument("--weights", help="pack directory for the weights (default: the run folders of --out)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("report", help="claims, figures, statistics and results of one or more groups")
    s.add_argument("group", nargs="+", help="the group(s) whose runs the report covers")
    s.add_argument("--runs", action="append", required=True, help="folder searched for run folders (repeatable)")
    s.add_argument("--out", required=True, help="report folder (report.md, csv tables)")
    s.add_argument("--figures", help="figures folder (default: reports/figures/<name of --out>)")
    s.add_argument("--metrics", help="compact metrics file (default: reports/metrics/<name of --out>.json)")
    s.set_defaults(func=cmd_report)

    filter_help = "keep runs whose KEY is VALUE, e.g. activation=sin, sigma=10 (repeatable; same KEY: any of)"
    s = sub.add_parser("table", help="print per-run results of reports as a Markdown table")
    s.add_argument("group", nargs="*", help="groups (default: every group with a report)")
    s.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help=filter_help)
    s.add_argument("--rev", help="read the reports of this git revision (a commit, tag or branch)")
    s.add_argument("--reports", default=Path("reports"), help="folder of the group reports (default: reports)")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("plan", help="runs and compute of every group, and hours at a stated FLOP rate")
    s.add_argument("--tflops", type=float, default=25.0, help="sustained rate to assume, TFLOP/s (default 25)")
    s.add_argument("--step-ms", type=float, default=2.0, help="fixed cost per step to assume, ms (default 2)")
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
    s.set_defaults(func=cmd_compare)

    cli_elsewhere.add_parsers(sub)
    return p


# Options naming files or folders. Their defaults (runs, reports, data/prepared,
# checkpoints) are relative to the repository root, the folder of params.yaml;
# what the user types is relative to where it is typed.
PATH_OPTIONS = ("params", "stamp", "out", "weights", "data", "runs", "reports", "figures", "metrics", "rates", "work_dir")


@contextlib.contextmanager
def _at_root(args):
    """Run the command in the folder of ``--params``, with the paths given on
    the command line made relative to it (defaults are Path objects, typed
    values strings), and come back afterwards."""
    here, root = Path.cwd(), Path(args.params).resolve().parent
    if root == here:
        yield
        return

    def moved(value):
        return value if not isinstance(value, str) or os.path.isabs(value) else os.path.relpath(here / value, root)

    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        setattr(args, name, [moved(v) for v in value] if isinstance(value, list) else moved(value))
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with _at_root(args):
            return args.func(args)
    except config.ConfigError as exc:
        from .pipeline import after_failure

        note = after_failure(getattr(args, "stamp", None), args.out if args.command == "train" else None)
        print(f"error: params: {exc}{note}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .data import DataError

        from .compare import CompareError
        from .remotes import RemoteError
        from .report import ReportError
        from .results import ResultsError

        if isinstance(exc, (DataError, ReportError, ResultsError, CompareError, RemoteError, files.OutputError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
