"""A verdict, and why a run a claim needs did not fit: the words every claim shares.

A claim about memorization or generalization needs networks that fit their
training set. Each run carries its diagnosis (:mod:`training.diagnosis`):
a run still learning when its epochs ran out leaves its claim
"inconclusive: not fitted", with the epochs its trend needs; a run that is
stuck, dead or diverged is a finding (an optimization failure), so the
claim is judged on the numbers as measured and names that mechanism on its
own line, beside memorization (fitted, test at chance).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..training import diagnosis

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"
NOT_FITTED = "inconclusive: not fitted"  # a run it needs was still learning when its epochs ran out
INCONCLUSIVE = "inconclusive"  # the numbers do not decide (an interval covers 0, every measure tied)
VERDICTS = (HOLDS, FAILS, NOT_RUN, NOT_FITTED, INCONCLUSIVE)

FITTED_TRAIN_ACC = diagnosis.FITTED_TRAIN_ACC
MEMORIZED_TRAIN_ACC = 0.99  # "100% train accuracy"
CHANCE_FACTOR = 2.0  # test accuracy "at chance": at most this many times 1 / classes


def at_chance(num_classes):
    """The highest test accuracy read as "at chance": CHANCE_FACTOR x 1/k, and
    never more than halfway from chance to 1 (with 2 classes, 2 x 1/2 would
    call every run at chance)."""
    return np.minimum(CHANCE_FACTOR / num_classes, (1 + 1 / num_classes) / 2)


@dataclasses.dataclass
class Claim:
    claim: str
    source: str
    verdict: str
    evidence: str
    # On its own line: "Mechanism: ..." (optimization failure vs memorization) or "Counter-evidence: ...".
    mechanism: str = ""
    name: str = ""  # which claim (carry_over's notes are keyed by it)


def spread(values) -> str:
    """A mean, with [min, max] over seeds where there are several."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return f"{values.mean():.3f}"
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]"


def describe(columns: list[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return " ".join(f"{c}={v:g}" if c in ("sigma", "learning_rate") else f"{c}={v}" if c == "labels" else str(v)
                    for c, v in zip(columns, key))  # fmt: skip


def _diagnoses(runs: pd.DataFrame) -> pd.Series:
    """Each run's label; a frame without the column (made-up runs) counts a run
    below the fit as still learning."""
    if "diagnosis" in runs:
        return runs["diagnosis"].fillna(diagnosis.STILL_LEARNING)
    fitted = runs["train_acc"] >= FITTED_TRAIN_ACC
    return fitted.map({True: diagnosis.FITTED, False: diagnosis.STILL_LEARNING})


def failed(runs: pd.DataFrame) -> pd.Series:
    """Whether each run failed to train (stuck, dead or diverged)."""
    return _diagnoses(runs).isin(diagnosis.FAILED_TO_TRAIN)


def _counts(labels: pd.Series) -> str:
    return ", ".join(f"{n} {label}" for label, n in labels.value_counts().sort_index().items())


def _epochs(below: pd.DataFrame) -> str:
    if "epochs_to_fit" not in below or below["epochs_to_fit"].isna().all():
        return ""
    need = float(below["epochs_to_fit"].max())
    if not math.isfinite(need):
        return "; its trend is not rising"
    return f"; its trend needs about {math.ceil(need):,} more epochs"


def not_fitted(runs: pd.DataFrame, columns: list[str], threshold: float = FITTED_TRAIN_ACC) -> str:
    """'' when every run of ``runs`` ends at train accuracy >= ``threshold`` or
    failed to train (a finding, see :func:`failures`); else which settings are
    still learning: runs below of runs there, their train accuracy, and how
    many more epochs the trend of the last half of training needs."""
    low = runs[~(runs["train_acc"] >= threshold) & ~failed(runs)]
    if low.empty:
        return ""
    parts = []
    for key, below in low.groupby(columns, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        total = (runs[columns] == pd.Series(dict(zip(columns, key)))).all(axis=1).sum()
        parts.append(f"{describe(columns, key)} ({len(below)} of {total} runs) train {spread(below['train_acc'])}"
                     f"{_epochs(below)}")  # fmt: skip
    return (
        f"not fitted (train accuracy below {threshold:g}, still learning at the end of its epochs): {'; '.join(parts)}"
    )


def failures(runs: pd.DataFrame, columns: list[str]) -> str:
    """The runs of ``runs`` that failed to train, per setting: '' when none."""
    bad = runs[failed(runs)]
    parts = [f"{describe(columns, key)} ({_counts(_diagnoses(sub))} of "
             f"{(runs[columns] == pd.Series(dict(zip(columns, key if isinstance(key, tuple) else (key,))))).all(axis=1).sum()}"
             f" runs; train {spread(sub['train_acc'])})"
             for key, sub in bad.groupby(columns, sort=True, dropna=False)]  # fmt: skip
    return "; ".join(parts)


def mechanism(runs: pd.DataFrame, columns: list[str]) -> str:
    """Of ``runs`` (those at the largest sigma of each line), the settings that
    failed to train (optimization failure) and those that memorized (fitted at
    train >= MEMORIZED_TRAIN_ACC with test at chance); '' when neither."""
    parts = []
    failing = failures(runs, columns)
    if failing:
        parts.append(f"optimization failure (stuck, dead or diverged: failing to train is the finding, more epochs "
                     f"do not change it): {failing}")  # fmt: skip
    chance = at_chance(runs["num_classes"]) if "num_classes" in runs else pd.Series(np.nan, index=runs.index)
    memorized = runs[(runs["train_acc"] >= MEMORIZED_TRAIN_ACC) & (runs["test_acc"] <= chance) & ~failed(runs)]
    if len(memorized):
        shown = [f"{describe(columns, key)} (train {spread(sub['train_acc'])}, test {spread(sub['test_acc'])})"
                 for key, sub in memorized.groupby(columns, sort=True, dropna=False)]  # fmt: skip
        parts.append(f"memorization (train >= {MEMORIZED_TRAIN_ACC:g}, test at chance): {'; '.join(shown)}")
    return f"Mechanism: {'; '.join(parts)}" if parts else ""


def verdict(text: str, source: str, ok: bool, evidence: str, unfit: str, why: str = "", name: str = "") -> Claim:
    """Holds or does not hold on ``evidence``; inconclusive: not fitted when a run is still learning (``unfit``)."""
    if unfit:
        return Claim(text, source, NOT_FITTED, f"{unfit}; not judged: {evidence}", why, name)
    return Claim(text, source, HOLDS if ok else FAILS, evidence, why, name)
