"""The GPU check: steps/s of solo and packed training of the paper's MLP on
CIFAR-shaped synthetic data, at float32 and TF32, the TF32 error of sin(W1 x)
at sigma = 10, and the projected hours of every experiment group.

Runs under any Keras backend (the GPU machine has JAX and no TensorFlow);
benchmarks/device_check.sh sets it up on a bare machine. ``--cpu`` runs the
same code small on the CPU, so CI keeps it working. Writes a JSON of the
measured rates that ``python -m extreme_memorization plan --rates`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def trainer_for(members: int, n: int, precision: str):
    from extreme_memorization.config import settings as config
    from extreme_memorization.core import backend, loops, losses

    backend.set_matmul_precision(precision)
    params = config.load(ROOT / "params.yaml")
    base = {**params.defaults, "dataset": "cifar10", "model": "mlp", "activation": "sin", "loss": "cross_entropy",
            "labels": "true", "epochs": 1, "alignment_points": 0, "matmul_precision": precision}  # fmt: skip
    sigmas = np.geomspace(0.001, 10, members) if members > 1 else [0.01]
    runs = [config.make_run({**base, "sigma": float(s), "seed": i}) for i, s in enumerate(sigmas)]
    rng = np.random.default_rng(0)
    x, xt = (
        rng.standard_normal((n, 32, 32, 3), dtype=np.float32),
        rng.standard_normal((n // 5, 32, 32, 3), dtype=np.float32),
    )
    y, yt = rng.integers(0, 10, (members, n)), rng.integers(0, 10, (members, n // 5))
    trainer = loops.PackedMLP(runs, 10, x, y, xt, yt)
    trainer.loss = losses.build(runs[0])
    return trainer


def epoch_seconds(trainer, epochs: int) -> tuple[float, float]:
    """(seconds per epoch of training steps, seconds of the per-epoch evaluation)."""
    from extreme_memorization.core import loops

    active = np.ones(trainer.members, bool)

    def train(e):
        trainer.run_steps(np.stack([loops.epoch_order(i, e, trainer.n) for i in range(trainer.members)]), active, 0,
                          trainer.steps_per_epoch)  # fmt: skip

    train(0)  # compiles
    trainer.evaluate("train")
    trainer.evaluate("test")
    trainer.get_state()
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        train(e)
    trainer.get_state()
    steps = (time.perf_counter() - start) / epochs
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.evaluate("train")
        trainer.evaluate("test")
    return steps, (time.perf_counter() - start) / epochs


def tf32_error(n: int = 2048) -> dict:
    """How far TF32 moves sin(W1 x) at sigma = 10 (standardized CIFAR-like x)."""
    from keras import ops

    from extreme_memorization.core import backend

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3072)).astype(np.float32)
    w1 = (10.0 * rng.standard_normal((3072, 1024))).astype(np.float32)
    exact = np.sin(x.astype(np.float64) @ w1.astype(np.float64))
    out = {}
    for precision in ("float32", "tf32"):
        backend.set_matmul_precision(precision)
        pre = np.asarray(
            ops.convert_to_numpy(ops.matmul(ops.convert_to_tensor(x), ops.convert_to_tensor(w1))), np.float64
        )
        out[precision] = float(np.sqrt(np.mean((np.sin(pre) - exact) ** 2)))
    out["pre_activation_rms"] = float(np.sqrt(np.mean((x.astype(np.float64) @ w1.astype(np.float64)) ** 2)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="small sizes, for a CPU (CI keeps the script working)")
    p.add_argument("--out", default="device_check.json")
    args = p.parse_args()
    from extreme_memorization.config import settings as config
    from extreme_memorization.core import backend
    from extreme_memorization.pipeline import estimate

    n, epochs, sizes = (1024, 1, (1, 5)) if args.cpu else (50_000, 3, (1, 5, 15))
    result = {"backend": backend.name(), "device": backend.device_name(), "examples": n, "steps": {}}
    print(
        f"{backend.name()} on {backend.device_name()}; CIFAR-shaped MLP (3072-1024-10), batch 256, {n} examples",
        flush=True,
    )
    print(
        "| precision | runs | steps/s | run-steps/s | epoch, training (s) | epoch, evaluation (s) |\n|---|---|---|---|---|---|"
    )
    for precision in ("float32", "tf32"):
        for r in sizes:
            trainer = trainer_for(r, n, precision)
            train_s, eval_s = epoch_seconds(trainer, epochs)
            steps_per_s = trainer.steps_per_epoch / train_s
            result["steps"][f"{precision}-{r}"] = {"runs": r, "steps_per_s": steps_per_s, "train_epoch_s": train_s,
                                                   "eval_epoch_s": eval_s}  # fmt: skip
            print(
                f"| {precision} | {r} | {steps_per_s:,.0f} | {steps_per_s * r:,.0f} | {train_s:.3f} | {eval_s:.3f} |",
                flush=True,
            )
            del trainer
    # pipeline/estimate.py reads seconds per full CIFAR epoch (50,000 train + 10,000 test) at float32
    scale = 50_000 / n
    result["epoch_seconds"] = {str(v["runs"]): (v["train_epoch_s"] + v["eval_epoch_s"]) * scale
                               for k, v in result["steps"].items() if k.startswith("float32")}  # fmt: skip
    result["tf32_error"] = tf32_error(256 if args.cpu else 2048)
    e = result["tf32_error"]
    print(f"\nsin(W1 x) at sigma = 10 (pre-activations of RMS {e['pre_activation_rms']:.0f} rad), RMS error against "
          f"float64: float32 {e['float32']:.2e}, tf32 {e['tf32']:.2e}")  # fmt: skip
    params = config.load(ROOT / "params.yaml")
    hours = estimate.measured_hours(params, result, tflops=25.0, step_ms=2.0)
    result["projected_hours"] = hours
    print(
        "\nProjected hours at float32 (MLP packs from these rates; other models at an assumed 25 TFLOP/s + 2 ms/step):"
    )
    print("| group | hours |\n|---|---|")
    for name, h in hours.items():
        print(f"| {name} | {h:,.2f} |")
    mlp_groups = ("section3", "section4", "section4_fixes")
    print(f"| sections 3, 4 and the loss fixes | {sum(hours[g] for g in mlp_groups if g in hours):,.2f} |")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nrates written to {args.out}; project with: python -m extreme_memorization plan --rates {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
