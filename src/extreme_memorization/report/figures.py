"""The paper's figures, drawn from a report's runs and named after them.

Each function draws the analog of one figure of the paper (see
SCIENCE.md) or says why it cannot: a figure whose runs do not exist is
listed as "not run", and a panel without data is not drawn. Points and
curves are means over the seeds where a measure is defined; bars and bands
span the lowest to the highest seed (:mod:`seed_means`). The visual cues
(dashed train, solid test, one colour per sigma) are in :mod:`style`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.ticker
import numpy as np
import pandas as pd

from . import seed_means as seed_spread
from . import style as style
from .fixes import FORMS
from .lines import PAPER, line_keys, lines, main_alignment, variant
from .results import COMPARED, GRADIENT_MEASURES

TITLES = {"rep_alignment": "representation alignment", "grad_alignment_w1": "gradient alignment, W1",
          "grad_alignment_w2": "gradient alignment, W2", "grad_alignment_logits": "gradient alignment, logits",
          "train_acc": "train accuracy", "grad_norm_ratio_w1": "||grad W1|| / ||W1|| (log)",
          **COMPARED, "gradient_diversity": "gradient diversity (log)",
          "gradient_confusion": "gradient confusion (linear)\nin-class min of <g_i, g_j>"}  # fmt: skip
LOG_CURVES = ("grad_norm_ratio_w1",)  # drawn on a log axis over training


@dataclasses.dataclass
class Figure:
    name: str  # file name
    title: str  # the paper's figure it corresponds to, and what it shows
    caption: str


@dataclasses.dataclass
class NotRun:
    title: str
    reason: str


def _seed_curve(curves: dict, runs: pd.DataFrame, which: int, col: str) -> pd.DataFrame | None:
    """The mean over ``runs``' seeds of one curve (0: history, 1: alignment).
    On a log axis (LOG_CURVES) a value of 0 is a gradient that vanished
    exactly: left out like an undefined one."""
    tables = [curves[d][which] for d in runs["run_dir"]]
    if col in LOG_CURVES:
        tables = [t.assign(**{col: t[col].where(t[col] > 0)}) if col in t else t for t in tables]
    return seed_spread.over_training(tables, col)


@style.styled
def fig1_accuracy(frame: pd.DataFrame, out: Path) -> Figure:
    name = "fig1_accuracy_vs_sigma.png"
    # One panel per dataset, and per group where a report has several (a
    # combined report's lines would crowd one panel); a line keeps its colour.
    by = ["dataset", "group"] if frame["group"].nunique() > 1 else ["dataset"]
    panels = list(frame.groupby(by, sort=True))
    keys = line_keys(frame, skip=("sigma", "seed", *by))
    colour = {label: f"C{i % 10}" for i, (label, _) in enumerate(lines(frame, keys))}
    fig, axes = style.figure(1, len(panels), 4.0 * len(panels) + 2.4, 3.4, sharey=True)
    handles = {}
    for ax, (panel, sub) in zip(axes[0], panels):
        for label, runs in lines(sub, keys):
            for col, ls in (("train_acc", style.TRAIN), ("test_acc", style.TEST)):
                agg = seed_spread.by_sigma(runs, col)
                style.errorbar(ax, agg["sigma"], agg, colour[label], ls)
            handles[label] = style.Line2D([], [], color=colour[label], lw=2)
        chance = style.chance(ax, sub)
        style.sigma_axis(ax)
        style.preactivation_axis(ax, sub)
        ax.set_title(" · ".join(panel) if isinstance(panel, tuple) else panel, pad=28)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("accuracy at the last epoch")
    style.legend(fig, ("line of runs", handles), (None, {**style.split_handles(), **chance,
                                                         **style.spread_handle(frame, "bars")}))  # fmt: skip
    style.suptitle(fig, "Fig. 1 (left) analog: train and test accuracy against sigma")
    style.save(fig, out, name)
    return Figure(name, "Fig. 1 (left) analog: accuracy against sigma",
                  "Train (dashed, open markers) and test (solid) accuracy at the last epoch against sigma (log), one "
                  f"panel per dataset (and group); dotted: chance.{seed_spread.note(frame, 'error bars')}"
                  f"{style.preactivation_note(frame)}")  # fmt: skip


def _scatter_by_sigma(ax, frame, col, keys, colours) -> None:
    """Best test accuracy against ``col``: one point per sigma and line of runs,
    coloured by sigma, marked by line of runs, with bars over seeds."""
    for i, (_, runs) in enumerate(lines(frame, keys)):
        runs = runs.dropna(subset=[col])
        if runs.empty:
            continue
        x, y = seed_spread.by_sigma(runs, col), seed_spread.by_sigma(runs, "best_test_acc")
        ax.errorbar(x["mean"], y["mean"], xerr=seed_spread.errors(x), yerr=seed_spread.errors(y), fmt="none",
                    ecolor="grey", lw=0.8, capsize=2)  # fmt: skip
        ax.scatter(x["mean"], y["mean"], c=[colours(s) for s in x["sigma"]], marker=style.marker(i), s=40,
                   edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip


def _why_undefined(seeds: pd.DataFrame) -> str:
    """Why the gradient measures of ``seeds`` are undefined: 'gradients vanished',
    'diverged', or a count of each."""
    why = ["diverged" if st == "diverged" else "gradients vanished" if g == "vanished" else "undefined"
           for st, g in zip(seeds["status"], seeds["gradients"])]  # fmt: skip
    counts = pd.Series(why).value_counts()
    return counts.index[0] if len(counts) == 1 else ", ".join(f"{n} {w}" for w, n in counts.items())


def _undrawn_sigmas(frame: pd.DataFrame, cols: list[str]) -> dict:
    """{sigma: why} for the sigmas none of whose runs has any of ``cols``."""
    return {float(sigma): _why_undefined(runs) for sigma, runs in frame.groupby("sigma")
            if runs[cols].isna().all().all()}  # fmt: skip


def _line_handles(frame: pd.DataFrame, keys: list[str], col: str | None, coloured: bool) -> dict:
    """Legend entries of the lines of runs (marker; with ``coloured``, also
    their colour), each noting the sigmas where no seed has ``col`` and why."""
    handles = {}
    for i, (label, runs) in enumerate(lines(frame, keys)):
        notes = {}
        for sigma, why in (_undrawn_sigmas(runs, [col]) if col else {}).items():
            if why != "undefined":  # a measure the model lacks needs no note
                notes.setdefault(why, []).append(f"{sigma:g}")
        label += "".join(f"\n(sigma = {', '.join(sigmas)}: {why})" for why, sigmas in notes.items())
        handles[label] = style.Line2D([], [], marker=style.marker(i), mfc="lightgrey", mec="black",
                                    color=f"C{i}" if coloured else "lightgrey", ls="-" if coloured else "")  # fmt: skip
    return handles


def _scatter_legends(fig, frame, keys, colours, cols) -> None:
    markers = _line_handles(frame, keys, cols[0] if cols else None, False) if keys else {}
    style.legend(
        fig,
        ("colour: sigma", colours.handles("marker", _undrawn_sigmas(frame, cols))),
        ("marker: line of runs", markers),
        (None, style.spread_handle(frame, "bars")),
    )


@style.styled
def fig1_alignment(frame: pd.DataFrame, colours: style.SigmaColours, out: Path) -> Figure:
    name = "fig1_best_test_vs_gradient_alignment.png"
    cols = [c for c in ("grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits") if frame[c].notna().any()]
    keys = line_keys(frame)
    fig, axes = style.figure(1, max(len(cols), 1), 3.4 * max(len(cols), 1) + 2.0, 3.4, sharey=True)
    for ax, col in zip(axes[0], cols):
        _scatter_by_sigma(ax, frame, col, keys, colours)
        ax.set_xlabel(f"in-class {TITLES[col]}")
        ax.axvline(0, color="grey", lw=0.6)
    if not cols:
        style.blank(axes[0][0], "no run has a defined gradient alignment")
    axes[0][0].set_ylabel("best test accuracy")
    _scatter_legends(fig, frame, keys, colours, cols)
    style.suptitle(fig, "Fig. 1 (right) analog: best test accuracy against in-class gradient alignment")
    style.save(fig, out, name)
    undefined = frame[frame["gradients"] == "vanished"]
    note = (f" {len(undefined)} run(s) whose gradients vanished are left out (a sigma's other seeds still give its "
            "point)." if len(undefined) else "")  # fmt: skip
    return Figure(name, "Fig. 1 (right) analog: best test accuracy against gradient alignment",
                  "Best test accuracy over training against the final in-class gradient alignment of W1, W2 and "
                  f"the logits; colour: sigma, marker: line of runs.{seed_spread.note(frame, 'error bars')}{note}")  # fmt: skip


def _fig2_rows(frame: pd.DataFrame, curves: dict, groups: list) -> list[tuple[int, str, list[dict]]]:
    """(0: history / 1: alignment, measure, per line of runs {sigma: curve}) for
    each measure that some line of runs has."""
    rows = []
    for which, col in ((0, "train_acc"), (1, "grad_norm_ratio_w1"), (1, main_alignment(frame)), (1, "rep_alignment")):
        drawn = [{s: _seed_curve(curves, seeds, which, col) for s, seeds in runs.groupby("sigma", sort=True)}
                 for _, runs in groups]  # fmt: skip
        drawn = [{s: curve for s, curve in d.items() if curve is not None} for d in drawn]
        if any(drawn):
            rows.append((which, col, drawn))
    return rows


@style.styled
def fig2_training(frame: pd.DataFrame, curves: dict, colours: style.SigmaColours, out: Path) -> Figure:
    name = "fig2_training.png"
    groups = list(lines(frame, line_keys(frame)))
    rows = _fig2_rows(frame, curves, groups)
    fig, axes = style.figure(len(rows), len(groups), 2.9 * len(groups) + 2.2, 2.1 * len(rows) + 0.8, sharex=True,
                             sharey="row")  # fmt: skip
    ended = False
    for r, (_which, col, drawn) in enumerate(rows):
        for c, (label, _) in enumerate(groups):
            ax = axes[r][c]
            style.epoch_axis(ax)
            if col in LOG_CURVES:
                ax.set_yscale("log")
            for sigma, curve in drawn[c].items():
                end = col in GRADIENT_MEASURES or col in LOG_CURVES
                style.plot_curve(ax, curve, colours(sigma), style.TRAIN if col == "train_acc" else style.TEST, end)
                ended |= end and bool(curve.attrs.get("ended"))
            if not drawn[c]:
                style.blank(ax, f"{TITLES[col]}:\nnot measured for these runs")
            if r == 0:
                ax.set_title(style.wrap(label), fontweight="bold")
            if c == 0:
                ax.set_ylabel(TITLES[col] + (" (dashed)" if col == "train_acc" else ""))
    fig.supxlabel(style.EPOCH_LABEL, fontsize=9)
    style.legend(
        fig,
        ("colour: sigma", colours.handles()),
        (None, {**style.spread_handle(frame), **(style.vanished_handle() if ended else {})}),
    )
    style.suptitle(fig, "Fig. 2 analog: over training, per sigma (each row shares its y axis)")
    style.save(fig, out, name)
    return Figure(name, "Fig. 2 analog: over training, per sigma",
                  "Rows: training accuracy per epoch, ||grad W1|| / ||W1||, the in-class gradient alignment and the "
                  "representation alignment at the measurement points; columns: lines of runs, with a shared y axis "
                  f"per row; colour: sigma.{seed_spread.note(frame, 'bands')} A seed's gradient measures are left out "
                  "where its gradients had vanished, and ||grad W1|| / ||W1|| where it is exactly 0 (the other seeds "
                  "still give the curve); X: the curve ends because every seed's gradients had vanished.")  # fmt: skip


@style.styled
def fig3_measures(frame: pd.DataFrame, colours: style.SigmaColours, out: Path) -> Figure:
    name = "fig3_measures.png"
    measures = [main_alignment(frame), "rep_alignment", *COMPARED]
    measures = [m for m in measures if frame[m].notna().any()]
    keys = line_keys(frame)
    fig, axes = style.figure(max(len(measures), 1), 2, 9.5, 2.3 * max(len(measures), 1) + 0.6)
    for r, col in enumerate(measures):
        left, right = axes[r]
        for i, (_, runs) in enumerate(lines(frame, keys)):
            agg = seed_spread.by_sigma(runs.dropna(subset=[col]), col)
            style.errorbar(left, agg["sigma"], agg, f"C{i}", marker=style.marker(i))
        _scatter_by_sigma(right, frame, col, keys, colours)
        style.sigma_axis(left)
        left.set_ylabel(TITLES[col])
        right.set_xlabel(TITLES[col])
        right.set_ylabel("best test accuracy")
        if col == "gradient_diversity":
            left.set_yscale("log")
            right.set_xscale("log")
            style.log_measure_axis(left.yaxis)
            style.log_measure_axis(right.xaxis)
        elif col == "gradient_confusion":
            left.axhline(0, color="grey", lw=0.6)
            right.axvline(0, color="grey", lw=0.6)
            # Values span orders of magnitude: "1e4"-style offsets, not overlapping long tick labels.
            left.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            right.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
            right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    if not measures:
        style.blank(axes[0][0], "no measure is defined on these runs")
        axes[0][1].set_axis_off()
    handles = _line_handles(frame, keys, main_alignment(frame), True)
    style.legend(
        fig,
        ("line of runs (left: colour,\nright: marker)", handles),
        ("right, colour: sigma", colours.handles("marker")),
        (None, style.spread_handle(frame, "bars")),
    )
    style.suptitle(fig, "Fig. 3 analog: each final measure against sigma (left) and against best test accuracy (right)")
    style.save(fig, out, name)
    return Figure(name, "Fig. 3 analog: alignment, gradient diversity, cosine stiffness, gradient confusion",
                  "Each final measure against sigma (left, one line per line of runs) and against the best test "
                  "accuracy (right; colour: sigma, marker: line of runs); gradient diversity on a log axis, gradient "
                  "confusion (the smallest in-class inner product of two examples' gradients; below 0: gradients "
                  f"that conflict) on a linear one.{seed_spread.note(frame, 'error bars')} Gradient measures of runs whose "
                  "gradients had vanished are left out; the legend names the sigmas where no seed's are defined.")  # fmt: skip


@style.styled
def fig4_relu_losses(frame: pd.DataFrame, out: Path) -> Figure | NotRun:
    title = "Fig. 4 analog: ReLU with cross-entropy, hinge and squared loss, without and with the proposed fixes"
    relu = frame[(frame["activation"] == "relu") & (frame["init"] == "normal") & (frame["labels"] == "true")]
    forms = variant(relu) if len(relu) else pd.Series(dtype=object)
    if relu["loss"].nunique() < 2 and not (forms != PAPER).any():
        return NotRun(title, "needs ReLU sigma sweeps with several losses (groups section4, section4_fixes)")
    name = "fig4_relu_losses.png"
    panels = [f for f in (PAPER, *FORMS) if (forms == f).any()]
    panels += sorted(set(forms) - set(panels))
    losses = sorted(relu["loss"].unique())
    fig, axes = style.figure(1, len(panels), 4.4 * len(panels) + 2.4, 3.6, sharey=True)
    handles, chance = {}, {}
    for ax, form in zip(axes[0], panels):
        sub = relu[forms == form]
        for loss, runs in sub.groupby("loss", sort=True):
            i = losses.index(loss)
            for col, ls in (("train_acc", style.TRAIN), ("best_test_acc", style.TEST)):
                agg = seed_spread.by_sigma(runs, col)
                style.errorbar(ax, agg["sigma"], agg, f"C{i}", ls)
            handles[loss] = style.Line2D([], [], color=f"C{i}", lw=2)
        chance = style.chance(ax, sub)
        style.sigma_axis(ax)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("as in the paper (loss_scaling: none)" if form == PAPER else
                     f"loss_scaling: {form[0]},\nfirst_layer_step: {form[1]}")  # fmt: skip
    axes[0][0].set_ylabel("accuracy")
    split = {"train, last epoch (dashed)": style.Line2D([], [], color="black", ls=style.TRAIN),
             "best test (solid)": style.Line2D([], [], color="black", ls=style.TEST)}  # fmt: skip
    style.legend(fig, ("colour: loss", handles), (None, {**split, **chance, **style.spread_handle(relu, "bars")}))
    style.suptitle(fig, title)
    style.save(fig, out, name)
    return Figure(name, title, "ReLU MLP: train accuracy at the last epoch (dashed) and best test accuracy (solid) "
                  "against sigma per loss; one panel per form of the loss: as in the paper, and each proposed fix "
                  "(loss_scaling output: temperature, margin or target x the initial logit scale; normalized: the "
                  "loss of z / s; first_layer_step compensated: W1's learning rate x s^2)."
                  f"{seed_spread.note(relu, 'error bars')}")  # fmt: skip


def _fig5_bars(ax, frame: pd.DataFrame, models: list[str]) -> dict:
    width = 0.38
    for j, labels in enumerate(("true", "shuffled")):
        agg = seed_spread.by_value(frame[frame["labels"] == labels], "model", "test_acc").set_index("model")
        agg = agg.reindex(models)
        x = np.arange(len(models)) + (j - 0.5) * width
        ax.bar(x, agg["mean"], width, color=[f"C{i}" for i in range(len(models))], alpha=1.0 if j == 0 else 0.35,
               hatch="//" if j else None, edgecolor="black", lw=0.5)  # fmt: skip
        ax.errorbar(x, agg["mean"], yerr=seed_spread.errors(agg.fillna({"mean": 0})), fmt="none", ecolor="black",
                    capsize=2, lw=0.8)  # fmt: skip
    ax.set_xticks(np.arange(len(models)), models, rotation=20)
    ax.set_xlim(-1.0, len(models))
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("test accuracy per model")
    return {"bars, solid: true labels": style.Rectangle((0, 0), 1, 1, fc="grey", ec="black", lw=0.5),
            "bars, hatched: shuffled labels": style.Rectangle((0, 0), 1, 1, fc="grey", alpha=0.35, hatch="//", ec="black",
                                                            lw=0.5)}  # fmt: skip


@style.styled
def fig5_architectures(frame: pd.DataFrame, curves: dict, out: Path) -> Figure | NotRun:
    title = "Fig. 5 analog: alignment over training and test accuracy across architectures, true and shuffled labels"
    if frame["model"].nunique() < 2 and not (frame["labels"] == "shuffled").any():
        return NotRun(title, "needs several models or shuffled labels (group section5)")
    name = "fig5_architectures.png"
    if (frame["init"] == "glorot").any():  # Section 5's setting; sigma sweeps have their own figures
        frame = frame[frame["init"] == "glorot"]
    models = sorted(frame["model"].unique())
    labelings = [lab for lab in ("true", "shuffled") if (frame["labels"] == lab).any()]
    measures = [m for m in ("grad_alignment_w2", "rep_alignment") if frame[m].notna().any()]
    mosaic = [[f"{m}|{lab}" for lab in labelings] + ["bars"] for m in measures] or [["bars"]]
    fig = style.blank_figure(3.4 * len(labelings) + 6.0, 2.6 * len(mosaic) + 0.8)
    axes = fig.subplot_mosaic(mosaic, width_ratios=[1] * len(labelings) + [1.2])
    for m, col in enumerate(measures):
        for lab in labelings:
            ax = axes[f"{col}|{lab}"]
            if lab != labelings[0]:
                ax.sharey(axes[f"{col}|{labelings[0]}"])
            for i, model in enumerate(models):
                runs = frame[(frame["model"] == model) & (frame["labels"] == lab)]
                curve = _seed_curve(curves, runs, 1, col) if len(runs) else None
                if curve is not None:
                    style.plot_curve(ax, curve, f"C{i}", end_marker=True)
            style.epoch_axis(ax)
            ax.set_title(f"{lab} labels" if m == 0 else "")
            if lab == labelings[0]:
                ax.set_ylabel(TITLES[col] + (" (last layer)" if col == "grad_alignment_w2" else ""))
            if m == len(measures) - 1:
                ax.set_xlabel(f"epoch (log; init at {style.EPOCH_ZERO:g})")
    bars = _fig5_bars(axes["bars"], frame, models)
    chance = style.chance(axes["bars"], frame)
    handles = {model: style.Line2D([], [], color=f"C{i}", lw=2) for i, model in enumerate(models)}
    spread = {**style.spread_handle(frame), **style.spread_handle(frame, "bars")}
    style.legend(fig, ("colour: model", handles), (None, {**bars, **chance, **spread}))
    style.suptitle(fig, title)
    style.save(fig, out, name)
    return Figure(name, title, "Left: in-class gradient alignment of the last layer and representation alignment "
                  "over training, true and shuffled labels side by side (each row shares its y axis); colour: model. "
                  "Right: final test accuracy per model (solid: true labels, hatched: shuffled)."
                  f"{seed_spread.note(frame, 'bands and bars')}")  # fmt: skip


def draw(frame: pd.DataFrame, curves: dict, out: Path) -> tuple[list[Figure], list[NotRun]]:
    """Every figure the runs allow, written to ``out``; and those they do not."""
    out.mkdir(parents=True, exist_ok=True)
    made, missing = [], []
    swept = frame.dropna(subset=["sigma"])
    swept = swept[swept["init"] == "normal"]
    sigma_titles = ["Fig. 1 (left) analog: accuracy against sigma", "Fig. 1 (right) analog: best test accuracy "
                    "against gradient alignment", "Fig. 2 analog: over training, per sigma",
                    "Fig. 3 analog: alignment and the compared measures"]  # fmt: skip
    if swept["sigma"].nunique() >= 2:
        colours = style.SigmaColours(swept["sigma"])
        made += [fig1_accuracy(swept, out), fig1_alignment(swept, colours, out),
                 fig2_training(swept, curves, colours, out), fig3_measures(swept, colours, out)]  # fmt: skip
    else:
        missing += [NotRun(t, "needs a sweep of two or more sigmas (init: normal)") for t in sigma_titles]
    for result in (fig4_relu_losses(swept, out), fig5_architectures(frame, curves, out)):
        (made if isinstance(result, Figure) else missing).append(result)
    return made, missing
