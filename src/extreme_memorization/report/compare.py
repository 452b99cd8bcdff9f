"""Two revisions of the project side by side, offline.

``python -m extreme_memorization compare REV_A [REV_B] [--group GROUP]``
writes ``reports/compare/compare.md``: a summary per group (runs compared,
how many changed, the largest change of each measure), ``dvc params diff``
and ``dvc metrics diff`` as Markdown tables, a per-run table, and PNG
figures overlaying the two
revisions' curves (accuracies against sigma; history and alignment over
training per setting, means over its seeds). A revision's run files are
read with ``git archive`` into a temporary folder; the workspace is never
checked out. Without REV_B the workspace is compared. Runs are matched by their identity (group and
swept settings), not by folder, so two layouts of ``runs/`` compare too. ``--group`` keeps one group's
runs, parameters and metrics.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..files import write_text
from ..training import run_folder
from . import results
from . import seed_means as seed_spread
from . import style as style

# Revisions A and B: colour, marker, line width (A wider, drawn beneath B).
# Line styles keep the report's meaning: dashed train, solid test.
COLORS = ("C0", "C1")
MARKERS = ("o", "s")
WIDTHS = (2.8, 1.2)
# The measures compared run by run (and summarized per group).
MEASURES = ["best_test_acc", "grad_alignment_w1", "rep_alignment"]


class CompareError(UserError, RuntimeError):
    """A revision that git does not know, or one without runs."""


def _run(args: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(args, capture_output=True)
    except FileNotFoundError as exc:
        raise CompareError(f"{what}: {args[0]} not found ({exc}); install it or activate the project's .venv") from exc
    if done.returncode:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"])[-1]
        raise CompareError(f"{what} failed: {last}")
    return done


def git_show(rev: str, path: str | Path) -> str:
    return _run(["git", "show", f"{rev}:{Path(path).as_posix()}"], f"git show {rev}:{path}").stdout.decode()


def describe(rev: str) -> str:
    """'abc1234 subject' for a revision; a clear error for an unknown one."""
    done = subprocess.run(["git", "log", "-1", "--format=%h %s", rev, "--"], capture_output=True, text=True)
    if done.returncode:
        raise CompareError(
            f"'{rev}' is not a git revision here; give a commit, tag, branch or HEAD~N (git log --oneline)"
        )
    return done.stdout.strip()


def extract(rev: str, folder: str, dest: Path) -> Path:
    """The files of ``folder`` at ``rev`` under ``dest`` (git archive: no checkout)."""
    listed = _run(["git", "ls-tree", "-d", "--name-only", rev, folder], f"git ls-tree {rev}").stdout.strip()
    if not listed:
        raise CompareError(f"revision {rev} has no {folder}/ folder; compare revisions that hold run results")
    archive = _run(["git", "archive", "--format=tar", rev, folder], f"git archive {rev} {folder}").stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest / folder


def _of_group(table: str, kind: str, group: str) -> str:
    """The rows of a ``dvc params|metrics diff`` table that concern ``group``: its
    parameters and those every group shares (defaults, data), or its metrics file."""
    lines = table.splitlines()
    if len(lines) < 2 or not lines[0].startswith("|"):
        return table

    def concerns(row: str) -> bool:
        path, name = (c.strip() for c in row.strip("|").split("|")[:2])
        if kind == "params":
            return name.split(".")[0] in (group, "defaults", "data")
        return path == f"reports/metrics/{group}.json"

    rows = [row for row in lines[2:] if concerns(row)]
    return "\n".join(lines[:2] + rows) if rows else f"No {kind} of group {group} changed."


def start_dvc_diff(kind: str, rev_a: str, rev_b: str | None) -> subprocess.Popen:
    """``dvc params|metrics diff`` started in the background (each takes DVC's
    seconds of start-up: the two run side by side, while the runs are read)."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    return subprocess.Popen([dvc, kind, "diff", rev_a, *([rev_b] if rev_b else []), "--md"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def dvc_diff(kind: str, rev_a: str, rev_b: str | None, group: str | None = None,
             started: subprocess.Popen | None = None) -> str:  # fmt: skip
    """``dvc params|metrics diff`` as a Markdown table (changed rows only; of ``group`` if given)."""
    proc = started or start_dvc_diff(kind, rev_a, rev_b)
    stdout, stderr = proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    table = done.stdout.strip() or f"No {kind} changed."
    if group and done.stdout.strip():
        table = _of_group(table, kind, group)
    notes = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    if done.returncode:
        table = f"`dvc {kind} diff` failed."
    if notes:
        table += "\n\nDVC said: " + " ".join(f"`{n}`" for n in notes[-3:])
    return table


def _key(row) -> tuple:
    sigma = "glorot" if pd.isna(row["sigma"]) else f"{float(row['sigma']):g}"
    return (row["group"], row["dataset"], row["model"], row["activation"], row["loss"], str(row["labels"]), sigma,
            int(row["seed"]))  # fmt: skip


def read_runs(root: Path) -> tuple[pd.DataFrame, dict]:
    """Every run under ``root``: rows keyed by identity, and their curves."""
    rows, curves = [], {}
    for run_dir in run_folder.run_dirs(root):
        if not run_folder.finished(run_dir):
            continue
        row, history, alignment = results.read_run(run_dir)
        row["key"] = _key(row)
        rows.append(row)
        curves[row["key"]] = (history, alignment)
    return pd.DataFrame(rows), curves


def _label(key: tuple) -> str:
    group, dataset, model, activation, loss, labels, sigma, seed = key
    return f"{dataset} {model} {activation} {loss} labels={labels} sigma={sigma} seed={seed}"


def _setting_labels(settings: list[tuple]) -> list[str]:
    """Short names of settings (a run's identity but its seed): the fields that vary among them."""
    fields = ["group", "dataset", "model", "activation", "loss", "labels", "sigma"]
    vary = [i for i in range(len(fields)) if len({s[i] for s in settings}) > 1] or [len(fields) - 1]
    return [", ".join(f"{fields[i]}={s[i]}" for i in vary) for s in settings]


def _revision_handles(names: list[str], markers=MARKERS) -> dict:
    return {f"{which}: {name}": style.Line2D([], [], color=color, marker=marker, lw=width)
            for which, name, color, marker, width in zip("AB", names, COLORS, markers, WIDTHS)}  # fmt: skip


def _grid(count: int, width: float, height: float, **kwargs):
    """Panels for ``count`` plots, at most three a row; the unused ones removed."""
    cols = min(count, 3)
    rows = -(-count // cols)
    fig, axes = style.figure(rows, cols, width * cols + 2.6, height * rows + 0.7, **kwargs)
    for ax in axes.ravel()[count:]:
        fig.delaxes(ax)
    return fig, axes.ravel()[:count]


@style.styled
def accuracy_figure(frames: list[pd.DataFrame], names: list[str], group: str, out: Path) -> str | None:
    """Train (dashed) and test (solid) accuracy against sigma, one panel per
    line of runs; colour and marker: revision."""
    parts = [f[(f["group"] == group) & f["sigma"].notna()] for f in frames]
    if all(p["sigma"].nunique() < 2 for p in parts):
        return None
    both = pd.concat(parts)
    keys = [k for k in ("dataset", "model", "activation", "loss", "labels", "loss_scaling", "first_layer_step",
                        "learning_rate") if k in both and both[k].nunique() > 1]  # fmt: skip
    settings = sorted(both.groupby(keys).groups) if keys else [()]
    fig, axes = _grid(len(settings), 3.6, 3.0, sharey=True)
    for ax, values in zip(axes, settings):
        values = values if isinstance(values, tuple) else (values,)
        for part, color, marker, width in zip(parts, COLORS, MARKERS, WIDTHS):
            sub = part[(part[keys] == pd.Series(dict(zip(keys, values)))).all(axis=1)] if keys else part
            for col, ls in (("train_acc", style.TRAIN), ("test_acc", style.TEST)):
                agg = seed_spread.by_sigma(sub, col)
                style.errorbar(ax, agg["sigma"], agg, color, ls, marker, lw=width)
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(keys, values)) or group)
        style.sigma_axis(ax)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("accuracy at the last epoch")
    style.legend(fig, ("colour: revision", _revision_handles(names)),
                 (None, {**style.split_handles(), **style.spread_handle(both, "bars")}))  # fmt: skip
    style.suptitle(fig, f"{group}: accuracy against sigma, A {names[0]} vs B {names[1]}")
    name = f"{group}_accuracy_vs_sigma.png"
    style.save(fig, out, name)
    return name


def _setting_curve(run_curves: dict, keys: list[tuple], which: int, col: str) -> pd.DataFrame | None:
    return seed_spread.over_training([run_curves[k][which] for k in keys if k in run_curves], col)


@style.styled
def curves_figure(curves: list[dict], names: list[str], keys: list[tuple], group: str, out: Path) -> str:
    """Per setting (a run's identity but its seed), its curves over training in
    both revisions: means over seeds with their range."""
    panels = [(0, ("train_acc", "test_acc"), "accuracy"), (1, ("grad_alignment_w1", "grad_alignment_w2"),
              "gradient alignment\n(W1, else W2)"), (1, ("rep_alignment",), "representation\nalignment")]  # fmt: skip
    settings = {}
    for key in keys:
        settings.setdefault(key[:-1], []).append(key)
    fig, axes = style.figure(len(settings), len(panels), 11.5, 2.2 * len(settings) + 0.9, sharex=True)
    for r, ((_setting, seeds), label) in enumerate(zip(settings.items(), _setting_labels(list(settings)))):
        counts = [sum(k in c for k in seeds) for c in curves]
        for c, (which, cols, title) in enumerate(panels):
            ax = axes[r][c]
            for run_curves, color, width in zip(curves, COLORS, WIDTHS):  # A wide beneath B: equal curves show both
                drawn = [(col, _setting_curve(run_curves, seeds, which, col)) for col in cols]
                drawn = [(col, curve) for col, curve in drawn if curve is not None]
                for col, curve in drawn if which == 0 else drawn[:1]:
                    style.plot_curve(ax, curve, color, style.TRAIN if col == "train_acc" else style.TEST, lw=width)
            style.epoch_axis(ax)
            ax.set_ylabel(title)
        axes[r][0].set_title(f"{label}   (seeds: A {counts[0]}, B {counts[1]})", loc="left", fontweight="bold")
    fig.supxlabel(style.EPOCH_LABEL, fontsize=9)
    style.legend(fig, ("colour: revision", _revision_handles(names, markers=("", ""))),
                 (None, {**style.split_handles(), **style.spread_handle(_seed_frame(keys))}))  # fmt: skip
    style.suptitle(fig, f"{group}: curves over training, A {names[0]} vs B {names[1]}")
    name = f"{group}_curves.png"
    style.save(fig, out, name)
    return name


def _seed_frame(keys: list[tuple]) -> pd.DataFrame:
    """The identities of ``keys`` as a table (to tell whether a setting has several seeds)."""
    return pd.DataFrame([{**dict(zip(results.IDENTITY, k[:-1])), "seed": k[-1]} for k in keys],
                        columns=[*results.IDENTITY])  # fmt: skip


def _merged(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The measures of both revisions side by side, one row per run identity (_merge: in which)."""
    return pd.merge(*(f.set_index("key")[MEASURES].astype(float) for f in frames), left_index=True, right_index=True,
                    how="outer", suffixes=("_a", "_b"), indicator=True)  # fmt: skip


def _changed(a, b):
    """Whether a measure changed: defined in one revision only, or different beyond float noise."""
    return ~(np.isnan(a) & np.isnan(b)) & ~np.isclose(a, b, rtol=1e-6, equal_nan=True)


def summary_table(frames: list[pd.DataFrame]) -> str:
    """Per group: runs in A and in B, runs in both (compared), how many of those
    changed, and per measure how many changed and the largest absolute change."""
    merged = _merged(frames)
    lines = ["| group | runs in A / B | compared | changed | " + " | ".join(MEASURES) + " |",
             "|---|---|---|---|" + "---|" * len(MEASURES)]  # fmt: skip
    for group in sorted({key[0] for key in merged.index}):
        runs = merged[[key[0] == group for key in merged.index]]
        both = runs[runs["_merge"] == "both"]
        cells, changed = [], np.zeros(len(both), bool)
        for col in MEASURES:
            a, b = both[f"{col}_a"].to_numpy(), both[f"{col}_b"].to_numpy()
            moved = _changed(a, b)
            changed |= moved
            sizes = np.abs(b - a)[moved]
            sizes = sizes[np.isfinite(sizes)]
            cells.append(f"{moved.sum()}" + (f", max {sizes.max():.3g}" if len(sizes) else ""))
        in_a, in_b = (runs["_merge"] != "right_only").sum(), (runs["_merge"] != "left_only").sum()
        lines.append(f"| {group} | {in_a} / {in_b} | {len(both)} | {changed.sum()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_table(frames: list[pd.DataFrame], names: list[str]) -> str:
    cols = MEASURES
    merged = _merged(frames)
    lines = ["| run | " + " | ".join(f"{c} {n}" for c in cols for n in names) + " |", "|---|" + "---|" * 2 * len(cols)]
    for key, row in merged.sort_index().iterrows():
        cells = []
        for c in cols:
            a, b = row[f"{c}_a"], row[f"{c}_b"]
            changed = _changed(a, b)
            fmt = [("" if np.isnan(v) else f"{v:.3g}") for v in (a, b)]
            cells += [f"**{v}**" if changed and v else v for v in fmt]
        lines.append(f"| {key[0]}: {_label(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unchanged_groups(frames: list[pd.DataFrame]) -> set[str]:
    """Groups whose runs are the same in both revisions: the same identities,
    and no measure changed beyond float noise."""
    merged = _merged(frames)
    changed = set()
    for key, row in merged.iterrows():
        if row["_merge"] != "both" or any(_changed(row[f"{c}_a"], row[f"{c}_b"]) for c in MEASURES):
            changed.add(key[0])
    return {key[0] for key in merged.index} - changed


def write(rev_a: str, rev_b: str | None, out_dir: str | Path = "reports/compare", runs: str = "runs",
          reports: str = "reports", group: str | None = None, everything: bool = False) -> Path:  # fmt: skip
    """Compare ``rev_a`` with ``rev_b`` (default: the workspace), all groups or
    ``group``; returns the page's path. Groups that did not change are in the
    summary only, their runs and figures skipped (drawing them is what takes
    time), unless ``everything``."""
    out = Path(out_dir)
    names = [describe(rev_a).split()[0], describe(rev_b).split()[0] if rev_b else "workspace"]
    if names[0] == names[1]:
        names = [f"{names[0]} ({rev_a})", f"{names[1]} ({rev_b})"]
    diffs = {kind: start_dvc_diff(kind, rev_a, rev_b) for kind in ("params", "metrics")}
    with tempfile.TemporaryDirectory() as tmp:
        roots = [extract(rev_a, runs, Path(tmp) / "a")]
        roots.append(extract(rev_b, runs, Path(tmp) / "b") if rev_b else Path(runs))
        read = [read_runs(root) for root in roots]
    frames, curves = [r[0] for r in read], [r[1] for r in read]
    if all(f.empty for f in frames):
        raise CompareError(f"no finished runs under {runs}/ in {rev_a} or {rev_b or 'the workspace'}")
    frames = [f if not f.empty else pd.DataFrame(columns=[*results.SUMMARY_COLUMNS, "key"]) for f in frames]
    if group:
        there = sorted(set(pd.concat([f["group"] for f in frames]).dropna()))
        frames = [f[f["group"] == group] for f in frames]
        if all(f.empty for f in frames):
            raise CompareError(f"no runs of group '{group}' in {rev_a} or {rev_b or 'the workspace'}; "
                               f"groups there: {', '.join(there)}")  # fmt: skip
    same = set() if everything else unchanged_groups(frames)
    summary = summary_table(frames)
    if same:
        skipped = (f"{len(same)} group{'s' if len(same) != 1 else ''} unchanged, skipped "
                   f"({', '.join(sorted(same))}); --all to redraw")  # fmt: skip
        print(skipped)
        summary += f"\n\n{skipped[0].upper()}{skipped[1:]}: their runs and figures are not repeated below."
        frames = [f[~f["group"].isin(same)] for f in frames]
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), out / "compare.md"]:
        old.unlink(missing_ok=True)
    lines = [
        f"# {names[0]} vs {names[1]}",
        "",
        f"Made by `python -m extreme_memorization compare {rev_a}{' ' + rev_b if rev_b else ''}"
        f"{f' --group {group}' if group else ''}`. "
        f"A: `{describe(rev_a)}`; B: {f'`{describe(rev_b)}`' if rev_b else 'the workspace'}. "
        "In the figures: colour is the revision (blue: A, orange: B; A drawn wider beneath B, so equal curves "
        "show both), dashed is train and solid is test accuracy; curves and points are means over seeds, "
        "with bands or bars from the lowest to the highest seed.",
        "",
        "## Summary",
        "",
        "Per group: its runs in A and in B, those in both (compared), how many of them changed, and per measure "
        "how many changed and by how much at most (absolute; a value defined in one revision only counts as "
        "changed, with no size).",
        "",
        summary,
        "",
        "## Parameters that differ (`dvc params diff`)",
        "",
        dvc_diff("params", rev_a, rev_b, group, diffs["params"]),
        "",
        "## Metrics that differ (`dvc metrics diff`)",
        "",
        dvc_diff("metrics", rev_a, rev_b, group, diffs["metrics"]),
        "",
        "## Runs (bold: changed)",
        "",
        run_table(frames, names),
        "",
    ]
    groups = sorted(set(pd.concat([f["group"] for f in frames]).dropna()))
    for group in groups:
        lines += [f"## `{group}`", ""]
        accuracy = accuracy_figure(frames, names, group, out)
        if accuracy:
            lines += [f"![{group}: accuracy against sigma]({accuracy})", ""]
        keys = sorted({k for f in frames for k in f.loc[f["group"] == group, "key"]}, key=str)
        curves_png = curves_figure(curves, names, keys, group, out)
        lines += [f"![{group}: curves over training per setting]({curves_png})", ""]
    page = out / "compare.md"
    write_text(page, "\n".join(lines))
    return page
