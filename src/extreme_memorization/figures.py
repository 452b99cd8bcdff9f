"""The paper's figures, drawn from a report's runs and named after them.

Each function draws the analog of one figure of the paper (see
SCIENCE.md) or says why it cannot: a figure whose runs do not exist is
listed as "not run". Means over seeds, with error bars (points) or bands
(curves) of one standard deviation where there are several seeds. Sigma
axes are logarithmic; legends and colour bars sit outside the data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from .files import atomic_path  # noqa: E402
from .claims import main_alignment  # noqa: E402
from .results import COMPARED  # noqa: E402

TITLES = {"rep_alignment": "representation alignment", "grad_alignment_w1": "gradient alignment, W1",
          "grad_alignment_w2": "gradient alignment, W2", "grad_alignment_logits": "gradient alignment, logits",
          **COMPARED}  # fmt: skip

LINE_KEYS = ["group", "dataset", "model", "activation", "loss", "loss_scaling", "labels"]
MARKERS = "osD^vP*Xh"
DPI = 100
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8})


@dataclasses.dataclass
class Figure:
    name: str  # file name
    title: str  # the paper's figure it corresponds to, and what it shows
    caption: str


@dataclasses.dataclass
class NotRun:
    title: str
    reason: str


def line_keys(frame: pd.DataFrame, skip=("sigma", "seed")) -> list[str]:
    """The settings that tell the lines of runs apart (those that vary)."""
    return [k for k in LINE_KEYS if k not in skip and frame[k].nunique(dropna=False) > 1]


def _label(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    named = {"labels": "labels=", "loss_scaling": "scaling=", "group": ""}
    return ", ".join(f"{named.get(k, '')}{v}" for k, v in zip(keys, values)) or "all runs"


def lines(frame: pd.DataFrame, keys: list[str]):
    if not keys:
        yield "all runs", frame
        return
    for values, sub in frame.groupby(keys, sort=True):
        yield _label(keys, values), sub


def _by_sigma(sub: pd.DataFrame, col: str) -> pd.DataFrame:
    return sub.groupby("sigma", sort=True)[col].agg(["mean", "std", "count"]).reset_index()


def _sigma_axis(ax):
    ax.set_xscale("log")
    ax.set_xlabel("sigma (stddev of W1 at initialization)")


def _figure(rows: int, cols: int, width: float, height: float, **kwargs):
    """A grid of axes laid out by matplotlib's constrained layout, so titles,
    labels, colour bars and outside legends never overlap."""
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False, layout="constrained", **kwargs)


def _save(fig, out: Path, name: str, legend_handles=None, legend_title=None) -> None:
    if legend_handles:
        fig.legend(*legend_handles, loc="outside right center", title=legend_title, frameon=False)
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)


def _symlog(axis, set_scale, limits) -> None:
    """Symmetric log scale for a measure that spans zero and several decades
    (gradient confusion): linear within 1e-3 of 0, a tick every two decades."""
    set_scale("symlog", linthresh=1e-3)
    top = max(abs(v) for v in limits)
    decades = range(-2, int(np.ceil(np.log10(max(top, 1e-2)))) + 1, 2)
    ticks = sorted([0.0, *[10.0**k for k in decades], *[-(10.0**k) for k in decades]])
    ticks = [t for t in ticks if min(limits) <= t <= max(limits)]

    def label(value, _):
        return "0" if value == 0 else f"${'-' if value < 0 else ''}10^{{{int(round(np.log10(abs(value))))}}}$"

    axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(label))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def _sigma_norm(frame: pd.DataFrame) -> LogNorm:
    sigmas = frame["sigma"].dropna()
    return LogNorm(vmin=sigmas.min(), vmax=max(sigmas.max(), sigmas.min() * 10))


def _sigma_colorbar(fig, axes, norm, shrink=0.9):
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
    fig.colorbar(mappable, ax=axes, label="sigma", shrink=shrink, aspect=25)


def _curve(curves: dict, runs: pd.DataFrame, which: int, col: str) -> pd.DataFrame | None:
    """Mean and std over seeds of one curve (0: history, 1: alignment) of ``runs``."""
    tables = [curves[d][which][["epoch", col]] for d in runs["run_dir"] if col in curves[d][which]]
    tables = [t.dropna() for t in tables if t[col].notna().any()]
    if not tables:
        return None
    joined = pd.concat(tables).groupby("epoch")[col].agg(["mean", "std"]).reset_index()
    joined["epoch"] = joined["epoch"].clip(lower=0.5)  # epoch 0 (initialization) on a log axis
    return joined


def _epoch_axis(ax):
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # short runs: no crowded minor labels


def _plot_curve(ax, curve, **style):
    ax.plot(curve["epoch"], curve["mean"], lw=1.3, **style)
    if curve["std"].notna().any():
        ax.fill_between(curve["epoch"], curve["mean"] - curve["std"], curve["mean"] + curve["std"],
                        alpha=0.2, color=style.get("color"), lw=0)  # fmt: skip


def _chance(ax, frame):
    for k in sorted(frame["num_classes"].dropna().unique()):
        ax.axhline(1.0 / k, color="grey", lw=0.8, ls=":")


def fig1_accuracy(frame: pd.DataFrame, out: Path) -> Figure:
    name = "fig1_accuracy_vs_sigma.png"
    datasets = sorted(frame["dataset"].unique())
    keys = line_keys(frame, skip=("sigma", "seed", "dataset"))
    fig, axes = _figure(1, len(datasets), 4.2 * len(datasets) + 2.2, 3.4, sharey=True)
    handles = {}
    for ax, dataset in zip(axes[0], datasets):
        sub = frame[frame["dataset"] == dataset]
        for i, (label, runs) in enumerate(lines(sub, keys)):
            color = f"C{i}"
            for col, style, kind in (("train_acc", "--", "train"), ("test_acc", "-", "test")):
                agg = _by_sigma(runs, col)
                h = ax.errorbar(agg["sigma"], agg["mean"], yerr=agg["std"].fillna(0), fmt=style + "o", ms=4,
                                capsize=2, color=color, mfc="white" if kind == "train" else color)  # fmt: skip
                handles[f"{label} ({kind})"] = h
        _chance(ax, sub)
        _sigma_axis(ax)
        ax.set_title(dataset)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("accuracy at the last epoch")
    handles["chance (1 / classes)"] = plt.Line2D([], [], color="grey", ls=":")
    fig.suptitle("Fig. 1 (left) analog: train (dashed) and test (solid) accuracy against sigma")
    _save(fig, out, name, (list(handles.values()), list(handles)))
    return Figure(name, "Fig. 1 (left) analog: accuracy against sigma",
                  "Train (dashed, open markers) and test (solid) accuracy at the last epoch against sigma, one "
                  "panel per dataset; dotted: chance.")  # fmt: skip


def _scatter_by_sigma(ax, frame, col, keys, norm, handles):
    for i, (label, runs) in enumerate(lines(frame, keys)):
        runs = runs.dropna(subset=[col])
        if runs.empty:
            continue
        agg = runs.groupby("sigma", sort=True).agg(x=(col, "mean"), xs=(col, "std"), y=("best_test_acc", "mean"),
                                                   ys=("best_test_acc", "std")).reset_index()  # fmt: skip
        ax.errorbar(agg["x"], agg["y"], xerr=agg["xs"].fillna(0), yerr=agg["ys"].fillna(0), fmt="none",
                    ecolor="grey", lw=0.8, capsize=2)  # fmt: skip
        ax.scatter(agg["x"], agg["y"], c=agg["sigma"], cmap="viridis", norm=norm, marker=MARKERS[i % len(MARKERS)],
                   s=36, edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip
        handles[label] = plt.Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls="", color="grey", mec="black")


def fig1_alignment(frame: pd.DataFrame, out: Path) -> Figure:
    name = "fig1_best_test_vs_gradient_alignment.png"
    cols = [c for c in ("grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits") if frame[c].notna().any()]
    keys = line_keys(frame)
    norm = _sigma_norm(frame)
    fig, axes = _figure(1, len(cols), 3.4 * len(cols) + 2.0, 3.4, sharey=True)
    handles = {}
    for ax, col in zip(axes[0], cols):
        _scatter_by_sigma(ax, frame, col, keys, norm, handles)
        ax.set_xlabel(f"in-class {TITLES[col]}")
        ax.axvline(0, color="grey", lw=0.6)
    axes[0][0].set_ylabel("best test accuracy")
    _sigma_colorbar(fig, axes[0].tolist(), norm)
    fig.suptitle("Fig. 1 (right) analog: best test accuracy against in-class gradient alignment")
    undefined = int(frame[cols[0]].isna().sum()) if cols else 0
    _save(fig, out, name, (list(handles.values()), list(handles)) if len(handles) > 1 else None)
    note = f" {undefined} run(s) with undefined gradient alignment (vanished gradients) are left out." if undefined else ""
    return Figure(name, "Fig. 1 (right) analog: best test accuracy against gradient alignment",
                  "Best test accuracy over training against the final in-class gradient alignment of W1, W2 and "
                  f"the logits; colour: sigma, marker: line of runs.{note}")  # fmt: skip


def fig2_training(frame: pd.DataFrame, curves: dict, out: Path) -> Figure:
    name = "fig2_training.png"
    keys = line_keys(frame)
    main = main_alignment(frame)
    panels = [(0, "train_acc", "train accuracy"), (1, "grad_norm_ratio_w1", "||grad W1|| / ||W1||"),
              (1, main, TITLES[main]), (1, "rep_alignment", "representation alignment")]
    panels = [p for p in panels if p[1] != "grad_norm_ratio_w1" or frame[p[1]].notna().any()]  # fmt: skip
    groups = list(lines(frame, keys))
    norm = _sigma_norm(frame)
    fig, axes = _figure(len(groups), len(panels), 2.8 * len(panels) + 1.0, 2.4 * len(groups) + 0.6)
    for r, (label, runs) in enumerate(groups):
        for c, (which, col, title) in enumerate(panels):
            ax = axes[r][c]
            for sigma, seeds in runs.groupby("sigma", sort=True):
                curve = _curve(curves, seeds, which, col)
                if curve is not None:
                    _plot_curve(ax, curve, color=plt.cm.viridis(norm(sigma)))
            _epoch_axis(ax)
            if col == "grad_norm_ratio_w1":
                ax.set_yscale("log")
            if r == 0:
                ax.set_title(title)
            if c == 0 and keys:
                ax.set_ylabel(label, fontweight="bold")
            if r == len(groups) - 1:
                ax.set_xlabel("epoch (0 drawn at 0.5)" if which else "epoch")
    _sigma_colorbar(fig, axes.ravel().tolist(), norm)
    fig.suptitle("Fig. 2 analog: training accuracy, relative W1 gradient and alignment over training, per sigma")
    _save(fig, out, name)
    return Figure(name, "Fig. 2 analog: over training, per sigma",
                  "Training accuracy per epoch, ||grad W1|| / ||W1|| and the in-class gradient and representation "
                  "alignment at the measurement points; colour: sigma. Gradient measures are blank where the "
                  "gradients had vanished.")  # fmt: skip


def fig3_measures(frame: pd.DataFrame, out: Path) -> Figure:
    name = "fig3_measures.png"
    measures = {main_alignment(frame): TITLES[main_alignment(frame)], "rep_alignment": TITLES["rep_alignment"],
                **COMPARED}  # fmt: skip
    measures = {k: v for k, v in measures.items() if frame[k].notna().any()}
    keys = line_keys(frame)
    norm = _sigma_norm(frame)
    fig, axes = _figure(len(measures), 2, 9.5, 2.2 * len(measures) + 0.6)
    handles = {}
    for r, (col, title) in enumerate(measures.items()):
        left, right = axes[r]
        for i, (label, runs) in enumerate(lines(frame, keys)):
            agg = _by_sigma(runs.dropna(subset=[col]), col)
            h = left.errorbar(agg["sigma"], agg["mean"], yerr=agg["std"].fillna(0), fmt="-" + MARKERS[i % 9],
                              ms=4, capsize=2, color=f"C{i}")  # fmt: skip
            handles[label] = h
        _scatter_by_sigma(right, frame, col, keys, norm, {})
        _sigma_axis(left)
        left.set_ylabel(title)
        right.set_xlabel(title)
        right.set_ylabel("best test accuracy")
        if col == "gradient_diversity":
            left.set_yscale("log")
            right.set_xscale("log")
        elif col == "gradient_confusion":
            _symlog(left.yaxis, left.set_yscale, left.get_ylim())
            _symlog(right.xaxis, right.set_xscale, right.get_xlim())
    _sigma_colorbar(fig, axes[:, 1].tolist(), norm, shrink=0.4)
    fig.suptitle("Fig. 3 analog: alignment and the compared measures against sigma (left) and best test accuracy (right)")
    _save(fig, out, name, (list(handles.values()), list(handles)) if len(handles) > 1 else None)
    return Figure(name, "Fig. 3 analog: alignment, gradient diversity, cosine stiffness, gradient confusion",
                  "Each final measure against sigma (left, one line per line of runs) and against the best test "
                  "accuracy (right; colour: sigma, marker: line of runs). Gradient measures of runs whose gradients "
                  "had vanished are left out.")  # fmt: skip


def fig4_relu_losses(frame: pd.DataFrame, out: Path) -> Figure | NotRun:
    title = "Fig. 4 analog: ReLU with cross-entropy, hinge and squared loss, without and with the proposed fixes"
    relu = frame[(frame["activation"] == "relu") & (frame["init"] == "normal") & (frame["labels"] == "true")]
    if relu["loss"].nunique() < 2 and not (relu["loss_scaling"] == "output").any():
        return NotRun(title, "needs ReLU sigma sweeps with several losses (groups section4, section4_fixes)")
    name = "fig4_relu_losses.png"
    scalings = [s for s in ("none", "output") if (relu["loss_scaling"] == s).any()]
    fig, axes = _figure(1, len(scalings), 4.4 * len(scalings) + 2.4, 3.6, sharey=True)
    handles = {}
    for ax, scaling in zip(axes[0], scalings):
        sub = relu[relu["loss_scaling"] == scaling]
        for i, (loss, runs) in enumerate(sub.groupby("loss", sort=True)):
            for col, style in (("train_acc", "--"), ("best_test_acc", "-")):
                agg = _by_sigma(runs, col)
                h = ax.errorbar(agg["sigma"], agg["mean"], yerr=agg["std"].fillna(0), fmt=style + "o", ms=4,
                                capsize=2, color=f"C{i}", mfc="white" if col == "train_acc" else f"C{i}")  # fmt: skip
                handles[f"{loss} ({'train' if col == 'train_acc' else 'best test'})"] = h
        _chance(ax, sub)
        _sigma_axis(ax)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("as in the paper (loss_scaling: none)" if scaling == "none" else "with the proposed fix (loss_scaling: output)")
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(title)
    _save(fig, out, name, (list(handles.values()), list(handles)))
    return Figure(name, title, "ReLU MLP: train accuracy at the last epoch (dashed) and best test accuracy (solid) "
                  "against sigma per loss; side by side without and with the loss scaled to the initial output scale.")


def fig5_architectures(frame: pd.DataFrame, curves: dict, out: Path) -> Figure | NotRun:
    title = "Fig. 5 analog: alignment over training and test accuracy across architectures, true and shuffled labels"
    if frame["model"].nunique() < 2 and not (frame["labels"] == "shuffled").any():
        return NotRun(title, "needs several models or shuffled labels (group section5)")
    name = "fig5_architectures.png"
    if (frame["init"] == "glorot").any():  # Section 5's setting; sigma sweeps have their own figures
        frame = frame[frame["init"] == "glorot"]
    models = sorted(frame["model"].unique())
    fig, axes = _figure(1, 3, 13.0, 3.6)
    axes = axes[0]
    handles = {}
    for i, model in enumerate(models):
        for labels, style in (("true", "-"), ("shuffled", "--")):
            runs = frame[(frame["model"] == model) & (frame["labels"] == labels)]
            for ax, col in zip(axes[:2], ("grad_alignment_w2", "rep_alignment")):
                curve = _curve(curves, runs, 1, col) if len(runs) else None
                if curve is not None:
                    _plot_curve(ax, curve, color=f"C{i}", ls=style)
                    handles[f"{model}, {labels} labels"] = plt.Line2D([], [], color=f"C{i}", ls=style)
    for ax, title_ in zip(axes[:2], ("gradient alignment (W2, last layer)", "representation alignment")):
        _epoch_axis(ax)
        ax.set_xlabel("epoch (0 drawn at 0.5)")
        ax.set_title(title_)
    width = 0.38
    for j, labels in enumerate(("true", "shuffled")):
        means = frame[frame["labels"] == labels].groupby("model")["test_acc"].agg(["mean", "std"]).reindex(models)
        axes[2].bar(np.arange(len(models)) + (j - 0.5) * width, means["mean"], width, yerr=means["std"].fillna(0),
                    color="C7" if j else "C0", label=f"{labels} labels", capsize=2)  # fmt: skip
    axes[2].set_xticks(np.arange(len(models)), models, rotation=20)
    axes[2].set_ylabel("final test accuracy")
    axes[2].legend(loc="upper right")
    _chance(axes[2], frame)
    fig.suptitle(title)
    _save(fig, out, name, (list(handles.values()), list(handles)))
    return Figure(name, title, "Left: in-class gradient alignment of the last layer and representation alignment "
                  "over training (solid: true labels, dashed: shuffled). Right: final test accuracy per model.")


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
        made += [fig1_accuracy(swept, out), fig1_alignment(swept, out), fig2_training(swept, curves, out),
                 fig3_measures(swept, out)]  # fmt: skip
    else:
        missing += [NotRun(t, "needs a sweep of two or more sigmas (init: normal)") for t in sigma_titles]
    for result in (fig4_relu_losses(swept, out), fig5_architectures(frame, curves, out)):
        (made if isinstance(result, Figure) else missing).append(result)
    return made, missing
