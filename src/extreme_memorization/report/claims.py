"""The paper's claims, each judged on the runs that exist.

Every verdict is "holds", "does not hold", "not run" (the runs that would
decide it are not in the report), "inconclusive: not fitted" (the claim is
about networks that fit their training set, and a run it needs was still
learning when its epochs ran out) or "inconclusive" (the numbers do not
decide), with the numbers that decide it. A run that is stuck, dead or
diverged is a finding, not a missing run: its claim is judged, and the
mechanism (optimization failure or memorization) is named on its own line
(:mod:`verdicts`). The thresholds are stated once, here, and printed under
the table.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import seed_means as seed_spread
from . import statistics
from .lines import (
    PAPER,
    end_runs,
    line_name,
    main_alignment,
    paper_runs,
    relu_lines,
    seed_drops,
    sigma_runs,
    variant,
    varying,
    with_defaults,
)
from .verdicts import (  # noqa: F401  (re-exported: the verdicts are the claims' words)
    CHANCE_FACTOR,
    FAILS,
    FITTED_TRAIN_ACC,
    HOLDS,
    INCONCLUSIVE,
    MEMORIZED_TRAIN_ACC,
    NOT_FITTED,
    NOT_RUN,
    VERDICTS,
    Claim,
    at_chance,
    failed,
    failures,
    mechanism,
    not_fitted,
    spread,
    verdict,
)  # fmt: skip

LESS_DEGRADATION = 0.05  # ReLU degrades less: its drop is below sin's by more than this
LOSS_SPREAD = 0.05  # the effect follows the loss: drops differ across losses by at least this
RESTORED_DROP = 0.05  # a fix restores generalization: drop at most this
# Alignment falls with sigma: Kendall's tau between sigma and the means over seeds at most this. Over the
# runs, seeds at the floor (alignment ~0 at every large sigma) rank by noise and pull tau towards 0 on a
# plainly falling curve; over the means, with ties where the seeds' ranges overlap, 3 sigmas give -1
# (strictly falling), -0.82 (one pair tied) or -0.58 (one falls, two tied): this bound admits those and
# rejects any sigma whose mean rises clearly above a smaller sigma's (-0.33 with 3 sigmas).
FALLS_TAU = -0.5
# Where alignment falls but best test accuracy drops by less than this from the smallest to the largest
# sigma (ReLU with cross-entropy on digits: 0.961 -> 0.968), the fall does not track generalization there.
FLAT_TEST = 0.05
SEPARATION = 0.05  # true-label alignment exceeds shuffled-label alignment by at least this
SIGNS = ", ".join(f"{m} {'+' if s > 0 else '-'}" for m, s in statistics.EXPECTED_SIGN.items())

THRESHOLDS = (
    f"Memorization: train accuracy >= {MEMORIZED_TRAIN_ACC:g} and final test accuracy <= {CHANCE_FACTOR:g} x chance "
    f"(1 / classes; at most halfway from chance to 1), at the largest sigma. Drop: best test accuracy at the smallest sigma minus at the largest "
    f"(mean over seeds). ReLU degrades less: its drop is below sin's (margin {LESS_DEGRADATION:g}). Follows the "
    f"loss: the ReLU drops of the losses differ by >= {LOSS_SPREAD:g}. Fix restores (each form of the fix judged on "
    f"its own): drop <= {RESTORED_DROP:g} for every loss. Falls with sigma: Kendall's tau between sigma and the "
    f"alignment's means over seeds <= {FALLS_TAU:g} for each line of runs, two sigmas tied where their ranges over "
    f"the seeds overlap (3 sigmas: none clearly above a smaller one, one at least below); the tau over the runs "
    f"(seeds included) is shown beside it; where the best test accuracy drops by less than {FLAT_TEST:g} the fall "
    f"is named as not tracking generalization. Tracks generalization better: on the same runs (every measure "
    f"defined), per line of runs, Kendall's tau between best test accuracy and each measure signed by the "
    f"direction the paper expects ({SIGNS}); the gradient alignment's signed tau minus each other measure's, "
    f"mean over lines, with a {statistics.CONFIDENCE:.0%} paired cluster bootstrap interval (lines and seeds "
    f"resampled, the same resample for every measure): holds when every interval lies above 0, does not hold "
    f"when one lies below, inconclusive when one covers 0 (ties are no loss). Measures at the matched training "
    f"state (first measurement point with train accuracy >= {FITTED_TRAIN_ACC:g}) where the runs have them, else "
    f"at the final epoch. Separates labels: alignment with true labels exceeds shuffled by >= {SEPARATION:g} for "
    f"every model. Fitted: memorization, ReLU degrades less, follows the loss, fix restores and separates labels "
    f"are about networks that fit their training set; a run they use (those at the smallest and largest sigma of "
    f"a drop, every run of a model) that ends below train accuracy {FITTED_TRAIN_ACC:g} ({MEMORIZED_TRAIN_ACC:g} "
    f"for memorization) while still learning leaves the claim inconclusive: not fitted, with the epochs its trend "
    f"needs; one that is stuck, dead or diverged is judged as measured, its mechanism named (optimization failure, "
    f"not memorization). Verdicts use means over seeds; [a, b] after a mean is its range over the seeds, after a "
    f"tau its {statistics.CONFIDENCE:.0%} bootstrap interval."
)


def _mean(frame: pd.DataFrame, by: list[str], col: str) -> pd.Series:
    return frame.groupby(by, sort=True)[col].mean()


def extreme_memorization(frame: pd.DataFrame) -> Claim:
    frame = with_defaults(frame)
    text, source = (
        "sin at large sigma memorizes extremely (train 100%, test at chance) on each dataset",
        "Sec. 3, Fig. 1",
    )
    sin = sigma_runs(paper_runs(frame))
    sin = sin[(sin["activation"] == "sin") & (sin["labels"] == "true")]
    if sin["sigma"].nunique() < 2:
        return Claim(text, source, NOT_RUN, "no sin sigma sweep", name="memorization")
    parts, ok, tops = [], True, []
    for dataset, sub in sin.groupby("dataset", sort=True):
        top = sub[sub["sigma"] == sub["sigma"].max()]
        tops.append(top)
        train, test, chance = top["train_acc"].mean(), top["test_acc"].mean(), 1.0 / top["num_classes"].iloc[0]
        ok &= bool(train >= MEMORIZED_TRAIN_ACC and test <= at_chance(top["num_classes"].iloc[0]))
        parts.append(
            f"{dataset}, sigma={top['sigma'].iloc[0]:g}: train {train:.3f}, test {test:.3f} (chance {chance:.2g})"
        )
    # Below 100% train accuracy a run still learning has not memorized yet: whether it would, a longer training
    # tells. One that failed to train did not memorize: the claim does not hold there, for that reason.
    tops = pd.concat(tops)
    describe = ["dataset", "activation", "sigma"]
    unfit = not_fitted(tops, describe, MEMORIZED_TRAIN_ACC)
    return verdict(text, source, ok, "; ".join(parts), unfit, mechanism(tops, describe), "memorization")


def relu_degrades_less(frame: pd.DataFrame) -> Claim:
    frame = with_defaults(frame)
    text, source = "ReLU degrades less than sin as sigma grows", "Sec. 4"
    true = paper_runs(frame)
    true = true[true["labels"] == "true"]
    lines = ["dataset", "loss", *varying(true, ["learning_rate"]), "activation"]
    d = seed_drops(true, lines)
    pairs = [(k[:-1], d[k], d.get((*k[:-1], "relu"))) for k in d if k[-1] == "sin"]
    pairs = [(k, s, r) for k, s, r in pairs if r is not None]
    if not pairs:
        return Claim(text, source, NOT_RUN, "needs sin and relu sweeps on one dataset", name="relu_less")
    ok = all(r.mean() < s.mean() - LESS_DEGRADATION for _, s, r in pairs)
    evidence = "; ".join(f"{' '.join(map(str, k))}: drop sin {spread(s)}, relu {spread(r)}" for k, s, r in pairs)
    ends = end_runs(true, lines)
    judged = ends[lines[:-1]].apply(tuple, axis=1).isin([k for k, _, _ in pairs])
    used = ends[judged & ends["activation"].isin(["sin", "relu"])]
    describe = ["dataset", "activation", "loss", "sigma"]
    why = mechanism(used[used["sigma"] == used.groupby(lines)["sigma"].transform("max")], describe)
    return verdict(text, source, ok, evidence, not_fitted(used, describe), why, "relu_less")


def relu_follows_loss(frame: pd.DataFrame) -> Claim:
    frame = with_defaults(frame)
    text, source = "for ReLU the effect of sigma follows the loss (cross-entropy, hinge, squared)", "Sec. 4, Fig. 4"
    relu, keys = relu_lines(frame, PAPER)
    d = seed_drops(relu, keys)
    if len({k[keys.index("loss")] for k in d}) < 2:
        return Claim(text, source, NOT_RUN, "needs ReLU sigma sweeps with two or more losses (group section4)",
                     name="follows_loss")  # fmt: skip
    means = {k: float(v.mean()) for k, v in d.items()}
    gap = max(means.values()) - min(means.values())
    evidence = ", ".join(f"{line_name(keys, k)} drop {spread(v)}" for k, v in d.items()) + (
        f"; spread of the means {gap:.3f}")  # fmt: skip
    describe = ["dataset", "activation", "loss", *varying(relu, ["learning_rate"]), "sigma"]
    unfit = not_fitted(end_runs(relu, keys), describe)
    why = mechanism(end_runs(relu, keys, "largest"), describe)
    return verdict(text, source, gap >= LOSS_SPREAD, evidence, unfit, why, "follows_loss")


def _flat_test(sub: pd.DataFrame) -> str:
    """'' where the best test accuracy drops by FLAT_TEST or more from the smallest to the largest sigma; else
    the two means (alignment that falls there does not track generalization)."""
    acc = seed_spread.by_sigma(sub, "best_test_acc")
    first, last = acc["mean"].iloc[0], acc["mean"].iloc[-1]
    return "" if first - last >= FLAT_TEST else f"best test {first:.3f} -> {last:.3f}"


def _random_groups(sub: pd.DataFrame, measure: str, means: pd.DataFrame) -> str:
    """The alignment of random same-size groups beside the in-class one, at the smallest and largest sigma
    (where recorded): a shared gradient direction aligns random groups too, so it is not class alignment."""
    col = f"{measure}_random"
    if col not in sub or sub[col].isna().all():
        return ""
    random = seed_spread.by_sigma(sub.dropna(subset=[col]), col)
    ends = means.set_index("sigma")["mean"]
    first, last = random.iloc[0], random.iloc[-1]
    return (
        f"; in-class {ends.get(first['sigma'], np.nan):.3f} -> {ends.get(last['sigma'], np.nan):.3f} vs random "
        f"groups {first['mean']:.3f} -> {last['mean']:.3f} (sigma {first['sigma']:g} -> {last['sigma']:g})"
    )


def alignment_falls(frame: pd.DataFrame) -> Claim:
    frame = with_defaults(frame)
    text, source = "in-class alignment falls as sigma grows", "Sec. 3-4, Fig. 2-3"
    runs = sigma_runs(frame)
    runs = runs[runs["labels"] == "true"]
    lines = ["dataset", "activation", "loss", "loss_scaling", "first_layer_step", "learning_rate"]
    runs = runs.assign(first_layer_step=variant(runs).str[1]) if len(runs) else runs
    shown_keys = [1, 2, *[i for i, k in enumerate(lines) if k in varying(runs, ["learning_rate"])]]
    parts, ok, other, flat = [], True, [], []
    for measure in [m for m in (main_alignment(frame), "rep_alignment") if m in runs]:
        for key, sub in runs.groupby(lines, sort=True, dropna=False):
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
            name = "/".join(f"lr={key[i]:g}" if lines[i] == "learning_rate" else str(key[i]) for i in shown_keys)
            line = (f"{measure} {name} on {key[0]}: tau of the sigma means {shown}, "
                    f"of the runs {tau:+.2f}{interval} ({len(sub)} runs, {sub['sigma'].nunique()} sigmas)"
                    f"{_random_groups(sub, measure, means)}")  # fmt: skip
            if (key[3], key[4]) != PAPER:  # the fixes are new experiments, not the paper's setting: shown, not judged
                other.append(f"{line} ({key[3]}, {key[4]} first-layer step)")
                continue
            ok &= bool(falls <= FALLS_TAU)
            parts.append(line)
            level = _flat_test(sub) if falls <= FALLS_TAU else ""
            if level:
                flat.append(f"{measure} {name} on {key[0]} ({level})")
    if not parts:
        return Claim(text, source, NOT_RUN, "needs a sigma sweep of 3 or more values", name="falls")
    shown = "; ".join(parts) + (f"; not judged, the new forms of the loss: {'; '.join(other)}" if other else "")
    # Where alignment falls but test accuracy does not, the fall is no evidence that it tracks generalization.
    why = (f"Counter-evidence: alignment falls while best test accuracy does not fall (drop below {FLAT_TEST:g}): the fall does not track "
           f"generalization in these lines: {'; '.join(flat)}") if flat else ""  # fmt: skip
    return Claim(text, source, HOLDS if ok else FAILS, shown, why, "falls")


def alignment_tracks_best(comparison: dict | None, frame: pd.DataFrame) -> Claim:
    text = "alignment tracks generalization better than gradient diversity, cosine stiffness, gradient confusion"
    source = "Sec. 3, Fig. 3"
    measure = main_alignment(frame)
    if comparison is None:
        return Claim(text, source, NOT_RUN, f"needs a line of runs (a sigma sweep) with {statistics.MIN_RUNS} or more "
                     "runs where every measure is defined and best test accuracy differs", name="tracks")  # fmt: skip
    names, combined = comparison["measures"], comparison["combined"]
    outcomes = [statistics.outcome(lo, hi) for lo, hi in zip(combined["low"], combined["high"])]
    verdict_ = HOLDS if all(o == "ahead" for o in outcomes) else FAILS if "behind" in outcomes else INCONCLUSIVE
    which = "at the matched training state" if comparison["matched"] else "at the final epoch"
    scope = "MLP runs (W1 is defined for the MLP only)" if measure == "grad_alignment_w1" else "runs"
    per_line = [[statistics.outcome(lo, hi) for lo, hi in zip(line["low"], line["high"])]
                for line in comparison["lines"]]  # fmt: skip
    counts = {o: sum(all(x == o for x in line) for line in per_line) for o in ("ahead", "behind")}
    evidence = (
        f"the same {comparison['runs']} {scope} for every measure ({which}), {len(per_line)} line(s) of runs; "
        f"signed tau, mean over lines: " + ", ".join(f"{m} {t:+.2f}" for m, t in zip(names, combined["taus"]))
        + f"; {measure} minus each: " + ", ".join(
            f"{m} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            for m, d, lo, hi in zip(names[1:], combined["diff"], combined["low"], combined["high"]))
        + f"; per line, ahead of every other measure in {counts['ahead']}, behind every one in {counts['behind']}, "
        f"mixed or tied in {len(per_line) - counts['ahead'] - counts['behind']}"
    )  # fmt: skip
    return Claim(text, source, verdict_, evidence, name="tracks")


def _labels_measure(frame: pd.DataFrame) -> tuple[str, str]:
    """The last layer's alignment (measured for every model) at the matched training state where every run
    has it, else at the final epoch; and which."""
    matched = "grad_alignment_w2_matched"
    if matched in frame and len(frame) and frame[matched].notna().all():
        return matched, "at matched train accuracy (first measurement point >= 0.9)"
    return "grad_alignment_w2", "at the final epoch"


def labels_separate(frame: pd.DataFrame) -> Claim:
    frame = with_defaults(frame)
    text = "alignment separates true from shuffled labels across architectures"
    source = "Sec. 5, Fig. 5"
    if "group" in frame:  # the groups with shuffled labels only: not the sigma sweeps of a combined report
        frame = frame[frame["group"].isin(frame.loc[frame["labels"] == "shuffled", "group"])]
    measure, when = _labels_measure(frame)
    means = _mean(frame, ["model", "labels"], measure).dropna()
    fitted = _mean(frame, ["model", "labels"], "train_acc")
    models = [m for m in means.index.get_level_values(0).unique() if {(m, "true"), (m, "shuffled")} <= set(means.index)]
    if len(models) < 2:
        return Claim(text, source, NOT_RUN, "needs two or more models with true and shuffled labels (group section5)",
                     name="labels")  # fmt: skip
    # A model that failed to train on its labels has not memorized them: named, not compared.
    broken = sorted(set(frame.loc[frame["model"].isin(models) & failed(frame), "model"]))
    why = failures(frame[frame["model"].isin(broken)], ["model", "labels"]) if broken else ""
    why = f"Mechanism: optimization failure, not compared: {why}" if why else ""
    models = [m for m in models if m not in broken]
    if len(models) < 2:
        return Claim(text, source, INCONCLUSIVE, f"fewer than two models trained on both labels ({measure})", why,
                     "labels")  # fmt: skip
    gaps = {m: means[m, "true"] - means[m, "shuffled"] for m in models}
    ok = all(g >= SEPARATION for g in gaps.values())
    by_seed = frame.pivot_table(index=["model", "seed"], columns="labels", values=measure)
    baseline = measure.replace("grad_alignment_w2", "grad_alignment_w2_random")
    random = _mean(frame, ["model", "labels"], baseline).dropna() if baseline in frame else pd.Series(dtype=float)
    parts = []
    for m in models:
        seeds = by_seed.loc[m].dropna() if m in by_seed.index.get_level_values(0) else None
        gap = (
            f"gap {spread(seeds['true'] - seeds['shuffled'])}"
            if seeds is not None and len(seeds)
            else f"gap {gaps[m]:.3f}"
        )
        base = (f"; random groups {random[m, 'true']:.3f} vs {random[m, 'shuffled']:.3f}"
                if (m, "true") in random.index and (m, "shuffled") in random.index else "")  # fmt: skip
        parts.append(f"{m}: {means[m, 'true']:.3f} vs {means[m, 'shuffled']:.3f} ({gap}{base}; shuffled train acc "
                     f"{fitted[m, 'shuffled']:.2f})")  # fmt: skip
    # Sec. 5 compares networks that fit their labels, true or shuffled: one still learning has not memorized.
    unfit = not_fitted(frame[frame["model"].isin(models)], ["model", "labels"])
    return verdict(text, source, ok, f"{measure} true vs shuffled, {when}: {', '.join(parts)}", unfit, why, "labels")


def judge(frame: pd.DataFrame, comparison: dict | None = None) -> list[Claim]:
    from . import fixes

    if comparison is None:
        comparison = compare(frame)
    return [
        extreme_memorization(frame),
        relu_degrades_less(frame),
        relu_follows_loss(frame),
        *fixes.fixes_restore(frame),
        alignment_falls(frame),
        alignment_tracks_best(comparison, frame),
        labels_separate(frame),
    ]


def compare(frame: pd.DataFrame) -> dict | None:
    """The fair comparison of the gradient alignment with the other measures (statistics.compare_measures)."""
    frame = with_defaults(frame)
    measure = main_alignment(frame)
    return statistics.compare_measures(sigma_runs(frame), measure, list(statistics.COMPARED))


def markdown(claims: list[Claim]) -> str:
    lines = ["| claim | paper | verdict | deciding numbers |", "|---|---|---|---|"]
    for c in claims:
        verdict_ = f"**{c.verdict}**" if c.verdict in (HOLDS, FAILS) else c.verdict
        evidence = c.evidence + (f"<br>{c.mechanism}" if c.mechanism else "")
        evidence = evidence.replace("|", "\\|")  # a bar inside a cell would split it on GitHub
        lines.append(f"| {c.claim} | {c.source} | {verdict_} | {evidence} |")
    return "\n".join(lines)


def frame_of(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(c) for c in claims])
