"""Lines of runs: the runs a claim or a figure compares.

A line of runs is the runs that differ only in sigma and seed. This module
says which settings tell the lines of a report apart (:func:`line_keys`,
:func:`lines`), which runs are in the paper's setting and which in a form
of the proposed fix (:func:`variant`), the runs at the ends of a sigma
sweep and the drop in best test accuracy between them (:func:`end_runs`,
:func:`seed_drops`), and which gradient alignment the claims and figures
use (:func:`main_alignment`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAPER = ("none", "plain")  # (loss_scaling, first_layer_step) of the paper's runs
LINE_KEYS = ["group", "dataset", "model", "activation", "loss", "loss_scaling", "first_layer_step", "learning_rate",
             "labels"]  # fmt: skip


def line_keys(frame: pd.DataFrame, skip=("sigma", "seed")) -> list[str]:
    """The settings that tell the lines of runs apart (those that vary)."""
    return [k for k in LINE_KEYS if k not in skip and k in frame and frame[k].nunique(dropna=False) > 1]


def label(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    named = {"labels": "labels=", "loss_scaling": "scaling=", "first_layer_step": "W1 step=", "learning_rate": "lr=",
             "group": ""}  # fmt: skip
    return ", ".join(f"{named.get(k, '')}{v}" for k, v in zip(keys, values)) or "all runs"


def lines(frame: pd.DataFrame, keys: list[str]):
    if not keys:
        yield "all runs", frame
        return
    for values, sub in frame.groupby(keys, sort=True, dropna=False):
        yield label(keys, values), sub


def with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the settings older runs lack: W1 stepped plainly, the learning rate unknown."""
    defaults = {"first_layer_step": "plain", "learning_rate": np.nan, "loss_scaling": "none"}
    missing = {k: v for k, v in defaults.items() if k not in frame}
    return frame.assign(**missing) if missing else frame


def sigma_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["init"] == "normal"].dropna(subset=["sigma"])


def variant(frame: pd.DataFrame) -> pd.Series:
    """(loss_scaling, first_layer_step) of each run; runs without a recorded step stepped W1 plainly."""
    step = frame["first_layer_step"].fillna("plain") if "first_layer_step" in frame else "plain"
    return pd.Series(list(zip(frame["loss_scaling"], pd.Series(step, index=frame.index))), index=frame.index)


def paper_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs in the paper's setting: the loss as written, W1 stepped plainly."""
    return frame[variant(frame) == PAPER] if len(frame) else frame


def varying(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """Those of ``keys`` that take several values in ``frame`` (a learning rate swept within a group)."""
    return [k for k in keys if k in frame and frame[k].nunique() > 1]


def seed_drops(frame: pd.DataFrame, by: list[str]) -> dict[tuple, np.ndarray]:
    """Per line of runs, one value per seed: best test accuracy at the
    smallest sigma minus at the largest (seeds with both)."""
    out = {}
    for key, sub in sigma_runs(frame).groupby(by, sort=True):
        acc = sub.pivot_table(index="seed", columns="sigma", values="best_test_acc")
        if acc.shape[1] >= 2:
            per_seed = (acc.iloc[:, 0] - acc.iloc[:, -1]).dropna().to_numpy()
            if len(per_seed):
                out[key if isinstance(key, tuple) else (key,)] = per_seed
    return out


def end_runs(frame: pd.DataFrame, by: list[str], which: str = "both") -> pd.DataFrame:
    """The runs a drop compares: those at the smallest and the largest sigma of
    each line of runs (``which``: "both", or only the "largest")."""
    runs = sigma_runs(frame)
    if runs.empty:
        return runs
    sigma = runs.groupby(by, sort=True)["sigma"]
    top = runs["sigma"] == sigma.transform("max")
    return runs[top] if which == "largest" else runs[top | (runs["sigma"] == sigma.transform("min"))]


def main_alignment(frame: pd.DataFrame) -> str:
    """The gradient alignment the claims use: W1 where measured (MLPs), else W2."""
    has_w1 = "grad_alignment_w1" in frame and frame["grad_alignment_w1"].notna().any()
    return "grad_alignment_w1" if has_w1 else "grad_alignment_w2"


def relu_lines(frame: pd.DataFrame, form: tuple[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """The ReLU true-label runs of one form of the loss, and the keys of its
    lines of runs: the loss (and the dataset, the learning rate where they vary)."""
    frame = with_defaults(frame)
    relu = frame[(frame["activation"] == "relu") & (frame["labels"] == "true")]
    relu = relu[variant(relu) == form] if len(relu) else relu
    return relu, [*varying(relu, ["dataset"]), "loss", *varying(relu, ["learning_rate"])]


def line_name(keys: list[str], key: tuple) -> str:
    return " ".join(f"lr={v:g}" if k == "learning_rate" else str(v) for k, v in zip(keys, key))
