"""Command line: one subcommand per DVC stage.

    python -m extreme_memorization validate
    python -m extreme_memorization prepare DATASET [--out PATH]
    python -m extreme_memorization train GROUP --set KEY=VALUE ... --out PACK_DIR
    python -m extreme_memorization report GROUP [GROUP ...] --runs DIR --out DIR
    python -m extreme_memorization table [GROUP ...] [--filter KEY=VALUE ...] [--rev REV]
    python -m extreme_memorization plan [--tflops R] [--step-ms T]
    python -m extreme_memorization runs GROUP [--filter KEY=VALUE ...]
    python -m extreme_memorization compare REV_A [REV_B]
    python -m extreme_memorization gpu-check
    python -m extreme_memorization slurm GROUP [--dry-run] [--partition P] ... [--sbatch=OPTION]
    python -m extreme_memorization local [GROUP ...] [--jobs N] [--gpus LIST] [--dry-run]

Heavy imports (TensorFlow, Keras) happen inside the subcommands, so a bad
params.yaml is reported in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config


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
    params = config.load(args.params)
    total = 0
    for name, group in params.groups.items():
        n = len(group.runs(params.defaults))
        total += n
        varied = [f"{k} {v}" for k, v in group.sweep.items() if len(v) > 1]
        print(f"{name}: {n} runs, {group.run.get('epochs', params.defaults['epochs'])} epochs; {'; '.join(varied) or 'one run'}")
    print(f"{args.params} is valid: {len(params.groups)} groups, {total} runs")
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
    from . import packs

    params = config.load(args.params)
    runs = packs.members(params, args.group, _overrides(args.set))
    from . import data, training
    from .progress import Interrupted

    dataset_path = args.data or data.prepared_path(runs[0].dataset)
    index, count = packs.position(params, args.group, runs[0])
    stage = packs.stage_name(args.group, runs[0])
    title = f"[{stage}, stage {index}/{count} of group {args.group}]"
    try:
        training.train_pack(runs, args.group, dataset_path, args.out, packs.pack_name(runs[0]), title)
    except Interrupted as exc:
        print(f"{title} {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


def cmd_report(args) -> int:
    params = config.load(args.params)
    from . import report

    report.write(params, args.group, args.runs, args.out, args.figures, args.metrics)
    return 0


def cmd_table(args) -> int:
    params = config.load(args.params)
    from . import report, results

    named = bool(args.group)
    frames = []
    for group in args.group or list(params.groups):
        try:
            frames.append(report.read_summaries(args.reports, [group], args.rev))
        except report.ReportError:
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


def cmd_gpu_check(args) -> int:
    import os
    import shutil

    # Inside a container started without the GPU, neither nvidia-smi nor
    # /dev/nvidia0 exists; `make` then says so through EM_HOST_GPU (1 or 0).
    told = os.environ.get("EM_HOST_GPU", "")
    if told not in ("", "0", "1"):
        print(f"error: EM_HOST_GPU={told!r} is not allowed: set it to 1 (the host has a GPU) or 0", file=sys.stderr)
        return 2
    import keras

    host_gpu = told == "1" if told else (bool(shutil.which("nvidia-smi")) or os.path.exists("/dev/nvidia0"))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
        built = tf.test.is_built_with_cuda()
    else:
        import jax

        gpus = [str(d) for d in jax.devices() if d.platform == "gpu"]
        built = True
    if gpus:
        print(f"{backend} sees {len(gpus)} GPU(s): {', '.join(gpus)}")
        return 0
    if not host_gpu:
        print(f"no GPU on this host; {backend} runs on the CPU")
        return 0
    hint = (
        "this TensorFlow is a CPU-only build (tensorflow-cpu): use the CUDA image (make image) "
        "or install requirements/cuda.lock"
        if not built
        else "check the NVIDIA driver (nvidia-smi), that the container got the GPU (docker run --gpus all "
        "with the NVIDIA Container Toolkit; podman run --device nvidia.com/gpu=all with its CDI spec, "
        "podman ignores --gpus), and that the driver supports CUDA 12"
    )
    print(f"error: this host has an NVIDIA GPU but {backend} sees none: {hint}", file=sys.stderr)
    return 1


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

    page = compare.write(args.rev_a, args.rev_b, args.out, args.runs, args.reports)
    print(f"compared {args.rev_a} with {args.rev_b or 'the workspace'} -> {page}")
    return 0


def cmd_slurm(args) -> int:
    from . import cluster, fanout

    params = config.load(args.params)
    params.group(args.group)  # an unknown group is a params error, before DVC is asked
    options = cluster.Options(
        partition=args.partition, gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task,
        time=args.time, max_parallel=args.max_parallel, signal_seconds=args.signal_seconds,
        work_dir=Path(args.work_dir) if args.work_dir else None, sbatch_options=args.sbatch,
    )  # fmt: skip
    try:
        return cluster.submit(Path(args.params).resolve().parent, args.group, options, dry_run=args.dry_run)
    except fanout.FanoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_local(args) -> int:
    from . import fanout, local

    params = config.load(args.params)
    for group in args.group:
        params.group(group)  # an unknown group is a params error, before DVC is asked
    try:
        return local.run(Path(args.params).resolve().parent, args.group or list(params.groups), args.jobs, args.gpus,
                         dry_run=args.dry_run, everything=not args.group)  # fmt: skip
    except fanout.FanoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the workers start, or during the report
        print("stopped (Ctrl-C); run the same command again to go on", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extreme_memorization", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params.yaml", help="the configuration (default: params.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="check params.yaml and list the experiment groups")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("prepare", help="build data/prepared/DATASET.npz")
    s.add_argument("dataset", choices=config.DATASETS)
    s.add_argument("--out", help="output .npz (default data/prepared/DATASET.npz)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="train one pack of an experiment group (its runs that differ in sigma and seed)")
    s.add_argument("group")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the pack's value of a swept axis")
    s.add_argument("--data", help="prepared .npz (default data/prepared/<dataset>.npz)")
    s.add_argument("--out", required=True, help="pack directory (one folder per run inside)")
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
    s.add_argument("--reports", default="reports", help="folder of the group reports (default: reports)")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("plan", help="runs and compute of every group, and hours at a stated FLOP rate")
    s.add_argument("--tflops", type=float, default=25.0, help="sustained rate to assume, TFLOP/s (default 25)")
    s.add_argument("--step-ms", type=float, default=2.0, help="fixed cost per step to assume, ms (default 2)")
    s.add_argument("--rates", help="measured rates (JSON from benchmarks/device_check.sh) to project MLP packs from")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("gpu-check", help="fail when the host has a GPU that the backend does not see")
    s.set_defaults(func=cmd_gpu_check)

    s = sub.add_parser("runs", help="list the runs (swept settings) of a group")
    s.add_argument("group")
    s.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help=filter_help)
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("compare", help="two revisions side by side: params, metrics and curves (reports/compare/)")
    s.add_argument("rev_a", help="a git revision (commit, tag, branch, HEAD~1)")
    s.add_argument("rev_b", nargs="?", help="another revision (default: the workspace)")
    s.add_argument("--out", default="reports/compare", help="output folder (default: reports/compare)")
    s.add_argument("--runs", default="runs", help="folder of the run folders (default: runs)")
    s.add_argument("--reports", default="reports", help="folder of the group reports (default: reports)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("slurm", help="train a group's stages as a Slurm job array, then its report (README: Slurm)")
    s.add_argument("group")
    s.add_argument("--dry-run", action="store_true", help="print the batch scripts, submit nothing")
    s.add_argument("--partition", help="sbatch --partition")
    s.add_argument("--gpus-per-task", type=int, help="sbatch --gpus-per-task (train tasks only)")
    s.add_argument("--cpus-per-task", type=int, help="sbatch --cpus-per-task")
    s.add_argument("--time", help="sbatch --time per task, e.g. 04:00:00")
    s.add_argument("--max-parallel", type=int, help="at most this many tasks at once (array throttle %%N)")
    s.add_argument("--signal-seconds", type=int, default=300,
                   help="SIGTERM this many seconds before the time limit, to checkpoint and requeue (default 300)")
    s.add_argument("--work-dir", help="worktrees, checkpoints, scripts and logs (default .slurm in the repository)")
    s.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="one more sbatch option, e.g. --sbatch=--qos=high (repeat it for more)")
    s.set_defaults(func=cmd_slurm)

    s = sub.add_parser("local", help="train groups' stages side by side on this machine, then their reports")
    s.add_argument("group", nargs="*", help="experiment groups (default: every group of params.yaml)")
    s.add_argument("--jobs", type=int, help="workers at once (default: one per visible GPU, else 1)")
    s.add_argument("--gpus", help="CUDA_VISIBLE_DEVICES of each worker, e.g. 0,1 (0,0,1,1: two workers per GPU)")
    s.add_argument("--dry-run", action="store_true", help="print the plan (stages, device slots), run nothing")
    s.set_defaults(func=cmd_local)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except config.ConfigError as exc:
        print(f"error: params: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .data import DataError

        from .compare import CompareError
        from .report import ReportError
        from .results import ResultsError

        if isinstance(exc, (DataError, ReportError, ResultsError, CompareError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
