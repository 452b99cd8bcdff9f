"""Reproduction of "Extreme Memorization via Scale of Initialization"
(Mehta, Cutkosky, Neyshabur, ICLR 2021) in Keras 3.

The public surface is what ``__all__`` names (docs/api.md describes it):
the paper's alignment measure for any Keras classifier and a trained run
of this bundle as a Keras model. Every other module may change.

Importing the package changes nothing in the process: no environment
variable, no import hook, no matplotlib or TensorFlow setting (the command
line sets what it needs when it starts).
"""

import importlib as _importlib

# The one place of the version: pyproject.toml reads it from here.
__version__ = "0.1.0"

# Imported on first use: ``import extreme_memorization`` alone loads no Keras
# (the backend is chosen by KERAS_BACKEND when Keras is first imported).
_EXPORTS = {
    "measure_alignment": "api",
    "AlignmentInputError": "api",
    "MEASURES": "api",
    "AlignmentCallback": "api.callback",
    "load_run": "api.load",
    "LoadedRun": "api.load",
    "RunLoadError": "api.load",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
