"""How strongly each measure tracks generalization: rank correlations with
bootstrap confidence intervals (the paper shows scatter plots, no numbers).

Across the runs of a group (and per dataset), Kendall's tau-b and
Spearman's rho between the best test accuracy and each measure, with a
percentile bootstrap interval over runs (resampled with replacement, a fixed
seed). Runs whose measure is undefined (vanished gradients) are left out.

The comparison of measures (:func:`compare_measures`) is fairer than those
pooled numbers: every measure on the same runs, per line of runs (one
setting, its sigma sweep and seeds; pooling lines whose correlations have
opposite signs cancels them), each tau signed by the direction the paper
expects, and the differences from a paired cluster bootstrap.
The arithmetic is numpy only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .results import ALIGNMENTS, COMPARED

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


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks (1..n) of each row of ``x``, ties given their average rank."""
    x = np.asarray(x, float)
    # rank = 1 + (values below) + (ties - 1) / 2, counted pairwise (n is a few hundred runs at most)
    below = (x[:, None, :] < x[:, :, None]).sum(axis=2)
    equal = (x[:, None, :] == x[:, :, None]).sum(axis=2)
    return below + (equal + 1) / 2


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho (Pearson correlation of average ranks) row by row."""
    rx = average_ranks(x)
    ry = average_ranks(y)
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


# The direction the paper expects between best test accuracy and each measure: alignment, cosine
# stiffness and gradient confusion (the smallest in-class inner product: less negative, less conflict)
# are higher where a network generalizes; gradient diversity is lower (its Fig. 3 rises with sigma).
EXPECTED_SIGN = {**{k: 1 for k in ALIGNMENTS}, "gradient_diversity": -1, "cosine_stiffness": 1,
                 "gradient_confusion": 1}  # fmt: skip
# A line of runs: one setting, its sigmas and seeds (the settings that tell lines apart).
LINE = ["dataset", "model", "activation", "loss", "loss_scaling", "first_layer_step", "learning_rate", "labels"]
MATCHED = "_matched"


def weighted_tau_b(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of (x, y) (shape (n,)) over the multiset in which run i
    appears weights[b, i] times, for each row b of ``weights``: exactly
    kendall_tau_b of the expanded sample (copies of a run are tied with each
    other in x and y, so they add no pair). NaN where a resample is constant."""
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])

    def pairs(m):
        return ((weights @ m) * weights).sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore"):
        return pairs(sx * sy) / np.sqrt(pairs(np.abs(sx)) * pairs(np.abs(sy)))


def signed_taus(target: np.ndarray, measures: np.ndarray, signs: np.ndarray, weights=None) -> np.ndarray:
    """sign_m x tau-b(target, measure_m) for each measure (rows of ``measures``,
    shape (k, n)); with ``weights`` (B, n), per resample: shape (B, k). A
    constant measure or target (tau undefined) counts as 0: it tracks nothing."""
    w = np.ones((1, len(target))) if weights is None else weights
    tau = np.stack([weighted_tau_b(target, m, w) for m in measures], axis=-1)
    tau = np.nan_to_num(tau, nan=0.0) * signs
    return tau[0] if weights is None else tau


def cluster_weights(clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(RESAMPLES, n): how often each run is drawn when whole clusters (seeds)
    are drawn with replacement, as many as there are."""
    ids, which = np.unique(clusters, return_inverse=True)
    drawn = rng.integers(0, len(ids), size=(RESAMPLES, len(ids)))
    counts = np.stack([np.bincount(row, minlength=len(ids)) for row in drawn])  # (B, clusters)
    return counts[:, which].astype(float)


def paired_comparison(lines: list[tuple[np.ndarray, np.ndarray, np.ndarray]], signs) -> dict:
    """Signed taus of k measures (the first: the one under test) against a
    target, per line and combined (mean over lines), with the difference of
    the first from each other measure and its paired cluster bootstrap
    interval.

    ``lines``: (target (n,), measures (k, n), clusters (n,)) per line, the same
    runs for every measure. Within a line the clusters (seeds) are resampled;
    combined, the lines are resampled and each drawn line brings one of its
    own resamples; every measure sees the same resample, so the differences
    are paired. Returns ``lines``: per line {taus (k,), diff (k-1,), low, high}
    and ``combined``: the same over lines (None without lines)."""
    signs = np.asarray(signs, float)
    rng = np.random.default_rng(SEED)
    per_line, boot = [], []
    for target, measures, clusters in lines:
        target, measures = np.asarray(target, float), np.asarray(measures, float)
        taus = signed_taus(target, measures, signs)
        resampled = signed_taus(target, measures, signs, cluster_weights(np.asarray(clusters), rng))  # (B, k)
        boot.append(resampled)
        per_line.append(_summary(taus, resampled))
    if not per_line:
        return {"lines": [], "combined": None}
    boot = np.stack(boot)  # (L, B, k)
    taus = np.mean([p["taus"] for p in per_line], axis=0)
    drawn = rng.integers(0, len(per_line), size=(RESAMPLES, len(per_line)))
    # Each drawn line brings a resample of its own seeds; two draws of one line bring different ones.
    within = (np.arange(RESAMPLES)[:, None] + np.arange(len(per_line))[None, :] * 7919) % RESAMPLES
    combined = boot[drawn, within].mean(axis=1)  # (B, k)
    return {"lines": per_line, "combined": _summary(taus, combined)}


def _summary(taus: np.ndarray, resampled: np.ndarray) -> dict:
    diff = taus[0] - taus[1:]
    boot = resampled[:, :1] - resampled[:, 1:]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail], axis=0)
    return {"taus": taus, "diff": diff, "low": low, "high": high}


def outcome(low: float, high: float) -> str:
    """'ahead' when the interval of (tested - other) lies above 0, 'behind'
    below 0, 'tied' when it covers 0 (equal |tau|s, e.g. every one 1.00, are tied)."""
    return "ahead" if low > 0 else "behind" if high < 0 else "tied"


def compare_measures(frame: pd.DataFrame, measure: str, others: list[str]) -> dict | None:
    """The fair comparison of ``measure`` with ``others`` as predictors of best
    test accuracy: the sigma sweeps' runs where every one of them is defined
    (the same runs for all), per line of runs (LINE) with at least MIN_RUNS
    runs and a spread in best test accuracy, seeds as clusters. The measures
    at a matched training state (``<m>_matched``) when every one has them on
    MIN_RUNS runs, else at the final epoch. None when no line qualifies."""
    runs = frame[frame["sigma"].notna()] if "sigma" in frame else frame
    names = [measure, *others]
    if not all(m in runs for m in names):
        return None
    matched = [f"{m}{MATCHED}" for m in names]
    use_matched = all(c in runs for c in matched) and runs[matched].notna().all(axis=1).sum() >= MIN_RUNS
    columns = matched if use_matched else names
    runs = runs.dropna(subset=[*columns, TARGET])
    keys = [k for k in LINE if k in runs]
    lines, labels = [], []
    for key, sub in runs.groupby(keys, sort=True, dropna=False) if keys else [((), runs)]:
        if len(sub) < MIN_RUNS or sub[TARGET].nunique() < 2:
            continue
        clusters = sub["seed"].to_numpy() if "seed" in sub and sub["seed"].nunique() > 1 else np.arange(len(sub))
        lines.append((sub[TARGET].to_numpy(float), sub[columns].to_numpy(float).T, clusters))
        labels.append((dict(zip(keys, key if isinstance(key, tuple) else (key,))), len(sub)))
    if not lines:
        return None
    result = paired_comparison(lines, [EXPECTED_SIGN.get(m, 1) for m in names])
    for line, (key, n) in zip(result["lines"], labels):
        line.update(key=key, runs=n)
    result.update(measures=names, matched=use_matched, runs=int(sum(n for _, n in labels)))
    return result


def line_label(key: dict, varying: list[str]) -> str:
    return "/".join(str(key[k]) if k != "learning_rate" else f"lr={key[k]:g}" for k in varying) or "all runs"


def comparison_markdown(result: dict) -> str:
    """Per line of runs: n, each measure's signed tau, and the tested one's lead over each other."""
    names = result["measures"]
    keys = list(result["lines"][0]["key"])
    varying = [k for k in keys if len({str(line["key"][k]) for line in result["lines"]}) > 1]
    head = ["line of runs", "n", *[f"{m} ({'+' if EXPECTED_SIGN.get(m, 1) > 0 else '-'})" for m in names],
            *[f"{names[0]} minus {m} [95% CI]" for m in names[1:]]]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    entries = [(line_label(line["key"], varying), line["runs"], line) for line in result["lines"]]
    entries.append(("combined (mean over lines)", result["runs"], result["combined"]))
    for label, n, line in entries:
        diffs = [f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" for d, lo, hi in zip(line["diff"], line["low"], line["high"])]
        rows.append("| " + " | ".join([label, str(n), *[f"{t:+.2f}" for t in line["taus"]], *diffs]) + " |")
    return "\n".join(rows)


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
        f"runs, {RESAMPLES} resamples, seed {SEED}. Gradient diversity is expected to correlate negatively. "
        "These pool lines of runs and use each measure's own runs; the claim compares measures on the same runs, "
        "per line (below)."
    )
