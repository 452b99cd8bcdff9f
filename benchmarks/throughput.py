"""Throughput, as ratios measured side by side in one process.

1. Training: FLOP/s of `model.fit` on the paper's MLP (3072 -> 1024 -> 10,
   batch 256, plain SGD, the project's own model, loss and compile settings)
   over the FLOP/s of a float32 2048^3 matrix multiply in numpy on the same
   machine. Absolute times swing 2-3x between runs on shared machines; the
   ratio is what to compare.
2. Alignment: the closed-form in-class gradient alignment of W1 and W2 for
   one minibatch against the per-example autodiff loop of the released code
   (one backward pass per example), on the same model and batch.

Run: make bench (prints a Markdown table; --json for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from extreme_memorization import alignment as al  # noqa: E402
from extreme_memorization import losses, models  # noqa: E402
from extreme_memorization.config import make_run  # noqa: E402


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


def paper_run(**changes):
    settings = dict(
        dataset="cifar10", model="mlp", width=1024, activation="sin", init="normal", sigma=0.01, init_scale=1.0,
        loss="cross_entropy", temperature=1.0, margin=1.0, target_scale=1.0, squared_reduction="class_mean",
        loss_scaling="none", labels="true", learning_rate=0.01, batch_size=256, epochs=1, seed=0,
        alignment_points=0, alignment_batch_size=256,
    )  # fmt: skip
    return make_run({**settings, **changes})


def training_flops(n: int, epochs: int) -> tuple[float, float]:
    run = paper_run()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = models.build(run, (32, 32, 3), 10)
    jit = False if keras.backend.backend() == "tensorflow" else "auto"
    model.compile(optimizer=keras.optimizers.SGD(run.learning_rate), loss=losses.build(run), jit_compile=jit)
    model.fit(x, y, batch_size=run.batch_size, epochs=1, verbose=0)  # build and trace
    seconds = best_of(lambda: model.fit(x, y, batch_size=run.batch_size, epochs=1, verbose=0), epochs)
    step_flops = 3 * models.forward_flops(model)  # forward + backward
    return step_flops * n / seconds, seconds


def alignment_speedup(batch: int = 256) -> tuple[float, float]:
    """Closed form vs the released code's per-example backward passes."""
    import tensorflow as tf

    run = paper_run()
    keras.utils.set_random_seed(0)
    model = models.build(run, (32, 32, 3), 10)
    loss = losses.build(run)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    def closed_form():
        parts = models.forward_parts(model, x)
        delta = keras.ops.convert_to_numpy(loss.logit_gradient(y, parts["logits"]))
        w2 = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
        e = (delta @ w2.T) * keras.ops.convert_to_numpy(models.activation_derivative("sin", parts["pre_activation"]))
        flat = x.reshape(batch, -1)
        return (al.in_class(y, al.outer_alignment, flat, e), al.in_class(y, al.outer_alignment, parts["representation"], delta))

    w1, w2 = model.get_layer("hidden").kernel, model.get_layer("logits").kernel

    @tf.function
    def one_example(xi, yi):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss.per_example(yi, model(xi)))
        g1, g2 = tape.gradient(value, [w1.value, w2.value])
        return tf.reshape(g1, [-1]), tf.reshape(g2, [-1])

    def per_example():
        grads = [one_example(x[i : i + 1], y[i : i + 1]) for i in range(batch)]
        g1 = np.stack([g[0].numpy() for g in grads])
        g2 = np.stack([g[1].numpy() for g in grads])
        return al.in_class(y, al.alignment, g1), al.in_class(y, al.alignment, g2)

    a, b = closed_form(), per_example()
    assert np.allclose(a, b, rtol=1e-3, atol=1e-6), (a, b)
    return best_of(per_example, 2), best_of(closed_form, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_240, help="examples per timed epoch")
    parser.add_argument("--repeat", type=int, default=3, help="timed epochs (best is kept)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    matmul_before = matmul_flops()
    train, epoch_seconds = training_flops(args.examples, args.repeat)
    matmul_after = matmul_flops()
    matmul = max(matmul_before, matmul_after)
    slow, fast = alignment_speedup()
    result = {
        "backend": keras.backend.backend(),
        "matmul_gflops": matmul / 1e9,
        "train_gflops": train / 1e9,
        "train_over_matmul": train / matmul,
        "epoch_seconds_per_10k": epoch_seconds * 10_000 / args.examples,
        "alignment_per_example_seconds": slow,
        "alignment_closed_form_seconds": fast,
        "alignment_speedup": slow / fast,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| measure | value |\n|---|---|")
    print(f"| numpy float32 2048^3 matmul | {result['matmul_gflops']:.0f} GFLOP/s |")
    print(f"| MLP training, model.fit, batch 256 | {result['train_gflops']:.0f} GFLOP/s |")
    print(f"| **training / matmul** | **{result['train_over_matmul']:.2f}** |")
    print(f"| one minibatch's gradient alignment, per-example backward passes | {slow:.2f} s |")
    print(f"| the same, closed form | {fast:.3f} s |")
    print(f"| **speed-up of the closed form** | **{result['alignment_speedup']:.0f}x** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
