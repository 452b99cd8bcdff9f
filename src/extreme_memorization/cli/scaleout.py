"""Command line: where the training runs other than one `dvc repro` here:
side by side on this machine (local), as a Slurm job array (slurm); what
`dvc repro` would run from a fresh clone (dry-run), and what would stop it
before it starts (preflight: the make targets ask it first); and whether a
GPU host's GPU is seen (gpu-check).

    python -m extreme_memorization local [GROUP ...] [--jobs N] [--gpus LIST] [--dry-run]
    python -m extreme_memorization slurm GROUP [--dry-run] [--partition P] ... [--sbatch=OPTION]
    python -m extreme_memorization dry-run [dvc repro options and targets]
    python -m extreme_memorization preflight [--groups-only] [report@GROUP ...]
    python -m extreme_memorization gpu-check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import settings as config


def cmd_local(args) -> int:
    from ..scaleout import local

    params = config.load(args.params)
    for group in args.group:
        params.group(group)  # an unknown group is a params error, before DVC is asked
    if not args.dry_run:  # a read-only checkout, a dvc repro running here: one line, before any worker starts
        from ..pipeline import preflight

        preflight.check_writable(Path(args.params).resolve().parent)
        preflight.check_not_running(Path(args.params).resolve().parent)
    try:
        return local.run(Path(args.params).resolve().parent, args.group or list(params.groups), args.jobs, args.gpus,
                         dry_run=args.dry_run, everything=not args.group)  # fmt: skip
    except KeyboardInterrupt:  # before the workers start, or during the report
        print("stopped (Ctrl-C); run the same command again to go on", file=sys.stderr)
        return 130


def cmd_slurm(args) -> int:
    from ..scaleout import slurm as cluster

    params = config.load(args.params)
    params.group(args.group)  # an unknown group is a params error, before DVC is asked
    options = cluster.Options(
        partition=args.partition, gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task,
        time=args.time, max_parallel=args.max_parallel, signal_seconds=args.signal_seconds,
        work_dir=Path(args.work_dir) if args.work_dir else None, sbatch_options=args.sbatch,
    )  # fmt: skip
    return cluster.submit(Path(args.params).resolve().parent, args.group, options, dry_run=args.dry_run)


def cmd_dry_run(args) -> int:
    from ..pipeline import dry_run, preflight

    try:
        problem = preflight.unknown_group(args.repro_args)
    except config.ConfigError as exc:
        problem = f"params: {exc}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return dry_run.repro(args.repro_args)


def cmd_preflight(args) -> int:
    from ..pipeline import preflight

    root = Path(args.params).resolve().parent
    if args.groups_only:  # a dry run: it writes nothing and may run beside another
        preflight.check_groups(root, args.targets)
    else:
        preflight.check(root, args.targets)
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


def add_parsers(sub) -> None:
    s = sub.add_parser("local", help="train groups' stages side by side on this machine, then their reports")
    s.add_argument("group", nargs="*", help="experiment groups (default: every group of params.yaml)")
    s.add_argument("--jobs", type=int, help="workers at once (default: one per visible GPU, else 1)")
    s.add_argument("--gpus", help="CUDA_VISIBLE_DEVICES of each worker, e.g. 0,1 (0,0,1,1: two workers per GPU)")
    s.add_argument("--dry-run", action="store_true", help="print the plan (stages, device slots), run nothing")
    s.set_defaults(func=cmd_local)
    s = sub.add_parser("slurm", help="train a group's stages as a Slurm job array, then its report (docs/slurm.md)")
    s.add_argument("group")
    s.add_argument("--dry-run", action="store_true", help="print the batch scripts, submit nothing")
    s.add_argument("--partition", help="sbatch --partition")
    s.add_argument("--gpus-per-task", type=int, help="sbatch --gpus-per-task (train tasks only)")
    s.add_argument("--cpus-per-task", type=int, help="sbatch --cpus-per-task")
    s.add_argument("--time", help="sbatch --time per task, e.g. 04:00:00")
    s.add_argument("--max-parallel", type=int, help="at most this many tasks at once (array throttle %%N)")
    s.add_argument(
        "--signal-seconds",
        type=int,
        default=300,
        help="SIGTERM this many seconds before the time limit, to checkpoint and requeue (default 300)",
    )
    s.add_argument("--work-dir", help="worktrees, checkpoints, scripts and logs (default .slurm in the repository)")
    s.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more sbatch option, e.g. --sbatch=--qos=high (repeat it for more)",
    )
    s.set_defaults(func=cmd_slurm)

    s = sub.add_parser("dry-run", help="what dvc repro would run, planned from a fresh clone (make reproduce DRY=1)")
    s.add_argument("repro_args", nargs=argparse.REMAINDER, help="dvc repro options and targets, e.g. report@digits")
    s.set_defaults(func=cmd_dry_run)

    s = sub.add_parser(
        "preflight", help="fail in one line when dvc repro could not start here (the make targets' check)"
    )
    s.add_argument("targets", nargs="*", metavar="report@GROUP", help="the targets dvc repro will be given")
    s.add_argument("--groups-only", action="store_true", help="check only that the groups exist (for a dry run)")
    s.set_defaults(func=cmd_preflight)

    s = sub.add_parser("gpu-check", help="fail when the host has a GPU that the backend does not see")
    s.set_defaults(func=cmd_gpu_check)
