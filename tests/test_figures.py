"""The report's figures as a reader of the paper reads them, drawn from run
folders written here (sigma sweeps of relu and sin over several seeds, one
seed whose gradients vanished, several architectures with true and shuffled
labels), and the `compare` figures of two such sets of runs.
"""

import json
from pathlib import Path

import matplotlib.collections
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from extreme_memorization.report import compare, figures, results
from extreme_memorization.report import style as figure_style
from extreme_memorization.training import run_folder

SIGMAS = [0.001, 0.01, 0.1, 1.0, 10.0]
POINTS = [0, 1, 3, 7, 17, 45, 116, 300]  # alignment measurement epochs
EPOCHS = 300


def write_run(root: Path, activation="relu", sigma=0.1, seed=0, vanish_after=None, model="mlp", labels="true",
              init="normal", group="g", loss="cross_entropy", loss_scaling="none", offset=0.0,
              recorded: dict | None = None) -> Path:  # fmt: skip
    """One finished run's folder. ``vanish_after``: the epoch after which its
    mean gradient norm falls to 1e-9 of its initial value."""
    sigma_name = "glorot" if sigma is None else f"sigma{sigma:g}"
    step = (recorded or {}).get("first_layer_step", "plain")
    run_dir = root / group / f"{model}-{activation}-{loss}-{labels}-{loss_scaling}-{step}" / f"{sigma_name}-seed{seed}"
    run_dir.mkdir(parents=True)
    scale = 0.0 if sigma is None else np.log10(sigma)
    epoch = np.arange(1, EPOCHS + 1)
    train = np.clip(1 - 0.5 / epoch + offset, 0, 1)
    test = np.clip(0.9 - (0.2 * scale if activation == "sin" else 0) - 0.5 / epoch + offset, 0, 1)
    pd.DataFrame({"epoch": epoch, "train_loss": 1 / epoch, "train_acc": train, "test_loss": 1 / epoch,
                  "test_acc": test, "best_test_acc": np.maximum.accumulate(test)}).to_csv(run_dir / "history.csv", index=False)  # fmt: skip
    points = np.array(POINTS, dtype=float)
    norm = np.full(len(points), 2.0)
    if vanish_after is not None:
        norm[points > vanish_after] = 2e-9
    base = 0.3 + offset + (0.4 if activation == "relu" else 0.1 * (1 - scale))
    alignment = pd.DataFrame({
        "epoch": points, "rep_alignment": base + 0.01 * np.log1p(points), "grad_alignment_w1": base - 0.01 * np.log1p(points),
        "grad_alignment_w2": base, "grad_alignment_logits": base + 0.1, "gradient_diversity": 0.1 * (2 + scale),
        "cosine_stiffness": 0.5 - offset, "gradient_confusion": -(1 + scale) - offset, "grad_norm_ratio_w1": 1e-2 / (1 + points),
        "mean_grad_norm": norm,
    })  # fmt: skip
    if model != "mlp":
        alignment[["grad_alignment_w1", "grad_norm_ratio_w1"]] = np.nan
    alignment.to_csv(run_dir / "alignment.csv", index=False)
    final = alignment.iloc[-1]
    metrics = {"train_acc": train[-1], "test_acc": test[-1], "best_test_acc": test.max(),
               **{c: (None if pd.isna(final[c]) else float(final[c])) for c in alignment if c != "epoch"}}  # fmt: skip
    info = {"group": group, "dataset": "digits", "model": model, "activation": activation, "init": init,
            "sigma": sigma, "loss": loss, "loss_scaling": loss_scaling, "labels": labels, "seed": seed,
            "epochs": EPOCHS, "status": "completed", "num_classes": 10, **(recorded or {})}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(info))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def read(root: Path) -> tuple[pd.DataFrame, dict]:
    rows, curves = [], {}
    for run_dir in run_folder.run_dirs(root):
        row, history, alignment = results.read_run(run_dir)
        rows.append(row)
        curves[row["run_dir"]] = (history, alignment)
    return pd.DataFrame(rows), curves


def sweep(root: Path, seeds=(0, 1), vanished=((10.0, 0),), **kwargs) -> None:
    """relu and sin over the five sigmas; ``vanished``: the (sigma, seed) of relu
    runs whose gradients vanish after epoch 17."""
    for activation in ("relu", "sin"):
        for sigma in SIGMAS:
            for seed in seeds:
                gone = activation == "relu" and (sigma, seed) in vanished
                write_run(
                    root, activation, sigma, seed, vanish_after=17 if gone else None, offset=0.02 * seed, **kwargs
                )


@pytest.fixture
def drawn(monkeypatch):
    """The figures drawn, by file name, kept open to be read."""
    kept = {}
    monkeypatch.setattr(figure_style, "save", lambda fig, out, name: kept.__setitem__(name, fig))
    yield kept
    plt.close("all")


def draw(root: Path, drawn: dict, tmp_path: Path) -> dict:
    frame, curves = read(root)
    figures.draw(frame, curves, tmp_path / "figures")
    return drawn


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def fig2_panel(fig, row_label: str, column: str):
    """The Fig. 2 panel of a measure (row, by its y label) and a line of runs (column, by its title)."""
    axes = np.array(fig.axes).reshape(-1, len([a for a in fig.axes if a.get_title()]))
    row = next(r for r in range(axes.shape[0]) if axes[r][0].get_ylabel().startswith(row_label))
    col = next(c for c in range(axes.shape[1]) if axes[0][c].get_title() == column)
    return axes[row][col], axes[row]


def sigma_line(ax, sigma: float, colours):
    return next(
        line for line in ax.get_lines() if np.allclose(line.get_color(), colours(sigma)) and len(line.get_xdata()) > 1
    )


def drawn_lines(ax):
    """The data lines of a panel (not error bar caps or single markers)."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 1 and line.get_linestyle() != "None"]


def bands(ax):
    return [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]


def test_a_sigma_whose_one_seed_vanished_still_draws_its_gradient_alignment_from_the_other_seed(tmp_path, drawn):
    sweep(tmp_path / "runs")
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig2_training.png"]
    ax, _ = fig2_panel(fig, "gradient alignment, W1", "relu")
    line = sigma_line(ax, 10.0, figure_style.SigmaColours(SIGMAS))
    epochs, means = line.get_xdata(), line.get_ydata()
    assert max(epochs) == EPOCHS  # seed 1's gradients stay defined to the last epoch
    frame, curves = read(tmp_path / "runs")
    seeds = frame[(frame["activation"] == "relu") & (frame["sigma"] == 10.0)].set_index("seed")["run_dir"]
    by_seed = {s: curves[d][1].set_index("epoch")["grad_alignment_w1"] for s, d in seeds.items()}
    assert by_seed[0].loc[45:].isna().all()  # seed 0's gradients vanished: undefined there
    assert means[list(epochs).index(17)] == pytest.approx((by_seed[0][17] + by_seed[1][17]) / 2)
    assert means[-1] == pytest.approx(by_seed[1][EPOCHS])  # the mean over the seeds defined at the epoch


def test_a_sigma_whose_every_seed_vanished_ends_its_line_with_a_marker_named_in_the_legend(tmp_path, drawn):
    sweep(tmp_path / "runs", vanished=((10.0, 0), (10.0, 1)))
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig2_training.png"]
    ax, _ = fig2_panel(fig, "gradient alignment, W1", "relu")
    assert max(sigma_line(ax, 10.0, figure_style.SigmaColours(SIGMAS)).get_xdata()) == 17
    assert any(line.get_marker() == "X" and line.get_xdata()[0] == 17 for line in ax.get_lines())
    assert any("vanished" in t for t in legend_texts(fig))


def test_several_seeds_draw_one_mean_line_per_sigma_with_a_band_and_one_seed_none(tmp_path, drawn):
    sweep(tmp_path / "two")
    fig = draw(tmp_path / "two", drawn, tmp_path)["fig2_training.png"]
    ax, _ = fig2_panel(fig, "representation alignment", "sin")
    assert len(drawn_lines(ax)) == len(SIGMAS)
    assert len(bands(ax)) == len(SIGMAS)
    assert any("band: min to max over seeds" in t for t in legend_texts(fig))
    drawn.clear()
    sweep(tmp_path / "one", seeds=(0,), vanished=())
    fig = draw(tmp_path / "one", drawn, tmp_path)["fig2_training.png"]
    ax, _ = fig2_panel(fig, "representation alignment", "sin")
    assert not bands(ax) and not any("band" in t for t in legend_texts(fig))


def test_the_rows_of_fig2_share_their_y_limits(tmp_path, drawn):
    sweep(tmp_path / "runs")
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig2_training.png"]
    for row_label in ("train accuracy", "gradient alignment, W1", "representation alignment"):
        _, row = fig2_panel(fig, row_label, "relu")
        assert len({tuple(np.round(ax.get_ylim(), 9)) for ax in row}) == 1, row_label


def test_sigma_is_a_discrete_legend_not_a_colour_bar(tmp_path, drawn):
    sweep(tmp_path / "runs")
    made = draw(tmp_path / "runs", drawn, tmp_path)
    for name in ("fig1_best_test_vs_gradient_alignment.png", "fig2_training.png", "fig3_measures.png"):
        fig = made[name]
        assert not [ax for ax in fig.axes if ax.get_label() == "<colorbar>"], name
        texts = legend_texts(fig)
        assert [t for t in texts if t.startswith("sigma = ")] == [f"sigma = {s:g}" for s in SIGMAS], name


def test_accuracy_against_sigma_has_a_log_sigma_axis_and_bars_from_the_lowest_to_the_highest_seed(tmp_path, drawn):
    sweep(tmp_path / "runs", seeds=(0, 1, 2))
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig1_accuracy_vs_sigma.png"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    frame, _ = read(tmp_path / "runs")
    seeds = frame[(frame["activation"] == "sin") & (frame["sigma"] == 1.0)]["test_acc"]
    spans = [tuple(np.round(seg[:, 1], 9)) for c in ax.containers for seg in c.lines[2][0].get_segments()
             if np.isclose(seg[0, 0], 1.0)]  # fmt: skip
    assert tuple(np.round([seeds.min(), seeds.max()], 9)) in spans
    texts = legend_texts(fig)
    assert "train (dashed)" in texts and "test (solid)" in texts and "bars: min to max over seeds" in texts
    assert {line.get_linestyle() for line in drawn_lines(ax)} == {"--", "-", ":"}  # train, test, chance


def test_gradient_confusion_is_on_a_linear_axis_that_says_so(tmp_path, drawn):
    sweep(tmp_path / "runs")
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig3_measures.png"]
    ax = next(ax for ax in fig.axes if ax.get_ylabel().startswith("gradient confusion"))
    assert ax.get_yscale() == "linear" and "linear" in ax.get_ylabel()
    assert ax.get_xscale() == "log"  # sigma


def test_a_measure_no_run_has_draws_no_panel(tmp_path, drawn):
    sweep(tmp_path / "runs", vanished=())
    for run_dir in run_folder.run_dirs(tmp_path / "runs"):
        table = pd.read_csv(run_dir / "alignment.csv")
        table["grad_norm_ratio_w1"] = np.nan
        table.to_csv(run_dir / "alignment.csv", index=False)
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig2_training.png"]
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert len(fig.axes) == 3 * 2 and not any("||grad W1||" in label for label in labels)
    assert all(ax.get_lines() for ax in fig.axes)


def test_architectures_with_true_and_shuffled_labels_over_seeds(tmp_path, drawn):
    models = ["convnet", "densenet21", "mlp", "resnet14", "vit7"]  # any model name
    for model in models:
        for labels in ("true", "shuffled"):
            for seed in (0, 1, 2):
                write_run(tmp_path / "runs", model=model, labels=labels, seed=seed, sigma=None, init="glorot",
                          offset=0.01 * seed - (0.2 if labels == "shuffled" else 0))  # fmt: skip
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig5_architectures.png"]
    curves = [
        ax
        for ax in fig.axes
        if ax.get_title() in ("true labels", "shuffled labels") or ax.get_xlabel().startswith("epoch (log")
    ]
    assert len(curves) == 4  # two measures x (true, shuffled)
    for ax in curves:
        assert len(drawn_lines(ax)) == len(models)
        assert len(bands(ax)) == len(models) and {line.get_linestyle() for line in drawn_lines(ax)} == {"-"}
    for a, b in ((curves[0], curves[1]), (curves[2], curves[3])):
        assert a.get_ylim() == b.get_ylim()
    bars = next(ax for ax in fig.axes if ax.get_ylabel() == "final test accuracy")
    assert [t.get_text() for t in bars.get_xticklabels()] == models
    assert set(models) <= set(legend_texts(fig))


def test_only_true_labels_draw_no_shuffled_panels(tmp_path, drawn):
    for model in ("mlp", "convnet"):
        write_run(tmp_path / "runs", model=model, sigma=None, init="glorot")
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig5_architectures.png"]
    assert not [ax for ax in fig.axes if ax.get_title() == "shuffled labels"]
    assert len(fig.axes) == 3


def test_relu_losses_with_and_without_the_fix_over_seeds(tmp_path, drawn):
    for scaling in ("none", "output"):
        for loss in ("cross_entropy", "hinge", "squared"):
            for sigma in SIGMAS:
                for seed in (0, 1):
                    write_run(tmp_path / "runs", sigma=sigma, seed=seed, loss=loss, loss_scaling=scaling,
                              group=f"s4{scaling}", offset=0.01 * seed)  # fmt: skip
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig4_relu_losses.png"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2 and all(ax.get_xscale() == "log" for ax in panels)
    assert {"cross_entropy", "hinge", "squared", "bars: min to max over seeds"} <= set(legend_texts(fig))


def test_each_form_of_the_fix_gets_its_own_panel(tmp_path, drawn):
    for scaling, step in (
        ("none", "plain"),
        ("output", "plain"),
        ("normalized", "plain"),
        ("normalized", "compensated"),
    ):
        for loss in ("cross_entropy", "squared"):
            for sigma in (0.01, 10.0):
                write_run(tmp_path / "runs", sigma=sigma, loss=loss, loss_scaling=scaling, group=f"{scaling}{step}",
                          recorded={"first_layer_step": step})  # fmt: skip
    fig = draw(tmp_path / "runs", drawn, tmp_path)["fig4_relu_losses.png"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["as in the paper (loss_scaling: none)", "loss_scaling: output,\nfirst_layer_step: plain",
                      "loss_scaling: normalized,\nfirst_layer_step: plain",
                      "loss_scaling: normalized,\nfirst_layer_step: compensated"]  # fmt: skip


def test_accuracy_against_sigma_has_a_second_axis_of_the_pre_activation_scale(tmp_path, drawn):
    for sigma in SIGMAS:
        write_run(tmp_path / "runs", "sin", sigma, recorded={"input_shape": [8, 8, 1]})
    frame, curves = read(tmp_path / "runs")
    made, _ = figures.draw(frame, curves, tmp_path / "figures")
    fig = drawn["fig1_accuracy_vs_sigma.png"]
    top = [ax for ax in fig.axes[0].child_axes if "sqrt(D)" in ax.get_xlabel()]
    assert len(top) == 1 and top[0].get_xlabel() == "sigma*sqrt(D), pre-activation scale (D = 64)"
    fig.canvas.draw()  # the secondary axis takes its limits from sigma's when drawn
    assert top[0].get_xlim() == pytest.approx(tuple(8 * np.array(fig.axes[0].get_xlim())))
    caption = next(f.caption for f in made if f.name == "fig1_accuracy_vs_sigma.png")
    assert "Top axis: sigma*sqrt(D)" in caption and "8 x sigma for D = 64" in caption and "55 x sigma" in caption


def overlaps(fig, a, b) -> bool:
    renderer = fig.canvas.get_renderer()
    return a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))


def test_compare_keeps_dashed_for_train_tells_revisions_apart_by_colour_and_clears_its_title(tmp_path, drawn):
    sweep(tmp_path / "a", vanished=())
    sweep(tmp_path / "b", seeds=(0, 1, 2), vanished=())
    frames, curves = zip(*(compare.read_runs(tmp_path / side) for side in ("a", "b")))
    names = ["abc1234", "def5678"]
    compare.accuracy_figure(list(frames), names, "g", tmp_path)
    keys = sorted({k for f in frames for k in f["key"]}, key=str)
    compare.curves_figure(list(curves), names, keys, "g", tmp_path)
    for name in ("g_accuracy_vs_sigma.png", "g_curves.png"):
        fig = drawn[name]
        fig.canvas.draw()
        titles = [ax.title for ax in fig.axes if ax.get_title()] + [ax._left_title for ax in fig.axes]
        assert not any(overlaps(fig, fig._suptitle, t) for t in titles if t.get_text()), name
        texts = legend_texts(fig)
        assert {"A: abc1234", "B: def5678", "train (dashed)", "test (solid)"} <= set(texts), name
        lines = [line for ax in fig.axes for line in drawn_lines(ax)]
        colours = {line.get_color() for line in lines}
        assert colours == set(compare.COLORS), name
        assert {line.get_linestyle() for line in lines} == {"--", "-"}, name
    accuracy = drawn["g_accuracy_vs_sigma.png"]
    for ax in accuracy.axes:  # per line of runs: train dashed and test solid, in both revisions
        styles = {(line.get_color(), line.get_linestyle()) for line in drawn_lines(ax)}
        assert styles == {(c, s) for c in compare.COLORS for s in ("--", "-")}
