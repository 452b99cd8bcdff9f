"""Compute estimate: how many runs each experiment group has and what they
cost (`make plan`, the ``plan`` command).

The cost of a run is counted, not timed: the forward FLOPs of its model
(:func:`models.forward_flops`) times the examples it touches. One SGD step
costs about three forward passes (forward + backward); every epoch also
evaluates the whole training and test sets once (one forward each); each
alignment measurement is one more forward pass over the training set plus
closed forms of the same order. Time = FLOPs / a sustained rate plus a fixed
cost per step (kernel launches and framework overhead, which dominate small
MLP steps on a GPU); both depend on the machine: the user states them for
a GPU (``--tflops``, ``--step-ms``), and without them the estimate is for
the machine at hand (:func:`machine_rate`: ``make bench``'s measurement, or a
10-second matmul probe), saying which.

With measured rates (``--rates``: the JSON that benchmarks/device_check.py
writes, seconds per CIFAR-shaped epoch of a pack of R MLP runs, steps and
evaluation, for a few R), MLP packs are projected from those timings instead:
an epoch of a pack of R costs the measured time interpolated in R and scaled
by the dataset's size; other models keep the FLOP-rate estimate.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from ..config.settings import DataConfig, Params, RunConfig

# Train/test sizes and image shapes of the datasets (tfds and scikit-learn).
SIZES = {
    "digits": (1437, 360, (8, 8, 1), 10),
    "cifar10": (50_000, 10_000, (32, 32, 3), 10),
    "cifar100": (50_000, 10_000, (32, 32, 3), 100),
    "svhn_cropped": (73_257, 26_032, (32, 32, 3), 10),
}


@dataclasses.dataclass(frozen=True)
class GroupCost:
    group: str
    runs: int
    epochs: str
    flops: float  # all runs of the group together
    steps: int  # training steps and evaluation batches of all runs
    unknown: str | None = None  # why the group's cost is unknown (its data file is missing)

    def hours(self, tflops: float, step_ms: float) -> float:
        return (self.flops / (tflops * 1e12) + self.steps * step_ms / 1000) / 3600


class UnknownSize(Exception):
    """A group whose size is unknown: the file of its own dataset is missing."""


def dataset_sizes(name: str, data: DataConfig | None = None) -> tuple[int, int, tuple[int, ...], int]:
    """(train examples, test examples, input shape, classes) of a dataset: the
    built-in ones from :data:`SIZES`, the user's own from its file's headers."""
    if name in SIZES:
        return SIZES[name]
    from ..data import datasets, npz

    own = (data.own if data else {}).get(name)
    if own is None:
        raise UnknownSize(f"dataset {name!r} is not in data.own")
    for path in (Path(own), datasets.prepared_path(name)):
        if path.is_file():
            try:
                return npz.sizes(path)
            except datasets.DataError as exc:
                raise UnknownSize(str(exc)) from None
    raise UnknownSize(f"{own} not found (data.own.{name})")


def run_flops(run: RunConfig, forward: int, sizes: tuple | None = None) -> float:
    n_train, n_test, _, _ = sizes or SIZES[run.dataset]
    per_epoch = 3 * forward * n_train + forward * (n_train + n_test)
    measurements = run.alignment_points * 2 * forward * n_train
    return run.epochs * per_epoch + measurements


def run_steps(run: RunConfig, eval_batch: int = 2048, sizes: tuple | None = None) -> int:
    n_train, n_test, _, _ = sizes or SIZES[run.dataset]
    per_epoch = math.ceil(n_train / run.batch_size) + math.ceil(n_train / eval_batch) + math.ceil(n_test / eval_batch)
    return run.epochs * per_epoch


def group_costs(params: Params) -> list[GroupCost]:
    costs = []
    for name, group in params.groups.items():
        runs = group.runs(params.defaults)
        epochs = "/".join(map(str, sorted({r.epochs for r in runs})))
        total, steps = 0.0, 0
        try:
            for run in runs:
                sizes = dataset_sizes(run.dataset, params.data)
                total += run_flops(run, _forward(run, sizes), sizes)
                steps += run_steps(run, sizes=sizes)
        except UnknownSize as exc:
            costs.append(GroupCost(name, len(runs), epochs, 0.0, 0, unknown=str(exc)))
            continue
        costs.append(GroupCost(name, len(runs), epochs, total, steps))
    return costs


def table(costs: list[GroupCost], tflops: float, step_ms: float) -> str:
    lines = [
        f"| group | runs | epochs | PFLOP | steps (millions) | hours at {tflops:.3g} TFLOP/s + {step_ms:.2g} ms/step |",
        "|---|---|---|---|---|---|",
    ]
    for c in costs:
        if c.unknown:
            lines.append(f"| {c.group} | {c.runs} | {c.epochs} | cannot plan: {c.unknown} | | |")
            continue
        lines.append(
            f"| {c.group} | {c.runs} | {c.epochs} | {c.flops / 1e15:,.1f} | {c.steps / 1e6:,.2f} | {c.hours(tflops, step_ms):,.2f} |"
        )
    known = [c for c in costs if not c.unknown]
    total = GroupCost("all", sum(c.runs for c in known), "", sum(c.flops for c in known), sum(c.steps for c in known))
    label = "all" if len(known) == len(costs) else "all planned"
    lines.append(
        f"| {label} | {total.runs} | | {total.flops / 1e15:,.1f} | {total.steps / 1e6:,.2f} | {total.hours(tflops, step_ms):,.2f} |"
    )
    return "\n".join(lines)


PROBE_SECONDS = 10.0
# A fixed cost per step when nothing measured says otherwise (a GPU's kernel
# launches; on a CPU the FLOPs dominate).
DEFAULT_STEP_MS = 2.0


def this_machine() -> str:
    """How benchmarks/bench.py names a machine in reports/bench.json."""
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores"


def bench_rate(path: Path) -> tuple[float, float] | None:
    """(TFLOP/s, ms per step) of training on this machine, from ``make bench``'s
    JSON when it was measured on a machine like this one: the sustained rate of
    the CIFAR-shaped step, and the part of the digits step that its FLOPs do
    not explain (the fixed cost of a step)."""
    try:
        bench = json.loads(Path(path).read_text())
        if bench.get("machine") != this_machine():
            return None
        steps = {s["shape"]: s for s in bench["step_cost"]}
        gflops = float(steps["cifar"]["new_gflops"])
        small = steps["digits"]
        fixed_ms = float(small["new_step_ms"]) * max(0.0, 1 - float(small["new_gflops"]) / gflops)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    return gflops / 1000, fixed_ms


def probe_rate(seconds: float = PROBE_SECONDS) -> float:
    """TFLOP/s of numpy's float32 2048^3 matmul here, repeated for about
    ``seconds`` (the best repeat: other work on the machine only slows it).
    Training an MLP reaches 85-95% of it on a CPU (docs/performance.md)."""
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((2048, 2048), dtype=np.float32) for _ in range(2))
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e12


def machine_rate(root: Path, probe_seconds: float = PROBE_SECONDS) -> tuple[float, float, str]:
    """(TFLOP/s, ms per step, where they come from) for this machine: ``make
    bench``'s reports/bench.json if it was measured here, else a matmul probe."""
    bench = root / "reports" / "bench.json"
    measured = bench_rate(bench)
    if measured:
        return *measured, f"this machine's training rate from {bench.relative_to(root)} (`make bench`)"
    rate = probe_rate(probe_seconds)
    return (
        rate,
        DEFAULT_STEP_MS,
        (
            f"this machine's numpy float32 matmul rate, probed for {probe_seconds:g} s (`make bench` measures "
            f"training itself), and {DEFAULT_STEP_MS:g} ms/step"
        ),
    )


def measured_epoch_seconds(rates: dict, members: int) -> float:
    """Seconds per CIFAR-shaped epoch of a pack of ``members``, interpolated
    between the measured pack sizes (linearly extrapolated past the largest)."""
    import numpy as np

    sizes = sorted((int(r), float(s)) for r, s in rates["epoch_seconds"].items())
    xs, ys = [r for r, _ in sizes], [s for _, s in sizes]
    if members > xs[-1] and len(xs) > 1:
        return ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (members - xs[-1])
    return float(np.interp(members, xs, ys))


def measured_hours(params: Params, rates: dict, tflops: float, step_ms: float) -> dict[str, float]:
    """Hours per group on the measured machine: MLP packs from ``rates``,
    other models from their FLOP count at ``tflops`` and ``step_ms``."""
    from ..config.packs import packs

    cifar_examples = SIZES["cifar10"][0] + SIZES["cifar10"][1]
    out = {}
    for name in params.groups:
        hours = 0.0
        try:
            for runs in packs(params, name).values():
                run = runs[0]
                sizes = dataset_sizes(run.dataset, params.data)
                if run.model == "mlp":
                    n_train, n_test, _, _ = sizes
                    seconds = measured_epoch_seconds(rates, len(runs)) * (n_train + n_test) / cifar_examples
                    hours += run.epochs * seconds / 3600
                else:
                    forward = _forward(run, sizes)
                    hours += sum(
                        GroupCost(name, 1, "", run_flops(r, forward, sizes), run_steps(r, sizes=sizes)).hours(
                            tflops, step_ms
                        )
                        for r in runs
                    )
        except UnknownSize:
            continue  # group_costs' table says why
        out[name] = hours
    return out


# Forward FLOPs by (model, width, input shape, classes): building ResNet-50 or
# DenseNet-121 to count them takes seconds, and every estimate asks again.
_FORWARD: dict[tuple, int] = {}


def _forward(run: RunConfig, sizes: tuple) -> int:
    _, _, shape, k = sizes
    shape = trained_shape(shape, run)
    key = (run.model, run.width, shape, k)
    if key not in _FORWARD:
        import keras

        from ..core import models

        _FORWARD[key] = models.forward_flops(models.build(run, shape, k))
        keras.backend.clear_session()
    return _FORWARD[key]


def trained_shape(shape: tuple, run: RunConfig) -> tuple:
    """The input shape training sees: the dataset's, enlarged to image_size (data.enlarge)."""
    return shape if run.image_size is None or len(shape) != 3 else (run.image_size, run.image_size, shape[2])


def load_rates(path: str | Path) -> dict:
    rates = json.loads(Path(path).read_text())
    if "epoch_seconds" not in rates:
        raise ValueError(f"{path} has no 'epoch_seconds'; write it with benchmarks/device_check.sh")
    return rates
