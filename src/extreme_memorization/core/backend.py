"""Everything that depends on the Keras backend, in one place.

The rest of the package is ``keras`` and ``keras.ops`` and runs unchanged
under ``KERAS_BACKEND=tensorflow`` (the default, the container's) and
``KERAS_BACKEND=jax`` (the GPU machine's). What Keras does not abstract lives
here: compiling a function, differentiating one, the matmul precision, op
determinism, and which accelerators are visible.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

import keras

# What ``matmul_precision`` means for each backend.
_JAX_PRECISION = {"float32": "highest", "tf32": "tensorfloat32"}


def name() -> str:
    return keras.backend.backend()


def compile(fn):
    """``fn`` as one compiled call: ``tf.function`` (graph mode, no XLA: XLA was
    slower than TensorFlow's own kernels on the CPU) or ``jax.jit``.
    Arguments must be arrays; the data is passed in, never captured, so it is
    not baked into the compiled program as a constant."""
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=False, autograph=False)
    if name() == "jax":
        import jax

        return jax.jit(fn)
    raise RuntimeError(f"KERAS_BACKEND={name()} is not supported; use tensorflow or jax")


def value_and_grad(fn):
    """For ``fn(params, *args) -> (value, aux)``, a function returning
    ``(value, aux, d value / d params)`` (params: a list of tensors)."""
    if name() == "tensorflow":
        import tensorflow as tf

        def wrapped(params, *args):
            with tf.GradientTape() as tape:
                tape.watch(params)
                value, aux = fn(params, *args)
            return value, aux, tape.gradient(value, params)

        return wrapped
    import jax

    grad_fn = jax.value_and_grad(fn, has_aux=True)

    def wrapped(params, *args):
        (value, aux), grads = grad_fn(params, *args)
        return value, aux, grads

    return wrapped


def set_matmul_precision(precision: str) -> None:
    """``float32``: true float32 matmuls; ``tf32``: TensorFloat-32 on Ampere and
    later GPUs (10-bit mantissa), which both backends use by default there.
    With sin at sigma = 10 the pre-activations reach hundreds of radians, so
    TF32 rounding changes the experiment; the paper ran before TF32 existed."""
    if precision not in _JAX_PRECISION:
        raise ValueError(f"matmul_precision {precision!r}; allowed: {', '.join(_JAX_PRECISION)}")
    if name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
    else:
        import jax

        jax.config.update("jax_default_matmul_precision", _JAX_PRECISION[precision])


def matmul_precision() -> str:
    """The precision in force (read back from the backend, for run.json and tests)."""
    if name() == "tensorflow":
        import tensorflow as tf

        return "tf32" if tf.config.experimental.tensor_float_32_execution_enabled() else "float32"
    import jax

    return {v: k for k, v in _JAX_PRECISION.items()}.get(jax.config.jax_default_matmul_precision, "tf32")


def seed_everything(seed: int) -> None:
    """One global seed (Keras initializers of the non-MLP models). Same seed,
    same backend, same CPU type and thread count: same numbers. On a GPU runs
    are seeded but not bit-exact: TensorFlow's deterministic mode would refuse
    ops without deterministic GPU kernels and slow the convolutions."""
    keras.utils.set_random_seed(seed)
    if name() == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            tf.config.experimental.enable_op_determinism()
        tf.get_logger().setLevel("ERROR")


def accelerators() -> list[str]:
    """The GPUs the backend sees (empty on a CPU-only host or build)."""
    if name() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    import jax

    return [str(d) for d in jax.devices() if d.platform == "gpu"]


def device_name() -> str:
    """What the arithmetic runs on, for run.json and the benchmarks."""
    gpus = accelerators()
    if gpus:
        return gpus[0]
    return f"cpu ({platform.processor() or platform.machine()})"


def allow_float64(enabled: bool = True) -> None:
    """Let float64 arrays stay float64 (JAX truncates them to float32 unless
    x64 is on; TensorFlow always allows them). The gradient tests use it."""
    if name() == "jax":
        import jax

        jax.config.update("jax_enable_x64", enabled)


# Environment variables that set how many threads the CPU kernels use.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS")  # fmt: skip
# The JAX distributions that bring a GPU: their versions decide the kernels.
JAX_PLUGINS = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-rocm-plugin")


def device_kind() -> str:
    """The kind of chip the arithmetic runs on: ``gpu NVIDIA H100 80GB HBM3``
    or ``cpu x86_64``. Kernels differ between kinds, and so do the last bits
    of a run: the run store serves a run only to the kind that trained it."""
    if name() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"gpu {tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'unknown')}"
    elif name() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform} {device.device_kind}"
    return f"cpu {platform.machine()}"


def runtime() -> dict:
    """What besides the code and the versions can move a run's last bits, for
    run.json: the device kind, the CUDA and cuDNN TensorFlow was built with
    (or the JAX platform and its GPU plugin), the oneDNN switch (it moved the
    cosine stiffness of the same weights from 0.365 to 0.599) and the thread
    counts."""
    import sys

    found = {
        "device_kind": device_kind(),
        "cpu": _cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),  # None: the build's default
        **{variable: os.environ.get(variable) for variable in THREAD_VARIABLES},
    }
    if name() == "tensorflow" and "tensorflow" in sys.modules:
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        found |= {
            "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TensorFlow chooses
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        }
    elif name() == "jax":
        import jax

        device = jax.devices()[0]
        found |= {
            "jax_platform": device.platform,
            "jax_platform_version": getattr(getattr(device, "client", None), "platform_version", None),
            "jax_plugins": {p: _installed(p) for p in JAX_PLUGINS if _installed(p)},
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        }
    return found


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
