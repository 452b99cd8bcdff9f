"""One validated configuration, read from ``params.yaml``.

``params.yaml`` has a ``data`` section (how datasets are prepared), a
``defaults`` section (the training settings every run shares unless its group
says otherwise: the paper's values) and one section per *experiment group*.
A group overrides some defaults (``run``) and lists the values of the run's
identity, the :data:`AXES` (``sweep``: a list per axis, one value where it
does not vary; and, if the group sweeps it, the :data:`OPTIONAL_AXES`'
learning_rate); each combination is one run, in one DVC stage of the
group's matrix (a pack: config/packs.py) and one folder
``runs/<group>/<pack>/sigma<sigma>-seed<seed>[-lr<learning_rate>]``.

The file is read by YAML 1.2 rules with ruamel.yaml's safe loader, exactly
as DVC reads it, so the values DVC interpolates into a stage's command and
the values training validates are the same (under PyYAML's YAML 1.1,
``1e-3`` is a string and ``no`` a boolean; under 1.2 they are 0.001 and the
text 'no'): config/yamlfile.py.

Every error is a :class:`ConfigError` whose message is one line naming the
key, the offending value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .yamlfile import read_yaml

# Built-in datasets; the user's own .npz files join them by name (data.own).
DATASETS = ("digits", "cifar10", "cifar100", "svhn_cropped")
OWN_NAME = re.compile(r"[a-z][a-z0-9_]*")
# resnet14 and densenet21: the ResNet-50 and DenseNet-121 families at a depth a
# 2-core CPU trains in minutes (models.py).
MODELS = ("mlp", "convnet", "resnet50", "densenet121", "resnet14", "densenet21")
ACTIVATIONS = ("sin", "relu", "sigmoid", "tanh", "linear")
LOSSES = ("cross_entropy", "hinge", "squared")
INITS = ("normal", "glorot")
LABELS = ("true", "shuffled")
SQUARED_REDUCTIONS = ("class_mean", "half_sum")
LOSS_SCALINGS = ("none", "output", "normalized")
FIRST_LAYER_STEPS = ("plain", "compensated")
MATMUL_PRECISIONS = ("float32", "tf32")
SECTIONS = ("data", "defaults")
# What tells the runs of a group apart: every group's sweep lists each of them.
AXES = ("dataset", "model", "activation", "loss", "labels", "sigma", "seed")
# Axes a group may sweep (then each value is a run, like sigma and seed) or
# leave to run/defaults (then its runs are named as if it did not exist).
OPTIONAL_AXES = ("learning_rate",)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How the prepare stage builds each dataset."""

    digits_test_fraction: float  # held-out share of scikit-learn's digits
    split_seed: int  # seed of the stratified digits split
    tfds_data_dir: str | None  # None: $TFDS_DATA_DIR, else tfds' default
    own: dict[str, str]  # the user's own datasets: name -> path of its .npz file
    download_timeout: float  # seconds before an unreachable download gives up


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of one training run (one point of a sweep)."""

    dataset: str
    model: str
    width: int  # hidden units of the MLP
    activation: str  # phi of the MLP; other models use relu
    init: str  # normal: W1 ~ N(0, sigma^2) (paper); glorot: default initializers
    sigma: float | None  # absolute stddev of W1 (init: normal); None with init glorot
    init_scale: float  # ours: multiplier on glorot-initialized kernels
    loss: str
    temperature: float  # cross-entropy: softmax(z / temperature)
    margin: float  # hinge: sum_{j != y} max(0, margin + z_j - z_y)
    target_scale: float  # squared: targets are target_scale * onehot(y)
    squared_reduction: str  # class_mean (released code) or half_sum (paper)
    loss_scaling: str  # output: the paper's proposed fix; normalized: the loss of z / s (see losses.py)
    alpha_ref: float  # normalized / compensated: s = max(initial logit RMS / alpha_ref, 1)
    first_layer_step: str  # plain, or compensated: W1's learning rate times s^2 (mlp only)
    labels: str  # true, or shuffled by a fixed permutation of the classes
    learning_rate: float
    batch_size: int
    epochs: int
    seed: int
    alignment_points: int  # training-time alignment measurements (log-spaced)
    alignment_batch_size: int  # minibatch scope of the released code
    matmul_precision: str  # float32 (true float32 matmuls) or tf32 (faster on Ampere/Hopper GPUs)
    image_size: int | None  # None: images as prepared; N: enlarged to N x N (data.enlarge)
    checkpoint_every: int  # epochs between checkpoints (0: only on a signal and on the time basis)
    checkpoint_minutes: float  # also checkpoint when this much time has passed since the last one

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GroupConfig:
    name: str
    run: dict[str, Any]
    sweep: dict[str, list[Any]]
    datasets: tuple[str, ...] = DATASETS  # the names sweep.dataset may use

    def locate(self, key: str) -> str:
        """Where in params.yaml a run's setting comes from (for errors)."""
        if key in AXES or key in self.sweep:
            return f"{self.name}.sweep.{key}"
        return f"{self.name}.run.{key}" if key in self.run else f"defaults.{key}"

    def runs(self, defaults: dict[str, Any]) -> list[RunConfig]:
        keys = list(self.sweep)
        out = []
        for values in itertools.product(*(self.sweep[k] for k in keys)):
            values = {**defaults, **self.run, **dict(zip(keys, values))}
            out.append(make_run(values, self.locate, self.datasets))
        return out


@dataclasses.dataclass(frozen=True)
class Params:
    data: DataConfig
    defaults: dict[str, Any]
    groups: dict[str, GroupConfig]

    def group(self, name: str) -> GroupConfig:
        if name not in self.groups:
            raise ConfigError(f"experiment group '{name}' is not in params.yaml; groups: {', '.join(self.groups)}")
        return self.groups[name]

    def run(self, group: str, overrides: dict[str, Any] | None = None) -> RunConfig:
        """The run of ``group`` with its axes set to ``overrides`` (an axis
        with a single value in the sweep may be left out)."""
        g = self.group(group)
        overrides = dict(overrides or {})
        for key in overrides:
            if key not in g.sweep:
                raise ConfigError(f"{group}.sweep has no key '{key}'; axes: {', '.join(g.sweep)}")
        missing = [k for k in g.sweep if k not in overrides and len(g.sweep[k]) > 1]
        if missing:
            raise ConfigError(f"run of group '{group}' needs a value for axis (axes) {', '.join(missing)}")
        overrides = {**{k: v[0] for k, v in g.sweep.items() if len(v) == 1}, **overrides}
        for key, value in overrides.items():
            if not any(_same(value, v) for v in g.sweep[key]):
                raise ConfigError(f"{group}.sweep.{key} has no value {value!r}; values: {g.sweep[key]}")
        return make_run({**self.defaults, **g.run, **overrides}, g.locate, g.datasets)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12)
    return str(a) == str(b)


def _normalized(value: Any) -> Any:
    """What identifies a sweep value: 1, 1.0 and 1e0 are one number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", float(value))
    return (type(value).__name__, repr(value))


RUN_FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
TEXT_FIELDS = {f.name for f in dataclasses.fields(RunConfig) if f.type == "str"}
DATA_FIELDS = [f.name for f in dataclasses.fields(DataConfig)]


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(value, bool) and str(value).lower() in allowed:
        # YAML reads an unquoted true as a boolean; the setting is the word.
        word = str(value).lower()
        quoted = f'["{word}"]' if ".sweep." in where else f'"{word}"'
        raise ConfigError(
            f"{where} = {value!r} is a YAML boolean, not the word {word!r}; quote it: {where.rsplit('.', 1)[-1]}: {quoted}"
        )
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{where} = {value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _dataset(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and value not in allowed and OWN_NAME.fullmatch(value):
        raise ConfigError(
            f"{where} = {value!r} is not allowed; allowed: {', '.join(allowed)}; for your own data name its "
            f".npz file in params.yaml: data: own: {{{value}: data/{value}.npz}}"
        )
    return _choice(where, value, allowed)


def _own(raw: Any) -> dict[str, str]:
    """data.own: the user's datasets, a name (used in sweep.dataset, stage
    prepare-own@<name>, data/prepared/<name>.npz) -> the path of an .npz."""
    example = "own: {mydata: data/mydata.npz}"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"data.own = {raw!r} is not allowed; allowed: a mapping of dataset names to .npz paths, e.g. {example}"
        )
    for name, path in raw.items():
        if not isinstance(name, str) or not OWN_NAME.fullmatch(name):
            raise ConfigError(
                f"data.own.{name} is not allowed as a dataset name; allowed: lowercase letters, digits and _ "
                f"starting with a letter (it names a stage and files), e.g. {example}"
            )
        if name in DATASETS:
            raise ConfigError(f"data.own.{name} takes the name of a built-in dataset; give your data another name")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(
                f"data.own.{name} = {path!r} is not allowed; allowed: the path of an .npz file, e.g. {example}"
            )
        if Path(path).parts[:2] == ("data", "prepared"):
            raise ConfigError(
                f"data.own.{name} = {path!r} is inside data/prepared/, where the prepare stages write; "
                "keep your file elsewhere, e.g. data/"
            )
    return dict(raw)


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} = {value!r} is not allowed; allowed: an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(f"{where} = {value!r} is not allowed; allowed: an integer >= {minimum}")
    return value


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where} = {value!r} is not allowed; allowed: a number > 0")
    return float(value)


def _fraction(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where} = {value!r} is not allowed; allowed: a number strictly between 0 and 1")
    return float(value)


def _check_keys(where: str, mapping: Any, allowed: list[str], required: bool) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} = {mapping!r} is not allowed; allowed: a mapping of keys {', '.join(allowed)}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}.{key} is not a known key; allowed: {', '.join(allowed)}")
    if required:
        for key in allowed:
            if key not in mapping:
                raise ConfigError(f"{where}.{key} is missing; add it (see the comments in params.yaml)")
    return mapping


def make_run(
    values: dict[str, Any], locate: Callable[[str], str] | None = None, datasets: tuple[str, ...] = DATASETS
) -> RunConfig:
    """Validate one run's settings; ``locate(key)`` names a key in errors,
    ``datasets`` are the dataset names allowed (the built-in ones and data.own's)."""
    v = values
    missing = [k for k in RUN_FIELDS if k not in v]
    if missing:
        raise ConfigError(f"run settings lack {', '.join(missing)}")
    key = locate or (lambda k: k)
    run = RunConfig(
        dataset=_dataset(key("dataset"), v["dataset"], datasets),
        model=_choice(key("model"), v["model"], MODELS),
        width=_int(key("width"), v["width"], 1),
        activation=_choice(key("activation"), v["activation"], ACTIVATIONS),
        init=_choice(key("init"), v["init"], INITS),
        sigma=None if v["init"] == "glorot" and v["sigma"] is None else _positive(key("sigma"), v["sigma"]),
        init_scale=_positive(key("init_scale"), v["init_scale"]),
        loss=_choice(key("loss"), v["loss"], LOSSES),
        temperature=_positive(key("temperature"), v["temperature"]),
        margin=_positive(key("margin"), v["margin"]),
        target_scale=_positive(key("target_scale"), v["target_scale"]),
        squared_reduction=_choice(key("squared_reduction"), v["squared_reduction"], SQUARED_REDUCTIONS),
        loss_scaling=_choice(key("loss_scaling"), v["loss_scaling"], LOSS_SCALINGS),
        alpha_ref=_positive(key("alpha_ref"), v["alpha_ref"]),
        first_layer_step=_choice(key("first_layer_step"), v["first_layer_step"], FIRST_LAYER_STEPS),
        labels=_choice(key("labels"), v["labels"], LABELS),
        learning_rate=_positive(key("learning_rate"), v["learning_rate"]),
        batch_size=_int(key("batch_size"), v["batch_size"], 1),
        epochs=_int(key("epochs"), v["epochs"], 1),
        seed=_int(key("seed"), v["seed"], 0),
        alignment_points=_int(key("alignment_points"), v["alignment_points"], 0),
        alignment_batch_size=_int(key("alignment_batch_size"), v["alignment_batch_size"], 2),
        matmul_precision=_choice(key("matmul_precision"), v["matmul_precision"], MATMUL_PRECISIONS),
        image_size=None if v["image_size"] is None else _int(key("image_size"), v["image_size"], 1),
        checkpoint_every=_int(key("checkpoint_every"), v["checkpoint_every"], 0),
        checkpoint_minutes=_positive(key("checkpoint_minutes"), v["checkpoint_minutes"]),
    )
    # Combinations that make no sense fail here, before any training.
    if run.model != "mlp":
        if run.activation != "relu":
            raise ConfigError(
                f"{key('activation')} = {run.activation!r} is not allowed with model {run.model!r}; "
                "allowed: relu (only the mlp takes other activations)"
            )
        if run.init != "glorot":
            raise ConfigError(
                f"{key('init')} = {run.init!r} is not allowed with model {run.model!r}; "
                "allowed: glorot (sigma is the mlp's first-layer stddev; scale other models with init_scale)"
            )
    if run.first_layer_step == "compensated" and run.model != "mlp":
        raise ConfigError(
            f"{key('first_layer_step')} = 'compensated' is not allowed with model {run.model!r}; "
            "allowed: plain (only the mlp has the first layer W1 whose step it compensates)"
        )
    if run.init == "glorot" and run.sigma is not None:
        raise ConfigError(
            f"{key('sigma')} = {run.sigma!r} is not allowed with init 'glorot'; "
            "allowed: null (sigma is the stddev of the paper's normal init; scale Glorot kernels with init_scale)"
        )
    if run.init == "normal" and run.init_scale != 1.0:
        raise ConfigError(
            f"{key('init_scale')} = {run.init_scale!r} is not allowed with init 'normal'; "
            "allowed: 1.0 (with init normal the scale is sigma)"
        )
    return run


def parse(raw: Any) -> Params:
    """Validate the whole of params.yaml (already parsed from YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping with sections data, defaults and experiment groups")
    for section in SECTIONS:
        if section not in raw:
            raise ConfigError(f"params.yaml has no section '{section}'; add it (see docs/experiments.md)")
    if isinstance(raw["data"], dict) and "npz_path" in raw["data"]:
        raise ConfigError(
            f"data.npz_path is now data.own, which names one or more .npz files: write "
            f"own: {{npz: {raw['data']['npz_path']}}} (dataset: [npz] in a group stays as it is)"
        )
    d = _check_keys("data", raw["data"], DATA_FIELDS, required=True)
    tfds_dir = d["tfds_data_dir"]
    if tfds_dir is not None and not isinstance(tfds_dir, str):
        raise ConfigError(f"data.tfds_data_dir = {tfds_dir!r} is not allowed; allowed: a path or null")
    data = DataConfig(
        digits_test_fraction=_fraction("data.digits_test_fraction", d["digits_test_fraction"]),
        split_seed=_int("data.split_seed", d["split_seed"], 0),
        tfds_data_dir=tfds_dir,
        own=_own(d["own"]),
        download_timeout=_positive("data.download_timeout", d["download_timeout"]),
    )
    shared = [k for k in RUN_FIELDS if k not in AXES]
    defaults = _check_keys("defaults", raw["defaults"], shared, required=True)

    groups = {}
    for name, body in raw.items():
        if name in SECTIONS:
            continue
        body = _check_keys(name, body, ["run", "sweep"], required=False)
        run = body.get("run") or {}
        for key in run if isinstance(run, dict) else []:
            if key in AXES:
                raise ConfigError(f"{name}.run.{key} is an axis of the run; list it in {name}.sweep.{key} instead")
        run = _check_keys(f"{name}.run", run, shared, required=False)
        sweep = _check_keys(f"{name}.sweep", body.get("sweep"), [*AXES, *OPTIONAL_AXES], required=False)
        for key in AXES:
            if key not in sweep:
                raise ConfigError(f"{name}.sweep.{key} is missing; add it (see the comments in params.yaml)")
        for key in OPTIONAL_AXES:
            if key in sweep and key in run:
                raise ConfigError(
                    f"{name}.run.{key} and {name}.sweep.{key} are both given; keep one: the sweep's list of "
                    "values, or the run's single value"
                )
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{name}.sweep.{key} = {values!r} is not allowed; allowed: a non-empty list")
            seen: dict[Any, Any] = {}
            for value in values:
                if _normalized(value) in seen:
                    first = seen[_normalized(value)]
                    twice = f"{value!r} twice" if repr(first) == repr(value) else f"{first!r} and {value!r}"
                    raise ConfigError(
                        f"{name}.sweep.{key} = {values!r} lists {twice}, one run trained twice (numbers are "
                        "compared by value: 1, 1.0 and 1e0 are one); list each value once"
                    )
                seen[_normalized(value)] = value
        datasets = DATASETS + tuple(data.own)
        axes = [*AXES, *(k for k in OPTIONAL_AXES if k in sweep)]
        group = GroupConfig(name, dict(run), {k: list(sweep[k]) for k in axes}, datasets)
        group.runs(defaults)  # every combination must be valid, not only each value
        groups[name] = group
    return Params(data=data, defaults=dict(defaults), groups=groups)


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from the repository root or pass --params")
    return parse(read_yaml(path))
