"""How every figure of the project looks: one meaning per visual cue.

- Line style: dashed is train, solid is test (or the only curve), in the
  report and in ``compare`` alike.
- Colour by sigma: one colour per swept sigma, named in a discrete legend
  ("sigma = 0.001"), never a continuous colour bar.
- Spread over seeds: a band around a curve, or error bars around a point,
  from the lowest to the highest seed (:mod:`seed_spread`); drawn only
  where two or more seeds are defined.
- Layout: matplotlib's constrained layout, the title in ``fig.suptitle``
  and legends outside the axes, so nothing overlaps.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.figure
import matplotlib.lines
import matplotlib.patches
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ..files import atomic_path
from . import seed_means as seed_spread

DPI = 100
MARKERS = "osD^vP*Xhp<>d8H"  # distinct for up to 15 lines of runs
TRAIN, TEST = "--", "-"  # line styles: train accuracy, test accuracy (or the only curve)
EPOCH_ZERO = 0.5  # where epoch 0 (initialization) is drawn on a log epoch axis
EPOCH_LABEL = f"epoch (log; initialization drawn at {EPOCH_ZERO:g})"
# The figures' font sizes, set only while a figure is drawn (:func:`styled`):
# importing the report changes no matplotlib setting of the process, and the
# figures are plain Figure objects (no pyplot, so no GUI backend is chosen).
RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "legend.title_fontsize": 8}
Figure, Line2D, Rectangle = matplotlib.figure.Figure, matplotlib.lines.Line2D, matplotlib.patches.Rectangle


def styled(draw):
    """``draw`` run under the figures' settings (:data:`RC`)."""

    @functools.wraps(draw)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)

    return wrapped


def blank_figure(width: float, height: float):
    """A figure under constrained layout (titles, labels and outside legends
    never overlap) on its own Agg canvas: no pyplot, no global backend."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure(rows: int, cols: int, width: float, height: float, **kwargs):
    """A grid of axes on a :func:`blank_figure`."""
    fig = blank_figure(width, height)
    return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


LEGEND_ROW = 0.22  # inches per legend line at matplotlib's default font size


def legend(fig, *sections: tuple[str | None, dict]) -> None:
    """One legend outside the axes, right of them, from sections
    ``(heading or None, {label: handle})``; headings in bold."""
    handles, labels, headings = [], [], set()
    for heading, entries in sections:
        if not entries:
            continue
        if handles:
            handles.append(Line2D([], [], ls="")), labels.append(" ")
        if heading:
            headings.add(len(labels))
            handles.append(Line2D([], [], ls="")), labels.append(heading)
        handles += list(entries.values())
        labels += list(entries)
    if not handles:
        return
    # A legend taller than the figure would be cut off: the figure grows to hold it.
    rows = sum(1 + label.count("\n") for label in labels)
    fig.set_figheight(max(fig.get_figheight(), LEGEND_ROW * rows + 0.9))
    drawn = fig.legend(handles, labels, loc="outside right center", frameon=False, alignment="left")
    for i, text in enumerate(drawn.get_texts()):
        if i in headings:
            text.set_fontweight("bold")


def suptitle(fig, text: str) -> None:
    """The figure's title, wrapped to the figure's width."""
    chars = max(int(fig.get_figwidth() * 11), 30)
    fig.suptitle(textwrap.fill(text, chars))


def save(fig, out: Path, name: str) -> None:
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=DPI)


def marker(i: int) -> str:
    """The marker of the i-th line of runs."""
    return MARKERS[i % len(MARKERS)]


def sigma_label(sigma: float) -> str:
    return f"sigma = {sigma:g}"


class SigmaColours:
    """One colour per sigma of a sweep, the same in every figure drawn from it."""

    def __init__(self, sigmas):
        self.sigmas = sorted({float(s) for s in sigmas if pd.notna(s)})
        shades = matplotlib.colormaps["viridis"](
            np.linspace(0.0, 0.88, max(len(self.sigmas), 2))
        )  # the palest yellow is hard to see
        self.colours = {s: shades[i] for i, s in enumerate(self.sigmas)}

    def __call__(self, sigma: float):
        return self.colours[float(sigma)]

    def handles(self, kind: str = "line", notes: dict | None = None) -> dict:
        """Legend entries "sigma = 0.001", each with its ``notes`` (by sigma) in brackets."""
        notes = notes or {}
        label = {s: sigma_label(s) + (f" ({notes[s]})" if s in notes else "") for s in self.sigmas}
        if kind == "line":
            return {label[s]: Line2D([], [], color=c, lw=2) for s, c in self.colours.items()}
        return {label[s]: Line2D([], [], color=c, marker="o", ls="", mec="black", mew=0.5)
                for s, c in self.colours.items()}  # fmt: skip


def spread_handle(runs: pd.DataFrame, kind: str = "band") -> dict:
    """The legend entry that says what the bands or error bars are; none
    where every setting of ``runs`` has a single seed."""
    if not seed_spread.several_seeds(runs):
        return {}
    if kind == "band":
        return {f"band: {seed_spread.SPREAD}": Rectangle((0, 0), 1, 1, color="grey", alpha=0.25, lw=0)}
    return {f"bars: {seed_spread.SPREAD}": Line2D([], [], color="grey", marker="|", ls="", ms=10)}


def split_handles() -> dict:
    return {"train (dashed)": Line2D([], [], color="black", ls=TRAIN),
            "test (solid)": Line2D([], [], color="black", ls=TEST)}  # fmt: skip


def sigma_axis(ax) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("sigma (stddev of W1 at init, log)")


def log_measure_axis(axis) -> None:
    """A log axis for a measure spanning a decade or two: ticks at 1, 2 and 5
    times powers of ten, written as plain numbers."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def epoch_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # short runs: no crowded minor labels


def plot_curve(ax, curve: pd.DataFrame, color, ls: str = TEST, end_marker: bool = False, lw: float = 1.4) -> None:
    """A mean curve over seeds with its band where two or more seeds are defined;
    with ``end_marker``, an x where the curve stops because every seed's measure
    became undefined (vanished gradients)."""
    epoch = curve["epoch"].clip(lower=EPOCH_ZERO)
    ax.plot(epoch, curve["mean"], lw=lw, color=color, ls=ls)
    if curve["lo"].notna().any():
        ax.fill_between(epoch, curve["lo"], curve["hi"], color=color, alpha=0.2, lw=0)
    if end_marker and curve.attrs.get("ended"):
        ax.plot(epoch.iloc[-1], curve["mean"].iloc[-1], marker="X", ms=8, color=color, mec="black", mew=0.6, ls="")


def vanished_handle() -> dict:
    return {"X: the gradients of every seed\nvanished after this point":
            Line2D([], [], marker="X", ms=8, color="grey", mec="black", mew=0.6, ls="")}  # fmt: skip


def errorbar(ax, x, agg: pd.DataFrame, color, ls: str = TEST, marker: str = "o", **kwargs):
    """Means with error bars from the lowest to the highest seed."""
    return ax.errorbar(x, agg["mean"], yerr=seed_spread.errors(agg), fmt=ls + marker, ms=4, capsize=2.5, color=color,
                       mfc="white" if ls == TRAIN else color, **kwargs)  # fmt: skip


def chance(ax, frame: pd.DataFrame) -> dict:
    for k in sorted(frame["num_classes"].dropna().unique()):
        ax.axhline(1.0 / k, color="grey", lw=0.8, ls=":")
    return {"chance (1 / classes)": Line2D([], [], color="grey", ls=":")}


def blank(ax, text: str) -> None:
    """A panel without data: no axes, a short note saying why."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey", wrap=True)


def wrap(label: str, width: int = 28) -> str:
    """A long panel title on several lines, broken after commas."""
    parts, lines = label.split(", "), [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part) + 2 > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] = f"{lines[-1]}, {part}" if lines[-1] else part
    return "\n".join(lines)


def input_dim(runs: pd.DataFrame) -> float | None:
    """D, the inputs per image of ``runs`` when they share one (per-image standardization: ||x||^2 = D)."""
    dims = runs["input_dim"].dropna().unique() if "input_dim" in runs else []
    return float(dims[0]) if len(dims) == 1 else None


def preactivation_axis(ax, runs: pd.DataFrame) -> None:
    """A top axis of sigma*sqrt(D), the first layer's pre-activation scale: sigmas compare across datasets
    only on it (digits D = 64: 8 sigma; CIFAR D = 3,072: 55 sigma)."""
    dim = input_dim(runs)
    if dim:
        root = float(np.sqrt(dim))
        top = ax.secondary_xaxis("top", functions=(lambda s: s * root, lambda p: p / root))
        top.set_xlabel(f"sigma*sqrt(D), pre-activation scale (D = {dim:.0f})")


def preactivation_note(frame: pd.DataFrame) -> str:
    dims = sorted({float(d) for d in frame["input_dim"].dropna()}) if "input_dim" in frame else []
    if not dims:
        return ""
    shown = ", ".join(f"{np.sqrt(d):.0f} x sigma for D = {d:.0f}" for d in dims)
    return (
        " Top axis: sigma*sqrt(D), the stddev of a first-layer pre-activation (per-image standardization makes "
        f"||x||^2 = D): {shown}; on CIFAR (D = 3,072) it is 55 x sigma, so compare datasets on it, not on sigma."
    )
