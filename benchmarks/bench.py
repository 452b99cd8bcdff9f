"""The training core measured against the path it replaced and against the
machine's own matmul rate. Every figure is a ratio of two timings taken side
by side in this one process (absolute times swing 2-3x between runs on
shared machines). Writes ``reports/bench.json`` and prints Markdown tables.

(a) per-step cost, new compiled loop vs the old ``model.fit`` path, on
    digits shapes (overhead-bound) and CIFAR shapes (compute-bound);
(b) a pack of R runs vs R solo runs (new loop) and vs R runs through the old
    path, R in {1, 5, 10, 15} (digits shapes, training + per-epoch evaluation);
(c) training FLOP/s (forward + closed-form backward of the 2-layer MLP:
    4BDH + 6BHK per step) over the machine's float32 2048^3 matmul FLOP/s
    (the faster of numpy and the Keras backend);
(d) peak memory of a pack of 5 CIFAR-10-shaped runs (subprocess, one epoch
    with the alignment measurements);
(e) seconds per checkpoint for the CIFAR MLP and for ResNet-50, and their
    share of training time at the default checkpoint interval;
(f) with --demo: the digits demo (`dvc repro report@digits` in a fresh copy
    of the workspace's code and pipeline) with a breakdown of its wall time;
(g) one minibatch's in-class gradient alignment, closed form against the
    released code's per-example backward passes.

Run: make bench (or python benchmarks/bench.py [--quick] [--demo]). With
--quick every part runs on small sizes (SIZES; CI runs `make bench
BENCH_ARGS="--quick --demo"`) and the JSON goes to .cache/bench-quick.json,
so the committed full figures stay. A part that measures nothing (no
positive finite number) fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from demo import demo  # noqa: E402
from old_path import OldRun  # noqa: E402

from extreme_memorization.config import settings as config  # noqa: E402
from extreme_memorization.core import backend, loops, losses  # noqa: E402
from extreme_memorization.training import checkpoints  # noqa: E402


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops(n: int = 2048, repeat: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    return 2 * n**3 / best_of(lambda: a @ b, repeat)


def backend_matmul_flops(n: int = 2048, repeat: int = 5) -> float:
    """The same multiply through the Keras backend (TensorFlow's oneDNN kernels
    can beat numpy's BLAS; the faster of the two is the machine's limit)."""
    from keras import ops

    a = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    b = ops.convert_to_tensor(np.random.default_rng(1).standard_normal((n, n), dtype=np.float32))
    matmul = backend.compile(lambda x, y: ops.matmul(x, y))
    ops.convert_to_numpy(matmul(a, b))
    return 2 * n**3 / best_of(lambda: ops.convert_to_numpy(matmul(a, b)), repeat)


def paper_runs(count: int, **changes) -> list:
    params = config.load(ROOT / "params.yaml")
    base = {**params.defaults, "dataset": "cifar10", "model": "mlp", "activation": "sin", "loss": "cross_entropy",
            "labels": "true", "epochs": 1, "alignment_points": 0, **changes}  # fmt: skip
    sigmas = np.geomspace(0.001, 10, count) if count > 1 else [0.01]
    return [config.make_run({**base, "sigma": float(s), "seed": i}) for i, s in enumerate(sigmas)]


def synthetic(n: int, shape: tuple, k: int = 10, n_test: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_test = n_test if n_test is not None else n // 4
    return (rng.standard_normal((n, *shape), dtype=np.float32), rng.integers(0, k, n),
            rng.standard_normal((n_test, *shape), dtype=np.float32), rng.integers(0, k, n_test))  # fmt: skip


def new_trainer(runs, data, k=10):
    x, y, xt, yt = data
    r = len(runs)
    trainer = loops.PackedMLP(runs, k, x, np.tile(y, (r, 1)), xt, np.tile(yt, (r, 1)))
    trainer.loss = losses.build(runs[0])
    return trainer


def new_epoch(trainer, epoch: int, evaluate: bool) -> None:
    order = np.stack([loops.epoch_order(i, epoch, trainer.n) for i in range(trainer.members)])
    trainer.run_steps(order, np.ones(trainer.members, bool), 0, trainer.steps_per_epoch)
    if evaluate:
        trainer.evaluate("train")
        trainer.evaluate("test")
    trainer.get_state()  # wait for the device


def step_flops(batch: int, d: int, h: int = 1024, k: int = 10) -> float:
    return 4 * batch * d * h + 6 * batch * h * k


def step_cost(name: str, n: int, shape: tuple, repeat: int) -> dict:
    """(a) seconds per SGD step, training only, one run, new loop vs model.fit."""
    data = synthetic(n, shape)
    steps = n // 256
    trainer = new_trainer(paper_runs(1, batch_size=256), data)
    new_epoch(trainer, 0, False)
    new = best_of(lambda: new_epoch(trainer, 1, False), repeat) / steps
    old_run = OldRun(paper_runs(1)[0], *data, 10)
    old_run.fit_epoch()
    old = best_of(old_run.fit_epoch, repeat) / steps
    d = int(np.prod(shape))
    return {"shape": name, "examples": n, "new_step_ms": new * 1e3, "old_step_ms": old * 1e3,
            "speedup": old / new, "new_gflops": step_flops(256, d) / new / 1e9}  # fmt: skip


def packs_vs_solo(sizes, epochs: int) -> list[dict]:
    """(b) digits shapes (1437 train / 360 test, 8x8x1), training + evaluation per epoch."""
    data = synthetic(1437, (8, 8, 1), n_test=360)
    rows = []
    old_run = OldRun(paper_runs(1, dataset="digits")[0], *data, 10)
    old_run.epoch()
    old = best_of(lambda: [old_run.epoch() for _ in range(epochs)], 2) / epochs
    solo = new_trainer(paper_runs(1, dataset="digits"), data)
    new_epoch(solo, 0, True)
    one = best_of(lambda: [new_epoch(solo, e, True) for e in range(epochs)], 2) / epochs
    for r in sizes:
        pack = new_trainer(paper_runs(r, dataset="digits"), data)
        new_epoch(pack, 0, True)
        packed = best_of(lambda: [new_epoch(pack, e, True) for e in range(epochs)], 2) / epochs
        rows.append({"runs": r, "pack_epoch_s": packed, "solo_new_epoch_s": one * r, "solo_old_epoch_s": old * r,
                     "vs_solo_new": one * r / packed, "vs_solo_old": old * r / packed})  # fmt: skip
    return rows


def cifar_flops(sizes, n: int, repeat: int, matmul: float) -> list[dict]:
    """(c) CIFAR shapes, training steps only."""
    data = synthetic(n, (32, 32, 3))
    rows = []
    for r in sizes:
        trainer = new_trainer(paper_runs(r), data)
        new_epoch(trainer, 0, False)
        seconds = best_of(lambda: new_epoch(trainer, 1, False), repeat)
        flops = r * (n // 256) * step_flops(256, 3072) + r * step_flops(n % 256, 3072)
        rows.append({"runs": r, "gflops": flops / seconds / 1e9, "over_matmul": flops / seconds / matmul})
    return rows


MEMORY_SCRIPT = """
import sys, numpy as np
from pathlib import Path
from extreme_memorization.data import datasets
from extreme_memorization.training import train
sys.path.insert(0, {bench!r})
from bench import paper_runs
rng = np.random.default_rng(0)
path = Path({tmp!r}) / "cifar.npz"
n, n_test = {n}, {n_test}
datasets.save(datasets.Dataset("cifar10", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n),
              rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test), 10), path)
runs = paper_runs(5, alignment_points=2)
train.train_unit(runs, "bench", path, [Path({tmp!r}) / str(i) for i in range(5)])
# VmHWM: this process's own peak (ru_maxrss would include the parent's peak, inherited through fork)
print("PEAK_KB", [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def peak_memory(n: int, n_test: int) -> dict:
    """(d) GB, whole process: data, 5 runs' weights, one epoch, measurements
    (a CIFAR-10-sized set: 50,000 training and 10,000 test images)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = MEMORY_SCRIPT.format(bench=str(ROOT / "benchmarks"), tmp=tmp, n=n, n_test=n_test)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: the memory benchmark failed:\n{done.stderr[-3000:]}")
    gb = int(done.stdout.split("PEAK_KB")[1].split()[0]) / 1e6
    return {"runs": 5, "train_examples": n, "test_examples": n_test, "gb": gb}


def checkpoint_cost(cifar_epoch_s: float) -> dict:
    """(e) write time of one checkpoint; share of training at the default interval."""
    import keras

    params = config.load(ROOT / "params.yaml")
    every = params.defaults["checkpoint_every"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        mlp = [np.zeros((1, 3072, 1024), np.float32), np.zeros((1, 1024, 10), np.float32)]
        resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
        weights = [keras.ops.convert_to_numpy(w.value) for w in resnet.weights]
        for name, arrays in (("mlp", mlp), ("resnet50", weights)):
            seconds = best_of(lambda: checkpoints.save(Path(tmp) / f"{name}.npz", arrays, {"epoch": 1}), 3)
            out[f"{name}_seconds"] = seconds
            out[f"{name}_megabytes"] = sum(a.nbytes for a in arrays) / 1e6
    out["mlp_share_at_default_interval"] = out["mlp_seconds"] / (every * cifar_epoch_s)
    out["checkpoint_every"] = every
    return out


def alignment_speedup(batch: int = 256) -> dict:
    """(g) in-class gradient alignment of W1 and W2 for one minibatch: the
    closed form against the released code's one backward pass per example."""
    import keras
    from keras import ops

    from extreme_memorization.core import alignment as al
    from extreme_memorization.core import models
    from extreme_memorization.core import probe as api

    run = paper_runs(1)[0]
    keras.utils.set_random_seed(0)
    model = models.build(run, (32, 32, 3), 10)
    loss = losses.build(run)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    def closed_form():
        parts = api.forward_parts(model, x)
        delta = ops.convert_to_numpy(loss.logit_gradient(y, parts["logits"]))
        w2 = ops.convert_to_numpy(model.get_layer("logits").kernel)
        e = (delta @ w2.T) * ops.convert_to_numpy(models.activation_derivative("sin", parts["pre_activation"]))
        return (al.in_class(y, al.outer_alignment, x.reshape(batch, -1), e),
                al.in_class(y, al.outer_alignment, parts["representation"], delta))  # fmt: skip

    def example_loss(params, xi, yi):
        z, _ = model.stateless_call(params, [], xi)
        return ops.sum(loss.per_example(yi, z)), None

    grad = backend.compile(backend.value_and_grad(example_loss))
    params = [ops.convert_to_tensor(v.value) for v in model.trainable_variables]

    def per_example():
        grads = [grad(params, x[i : i + 1], y[i : i + 1])[2] for i in range(batch)]
        g1 = np.stack([np.ravel(ops.convert_to_numpy(g[0])) for g in grads])
        g2 = np.stack([np.ravel(ops.convert_to_numpy(g[1])) for g in grads])
        return al.in_class(y, al.alignment, g1), al.in_class(y, al.alignment, g2)

    a, b = closed_form(), per_example()
    assert np.allclose(a, b, rtol=1e-3, atol=1e-6), (a, b)
    slow, fast = best_of(per_example, 2), best_of(closed_form, 3)
    return {"per_example_s": slow, "closed_form_s": fast, "speedup": slow / fast}


# The sizes: the full run (make bench) and the small one CI runs (--quick),
# where every part runs on less data and fewer repeats.
SIZES = {
    "full": {"repeat": 3, "packs": (1, 5, 10, 15), "pack_epochs": 5, "cifar_examples": 5120,
             "alignment_batch": 256, "memory": (50000, 10000)},
    "quick": {"repeat": 1, "packs": (1, 5), "pack_epochs": 2, "cifar_examples": 1280,
              "alignment_batch": 64, "memory": (2000, 500)},
}  # fmt: skip


def ratios(r: dict) -> dict:
    """What the benchmark compares, one number each (the tables hold the rest)."""
    out = {
        "step_speedup_digits": r["step_cost"][0]["speedup"],
        "step_speedup_cifar": r["step_cost"][1]["speedup"],
        "largest_pack_vs_solo_new": r["packs"][-1]["vs_solo_new"],
        "largest_pack_vs_solo_old": r["packs"][-1]["vs_solo_old"],
        "cifar_training_over_matmul": max(c["over_matmul"] for c in r["cifar_training"]),
        "checkpoint_share_at_default_interval": r["checkpoint"]["mlp_share_at_default_interval"],
        "alignment_closed_form_speedup": r["alignment"]["speedup"],
    }
    if "demo" in r:
        out["demo_training_share"] = r["demo"]["training_s"] / r["demo"]["total_s"]
    return out


def unmeasured(value, where: str = "") -> list[str]:
    """The places in a result that hold no positive finite number (a part that
    did not really run); an empty list when every part measured something."""
    if isinstance(value, dict):
        return [w for k, v in value.items() if k != "dvc_and_rest_s" for w in unmeasured(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in unmeasured(v, f"{where}[{i}]")]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    return [] if np.isfinite(value) and value > 0 else [f"{where.lstrip('.')} = {value}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="every part on small sizes (CI's run, about a minute); "
                   "writes .cache/bench-quick.json unless --out says otherwise")  # fmt: skip
    p.add_argument("--demo", action="store_true", help="also time the digits demo (about 2 minutes; with --quick "
                   "a two-run, 2-epoch digits group)")  # fmt: skip
    p.add_argument("--out", help="where the JSON goes (default reports/bench.json)")
    args = p.parse_args()
    size = "quick" if args.quick else "full"
    s = SIZES[size]
    out = Path(args.out or (ROOT / ".cache" / "bench-quick.json" if args.quick else ROOT / "reports" / "bench.json"))
    repeat = s["repeat"]
    started = time.perf_counter()

    def timed(name, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        print(f"bench: {name} {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        return value

    numpy_matmul = timed("matmul rate", lambda: max(matmul_flops(), matmul_flops()))
    backend_matmul = backend_matmul_flops()
    matmul = max(numpy_matmul, backend_matmul)
    result = {"size": size, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "backend": backend.name(),
              "device": backend.device_name(), "matmul_gflops": matmul / 1e9, "numpy_matmul_gflops": numpy_matmul / 1e9,
              "backend_matmul_gflops": backend_matmul / 1e9}  # fmt: skip
    result["step_cost"] = timed("(a) step cost", lambda: [step_cost("digits", 1437, (8, 8, 1), repeat),
                                step_cost("cifar", s["cifar_examples"], (32, 32, 3), repeat)])  # fmt: skip
    result["packs"] = timed("(b) packs", packs_vs_solo, s["packs"], s["pack_epochs"])
    result["cifar_training"] = timed("(c) CIFAR FLOP/s", cifar_flops, (1, 5), s["cifar_examples"], repeat, matmul)
    cifar_epoch_s = 50000 / 256 * result["step_cost"][1]["new_step_ms"] / 1e3
    result["checkpoint"] = timed("(e) checkpoints", checkpoint_cost, cifar_epoch_s)
    result["alignment"] = timed("(g) alignment", alignment_speedup, s["alignment_batch"])
    result["peak_memory"] = timed("(d) peak memory", peak_memory, *s["memory"])
    if args.demo:
        result["demo"] = timed("(f) demo", demo, args.quick)
    result["seconds"] = time.perf_counter() - started
    result["ratios"] = ratios(result)
    missing = unmeasured(result)
    if missing:
        print(markdown(result))
        raise SystemExit(f"error: these parts of the benchmark measured nothing: {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nWritten: {out}")
    return 0


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}; {r['backend']} on {r['device']}; float32 2048^3 matmul: numpy "
             f"{r['numpy_matmul_gflops']:.0f} GFLOP/s, {r['backend']} {r['backend_matmul_gflops']:.0f} GFLOP/s", "",
             "| (a) one SGD step, one run | new loop | model.fit | speed-up | new loop GFLOP/s |", "|---|---|---|---|---|"]  # fmt: skip
    for s in r["step_cost"]:
        lines.append(
            f"| {s['shape']} shapes | {s['new_step_ms']:.2f} ms | {s['old_step_ms']:.2f} ms | {s['speedup']:.1f}x | {s['new_gflops']:.0f} |"
        )
    lines += ["", "| (b) runs, digits shapes, per epoch | pack | R solo, new loop | R solo, model.fit | pack vs new | pack vs model.fit |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for s in r["packs"]:
        lines.append(f"| {s['runs']} | {s['pack_epoch_s'] * 1e3:.1f} ms | {s['solo_new_epoch_s'] * 1e3:.1f} ms | "
                     f"{s['solo_old_epoch_s'] * 1e3:.1f} ms | {s['vs_solo_new']:.1f}x | {s['vs_solo_old']:.1f}x |")  # fmt: skip
    lines += ["", "| (c) CIFAR-shaped training, runs | GFLOP/s | / matmul |", "|---|---|---|"]
    for s in r["cifar_training"]:
        lines.append(f"| {s['runs']} | {s['gflops']:.0f} | {s['over_matmul']:.2f} |")
    c = r["checkpoint"]
    lines += ["", f"(e) checkpoint: MLP {c['mlp_megabytes']:.0f} MB in {c['mlp_seconds']:.3f} s, ResNet-50 "
              f"{c['resnet50_megabytes']:.0f} MB in {c['resnet50_seconds']:.3f} s; every {c['checkpoint_every']} CIFAR "
              f"epochs the MLP's costs {100 * c['mlp_share_at_default_interval']:.3f}% of training"]  # fmt: skip
    a = r["alignment"]
    lines.append(f"(g) one minibatch's gradient alignment (W1, W2): per-example backward passes {a['per_example_s']:.2f} s, "
                 f"closed form {a['closed_form_s']:.3f} s: {a['speedup']:.0f}x")  # fmt: skip
    if "peak_memory" in r:
        m = r["peak_memory"]
        lines.append(f"(d) peak memory, pack of {m['runs']} CIFAR-shaped runs ({m['train_examples']:,} training, "
                     f"{m['test_examples']:,} test images): {m['gb']:.2f} GB")  # fmt: skip
    if "demo" in r:
        d = r["demo"]
        lines.append(f"(f) digits demo, {d['runs']} runs of {d['epochs']} epochs: {d['total_s']:.0f} s = training {d['training_s']:.0f} + measuring "
                     f"{d['measuring_s']:.0f} + imports {d['imports_s']:.0f} + report {d['report_s']:.0f} + DVC and the rest "
                     f"{d['dvc_and_rest_s']:.0f}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
