"""Summary table, figures and a Markdown report for one experiment group.

Reads every run directory under ``--runs`` (``run.json`` + ``metrics.json`` +
``history.csv`` + ``alignment.csv``), keeps the runs of the group's current
sweep (a value removed from params.yaml drops out of the report), and writes:

- ``summary.csv``: one row per run;
- ``aggregate.csv``: mean and standard deviation over seeds;
- PNG figures and ``report.md`` embedding them with a results table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .config import Params  # noqa: E402

SUMMARY_COLUMNS = [
    "dataset", "model", "activation", "loss", "init", "sigma", "init_scale", "labels", "loss_scaling",
    "seed", "epochs", "status", "epochs_run",
    "train_acc", "test_acc", "best_test_acc",
    "rep_alignment", "grad_alignment_w1", "grad_alignment_w2", "grad_alignment_logits",
    "rep_alignment_batch", "grad_alignment_w1_batch", "grad_alignment_w2_batch", "grad_alignment_logits_batch",
    "gradient_diversity", "cosine_stiffness", "grad_norm_ratio_w1",
    "loss_parameter", "initial_logit_rms", "num_classes", "train_seconds", "run_dir",
]  # fmt: skip
ALIGNMENTS = {
    "rep_alignment": "representation",
    "grad_alignment_w1": "gradient, W1",
    "grad_alignment_w2": "gradient, W2",
    "grad_alignment_logits": "gradient, logits",
}
RESULT_COLUMNS = ["train_acc", "test_acc", "best_test_acc", *ALIGNMENTS]
TABLE_COLUMNS = ["dataset", "model", "activation", "loss", "labels", "sigma", "seed", "train_acc", "test_acc",
                 "best_test_acc", *ALIGNMENTS]  # fmt: skip


class ReportError(RuntimeError):
    """No results to report; the message says which command makes them."""


def _key(settings: dict) -> tuple:
    return tuple(sorted((k, str(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
                        for k, v in settings.items()))  # fmt: skip


def collect(params: Params, group: str, runs_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """One row per run of the group's current sweep, and each run's curves."""
    expected = {_key(r.as_dict()): r for r in params.group(group).runs(params.defaults)}
    rows, curves = [], {}
    for run_json in sorted(Path(runs_dir).rglob("run.json")):
        run_dir = run_json.parent
        info = json.loads(run_json.read_text())
        settings = {k: info[k] for k in next(iter(expected.values())).as_dict()} if expected else {}
        if _key(settings) not in expected:
            continue  # a run of an earlier sweep
        metrics = json.loads((run_dir / "metrics.json").read_text())
        row = {**info, **metrics, "run_dir": str(run_dir)}
        rows.append({c: (np.nan if row.get(c) is None else row.get(c)) for c in SUMMARY_COLUMNS})
        curves[str(run_dir)] = (pd.read_csv(run_dir / "history.csv"), pd.read_csv(run_dir / "alignment.csv"))
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if params.group(group).sweep and len(frame) < len(expected):
        missing = len(expected) - len(frame)
        print(f"report {group}: {missing} of {len(expected)} runs have no results yet; they are left out")
    return frame, curves


def _axes(params: Params, group: str) -> tuple[str, list[str]]:
    """x axis (sigma if swept, else the first swept setting) and the settings
    that tell the lines apart (the other swept settings but seed)."""
    sweep = [k for k, v in params.group(group).sweep.items() if k != "seed" and len(v) > 1]
    x = "sigma" if "sigma" in sweep else (sweep[0] if sweep else "sigma")
    return x, [k for k in sweep if k != x]


def aggregate(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    numeric = [c for c in RESULT_COLUMNS if c in frame]
    grouped = frame.groupby(by, sort=False, dropna=False)[numeric]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    out.insert(0, "runs", grouped.size())
    return out.reset_index()


def _series(frame: pd.DataFrame, series: list[str]):
    if not series:
        yield "", frame
        return
    for values, sub in frame.groupby(series, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        yield ", ".join(f"{k}={v}" for k, v in zip(series, values)), sub


def _line_plot(ax, frame, x, y, series, log_x, style="-", label_suffix=""):
    for name, sub in _series(frame, series):
        agg = sub.groupby(x, sort=True)[y].agg(["mean", "std"]).reset_index()
        positions = agg[x] if log_x else np.arange(len(agg))
        ax.errorbar(positions, agg["mean"], yerr=agg["std"].fillna(0), fmt=style + "o", ms=4, capsize=2,
                    label=(name or y) + label_suffix)  # fmt: skip
        if not log_x:
            ax.set_xticks(positions, [str(v) for v in agg[x]], rotation=20)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("sigma (stddev of W1)" if x == "sigma" else x)


def figures(frame: pd.DataFrame, curves: dict, x: str, series: list[str], out: Path) -> list[tuple[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    log_x = x == "sigma"
    made = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _line_plot(ax, frame, x, "train_acc", series, log_x, "--", " (train)")
    ax.set_prop_cycle(None)
    _line_plot(ax, frame, x, "test_acc", series, log_x, "-", " (test)")
    for k in sorted(frame["num_classes"].dropna().unique()):
        ax.axhline(1.0 / k, color="grey", lw=0.8, ls=":", label=f"chance, {k:g} classes")
    ax.set_ylabel("accuracy (final epoch)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Train (dashed) and test (solid) accuracy")
    made.append(("accuracy.png", "Train and test accuracy at the last epoch."))

    fig.tight_layout()
    fig.savefig(out / made[-1][0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), sharex=True)
    for ax, (col, title) in zip(axes, ALIGNMENTS.items()):
        if frame[col].notna().any():
            _line_plot(ax, frame, x, col, series, log_x)
        ax.set_title(f"in-class alignment: {title}", fontsize=9)
        ax.axhline(0, color="grey", lw=0.6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    made.append(("alignment.png", "In-class alignment of the final model over whole classes of the training set."))
    fig.savefig(out / made[-1][0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col in zip(axes, ("grad_alignment_w1", "rep_alignment")):
        if not frame[col].notna().any():
            col = "grad_alignment_w2"
        for name, sub in _series(frame, series):
            ax.scatter(sub[col], sub["best_test_acc"], label=name or None, s=25)
            for _, row in sub.iterrows():
                tag = f"{row[x]:g}" if log_x else str(row[x])
                ax.annotate(tag, (row[col], row["best_test_acc"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xlabel(f"in-class alignment ({ALIGNMENTS[col]})")
        ax.set_ylabel("best test accuracy")
    if series:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"Best test accuracy against alignment (labels: {x})", fontsize=10)
    fig.tight_layout()
    made.append(("best_test_vs_alignment.png", "Best test accuracy over training against the final alignment."))
    fig.savefig(out / made[-1][0], dpi=120)
    plt.close(fig)

    panels = [("train_acc", "history", "train accuracy"), ("test_acc", "history", "test accuracy"),
              ("grad_alignment_w1", "alignment", "gradient alignment, W1"),
              ("rep_alignment", "alignment", "representation alignment"),
              ("grad_norm_ratio_w1", "alignment", "||grad W1|| / ||W1||")]  # fmt: skip
    names = list(_series(frame, series))
    fig, axes = plt.subplots(len(names), len(panels), figsize=(3.4 * len(panels), 2.8 * len(names)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for r, (name, sub) in enumerate(names):
        values = sorted(sub[x].unique(), key=lambda v: (isinstance(v, str), v))
        for c, (col, which, title) in enumerate(panels):
            ax = axes[r][c]
            for i, value in enumerate(values):
                first = sub[sub[x] == value].iloc[0]  # seed 0 (or the first seed)
                history, align = curves[first["run_dir"]]
                table = history if which == "history" else align
                if col not in table or table[col].isna().all():
                    continue
                epochs = table["epoch"].clip(lower=0.5) if which == "alignment" else table["epoch"]
                tag = f"{value:g}" if log_x else str(value)
                ax.plot(epochs, table[col], color=cmap(i / max(1, len(values) - 1)), label=f"{x}={tag}", lw=1.2)
            ax.set_xscale("log")
            ax.set_title(f"{name}\n{title}" if name else title, fontsize=8)
            ax.set_xlabel("epoch")
            if col == "grad_norm_ratio_w1":
                ax.set_yscale("log")
        axes[r][0].legend(fontsize=6)
    fig.tight_layout()
    made.append(("training.png", "Over training (first seed): accuracies, alignment and the relative W1 gradient."))
    fig.savefig(out / made[-1][0], dpi=110)
    plt.close(fig)
    return made


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write(params: Params, group: str, runs_dir: str | Path, out_dir: str | Path) -> pd.DataFrame:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame, curves = collect(params, group, runs_dir)
    if frame.empty:
        raise ReportError(f"no finished runs of group '{group}' under {runs_dir}; run `dvc repro report@{group}`")
    x, series = _axes(params, group)
    frame = frame.sort_values([*series, x, "seed"], key=lambda s: s.map(str) if s.dtype == object else s)
    frame.to_csv(out / "summary.csv", index=False)
    agg = aggregate(frame, [*series, x])
    agg.to_csv(out / "aggregate.csv", index=False)
    made = figures(frame, curves, x, series, out)

    g = params.group(group)
    fixed = {**params.defaults, **g.run, **{k: v[0] for k, v in g.sweep.items() if len(v) == 1}}
    shown = ["dataset", "model", "activation", "init", "sigma", "loss", "labels", "loss_scaling", "learning_rate",
             "batch_size", "epochs", "width"]  # fmt: skip
    settings = ", ".join(f"{k}={fixed[k]}" for k in shown if k in fixed and k != "seed")
    seeds = g.sweep["seed"]
    table = agg[[*series, x, "runs", *[f"{c}_mean" for c in RESULT_COLUMNS]]].rename(
        columns=lambda c: c.removesuffix("_mean")
    )
    diverged = frame[frame["status"] == "diverged"]
    lines = [
        f"# Experiment group `{group}`",
        "",
        f"Made by `dvc repro report@{group}` from `params.yaml` section `{group}`; "
        f"{len(frame)} runs, seeds {seeds}. Settings: {settings}. "
        f"Sweep: {', '.join(f'{k} in {v}' for k, v in g.sweep.items() if len(v) > 1) or 'none'}.",
        "",
        "Accuracies are fractions at the last epoch (best_test_acc: best over all epochs). Alignments are the "
        "in-class alignment of the final model over whole classes of the training set (the paper's definition); "
        "the minibatch scope of the released code is in `summary.csv` (`*_batch`). Values are means over seeds; "
        "`aggregate.csv` has the standard deviations, `summary.csv` every run.",
        "",
        markdown_table(table),
        "",
    ]
    if len(diverged):
        lines += [f"Diverged (loss not finite; stopped and kept as recorded): "
                  f"{', '.join(Path(d).name for d in diverged['run_dir'])}.", ""]  # fmt: skip
    for name, caption in made:
        lines += [f"![{caption}]({name})", "", caption, ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"report {group}: {len(frame)} runs -> {out}/report.md")
    print(markdown_table(table))
    return frame


def table(report_dir: str | Path) -> str:
    """The per-run results of a written report, as a Markdown table."""
    path = Path(report_dir) / "summary.csv"
    if not path.is_file():
        raise ReportError(f"{path} not found; run `dvc repro report@{Path(report_dir).name}` first")
    frame = pd.read_csv(path, dtype={"labels": str})
    return markdown_table(frame[[c for c in TABLE_COLUMNS if c in frame]])
