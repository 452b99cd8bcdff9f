"""A trained run back as a Keras model: :func:`load_run`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras

from ..config import packs
from ..config.settings import RUN_FIELDS, ConfigError, RunConfig, make_run
from ..core import losses, models
from ..errors import UserError
from ..training import run_folder

# Input shapes of the built-in datasets, for run.json files written before
# training recorded ``input_shape``.
INPUT_SHAPES = {"digits": (8, 8, 1), "cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "svhn_cropped": (32, 32, 3)}


class RunLoadError(UserError, ValueError):
    """A run folder that cannot be loaded; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A trained run: its Keras model with the final weights, its settings and run.json."""

    model: keras.Model
    run: RunConfig  # the settings it was trained with (params.yaml's, validated)
    info: dict  # run.json: settings, status, versions, timings

    @property
    def loss(self) -> losses.PaperLoss:
        """The loss it was trained with (``loss_scaling: output`` included), for measure_alignment."""
        return losses.build(self.run, self.info.get("initial_logit_rms", 1.0))


def load_run(path) -> LoadedRun:
    """The run in folder ``path`` (``runs/<group>/<pack>/<run>/``): builds
    the model of its settings (models.build) and loads its final weights
    (packs.weights_file). The weights are DVC outputs, not in git: fetch
    them with ``dvc pull`` or train them with ``dvc repro``."""
    run_dir = Path(path)
    info_file = run_dir / run_folder.INFO
    if not info_file.is_file():
        raise RunLoadError(
            f"{run_dir} holds no run.json: pass a run folder runs/<group>/<pack>/<run>/ of a finished run"
        )
    try:
        info = json.loads(info_file.read_text())
        older = {"image_size": None, "alpha_ref": 1.0, "first_layer_step": "plain"}  # settings older records lack
        run = make_run({**older, **{k: info[k] for k in RUN_FIELDS if k in info}})
    except (json.JSONDecodeError, ConfigError) as exc:
        raise RunLoadError(f"{info_file} is not a run's record ({exc}); retrain the run with `dvc repro`") from None
    shape = info.get("input_shape") or INPUT_SHAPES.get(run.dataset)
    if shape is None:
        raise RunLoadError(
            f"{info_file} does not record the input shape (trained before it did); retrain with `dvc repro`"
        )
    weights = packs.weights_file(run_dir)
    if not weights.is_file():
        raise RunLoadError(
            f"the weights of {run_dir} are not here ({weights} is missing): fetch them with `dvc pull` "
            "(from a DVC remote) or train them with `dvc repro`"
        )
    model = models.build(run, tuple(shape), int(info["num_classes"]))
    model.load_weights(str(weights))
    return LoadedRun(model, run, info)
