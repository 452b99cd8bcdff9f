"""How strongly each measure tracks generalization: rank correlations with
bootstrap confidence intervals (the paper shows scatter plots, no numbers).

Across the runs of a group (and per dataset), Kendall's tau-b and
Spearman's rho between the best test accuracy and each measure, with a
percentile bootstrap interval over runs (resampled with replacement, a fixed
seed). Runs whose measure is undefined (vanished gradients) are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..training.run_folder import ALIGNMENTS, COMPARED

TARGET = "best_test_acc"
MEASURES = {**{k: f"{v} alignment" for k, v in ALIGNMENTS.items()}, **COMPARED}
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
MIN_RUNS = 4  # fewer runs give no useful rank correlation


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of ``x``, ``y`` (shape (B, n)); NaN
    where a row is constant. Equals scipy.stats.kendalltau row by row."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    concordance = (sx * sy).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return concordance / np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))


def tau_of_means(x, mean, lo, hi) -> float:
    """Kendall's tau-b between ``x`` and the means of points with a spread
    [lo, hi] (over seeds): two means whose ranges overlap count as tied, since
    their order is within the seeds' noise. A point without a range (one
    seed: NaN) is its mean. NaN when every pair of means is tied."""
    x, mean = np.asarray(x, float), np.asarray(mean, float)
    lo = np.where(np.isnan(np.asarray(lo, float)), mean, lo)
    hi = np.where(np.isnan(np.asarray(hi, float)), mean, hi)
    overlap = (lo[:, None] <= hi[None, :]) & (lo[None, :] <= hi[:, None])
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.where(overlap, 0.0, np.sign(mean[:, None] - mean[None, :]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((sx * sy).sum() / np.sqrt(np.abs(sx).sum() * np.abs(sy).sum()))


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho (Pearson correlation of average ranks) row by row."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) < RESAMPLES / 2:  # mostly constant resamples: no interval
        return np.nan, np.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def correlation(x, y) -> dict:
    """tau and rho of the pairs (x_i, y_i), each with its bootstrap interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"runs": int(len(x))}
    if len(x) < MIN_RUNS:
        return {**out, **{k: np.nan for k in ("tau", "tau_low", "tau_high", "rho", "rho_low", "rho_high")}}
    picks = np.random.default_rng(SEED).integers(0, len(x), size=(RESAMPLES, len(x)))
    for name, fn in (("tau", kendall_tau_b), ("rho", spearman_rho)):
        out[name] = float(fn(x[None], y[None])[0])
        out[f"{name}_low"], out[f"{name}_high"] = _interval(fn(x[picks], y[picks]))
    return out


def rank_correlations(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (scope, measure): scope 'all runs', and each dataset and
    each activation when there are several."""
    scopes = [("all runs", frame)]
    for key in ("dataset", "activation"):
        if frame[key].nunique() > 1:
            scopes += [(f"{key}={v}", sub) for v, sub in frame.groupby(key, sort=True)]
    rows = []
    for scope, sub in scopes:
        for measure, title in MEASURES.items():
            if measure in sub and sub[measure].notna().any():
                rows.append({"scope": scope, "measure": measure, "title": title,
                             **correlation(sub[measure], sub[TARGET])})  # fmt: skip
    return pd.DataFrame(rows)


def _ci(row, name) -> str:
    if np.isnan(row[name]):
        return ""
    if np.isnan(row[f"{name}_low"]):
        return f"{row[name]:+.2f}"
    return f"{row[name]:+.2f} [{row[f'{name}_low']:+.2f}, {row[f'{name}_high']:+.2f}]"


def markdown(table: pd.DataFrame) -> str:
    lines = ["| runs | measure | n | Kendall's tau [95% CI] | Spearman's rho [95% CI] |", "|---|---|---|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['scope']} | {row['title']} | {row['runs']} | {_ci(row, 'tau')} | {_ci(row, 'rho')} |")
    return "\n".join(lines)


def statement() -> str:
    return (
        f"Rank correlation between the best test accuracy and each final measure over the runs (n: runs with "
        f"the measure defined; none below {MIN_RUNS} runs). Intervals: {CONFIDENCE:.0%} percentile bootstrap over "
        f"runs, {RESAMPLES} resamples, seed {SEED}. Gradient diversity is expected to correlate negatively."
    )
