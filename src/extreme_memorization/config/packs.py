"""Run packs: the runs of a group that one training stage trains together.

A *pack* is one line of a figure: the runs of a group that share dataset,
model, activation, loss and labels and differ only in sigma and seed, and in
learning_rate where the group sweeps it (the :data:`MEMBER_AXES`). MLP members train together as one model with a
leading run axis (loops.PackedMLP); other models train one member after the
other. A pack is one DVC stage, ``train-<group>@<group>-<pack>``, whose outputs are
the folder ``runs/<group>/<pack>/`` holding one folder per run (small files, in
git) and its twin ``weights/<group>/<pack>/`` holding the runs' weights (in
DVC's cache).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .settings import AXES, ConfigError, GroupConfig, Params, RunConfig

MEMBER_AXES = ("sigma", "seed", "learning_rate")  # learning_rate: only where the group sweeps it
PACK_AXES = tuple(a for a in AXES if a not in MEMBER_AXES)


def pack_name(run: RunConfig) -> str:
    """``<dataset>-<model>-<activation>-<loss>-<labels>``: DVC's matrix stage suffix."""
    return "-".join(str(getattr(run, a)) for a in PACK_AXES)


def run_name(run: RunConfig, group: GroupConfig | None = None) -> str:
    """The run's folder inside its pack, from the normalized values (1 and 1.0
    are one sigma, ``sigma1``); ``-lr<learning_rate>`` is added only where
    ``group`` sweeps the learning rate, so other groups' runs keep their names."""
    scale = f"sigma{run.sigma:g}" if run.sigma is not None else "glorot"
    swept = group is not None and "learning_rate" in group.sweep
    return f"{scale}-seed{run.seed}" + (f"-lr{run.learning_rate:g}" if swept else "")


def stage_name(group: str, run: RunConfig) -> str:
    """DVC's name for the pack's stage (its matrix starts with the group)."""
    return f"train-{group}@{group}-{pack_name(run)}"


def packs(params: Params, group: str) -> dict[str, list[RunConfig]]:
    """The group's packs in DVC's matrix order, each with its members."""
    out: dict[str, list[RunConfig]] = {}
    for run in params.group(group).runs(params.defaults):
        out.setdefault(pack_name(run), []).append(run)
    return out


def members(params: Params, group: str, overrides: dict) -> list[RunConfig]:
    """The members of the pack that ``overrides`` (values of the pack axes)
    selects; an axis with one value in the sweep may be left out."""
    g = params.group(group)
    for key in overrides:
        if key not in PACK_AXES:
            raise ConfigError(f"--set {key}=... is not a pack axis; a pack is selected by {', '.join(PACK_AXES)}")
    multi = [a for a in PACK_AXES if a not in overrides and len(g.sweep[a]) > 1]
    if multi:
        raise ConfigError(f"a pack of group '{group}' needs a value for axis (axes) {', '.join(multi)}")
    axes = [a for a in MEMBER_AXES if a in g.sweep]
    values = [g.sweep[a] for a in axes]
    runs = [params.run(group, {**overrides, **dict(zip(axes, v))}) for v in itertools.product(*values)]
    names = [run_name(r, g) for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{group}.sweep lists the same {', '.join(axes)} twice: runs {sorted(names)}")
    return runs


def position(params: Params, group: str, run: RunConfig) -> tuple[int, int]:
    """(index from 1, count) of the run's pack among the group's stages."""
    names = list(packs(params, group))
    return names.index(pack_name(run)) + 1, len(names)


WEIGHTS_FILE = "model.weights.h5"


def weights_file(run_dir) -> Path:
    """The final weights of the run in folder ``runs/<group>/<pack>/<run>/``:
    in the folder itself, else in its twin ``weights/<group>/<pack>/<run>/``
    (the ``runs`` part three levels up replaced by ``weights``)."""
    run_dir = Path(run_dir)
    here = run_dir / WEIGHTS_FILE
    parts = run_dir.parts
    if here.is_file() or len(parts) < 4 or parts[-4] != "runs":
        return here
    return Path(*parts[:-4], "weights", *parts[-3:]) / WEIGHTS_FILE
