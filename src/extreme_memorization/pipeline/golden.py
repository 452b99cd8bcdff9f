"""The golden battery: one tiny run per activation x loss x loss_scaling (and
first_layer_step compensated for ReLU),
and one per other model family, pinned, so that ``rekey`` can show that a
change moved no number before it relabels the committed runs.

    python -m extreme_memorization golden           # measure and compare with golden-battery.json
    python -m extreme_memorization golden --write   # pin this code's numbers (the backend in use)

``golden-battery.json`` holds the settings of every run of the battery, the
code line of the ``fingerprint.txt`` the numbers were measured under (and
per backend the MD5 of its text),
the device kind they were measured on (numbers of another kind differ in
the last bits) and the numbers of each backend pinned so far. ``rekey`` refuses unless the
file was pinned for the code the runs were trained with (the MD5 dvc.lock
records for their ``fingerprint.txt``) and the code as it is now gives the
same numbers (relative 1e-6) under this backend, and under the other backend
when it is installed and pinned; after re-keying it records the new
fingerprint's MD5. Each run is two epochs of an 8-unit MLP (a 1-epoch ConvNet) on the
digits, about a second apiece after compiling.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from .. import files
from ..errors import UserError

FILE = "golden-battery.json"
RELATIVE = 1e-6
ABSOLUTE = 1e-9
MEASURED = ("train_loss", "test_loss", "train_acc", "test_acc", "rep_alignment", "grad_alignment_w1",
            "grad_alignment_w2", "gradient_diversity")  # fmt: skip
BASE = {
    "dataset": "digits", "model": "mlp", "labels": "true", "sigma": 1.0, "seed": 0, "width": 8, "init": "normal",
    "init_scale": 1.0, "temperature": 1.0, "margin": 1.0, "target_scale": 1.0, "squared_reduction": "class_mean",
    "learning_rate": 0.05, "batch_size": 256, "epochs": 2, "alignment_points": 2, "alignment_batch_size": 256,
    "matmul_precision": "float32", "checkpoint_every": 100, "checkpoint_minutes": 10, "image_size": None,
    "alpha_ref": 1.0, "first_layer_step": "plain",
}  # fmt: skip
DIGITS_SPLIT = (0.2, 0)  # test fraction, split seed: the demo's


class GoldenError(UserError):
    """The battery's numbers differ from the pinned ones, or none are pinned."""


def battery() -> dict[str, dict]:
    """Name -> settings of every run of the battery."""
    from ..config.settings import ACTIVATIONS, LOSS_SCALINGS, LOSSES

    runs = {}
    for activation in ACTIVATIONS:
        for loss in LOSSES:
            for scaling in LOSS_SCALINGS:
                runs[f"mlp-{activation}-{loss}-{scaling}"] = {**BASE, "activation": activation, "loss": loss,
                                                              "loss_scaling": scaling}  # fmt: skip
    for loss in LOSSES:  # W1's step times s^2 (the fix's 2x2)
        runs[f"mlp-relu-{loss}-normalized-compensated"] = {**BASE, "activation": "relu", "loss": loss, "sigma": 10.0,
                                                           "loss_scaling": "normalized",
                                                           "first_layer_step": "compensated"}  # fmt: skip
    runs["convnet-relu-cross_entropy-none"] = {**BASE, "model": "convnet", "activation": "relu",
                                               "loss": "cross_entropy", "loss_scaling": "none", "sigma": None,
                                               "init": "glorot", "epochs": 1, "image_size": 32}  # fmt: skip
    return runs


def measure(settings: dict[str, dict]) -> dict[str, dict]:
    """Train every run of ``settings`` here, under the backend in use; their
    :data:`MEASURED` numbers by name."""
    from ..config.settings import make_run
    from ..data import datasets
    from ..training import train as training

    out = {}
    with tempfile.TemporaryDirectory(prefix="em-golden-") as tmp:
        npz = Path(tmp) / "digits.npz"
        datasets.save(datasets.digits(*DIGITS_SPLIT), npz)
        for name, values in settings.items():
            folder = Path(tmp) / name
            # The progress lines of every run, and numpy's warnings on the measures of
            # runs whose ReLUs die (those measures are recorded as missing, and compared so).
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                metrics = training.train_unit([make_run(values)], "golden", npz, [folder],
                                              weights_files=[folder / "model.weights.h5"])[0]  # fmt: skip
            out[name] = {k: metrics.get(k) for k in MEASURED}
    return out


def differences(pinned: dict[str, dict], measured: dict[str, dict]) -> list[str]:
    """One line per number that moved beyond the tolerance (or is missing)."""
    lines = []
    for name, numbers in pinned.items():
        for key, value in numbers.items():
            got = measured.get(name, {}).get(key)
            same = (value is None and got is None) or (
                value is not None
                and got is not None
                and math.isclose(got, value, rel_tol=RELATIVE, abs_tol=ABSOLUTE)  # fmt: skip
            )
            if not same:
                lines.append(f"{name} {key}: pinned {value}, now {got}")
    return lines


def _read(root: Path) -> dict:
    path = Path(root) / FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise GoldenError(f"{path} is not valid JSON ({exc}); `git checkout {FILE}` restores it") from None


def _fingerprint(root: Path, backend: str) -> tuple[str, str]:
    """The code line, and the MD5 of the text, that the fingerprint stage
    writes under ``backend`` for the code as it is now (dvc.lock records the
    MD5 for ``fingerprint.txt`` once the stage ran)."""
    from ..training import fingerprint

    package = Path(root) / "src" / fingerprint.PACKAGE
    text = fingerprint.describe(backend, root=package if package.is_dir() else fingerprint.ROOT)
    code = next(line for line in text.splitlines() if line.startswith("code "))
    return code, hashlib.md5(text.encode()).hexdigest()


def _device_kind() -> str:
    from ..core import backend

    return backend.device_kind()


def write(root: Path, names: list[str] | None = None) -> int:
    """Measure the battery (``names`` of it: a test's smaller one) under this
    backend and pin it, for the code as it is now."""
    from ..training import fingerprint

    backend = fingerprint.backend_name()
    pinned = _read(root)
    code, md5 = _fingerprint(root, backend)
    settings = {name: values for name, values in battery().items() if names is None or name in names}
    if (pinned.get("code"), pinned.get("settings"), pinned.get("device_kind")) != (code, settings, _device_kind()):
        pinned = {}  # numbers of other code, runs or devices are no reference for these
    pinned.update({"code": code, "device_kind": _device_kind(), "settings": settings,
                   backend: {"fingerprint_md5": md5, "numbers": measure(settings)}})  # fmt: skip
    files.write_text(Path(root) / FILE, json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    return len(settings)


def pinned_for(root: Path, backend: str, trained_with: set[str]) -> None:
    """Refuse unless the battery was pinned under ``backend`` for the
    fingerprint the runs were trained with (``trained_with``: the MD5s
    dvc.lock records for ``fingerprint.txt``)."""
    pinned = _read(root).get(backend)
    if not pinned:
        raise GoldenError(f"no golden battery pinned for {backend} in {FILE}: at the commit the runs were trained "
                          f"with, run `python -m extreme_memorization golden --write` and commit {FILE}")  # fmt: skip
    if trained_with != {pinned.get("fingerprint_md5")}:
        raise GoldenError(f"{FILE} was pinned for other code than the runs were trained with (dvc.lock's "
                          "fingerprint.txt): pin it at the commit they were trained with (golden --write)")  # fmt: skip


def check(root: Path, backend: str) -> int:
    """Refuse (:class:`GoldenError`) unless the code as it is now gives the
    pinned numbers under ``backend`` (the one in use) on this device kind.
    Returns how many runs matched."""
    pinned = _read(root)
    if backend not in pinned or not pinned.get("settings"):
        raise GoldenError(f"no golden battery pinned for {backend} in {FILE}: at the commit the runs were trained "
                          f"with, run `python -m extreme_memorization golden --write` and commit {FILE}")  # fmt: skip
    if pinned.get("device_kind") != _device_kind():
        raise GoldenError(f"{FILE} was pinned on {pinned.get('device_kind')}, this machine is {_device_kind()}: their "
                          "numbers differ in the last bits; rekey on the device kind the battery was pinned on")  # fmt: skip
    try:
        measured = measure(pinned["settings"])
    except (UserError, TypeError) as exc:
        raise GoldenError(f"the pinned battery no longer makes runs ({exc}); pin it again at the commit the runs "
                          "were trained with (golden --write)") from None  # fmt: skip
    moved = differences(pinned[backend]["numbers"], measured)
    if moved:
        raise GoldenError(f"the golden battery moved under {backend} ({len(moved)} numbers, e.g. {moved[0]}): this "
                          "change moves numbers; retrain (dvc repro) instead of rekey")  # fmt: skip
    return len(measured)


def other_backends(root: Path, backend: str) -> list[str]:
    """The pinned backends besides ``backend`` that are installed here."""
    pinned = _read(root)
    modules = {"tensorflow": "tensorflow", "jax": "jax"}
    return [b for b in modules if b != backend and b in pinned and importlib.util.find_spec(modules[b])]


def check_elsewhere(root: Path, backend: str) -> None:
    """:func:`check` under ``backend`` in a process of its own (Keras picks its backend once)."""
    out = subprocess.run([sys.executable, "-m", "extreme_memorization", "golden"], cwd=root, capture_output=True,
                         text=True, env={**os.environ, "KERAS_BACKEND": backend})  # fmt: skip
    if out.returncode:
        lines = out.stderr.strip().splitlines()
        raise GoldenError(lines[-1].removeprefix("error: ") if lines else f"the battery under {backend} failed")


def record_code(root: Path) -> None:
    """After a rekey: the pinned numbers hold for the code as it is now."""
    pinned = _read(root)
    if not pinned:
        return
    for backend in ("tensorflow", "jax"):
        if backend in pinned:
            pinned["code"], pinned[backend]["fingerprint_md5"] = _fingerprint(root, backend)
    files.write_text(Path(root) / FILE, json.dumps(pinned, indent=1, sort_keys=True) + "\n")
