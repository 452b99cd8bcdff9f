"""Command line: one subcommand per DVC stage.

    python -m extreme_memorization validate
    python -m extreme_memorization prepare DATASET [--out PATH]
    python -m extreme_memorization train GROUP --set KEY=VALUE ... --out DIR
    python -m extreme_memorization report GROUP --runs DIR --out DIR
    python -m extreme_memorization table GROUP
    python -m extreme_memorization plan [--tflops R] [--step-ms T]
    python -m extreme_memorization runs GROUP
    python -m extreme_memorization gpu-check

Heavy imports (TensorFlow, Keras) happen inside the subcommands, so a bad
params.yaml is reported in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

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
            # DVC writes a null from params.yaml as None.
            out[key] = None if value == "None" else yaml.safe_load(value)
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
    params = config.load(args.params)
    run = params.run(args.group, _overrides(args.set))
    from . import data, training

    dataset_path = args.data or data.prepared_path(run.dataset)
    training.train(run, args.group, dataset_path, args.out)
    return 0


def cmd_report(args) -> int:
    params = config.load(args.params)
    from . import report

    report.write(params, args.group, args.runs, args.out)
    return 0


def cmd_table(args) -> int:
    from . import report

    print(report.table(Path(args.reports) / args.group))
    return 0


def cmd_plan(args) -> int:
    params = config.load(args.params)
    from . import plan

    print(plan.table(plan.group_costs(params), args.tflops, args.step_ms))
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
    group = params.group(args.group)
    for run in group.runs(params.defaults):
        print(" ".join(f"{k}={getattr(run, k)}" for k in group.sweep))
    return 0


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

    s = sub.add_parser("train", help="train one run of an experiment group")
    s.add_argument("group")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a swept setting of the group")
    s.add_argument("--data", help="prepared .npz (default data/prepared/<dataset>.npz)")
    s.add_argument("--out", required=True, help="run directory")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("report", help="summary table, figures and report of a group")
    s.add_argument("group")
    s.add_argument("--runs", required=True, help="directory holding the group's run directories")
    s.add_argument("--out", required=True, help="report directory")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("table", help="print a group's per-run results as a Markdown table")
    s.add_argument("group")
    s.add_argument("--reports", default="reports", help="folder of the group reports (default: reports)")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("plan", help="runs and compute of every group, and hours at a stated FLOP rate")
    s.add_argument("--tflops", type=float, default=25.0, help="sustained rate to assume, TFLOP/s (default 25)")
    s.add_argument("--step-ms", type=float, default=2.0, help="fixed cost per step to assume, ms (default 2)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("gpu-check", help="fail when the host has a GPU that the backend does not see")
    s.set_defaults(func=cmd_gpu_check)

    s = sub.add_parser("runs", help="list the runs (swept settings) of a group")
    s.add_argument("group")
    s.set_defaults(func=cmd_runs)
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

        from .report import ReportError

        if isinstance(exc, (DataError, ReportError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
