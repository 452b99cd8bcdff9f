import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KERAS_HOME", str(ROOT / ".cache" / "keras"))
os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".cache" / "matplotlib"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from extreme_memorization import config  # noqa: E402


@pytest.fixture(scope="session")
def params():
    return config.load(ROOT / "params.yaml")


@pytest.fixture
def run_settings(params):
    """The digits demo's settings as a plain dict, to vary in tests."""
    axes = {"dataset": "digits", "model": "mlp", "activation": "sin", "loss": "cross_entropy", "labels": "true",
            "sigma": 0.1, "seed": 0}  # fmt: skip
    return {**params.defaults, **params.group("digits").run, **axes}


@pytest.fixture(scope="session")
def digits_raw():
    from extreme_memorization import data

    return data.digits(0.2, 0)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_raw):
    from extreme_memorization import data

    path = tmp_path_factory.mktemp("prepared") / "digits.npz"
    data.save(digits_raw, path)
    return path


def python_cmd():
    return [sys.executable, "-m", "extreme_memorization"]
