"""The record of one run while its pack trains, and what it ends as.

A :class:`Member` holds what a run's output files are written from: its
history and measurement rows, its best test accuracy, its state at the last
evaluation (the fraction of hidden units still active, the first epoch it
fitted its training set) and why it stopped, if it did. Everything in it is
saved in checkpoints (:meth:`Member.record`), so a resumed run ends exactly
as an uninterrupted one.

A run stops early in two ways, recorded apart: it *diverged* (the loss became
non-finite or blew up: its weights measure nothing) or it is *dead* (every
hidden unit is zero on every training example: no gradient reaches the
weights, nothing can change; its weights still measure). Its diagnosis
(diagnosis.py) says what a finished run is: fitted, still learning, stuck,
dead or diverged.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config.settings import RunConfig
from ..core import measures
from . import diagnosis, provenance

# Beside the measures at each measurement point (MLPs; blank for other models):
# the fraction of hidden units active on at least one training example, and
# ||W1 - W1(0)|| / ||W1(0)||.
STATE_COLUMNS = ["active_fraction", "w1_relative_change"]
# The matched training state: metrics.json's "<name>_matched" for each of these.
MATCHED = [*measures.MEASURES, *STATE_COLUMNS]
DEAD_REASON = "every hidden unit is dead (zero on every training example)"
# A finite loss this many times its initial value has blown up (recorded like a divergence).
BLOWUP_FACTOR = 1e3  # (MLPs: see check)


class Member:
    """The record of one run of a pack."""

    def __init__(self, run: RunConfig, out_dir: Path, weights_file: Path | None = None):
        self.run, self.out_dir = run, Path(out_dir)
        self.weights_file = Path(weights_file) if weights_file else self.out_dir / "model.weights.h5"
        self.rows: list[dict] = []
        self.alignment_rows: list[dict] = []
        self.best = 0.0
        # The epoch and reason the run was stopped at (diverged, or dead when every hidden unit died).
        self.stopped_at: int | None = None
        self.stopped_reason = ""
        self.dead = False
        self.active_fraction: float | None = None  # at the last evaluation of the training set (MLPs)
        self.matched_epoch: int | None = None  # the first epoch with train accuracy >= FITTED_TRAIN_ACC
        self.initial_loss = float("nan")
        self.started_at = provenance.utc_now()  # kept in checkpoints: a resumed run keeps its first start
        self.shows_lr = False  # its label names the learning rate (a pack whose members differ in it)

    def record(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in ("run", "out_dir", "weights_file", "shows_lr")}

    def restore(self, record: dict) -> None:
        vars(self).update(record)

    @property
    def label(self) -> str:
        scale = f"sigma={self.run.sigma:g}" if self.run.sigma is not None else f"glorot x{self.run.init_scale:g}"
        return f"{scale} seed={self.run.seed}" + (f" lr={self.run.learning_rate:g}" if self.shows_lr else "")

    @property
    def diverged(self) -> bool:
        return self.stopped_at is not None and not self.dead

    @property
    def status(self) -> str:
        """run.json's status: completed, diverged or dead."""
        return "dead" if self.dead else "diverged" if self.stopped_at is not None else "completed"

    def observe(self, epoch: int, train_acc: float, active_fraction: float) -> bool:
        """Note the state after an evaluation of the training set; whether
        ``epoch`` is the matched training state (the first fitted epoch)."""
        self.active_fraction = float(active_fraction) if math.isfinite(active_fraction) else None
        if self.matched_epoch is None and train_acc >= diagnosis.FITTED_TRAIN_ACC:
            self.matched_epoch = epoch
            return True
        return False

    def stop(self, epoch: int, reason: str) -> None:
        self.stopped_at, self.stopped_reason, self.dead = epoch, reason, reason == DEAD_REASON

    def outcome(self) -> tuple[dict, dict]:
        """What the run ended as: (metrics.json's diagnosis, active units and
        matched-state entries; run.json's status entries)."""
        train_acc = [r["train_acc"] for r in self.rows]
        label = diagnosis.diagnose(train_acc, self.diverged, self.active_fraction)
        if self.dead:
            label = diagnosis.DEAD  # stopped at once: whatever its history, nothing could change any more
        matched = next((r for r in self.alignment_rows if r["epoch"] == self.matched_epoch), {})
        metrics = {
            "diverged": int(self.diverged),
            "diagnosis": label,
            # The epochs the last half's trend needs to fit; only for a run still learning.
            "epochs_to_fit": diagnosis.epochs_to_fit(train_acc) if label == diagnosis.STILL_LEARNING else None,
            "active_fraction": None if self.diverged else self.active_fraction,
            "matched_epoch": self.matched_epoch if matched else None,
            **{f"{k}_matched": matched.get(k) for k in MATCHED},
        }
        info = {
            "status": self.status,
            "diagnosis": label,
            "stopped_at_epoch": self.stopped_at,
            "stopped_reason": self.stopped_reason or None,
            "diverged_at_epoch": self.stopped_at if self.diverged else None,
            "diverged_reason": self.stopped_reason if self.diverged else None,
        }
        return metrics, info


def check(member: Member, train_loss: float, test_loss: float, active_fraction: float) -> str:
    """Why the member must stop at this epoch ('' if it goes on)."""
    if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
        return "the loss is not finite"
    if member.run.model != "mlp":
        # ResNet/DenseNet evaluate with BatchNorm's moving statistics, which lag
        # the weights early on: a large evaluation loss there is no blow-up.
        return ""
    if member.initial_loss > 0 and train_loss > BLOWUP_FACTOR * member.initial_loss:
        return (
            f"the loss blew up to {train_loss:.3g}, over {BLOWUP_FACTOR:g} times its initial {member.initial_loss:.3g}"
        )
    if active_fraction == 0:
        return DEAD_REASON  # no gradient reaches W1 or W2 again: nothing can change
    return ""


def done_line(m: Member, metrics: dict) -> str:
    """The run's final numbers as the tables show them: 3 significant digits;
    no gradient alignment where the run diverged, died or its gradients vanished."""
    from .run_folder import VANISHED_GRADIENT

    def fmt(value):
        return "-" if value is None else f"{value:.3g}"

    start = next((r.get("mean_grad_norm") for r in m.alignment_rows if r["epoch"] == 0), None)
    final = metrics.get("mean_grad_norm")
    if m.diverged:
        w1 = f"undefined (diverged at epoch {m.stopped_at})"
    elif m.dead:
        w1 = f"undefined (every hidden unit dead at epoch {m.stopped_at})"
    elif start and final is not None and final / start < VANISHED_GRADIENT:
        w1 = "undefined (gradients vanished)"
    else:
        w1 = fmt(metrics.get("grad_alignment_w1"))
    return (f"run {m.label} done: train acc {fmt(metrics['train_acc'])}, test acc {fmt(metrics['test_acc'])}, "
            f"best test acc {fmt(metrics['best_test_acc'])}, gradient alignment W1 {w1}")  # fmt: skip
