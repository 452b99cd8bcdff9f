"""The paper's claims, each judged on the runs that exist.

Every verdict is "holds", "does not hold", "not run" (the runs that would
decide it are not in the report) or "inconclusive: not fitted" (the claim is
about networks that fit their training set, and a run it needs did not), with
the numbers that decide it. The thresholds are stated once, here, and printed
under the table.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import seed_means as seed_spread
from . import statistics

MEMORIZED_TRAIN_ACC = 0.99  # "100% train accuracy"
CHANCE_FACTOR = 2.0  # test accuracy "at chance": at most this many times 1 / classes
LESS_DEGRADATION = 0.05  # ReLU degrades less: its drop is below sin's by more than this
LOSS_SPREAD = 0.05  # the effect follows the loss: drops differ across losses by at least this
RESTORED_DROP = 0.05  # a fix restores generalization: drop at most this
# Alignment falls with sigma: Kendall's tau between sigma and the means over seeds at most this. Over the
# runs, seeds at the floor (alignment ~0 at every large sigma) rank by noise and pull tau towards 0 on a
# plainly falling curve; over the means, with ties where the seeds' ranges overlap, 3 sigmas give -1
# (strictly falling), -0.82 (one pair tied) or -0.58 (one falls, two tied): this bound admits those and
# rejects any sigma whose mean rises clearly above a smaller sigma's (-0.33 with 3 sigmas).
FALLS_TAU = -0.5
SEPARATION = 0.05  # true-label alignment exceeds shuffled-label alignment by at least this
# A run fitted its training set: the premise of every claim about memorization or generalization (a run
# that never learned its training set tests low because it learned nothing). The digits runs that learn
# end at 0.92 to 1.0 after 300 epochs (the slowest: sigmoid at small sigma); those that failed to train
# stay near chance (ReLU with the squared loss at large sigma: 0.10 to 0.17).
FITTED_TRAIN_ACC = 0.9

THRESHOLDS = (
    f"Memorization: train accuracy >= {MEMORIZED_TRAIN_ACC:g} and final test accuracy <= {CHANCE_FACTOR:g} x chance "
    f"(1 / classes), at the largest sigma. Drop: best test accuracy at the smallest sigma minus at the largest "
    f"(mean over seeds). ReLU degrades less: its drop is below sin's (margin {LESS_DEGRADATION:g}). Follows the "
    f"loss: the ReLU drops of the losses differ by >= {LOSS_SPREAD:g}. Fix restores: drop <= {RESTORED_DROP:g} "
    f"for every loss. Falls with sigma: Kendall's tau between sigma and the alignment's means over seeds <= {FALLS_TAU:g} "
    f"for each line of runs, two sigmas tied where their ranges over the seeds overlap (3 sigmas: none clearly above "
    f"a smaller one, one at least below); the tau over the runs (seeds included) is shown beside it. "
    f"Tracks generalization better: |tau(best test accuracy, gradient alignment)| above every compared measure's. "
    f"Separates labels: alignment with true labels exceeds shuffled by >= {SEPARATION:g} for every model. "
    f"Not fitted: memorization, ReLU degrades less, follows the loss, fix restores and separates labels are about "
    f"networks that fit their training set; each is inconclusive when a run it uses (those at the smallest and largest "
    f"sigma of a drop, every run of a model) ends below train accuracy {FITTED_TRAIN_ACC:g} ({MEMORIZED_TRAIN_ACC:g} "
    f"for memorization, at the largest sigma). "
    f"Verdicts use means over seeds; [a, b] after a mean is its range over the seeds, after a tau its "
    f"{statistics.CONFIDENCE:.0%} bootstrap interval over runs."
)

HOLDS, FAILS, NOT_RUN, NOT_FITTED = "holds", "does not hold", "not run", "inconclusive: not fitted"
VERDICTS = (HOLDS, FAILS, NOT_RUN, NOT_FITTED)


@dataclasses.dataclass
class Claim:
    claim: str
    source: str
    verdict: str
    evidence: str


def _mean(frame: pd.DataFrame, by: list[str], col: str) -> pd.Series:
    return frame.groupby(by, sort=True)[col].mean()


def _sigma_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["init"] == "normal"].dropna(subset=["sigma"])


def seed_drops(frame: pd.DataFrame, by: list[str]) -> dict[tuple, np.ndarray]:
    """Per line of runs, one value per seed: best test accuracy at the
    smallest sigma minus at the largest (seeds with both)."""
    out = {}
    for key, sub in _sigma_runs(frame).groupby(by, sort=True):
        acc = sub.pivot_table(index="seed", columns="sigma", values="best_test_acc")
        if acc.shape[1] >= 2:
            per_seed = (acc.iloc[:, 0] - acc.iloc[:, -1]).dropna().to_numpy()
            if len(per_seed):
                out[key if isinstance(key, tuple) else (key,)] = per_seed
    return out


def _end_runs(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The runs a drop compares: those at the smallest and the largest sigma of each line of runs."""
    runs = _sigma_runs(frame)
    if runs.empty:
        return runs
    sigma = runs.groupby(by, sort=True)["sigma"]
    return runs[(runs["sigma"] == sigma.transform("min")) | (runs["sigma"] == sigma.transform("max"))]


def not_fitted(runs: pd.DataFrame, describe: list[str], threshold: float = FITTED_TRAIN_ACC) -> str:
    """'' when every run of ``runs`` ends at train accuracy >= ``threshold``;
    else which settings did not (runs below of runs there, their train accuracy)."""
    low = runs[~(runs["train_acc"] >= threshold)]  # a diverged run (NaN) did not fit either
    if low.empty:
        return ""
    parts = []
    for key, below in low.groupby(describe, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        total = (runs[describe] == pd.Series(dict(zip(describe, key)))).all(axis=1).sum()
        label = " ".join(f"{c}={v:g}" if c == "sigma" else f"{c}={v}" if c == "labels" else str(v)
                         for c, v in zip(describe, key))  # fmt: skip
        parts.append(f"{label} ({len(below)} of {total} runs) train {spread(below['train_acc'])}")
    return f"not fitted (train accuracy below {threshold:g}: more epochs decide): {'; '.join(parts)}"


def _verdict(text: str, source: str, ok: bool, evidence: str, unfit: str) -> Claim:
    if unfit:
        return Claim(text, source, NOT_FITTED, f"{unfit}; not judged: {evidence}")
    return Claim(text, source, HOLDS if ok else FAILS, evidence)


def spread(values) -> str:
    """A mean, with [min, max] over seeds where there are several."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return f"{values.mean():.3f}"
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]"


def main_alignment(frame: pd.DataFrame) -> str:
    """The gradient alignment the claims use: W1 where measured (MLPs), else W2."""
    has_w1 = "grad_alignment_w1" in frame and frame["grad_alignment_w1"].notna().any()
    return "grad_alignment_w1" if has_w1 else "grad_alignment_w2"


def extreme_memorization(frame: pd.DataFrame) -> Claim:
    text, source = (
        "sin at large sigma memorizes extremely (train 100%, test at chance) on each dataset",
        "Sec. 3, Fig. 1",
    )
    sin = _sigma_runs(frame)
    sin = sin[(sin["activation"] == "sin") & (sin["labels"] == "true")]
    if sin["sigma"].nunique() < 2:
        return Claim(text, source, NOT_RUN, "no sin sigma sweep")
    parts, ok, tops = [], True, []
    for dataset, sub in sin.groupby("dataset", sort=True):
        top = sub[sub["sigma"] == sub["sigma"].max()]
        tops.append(top)
        train, test, chance = top["train_acc"].mean(), top["test_acc"].mean(), 1.0 / top["num_classes"].iloc[0]
        ok &= bool(train >= MEMORIZED_TRAIN_ACC and test <= CHANCE_FACTOR * chance)
        parts.append(
            f"{dataset}, sigma={top['sigma'].iloc[0]:g}: train {train:.3f}, test {test:.3f} (chance {chance:.2g})"
        )
    # Below 100% train accuracy the run has not memorized yet: whether it would, a longer training tells.
    unfit = not_fitted(pd.concat(tops), ["dataset", "activation", "sigma"], MEMORIZED_TRAIN_ACC)
    return _verdict(text, source, ok, "; ".join(parts), unfit)


def relu_degrades_less(frame: pd.DataFrame) -> Claim:
    text, source = "ReLU degrades less than sin as sigma grows", "Sec. 4"
    lines = ["dataset", "loss", "loss_scaling", "activation"]
    true = frame[frame["labels"] == "true"]
    d = seed_drops(true, lines)
    pairs = [(k[:3], d[k], d.get((*k[:3], "relu"))) for k in d if k[3] == "sin"]
    pairs = [(k, s, r) for k, s, r in pairs if r is not None]
    if not pairs:
        return Claim(text, source, NOT_RUN, "needs sin and relu sweeps on one dataset")
    ok = all(r.mean() < s.mean() - LESS_DEGRADATION for _, s, r in pairs)
    evidence = "; ".join(f"{k[0]} {k[1]}: drop sin {spread(s)}, relu {spread(r)}" for k, s, r in pairs)
    ends = _end_runs(true, lines)
    judged = ends[lines[:3]].apply(tuple, axis=1).isin([k for k, _, _ in pairs])
    used = ends[judged & ends["activation"].isin(["sin", "relu"])]
    return _verdict(text, source, ok, evidence, not_fitted(used, ["dataset", "activation", "loss", "sigma"]))


def _relu_losses(frame: pd.DataFrame, scaling: str) -> tuple[dict[str, np.ndarray], str]:
    """Per loss, the drops of its seeds; and which of the runs they compare did not fit."""
    relu = frame[(frame["activation"] == "relu") & (frame["labels"] == "true") & (frame["loss_scaling"] == scaling)]
    drops = {k[0]: v for k, v in seed_drops(relu, ["loss"]).items()}
    return drops, not_fitted(_end_runs(relu, ["loss"]), ["dataset", "activation", "loss", "sigma"])


def relu_follows_loss(frame: pd.DataFrame) -> Claim:
    text, source = "for ReLU the effect of sigma follows the loss (cross-entropy, hinge, squared)", "Sec. 4, Fig. 4"
    d, unfit = _relu_losses(frame, "none")
    if len(d) < 2:
        return Claim(text, source, NOT_RUN, "needs ReLU sigma sweeps with two or more losses (group section4)")
    means = {k: float(v.mean()) for k, v in d.items()}
    gap = max(means.values()) - min(means.values())
    evidence = ", ".join(f"{k} drop {spread(v)}" for k, v in d.items()) + f"; spread of the means {gap:.3f}"
    return _verdict(text, source, gap >= LOSS_SPREAD, evidence, unfit)


def fixes_restore(frame: pd.DataFrame) -> Claim:
    text, source = (
        "the proposed loss fixes restore generalization at large sigma (new: never run by the authors)",
        "Sec. 4",
    )
    fixed, unfit = _relu_losses(frame, "output")
    if not fixed:
        return Claim(text, source, NOT_RUN, "needs ReLU sigma sweeps with loss_scaling: output (group section4_fixes)")
    plain, _ = _relu_losses(frame, "none")  # shown beside the fixes, not judged
    ok = all(v.mean() <= RESTORED_DROP for v in fixed.values())
    evidence = ", ".join(f"{k} drop {spread(v)}" + (f" (without fix {spread(plain[k])})" if k in plain else "")
                         for k, v in fixed.items())  # fmt: skip
    return _verdict(text, source, ok, evidence, unfit)


def alignment_falls(frame: pd.DataFrame) -> Claim:
    text, source = "in-class alignment falls as sigma grows", "Sec. 3-4, Fig. 2-3"
    runs = _sigma_runs(frame)
    runs = runs[runs["labels"] == "true"]
    lines = ["dataset", "activation", "loss", "loss_scaling"]
    parts, ok, fixes = [], True, []
    for measure in (main_alignment(frame), "rep_alignment"):
        for key, sub in runs.groupby(lines, sort=True):
            sub = sub.dropna(subset=[measure])  # a seed whose gradients vanished is left out, not its sigma
            if sub["sigma"].nunique() < 3:
                continue
            # Judged over the means of the sigmas (FALLS_TAU says why); shown beside it, over the runs
            # (every seed of every sigma), with a bootstrap interval where there are enough.
            means = seed_spread.by_sigma(sub, measure)
            falls = statistics.tau_of_means(np.log(means["sigma"]), means["mean"], means["lo"], means["hi"])
            c = statistics.correlation(np.log(sub["sigma"].to_numpy()), sub[measure].to_numpy())
            tau = c["tau"] if not np.isnan(c["tau"]) else float(statistics.kendall_tau_b(
                np.log(sub["sigma"].to_numpy())[None], sub[measure].to_numpy()[None])[0])  # fmt: skip
            interval = f" [{c['tau_low']:+.2f}, {c['tau_high']:+.2f}]" if not np.isnan(c.get("tau_low", np.nan)) else ""
            shown = f"{falls:+.2f}" if not np.isnan(falls) else "undefined (every sigma tied)"
            line = (f"{measure} {key[1]}/{key[2]} on {key[0]}: tau of the sigma means {shown}, "
                    f"of the runs {tau:+.2f}{interval} ({len(sub)} runs, {sub['sigma'].nunique()} sigmas)")  # fmt: skip
            if key[3] != "none":  # the fixes are new experiments, not the paper's setting: shown, not judged
                fixes.append(line)
                continue
            ok &= bool(falls <= FALLS_TAU)
            parts.append(line)
    if not parts:
        return Claim(text, source, NOT_RUN, "needs a sigma sweep of 3 or more values")
    shown = "; ".join(parts) + (f"; not judged, with loss_scaling: output (new): {'; '.join(fixes)}" if fixes else "")
    return Claim(text, source, HOLDS if ok else FAILS, shown)


def alignment_tracks_best(correlations: pd.DataFrame, frame: pd.DataFrame) -> Claim:
    text = "alignment tracks generalization better than gradient diversity, cosine stiffness, gradient confusion"
    source = "Sec. 3, Fig. 3"
    table = correlations[correlations["scope"] == "all runs"].set_index("measure") if len(correlations) else None
    measure = main_alignment(frame)
    if table is None or measure not in table.index or np.isnan(table.loc[measure, "tau"]):
        return Claim(text, source, NOT_RUN, f"needs {statistics.MIN_RUNS} or more runs with defined measures")
    compared = [m for m in statistics.COMPARED if m in table.index and not np.isnan(table.loc[m, "tau"])]
    if not compared:
        return Claim(text, source, NOT_RUN, "no compared measure defined")
    tau = abs(table.loc[measure, "tau"])
    ok = all(tau > abs(table.loc[m, "tau"]) for m in compared)

    def shown(m: str) -> str:  # |tau| and its bootstrap interval, as |.| of the signed one
        row = table.loc[m]
        if np.isnan(row["tau_low"]):
            return f"{abs(row['tau']):.2f}"
        lo, hi = sorted((abs(row["tau_low"]), abs(row["tau_high"])))
        lo = 0.0 if row["tau_low"] < 0 < row["tau_high"] else lo
        return f"{abs(row['tau']):.2f} [{lo:.2f}, {hi:.2f}]"

    evidence = f"|tau| {measure} {shown(measure)} (n={table.loc[measure, 'runs']}) vs " + ", ".join(
        f"{m} {shown(m)}" for m in compared
    )
    return Claim(text, source, HOLDS if ok else FAILS, evidence)


def labels_separate(frame: pd.DataFrame) -> Claim:
    text = "alignment separates true from shuffled labels across architectures"
    source = "Sec. 5, Fig. 5"
    measure = "grad_alignment_w2"  # the last layer: measured for every model
    if "group" in frame:  # the groups with shuffled labels only: not the sigma sweeps of a combined report
        frame = frame[frame["group"].isin(frame.loc[frame["labels"] == "shuffled", "group"])]
    means = _mean(frame, ["model", "labels"], measure).dropna()
    fitted = _mean(frame, ["model", "labels"], "train_acc")
    models = [m for m in means.index.get_level_values(0).unique() if {(m, "true"), (m, "shuffled")} <= set(means.index)]
    if len(models) < 2:
        return Claim(text, source, NOT_RUN, "needs two or more models with true and shuffled labels (group section5)")
    gaps = {m: means[m, "true"] - means[m, "shuffled"] for m in models}
    ok = all(g >= SEPARATION for g in gaps.values())
    by_seed = frame.pivot_table(index=["model", "seed"], columns="labels", values=measure)
    parts = []
    for m in models:
        seeds = by_seed.loc[m].dropna() if m in by_seed.index.get_level_values(0) else None
        gap = (
            f"gap {spread(seeds['true'] - seeds['shuffled'])}"
            if seeds is not None and len(seeds)
            else f"gap {gaps[m]:.3f}"
        )
        parts.append(f"{m}: {means[m, 'true']:.3f} vs {means[m, 'shuffled']:.3f} ({gap}; shuffled train acc "
                     f"{fitted[m, 'shuffled']:.2f})")  # fmt: skip
    # Sec. 5 compares networks that fit their labels, true or shuffled: one that did not has not memorized.
    unfit = not_fitted(frame[frame["model"].isin(models)], ["model", "labels"])
    return _verdict(text, source, ok, f"{measure} true vs shuffled: {', '.join(parts)}", unfit)


def judge(frame: pd.DataFrame, correlations: pd.DataFrame) -> list[Claim]:
    return [
        extreme_memorization(frame),
        relu_degrades_less(frame),
        relu_follows_loss(frame),
        fixes_restore(frame),
        alignment_falls(frame),
        alignment_tracks_best(correlations, frame),
        labels_separate(frame),
    ]


def markdown(claims: list[Claim]) -> str:
    lines = ["| claim | paper | verdict | deciding numbers |", "|---|---|---|---|"]
    for c in claims:
        verdict = f"**{c.verdict}**" if c.verdict in (HOLDS, FAILS) else c.verdict
        evidence = c.evidence.replace("|", "\\|")  # a bar inside a cell would split it on GitHub
        lines.append(f"| {c.claim} | {c.source} | {verdict} | {evidence} |")
    return "\n".join(lines)


def frame_of(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(c) for c in claims])
