"""The report of one experiment group (or of several together).

Reads the groups' finished runs (:mod:`results`) and writes:

- ``<out>/report.md``: the paper's claims with verdicts (:mod:`claims`), the
  paper's figures (:mod:`figures`), rank correlations (:mod:`statistics`) and
  the results table;
- ``<out>/summary.csv`` (one row per run), ``aggregate.csv`` (mean and
  standard deviation over seeds), ``statistics.csv``, ``claims.csv``;
- the figures in ``reports/figures/<name>/`` and a compact metrics file
  ``reports/metrics/<name>.json``, the two folders ``dvc.yaml`` declares as
  top-level plots and metrics (so DVC reads one small file per group that
  exists, never a file of a group that was not run).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..config.settings import Params
from ..errors import UserError
from ..files import atomic_path, write_text
from ..training import diagnosis
from . import carry_over as digits_and_cifar
from . import claims as claims_mod
from . import figures, results, statistics
from .lines import line_keys, main_alignment

RESULT_COLUMNS = ["train_acc", "test_acc", "best_test_acc", *results.ALIGNMENTS, *results.RANDOM_BASELINES,
                  *results.COMPARED, "active_fraction", "w1_relative_change"]  # fmt: skip
TABLE_COLUMNS = ["group", "dataset", "model", "activation", "loss", "labels", "sigma", "seed", "train_acc", "test_acc",
                 "best_test_acc", *results.ALIGNMENTS, "gradients", "diagnosis"]  # fmt: skip


class ReportError(UserError, RuntimeError):
    """No results to report; the message says which command makes them."""


def result_columns(frame: pd.DataFrame) -> list[str]:
    """RESULT_COLUMNS that some run has (the random-group baselines, active fraction and W1's change exist
    only for runs that recorded them)."""
    optional = {*results.RANDOM_BASELINES, "active_fraction", "w1_relative_change"}
    return [c for c in RESULT_COLUMNS if c not in optional or (c in frame and frame[c].notna().any())]


def _diagnoses(labels: pd.Series) -> str:
    counts = labels.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{n} {label}" for label, n in counts.sort_index().items())


def aggregate(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(by, sort=True, dropna=False)[result_columns(frame)]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    out.insert(0, "runs", grouped.size())
    out.insert(
        1,
        "vanished",
        frame.groupby(by, sort=True, dropna=False)["gradients"].agg(lambda s: int((s == "vanished").sum())),
    )
    out.insert(2, "diagnosis", frame.groupby(by, sort=True, dropna=False)["diagnosis"].agg(_diagnoses))
    return out.reset_index()


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def results_table(agg: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Means over seeds, '± std' where there are several seeds, blank where undefined."""
    table = agg[[*keys, "runs", "diagnosis"]].copy()
    for col in [c for c in RESULT_COLUMNS if f"{c}_mean" in agg]:
        mean, std = agg[f"{col}_mean"], agg[f"{col}_std"]
        table[col] = [_fmt(m) + (f" ± {s:.2g}" if n > 1 and not math.isnan(m) else "")
                      for m, s, n in zip(mean, std, agg["runs"])]  # fmt: skip
    table["gradients vanished"] = [f"{v} of {n}" if v else "" for v, n in zip(agg["vanished"], agg["runs"])]
    return table


def compact_metrics(frame: pd.DataFrame, verdicts: list, correlations: pd.DataFrame) -> dict:
    """A few numbers per group for `dvc metrics show/diff` (every per-run number is in summary.csv):
    runs, claims per verdict (inconclusive: a run the claim needs did not fit), the range of best test
    accuracy, and Kendall's tau of best test accuracy with the gradient alignment (W1, else W2) and the
    representation alignment."""
    count = {v: sum(c.verdict == v for c in verdicts) for v in claims_mod.VERDICTS}
    main = main_alignment(frame)
    everything = correlations[correlations["scope"] == "all runs"].set_index("measure") if len(correlations) else None

    def tau(measure):
        if everything is None or measure not in everything.index or math.isnan(everything.loc[measure, "tau"]):
            return None
        return round(float(everything.loc[measure, "tau"]), 4)

    return {
        "runs": int(len(frame)),
        "claims_hold": count[claims_mod.HOLDS],
        "claims_fail": count[claims_mod.FAILS],
        "claims_not_run": count[claims_mod.NOT_RUN],
        "claims_inconclusive": count[claims_mod.NOT_FITTED] + count[claims_mod.INCONCLUSIVE],
        "best_acc_min": round(float(frame["best_test_acc"].min()), 4),
        "best_acc_max": round(float(frame["best_test_acc"].max()), 4),
        f"tau_{main.removeprefix('grad_alignment_')}": tau(main),
        "tau_rep": tau("rep_alignment"),
    }


def _settings(params: Params, groups: list[str]) -> str:
    lines = []
    for name in groups:
        g = params.group(name)
        fixed = {**params.defaults, **g.run}
        shown = [k for k in ("init", "loss_scaling", "first_layer_step", "alpha_ref", "learning_rate", "batch_size",
                             "epochs", "width") if k in fixed]  # fmt: skip
        sweep = ", ".join(f"{k} {v}" for k, v in g.sweep.items() if len(v) > 1)
        single = ", ".join(f"{k}={v[0]}" for k, v in g.sweep.items() if len(v) == 1)
        lines.append(f"- `{name}`: {single}, {', '.join(f'{k}={fixed[k]}' for k in shown)}; sweep: {sweep or 'none'}.")
    return "\n".join(lines)


def _gradient_note(frame: pd.DataFrame) -> list[str]:
    states = frame["gradients"].value_counts()
    lines = [f"Gradients vanished: a run's gradient measures ({', '.join(results.GRADIENT_MEASURES)}) are "
             f"reported as undefined (blank) and left out of the statistics and claims when its mean per-example "
             f"gradient norm has fallen below {results.VANISHED_GRADIENT:g} x its value at epoch 0 "
             f"(`extreme_memorization.report.results.VANISHED_GRADIENT`)."]  # fmt: skip
    vanished = frame[frame["gradients"] == "vanished"]
    if len(vanished):
        names = ", ".join(f"{r.activation} sigma={r.sigma:g} seed {r.seed} ({r.gradient_scale:.1e})"
                          for r in vanished.itertuples())  # fmt: skip
        lines.append(f"Undefined here: {names}.")
    else:
        lines.append("No run here has vanished gradients.")
    if states.get("diverged", 0):
        lines.append(f"{states['diverged']} run(s) diverged and were stopped: no final measures (`gradients: "
                     "diverged`).")  # fmt: skip
    if states.get("unchecked", 0):
        lines.append(f"{states['unchecked']} run(s) predate the recorded gradient norm (`mean_grad_norm`): "
                     "the check is not possible for them and their measures are reported as computed.")  # fmt: skip
    return [" ".join(lines), ""]


def _diagnosis_note(frame: pd.DataFrame) -> list[str]:
    """How many runs carry each diagnosis, what each means, and the runs that did not fit."""
    counts = frame["diagnosis"].value_counts()
    head = ", ".join(f"{counts.get(label, 0)} {label}" for label in diagnosis.LABELS)
    lines = [
        f"Diagnosis of the runs (`training/diagnosis.py`, column `diagnosis` of summary.csv): {head}. "
        + " ".join(f"*{label}*: {text}." for label, text in diagnosis.EXPLAINED.items() if counts.get(label))
    ]
    for label in (diagnosis.STILL_LEARNING, *diagnosis.FAILED_TO_TRAIN):
        runs = frame[frame["diagnosis"] == label]
        if runs.empty:
            continue
        names = []
        for r in runs.itertuples():
            sigma = f" sigma={r.sigma:g}" if r.sigma == r.sigma else ""
            need = f", ~{r.epochs_to_fit:,.0f} more epochs" if label == diagnosis.STILL_LEARNING and np.isfinite(
                r.epochs_to_fit) else ""  # fmt: skip
            names.append(f"{r.model} {r.activation} {r.loss}{sigma} labels={r.labels} seed {r.seed} "
                         f"(train {r.train_acc:.3f}{need})")  # fmt: skip
        lines.append(f"{label.capitalize()}: {'; '.join(names)}.")
    return [" ".join(lines), ""]


def summary_line(name: str, verdicts: list, target: Path, missing: int = 0, expected: int = 0) -> str:
    """The one line the report stage prints: verdicts per kind and where the report is."""
    count = {v: sum(c.verdict == v for c in verdicts) for v in claims_mod.VERDICTS}
    shown = [f"{count[claims_mod.HOLDS]} hold", f"{count[claims_mod.FAILS]} does not hold",
             f"{count[claims_mod.NOT_FITTED] + count[claims_mod.INCONCLUSIVE]} inconclusive"]  # fmt: skip
    if count[claims_mod.NOT_RUN]:
        shown.append(f"{count[claims_mod.NOT_RUN]} not run")
    left = f" ({missing} of {expected} runs have no results yet; left out)" if missing else ""
    return f"report {name}: {len(verdicts)} claims: {', '.join(shown)}{left} -> {target}"


def write(params: Params, groups: list[str], runs_dirs: list[str | Path], out_dir: str | Path,
          figures_dir: str | Path | None = None, metrics_path: str | Path | None = None) -> pd.DataFrame:  # fmt: skip
    out = Path(out_dir)
    name = out.name
    figures_dir = Path(figures_dir or out.parent / "figures" / name)
    metrics_path = Path(metrics_path or out.parent / "metrics" / f"{name}.json")
    found = results.collect(params, groups, runs_dirs)
    frame = found.frame
    where = ", ".join(str(d) for d in runs_dirs)
    if frame.empty:
        target = " ".join(f"report@{g}" for g in groups)
        raise ReportError(f"no finished runs of {', '.join(groups)} under {where}; run `dvc repro {target}`")
    keys = line_keys(frame)
    frame = frame.sort_values([*keys, "sigma", "seed"], na_position="last").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False)
    agg = aggregate(frame, [*keys, "sigma"])
    with atomic_path(out / "aggregate.csv") as tmp:
        agg.to_csv(tmp, index=False)
    correlations = statistics.rank_correlations(frame)
    with atomic_path(out / "statistics.csv") as tmp:
        correlations.to_csv(tmp, index=False)
    comparison = claims_mod.compare(frame)
    verdicts = claims_mod.judge(frame, comparison)
    with atomic_path(out / "claims.csv") as tmp:
        claims_mod.frame_of(verdicts).to_csv(tmp, index=False)
    made, missing = figures.draw(frame, found.curves, figures_dir)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(metrics_path, json.dumps(compact_metrics(frame, verdicts, correlations), indent=2) + "\n")

    relative = Path(os.path.relpath(figures_dir, out))
    diverged = frame[frame["status"] == "diverged"]
    lines = [
        f"# Report: {', '.join(f'`{g}`' for g in groups)}",
        "",
        f"Made by `python -m extreme_memorization report {' '.join(groups)}` (`dvc repro "
        f"{f'report@{groups[0]}' if len(groups) == 1 else f'report-{name}'}`) from "
        f"{len(frame)} of the {found.expected} runs of `params.yaml` under {where}:",
        "",
        _settings(params, groups),
        "",
        "## The paper's claims on these runs",
        "",
        claims_mod.markdown(verdicts),
        "",
        f"Thresholds (`claims.py`): {claims_mod.THRESHOLDS}",
        "",
        *_diagnosis_note(frame),
        *_gradient_note(frame),
        *(digits_and_cifar.section(verdicts, frame) if set(frame["dataset"]) == {"digits"} else []),
        "## Figures",
        "",
    ]
    for fig in made:
        lines += [f"### {fig.title}", "", f"![{fig.title}]({(relative / fig.name).as_posix()})", "", fig.caption, ""]
    if missing:
        lines += ["Not run (their runs are not in this report):", ""]
        lines += [f"- {m.title}: {m.reason}." for m in missing] + [""]
    lines += ["## How strongly each measure tracks generalization", "", statistics.statement(), ""]
    lines += [statistics.markdown(correlations) if len(correlations) else "No measure is defined on enough runs.", ""]
    if comparison is not None:
        which = "at the matched training state" if comparison["matched"] else "at the final epoch"
        lines += [f"Per line of runs, on the same {comparison['runs']} runs for every measure ({which}): Kendall's "
                  "tau between best test accuracy and each measure, signed by the direction the paper expects "
                  "(+: higher with better test accuracy; -: lower), and the gradient alignment's lead over each "
                  f"other measure with its {statistics.CONFIDENCE:.0%} paired cluster bootstrap interval (seeds "
                  "resampled within a line; lines and seeds for the combined row).", "",
                  statistics.comparison_markdown(comparison), ""]  # fmt: skip
    lines += [
        "## Results",
        "",
        "Accuracies are fractions at the last epoch (best_test_acc: best over all epochs). Measures are those of "
        "the final model, in-class over whole classes of the training set (the paper's definition); the minibatch "
        "scope of the released code is in `summary.csv` (`*_batch`). Means over seeds (± one standard deviation "
        "where there are several); blank: undefined (see above).",
        "",
        markdown_table(results_table(agg, [*keys, "sigma"])),
        "",
    ]
    if len(diverged):
        lines += [f"Diverged (loss not finite; stopped and kept as recorded): "
                  f"{', '.join(Path(d).name for d in diverged['run_dir'])}.", ""]  # fmt: skip
    write_text(out / "report.md", "\n".join(lines))
    print(summary_line(name, verdicts, out / "report.md", found.expected - len(frame), found.expected))
    return frame


def table(frame: pd.DataFrame) -> str:
    """Per-run results (a summary.csv) as a Markdown table."""
    return markdown_table(frame[[c for c in TABLE_COLUMNS if c in frame]])


def read_summaries(reports: str | Path, groups: list[str], rev: str | None = None) -> pd.DataFrame:
    """The summary.csv of each group, from the workspace or from a git revision."""
    from .compare import git_show

    frames = []
    for group in groups:
        path = Path(reports) / group / "summary.csv"
        if rev is None:
            if not path.is_file():
                raise ReportError(f"{path} not found; run `dvc repro report@{group}` first")
            frames.append(pd.read_csv(path, dtype={"labels": str}))
        else:
            import io

            frames.append(pd.read_csv(io.StringIO(git_show(rev, path)), dtype={"labels": str}))
    return pd.concat(frames, ignore_index=True)
