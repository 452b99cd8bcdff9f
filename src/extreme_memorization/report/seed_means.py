"""Means over seeds and their spread, as the figures draw them.

A measure is averaged over the seeds where it is defined: a seed whose
value is missing (a gradient measure after its gradients vanished, a
measure its model does not have) is left out of that point only, and the
other seeds still give the point. The spread is the range over those
seeds (min to max); with one seed there is none (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPREAD = "min to max over seeds"


def _spread(values: pd.core.groupby.SeriesGroupBy) -> pd.DataFrame:
    out = values.agg(mean="mean", lo="min", hi="max", n="count")
    single = out["n"] < 2
    out.loc[single, ["lo", "hi"]] = np.nan
    return out[out["n"] > 0]


def by_sigma(runs: pd.DataFrame, col: str) -> pd.DataFrame:
    """sigma, mean, lo, hi, n of ``col`` over the seeds of each sigma."""
    return _spread(runs.groupby("sigma", sort=True)[col]).reset_index()


def by_value(runs: pd.DataFrame, key: str, col: str) -> pd.DataFrame:
    """``key``, mean, lo, hi, n of ``col`` over the runs of each value of ``key``."""
    return _spread(runs.groupby(key, sort=True)[col]).reset_index()


def over_training(tables: list[pd.DataFrame], col: str) -> pd.DataFrame | None:
    """epoch, mean, lo, hi, n of ``col`` over the seeds' curves (one table per
    seed, with an ``epoch`` column); None when no seed has the measure. The
    result's ``attrs["ended"]`` says whether the curve stops before the last
    epoch any seed reached (every seed's measure undefined after it)."""
    present = [t[["epoch", col]] for t in tables if col in t and t[col].notna().any()]
    if not present:
        return None
    last_epoch = max(float(t["epoch"].max()) for t in tables)
    curve = _spread(pd.concat(present).groupby("epoch", sort=True)[col]).reset_index()
    curve.attrs["ended"] = float(curve["epoch"].max()) < last_epoch
    return curve


def errors(agg: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bar lengths (below, above) from a spread; 0 with one seed."""
    below = (agg["mean"] - agg["lo"]).fillna(0).clip(lower=0)
    above = (agg["hi"] - agg["mean"]).fillna(0).clip(lower=0)
    return np.vstack([below.to_numpy(), above.to_numpy()])


def several_seeds(runs: pd.DataFrame) -> bool:
    """Whether some setting of ``runs`` has two or more seeds (so a spread shows)."""
    keys = [k for k in ("group", "dataset", "model", "activation", "loss", "loss_scaling", "first_layer_step",
                        "learning_rate", "labels", "sigma") if k in runs]  # fmt: skip
    if runs.empty:
        return False
    return bool((runs.groupby(keys, dropna=False)["seed"].nunique() >= 2).any())


def note(runs: pd.DataFrame, kind: str) -> str:
    """The caption's note on what ``kind`` (error bars, bands) span, where some setting has several seeds."""
    return f" {kind.capitalize()}: {SPREAD}." if several_seeds(runs) else ""
