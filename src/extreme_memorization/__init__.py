"""Reproduction of "Extreme Memorization via Scale of Initialization"
(Mehta, Cutkosky, Neyshabur, ICLR 2021) in Keras 3.

The public surface is what ``__all__`` names (docs/api.md describes it):
the paper's alignment measure for any Keras classifier and a trained run
of this bundle as a Keras model. Every other module may change.
"""

import importlib as _importlib
import os as _os

# The one place of the version: pyproject.toml reads it from here.
__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (oneDNN notices, CUDA probing on CPU hosts).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import tensorflow_logs as _tensorflow_logs

_tensorflow_logs.install()

# Imported on first use: ``import extreme_memorization`` alone loads no Keras
# (the backend is chosen by KERAS_BACKEND when Keras is first imported).
_EXPORTS = {
    "measure_alignment": "api",
    "AlignmentInputError": "api",
    "MEASURES": "api",
    "AlignmentCallback": "callback",
    "load_run": "load",
    "LoadedRun": "load",
    "RunLoadError": "load",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
