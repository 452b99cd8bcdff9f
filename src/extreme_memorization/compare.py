"""Two revisions of the project side by side, offline.

``python -m extreme_memorization compare REV_A [REV_B]`` writes
``reports/compare/compare.md``: ``dvc params diff`` and ``dvc metrics diff``
as Markdown tables, a per-run table, and PNG figures overlaying the two
revisions' curves (accuracies against sigma; history and alignment over
training per run). A revision's run files are read with ``git archive``
into a temporary folder; the workspace is never checked out. Without REV_B
the workspace is compared. Runs are matched by their identity (group and
swept settings), not by folder, so two layouts of ``runs/`` compare too.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import results  # noqa: E402
from .files import atomic_path, write_text  # noqa: E402

COLORS = ("C0", "C1")  # revision A, revision B
DPI = 100


class CompareError(RuntimeError):
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
        raise CompareError(f"'{rev}' is not a git revision here; give a commit, tag, branch or HEAD~N (git log --oneline)")
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


def dvc_diff(kind: str, rev_a: str, rev_b: str | None) -> str:
    """``dvc params|metrics diff`` as a Markdown table (changed rows only)."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    done = subprocess.run([dvc, kind, "diff", rev_a, *([rev_b] if rev_b else []), "--md"], capture_output=True, text=True)
    table = done.stdout.strip() or f"No {kind} changed."
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
    for run_dir in results.run_dirs(root):
        if not (run_dir / "metrics.json").is_file():
            continue
        row, history, alignment = results.read_run(run_dir)
        row["key"] = _key(row)
        rows.append(row)
        curves[row["key"]] = (history, alignment)
    return pd.DataFrame(rows), curves


def _label(key: tuple) -> str:
    group, dataset, model, activation, loss, labels, sigma, seed = key
    return f"{dataset} {model} {activation} {loss} labels={labels} sigma={sigma} seed={seed}"


def accuracy_figure(frames: list[pd.DataFrame], names: list[str], group: str, out: Path) -> str | None:
    parts = [f[(f["group"] == group) & f["sigma"].notna()] for f in frames]
    if all(p["sigma"].nunique() < 2 for p in parts):
        return None
    keys = [k for k in ("dataset", "model", "activation", "loss", "labels", "loss_scaling")
            if pd.concat(parts)[k].nunique() > 1]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for part, name, color in zip(parts, names, COLORS):
        for i, (values, sub) in enumerate(part.groupby(keys, sort=True) if keys else [("", part)]):
            values = values if isinstance(values, tuple) else (values,)
            label = f"{name}: {', '.join(map(str, values))}" if keys else name
            for ax, col in zip(axes, ("train_acc", "test_acc")):
                agg = sub.groupby("sigma", sort=True)[col].mean()
                ax.plot(agg.index, agg.values, marker="os^Dv"[i % 5], color=color, ls=["-", "--", ":", "-."][i % 4],
                        label=label if col == "train_acc" else None, ms=4)  # fmt: skip
    for ax, title in zip(axes, ("train accuracy (last epoch)", "test accuracy (last epoch)")):
        ax.set_xscale("log")
        ax.set_xlabel("sigma")
        ax.set_title(title)
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{group}: accuracy against sigma, {names[0]} vs {names[1]}")
    name = f"{group}_accuracy_vs_sigma.png"
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def curves_figure(curves: list[dict], names: list[str], keys: list[tuple], group: str, out: Path) -> str:
    panels = [(0, ("train_acc", "test_acc"), "accuracy (train dashed, test solid)"),
              (1, ("grad_alignment_w1", "grad_alignment_w2"), "gradient alignment (W1, else W2)"),
              (1, ("rep_alignment",), "representation alignment")]  # fmt: skip
    fig, axes = plt.subplots(len(keys), len(panels), figsize=(11, 2.3 * len(keys) + 0.6), squeeze=False)
    for r, key in enumerate(keys):
        for c, (which, cols, title) in enumerate(panels):
            ax = axes[r][c]
            for run_curves, color, width in zip(curves, COLORS, (2.6, 1.2)):  # A wide below B: both show
                if key not in run_curves:
                    continue
                table = run_curves[key][which]
                present = [col for col in cols if col in table and table[col].notna().any()]
                for col in present if which == 0 else present[:1]:
                    ax.plot(table["epoch"].clip(lower=0.5), table[col], color=color, lw=width,
                            ls="--" if col == "train_acc" else "-")  # fmt: skip
            ax.set_xscale("log")
            ax.set_title(f"{_label(key)}\n{title}" if c == 0 else title, fontsize=8, loc="left" if c == 0 else "center")
    axes[-1][0].set_xlabel("epoch")
    handles = [plt.Line2D([], [], color=color) for color in COLORS]
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    name = f"{group}_curves.png"
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return name


def run_table(frames: list[pd.DataFrame], names: list[str]) -> str:
    cols = ["best_test_acc", "grad_alignment_w1", "rep_alignment"]
    merged = pd.merge(*(f.set_index("key")[cols] for f in frames), left_index=True, right_index=True, how="outer",
                      suffixes=("_a", "_b"))  # fmt: skip
    lines = ["| run | " + " | ".join(f"{c} {n}" for c in cols for n in names) + " |", "|---|" + "---|" * 2 * len(cols)]
    for key, row in merged.sort_index().iterrows():
        cells = []
        for c in cols:
            a, b = row[f"{c}_a"], row[f"{c}_b"]
            changed = not (np.isnan(a) and np.isnan(b)) and not np.isclose(a, b, rtol=1e-6, equal_nan=True)
            fmt = [("" if np.isnan(v) else f"{v:.3g}") for v in (a, b)]
            cells += [f"**{v}**" if changed and v else v for v in fmt]
        lines.append(f"| {key[0]}: {_label(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(rev_a: str, rev_b: str | None, out_dir: str | Path = "reports/compare", runs: str = "runs",
          reports: str = "reports") -> Path:  # fmt: skip
    """Compare ``rev_a`` with ``rev_b`` (default: the workspace); returns the page's path."""
    out = Path(out_dir)
    names = [describe(rev_a).split()[0], describe(rev_b).split()[0] if rev_b else "workspace"]
    if names[0] == names[1]:
        names = [f"{names[0]} ({rev_a})", f"{names[1]} ({rev_b})"]
    with tempfile.TemporaryDirectory() as tmp:
        roots = [extract(rev_a, runs, Path(tmp) / "a")]
        roots.append(extract(rev_b, runs, Path(tmp) / "b") if rev_b else Path(runs))
        read = [read_runs(root) for root in roots]
    frames, curves = [r[0] for r in read], [r[1] for r in read]
    if all(f.empty for f in frames):
        raise CompareError(f"no finished runs under {runs}/ in {rev_a} or {rev_b or 'the workspace'}")
    frames = [f if not f.empty else pd.DataFrame(columns=[*results.SUMMARY_COLUMNS, "key"]) for f in frames]
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), out / "compare.md"]:
        old.unlink(missing_ok=True)
    lines = [
        f"# {names[0]} vs {names[1]}",
        "",
        f"Made by `python -m extreme_memorization compare {rev_a}{' ' + rev_b if rev_b else ''}`. "
        f"A: `{describe(rev_a)}`; B: {f'`{describe(rev_b)}`' if rev_b else 'the workspace'}. "
        f"Blue ({COLORS[0]}): A, orange ({COLORS[1]}): B.",
        "",
        "## Parameters that differ (`dvc params diff`)",
        "",
        dvc_diff("params", rev_a, rev_b),
        "",
        "## Metrics that differ (`dvc metrics diff`)",
        "",
        dvc_diff("metrics", rev_a, rev_b),
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
        lines += [f"![{group}: curves per run]({curves_png})", ""]
    page = out / "compare.md"
    write_text(page, "\n".join(lines))
    return page
