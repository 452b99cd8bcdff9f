"""The claims' verdicts on made-up runs: "alignment falls" is judged on the
means over seeds; a claim about networks that fit their training set is
inconclusive where a run it needs was still learning, and judged, with the
mechanism named, where a run is stuck, dead or diverged; measures are
compared on the same runs, per line of runs, with the sign the paper expects."""

import numpy as np
import pandas as pd
import pytest

from extreme_memorization.report import claims, statistics
from extreme_memorization.report.fixes import fixes_restore as restore

SWEEP = {"group": "g", "dataset": "digits", "model": "mlp", "activation": "sin", "loss": "cross_entropy",
         "loss_scaling": "none", "labels": "true", "init": "normal", "num_classes": 10}  # fmt: skip


def sweep(values: dict, column: str, **settings) -> pd.DataFrame:
    """One run per (sigma, seed): ``values`` maps sigma to one value of ``column`` per seed."""
    rows = [{**SWEEP, "train_acc": 1.0, "test_acc": 0.9, "best_test_acc": 0.9, **settings, "sigma": sigma, "seed": seed,
             column: value} for sigma, per_seed in values.items() for seed, value in enumerate(per_seed)]  # fmt: skip
    return pd.DataFrame(rows)


def falls(frame: pd.DataFrame) -> claims.Claim:
    return claims.alignment_falls(frame.assign(rep_alignment=frame["grad_alignment_w1"]))


def test_alignment_falling_to_a_floor_of_seed_noise_falls():
    # Means 0.446, -0.0036, -0.0035 (3 sigmas x 2 seeds): over the runs the seeds at the floor give tau -0.45.
    floor = sweep({0.01: [0.440, 0.452], 1: [-0.0060, -0.0012], 10: [-0.0059, -0.0011]}, "grad_alignment_w1")
    claim = falls(floor)
    assert claim.verdict == claims.HOLDS, claim.evidence
    # The two floors' ranges over the seeds overlap: a tie, so tau-b over the three means is -2 / sqrt(3 x 2).
    assert "tau of the sigma means -0.82, of the runs -0.45 [-1.00, +0.65] (6 runs, 3 sigmas)" in claim.evidence


def test_alignment_rising_clearly_at_one_sigma_does_not_fall():
    rising = sweep({0.01: [0.40, 0.41], 1: [0.10, 0.11], 10: [0.30, 0.31]}, "grad_alignment_w1")
    claim = falls(rising)
    assert claim.verdict == claims.FAILS and "tau of the sigma means -0.33" in claim.evidence


def test_tau_of_means_ties_overlapping_ranges_and_is_plain_tau_with_one_seed():
    x = np.log([0.01, 1, 10])
    assert statistics.tau_of_means(x, [0.4, 0.0, 0.0001], [np.nan] * 3, [np.nan] * 3) == pytest.approx(-1 / 3)
    assert statistics.tau_of_means(x, [0.4, 0.0, 0.0001], [0.39, -0.01, -0.01], [0.41, 0.01, 0.01]) == pytest.approx(
        -2 / np.sqrt(6))  # fmt: skip
    assert np.isnan(statistics.tau_of_means(x, [0.1, 0.1, 0.1], [0, 0, 0], [1, 1, 1]))  # all tied: no direction


def test_sin_that_never_fitted_is_inconclusive_not_a_failed_memorization():
    never = sweep({0.01: [0.15, 0.15], 10: [0.15, 0.16]}, "train_acc", test_acc=0.1)
    claim = claims.extreme_memorization(never)
    assert claim.verdict == claims.NOT_FITTED
    assert claim.evidence.startswith(
        "not fitted (train accuracy below 0.99, still learning at the end of its epochs): "
        "digits sin sigma=10 (2 of 2 runs) train 0.155 [0.150, 0.160]; not judged: "
    )
    fitted_but_generalizes = sweep({0.01: [1.0], 10: [1.0]}, "train_acc", test_acc=0.6)
    assert claims.extreme_memorization(fitted_but_generalizes).verdict == claims.FAILS


def test_a_drop_between_runs_that_did_not_fit_decides_no_claim_about_relu():
    sin = sweep({0.01: [0.9, 0.9], 10: [0.1, 0.1]}, "best_test_acc")
    relu = sweep({0.01: [0.9, 0.9], 10: [0.1, 0.1]}, "best_test_acc", activation="relu")
    relu.loc[relu["sigma"] == 10, "train_acc"] = 0.12  # relu at sigma 10 never learned: its drop is no degradation
    claim = claims.relu_degrades_less(pd.concat([sin, relu]))
    assert claim.verdict == claims.NOT_FITTED
    assert "digits relu cross_entropy sigma=10 (2 of 2 runs) train 0.120" in claim.evidence
    assert "not judged: digits cross_entropy: drop sin 0.800" in claim.evidence

    losses = pd.concat([relu.assign(train_acc=1.0, best_test_acc=0.9),
                        relu.assign(loss="squared")])  # fmt: skip
    claim = claims.relu_follows_loss(losses)
    assert claim.verdict == claims.NOT_FITTED and "digits relu squared sigma=10 (2 of 2 runs)" in claim.evidence
    assert claims.relu_follows_loss(losses.assign(train_acc=1.0)).verdict == claims.HOLDS


def test_labels_separate_only_between_networks_that_fit_their_labels():
    rows = [{**SWEEP, "init": "glorot", "sigma": np.nan, "model": model, "labels": labels, "seed": 0,
             "train_acc": 1.0 if labels == "true" or model == "convnet" else 0.5,
             "grad_alignment_w2": 0.5 if labels == "true" else 0.3} for model in ("mlp", "convnet")
            for labels in ("true", "shuffled")]  # fmt: skip
    claim = claims.labels_separate(pd.DataFrame(rows))
    assert claim.verdict == claims.NOT_FITTED
    assert claim.evidence.startswith(
        "not fitted (train accuracy below 0.9, still learning at the end of its epochs): "
        "mlp labels=shuffled (1 of 1 runs) train 0.500; not judged: "
    )
    shown = claims.markdown([claim])
    assert "| inconclusive: not fitted |" in shown and "**inconclusive" not in shown  # bold: verdicts on the claim


def relu_losses(scaling="none", step="plain", stuck_squared=False, **settings) -> pd.DataFrame:
    """ReLU with three losses over sigma 0.01 and 10, two seeds; squared at sigma 10 tests at chance."""
    frames = []
    for loss in ("cross_entropy", "hinge", "squared"):
        bad = loss == "squared"
        frame = sweep({0.01: [0.95, 0.95], 10: [0.2 if bad else 0.94, 0.2 if bad else 0.95]}, "best_test_acc",
                      activation="relu", loss=loss, loss_scaling=scaling, first_layer_step=step,
                      diagnosis="fitted", **settings)  # fmt: skip
        if stuck_squared and bad:
            top = frame["sigma"] == 10
            frame.loc[top, ["train_acc", "test_acc"]] = 0.10
            frame.loc[top, "diagnosis"] = ["stuck", "diverged"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_a_stuck_or_diverged_run_is_a_finding_judged_with_its_mechanism_not_more_epochs():
    claim = claims.relu_follows_loss(relu_losses(stuck_squared=True))
    assert claim.verdict == claims.HOLDS  # squared drops 0.75: the effect follows the loss
    assert claim.mechanism == (
        "Mechanism: optimization failure (stuck, dead or diverged: failing to train is the finding, more epochs do "
        "not change it): digits relu squared sigma=10 (1 diverged, 1 stuck of 2 runs; train 0.100 [0.100, 0.100])"
    )
    assert "more epochs decide" not in claim.evidence + claim.mechanism
    assert "<br>Mechanism: optimization failure" in claims.markdown([claim])  # on its own line


def test_a_dead_run_that_never_memorized_makes_memorization_fail_as_an_optimization_failure():
    dead = sweep({0.01: [0.15, 0.15], 10: [0.10, 0.10]}, "train_acc", test_acc=0.1, diagnosis="dead")
    claim = claims.extreme_memorization(dead)
    assert claim.verdict == claims.FAILS and "optimization failure" in claim.mechanism
    assert "digits sin sigma=10 (2 dead of 2 runs; train 0.100 [0.100, 0.100])" in claim.mechanism


def test_a_run_still_learning_leaves_its_claim_not_fitted_with_the_epochs_its_trend_needs():
    runs = relu_losses(stuck_squared=True)
    top = (runs["loss"] == "squared") & (runs["sigma"] == 10)
    runs.loc[top, "diagnosis"] = "still learning"
    runs.loc[top, "epochs_to_fit"] = [120.4, 851.2]
    claim = claims.relu_follows_loss(runs)
    assert claim.verdict == claims.NOT_FITTED
    assert claim.evidence.startswith(
        "not fitted (train accuracy below 0.9, still learning at the end of its epochs): digits relu squared "
        "sigma=10 (2 of 2 runs) train 0.100 [0.100, 0.100]; its trend needs about 852 more epochs; not judged: "
    )


def test_memorization_reads_as_memorization_beside_the_verdict():
    memorized = sweep({0.01: [1.0, 1.0], 10: [1.0, 0.995]}, "train_acc", test_acc=0.1, diagnosis="fitted")
    claim = claims.extreme_memorization(memorized)
    assert claim.verdict == claims.HOLDS
    assert claim.mechanism.startswith("Mechanism: memorization (train >= 0.99, test at chance): digits sin sigma=10")


def test_each_form_of_the_fix_is_judged_on_its_own_with_its_numbers():
    runs = pd.concat([
        relu_losses(),  # the paper's: squared drops
        relu_losses("output", stuck_squared=True),  # as worded: squared's step x alpha^2, stuck and diverged
        relu_losses("normalized").assign(best_test_acc=0.95, w1_relative_change=1e-4),  # restores, W1 frozen
        relu_losses("normalized", "compensated").assign(best_test_acc=0.95, w1_relative_change=0.3),
    ], ignore_index=True)  # fmt: skip
    fixes = restore(runs)
    assert [c.claim.split("authors): ", 1)[1].split(" (")[0] for c in fixes] == [
        "loss_scaling: output",
        "loss_scaling: normalized",
        "loss_scaling: normalized and first_layer_step: compensated",
    ]
    output, normalized, both = fixes
    assert output.verdict == claims.FAILS and "optimization failure" in output.mechanism
    assert (
        "squared drop 0.750 [0.750, 0.750] (without fix 0.750 [0.750, 0.750]), runs at the ends: 1 diverged, 2 fitted, 1 stuck"
        in output.evidence
    )
    assert normalized.verdict == claims.HOLDS and both.verdict == claims.HOLDS
    assert (
        "squared drop 0.000 [0.000, 0.000] (without fix 0.750 [0.750, 0.750]), runs at the ends: 4 fitted"
        in normalized.evidence
    )
    assert "||W1 - W1(0)|| / ||W1(0)|| 0.0001 at sigma=10" in normalized.evidence
    assert "||W1 - W1(0)|| / ||W1(0)|| 0.3 at sigma=10" in both.evidence
    paper = claims.relu_follows_loss(runs)  # judged on the paper's runs only
    assert "squared drop 0.750" in paper.evidence and paper.verdict == claims.HOLDS


def test_relu_counter_evidence_is_stated_where_alignment_falls_while_test_accuracy_stays_flat():
    relu = sweep({0.01: [0.44, 0.45], 1: [0.20, 0.21], 10: [0.01, 0.02]}, "grad_alignment_w1", activation="relu")
    relu["best_test_acc"] = relu["sigma"].map({0.01: 0.961, 1: 0.963, 10: 0.967})
    sin = sweep({0.01: [0.44, 0.45], 1: [0.20, 0.21], 10: [0.01, 0.02]}, "grad_alignment_w1")
    sin["best_test_acc"] = sin["sigma"].map({0.01: 0.96, 1: 0.5, 10: 0.1})
    claim = falls(pd.concat([relu, sin]))
    assert claim.verdict == claims.HOLDS
    assert claim.mechanism.startswith("Counter-evidence: alignment falls while best test accuracy does not fall")
    assert "grad_alignment_w1 relu/cross_entropy on digits (best test 0.961 -> 0.967)" in claim.mechanism
    assert "sin/" not in claim.mechanism  # sin's test accuracy falls with it


MEASURES = ["grad_alignment_w1", "gradient_diversity", "cosine_stiffness", "gradient_confusion"]


def tracking(activation: str, acc: dict, values: dict) -> pd.DataFrame:
    """Three seeds per sigma; ``values``: per measure, one value per sigma (seed noise added)."""
    frame = sweep({s: [a, a + 0.001, a + 0.002] for s, a in acc.items()}, "best_test_acc", activation=activation)
    for m, per_sigma in values.items():
        frame[m] = frame["sigma"].map(dict(zip(acc, per_sigma))) + 0.0001 * frame["seed"] * statistics.EXPECTED_SIGN[m]
    return frame


def test_measures_are_compared_on_the_same_runs_per_line_with_the_expected_sign():
    # Within each line alignment tracks test accuracy (tau +1); gradient diversity tracks it as expected
    # (negatively: signed +1), but pooled the two lines' accuracies interleave. Cosine stiffness and gradient
    # confusion run against test accuracy.
    sigmas = {0.01: 0.95, 0.1: 0.9, 1: 0.5, 10: 0.1}
    against = [0.1, 0.2, 0.3, 0.4]
    relu = tracking("relu", sigmas, {"grad_alignment_w1": [0.4, 0.3, 0.2, 0.1], "gradient_diversity": [0.1, 0.2, 0.3, 0.4],
                                     "cosine_stiffness": against, "gradient_confusion": against})  # fmt: skip
    sin = tracking("sin", {s: a - 0.05 for s, a in sigmas.items()},
                   {"grad_alignment_w1": [0.9, 0.8, 0.7, 0.6], "gradient_diversity": [1, 2, 3, 4],
                    "cosine_stiffness": against, "gradient_confusion": against})  # fmt: skip
    frame = pd.concat([relu, sin], ignore_index=True)
    frame.loc[0, "gradient_confusion"] = np.nan  # one run without a measure: left out for every measure
    result = claims.compare(frame)
    assert result["runs"] == 23 and [line["runs"] for line in result["lines"]] == [11, 12]
    assert result["combined"]["taus"][:2] == pytest.approx([1.0, 1.0], abs=0.02)  # diversity counted with its sign
    claim = claims.alignment_tracks_best(result, frame)
    # Tied with gradient diversity (both +1): no win, no loss, so inconclusive, not "does not hold".
    assert claim.verdict == claims.INCONCLUSIVE, claim.evidence
    assert (
        "the same 23 MLP runs (W1 is defined for the MLP only) for every measure (at the final epoch)" in claim.evidence
    )
    assert "gradient_diversity +0.00 [+0.00, +0.00]" in claim.evidence

    frame["gradient_diversity"] = -frame["gradient_diversity"]  # now against its expected direction
    claim = claims.alignment_tracks_best(claims.compare(frame), frame)
    assert claim.verdict == claims.HOLDS, claim.evidence
    frame["cosine_stiffness"] = frame["grad_alignment_w1"] + 0.001  # as good as alignment: tied again
    assert claims.alignment_tracks_best(claims.compare(frame), frame).verdict == claims.INCONCLUSIVE


def test_every_measure_tied_at_one_is_inconclusive_not_a_loss():
    acc = {0.01: 0.9, 0.1: 0.7, 1: 0.5, 10: 0.2}
    frame = tracking("sin", acc, {m: [4, 3, 2, 1] if m != "gradient_diversity" else [1, 2, 3, 4] for m in MEASURES})
    claim = claims.alignment_tracks_best(claims.compare(frame), frame)
    assert claim.verdict == claims.INCONCLUSIVE and "does not hold" not in claim.verdict


def test_a_measure_behind_another_in_every_line_does_not_hold():
    acc = {0.01: 0.9, 0.1: 0.7, 1: 0.5, 10: 0.2}
    lines = [tracking(a, acc, {"grad_alignment_w1": [1, 4, 2, 3], "gradient_diversity": [1, 2, 3, 4],
                               "cosine_stiffness": [4, 3, 2, 1], "gradient_confusion": [4, 3, 2, 1]})
             for a in ("sin", "relu", "tanh", "sigmoid", "linear")]  # fmt: skip
    frame = pd.concat(lines, ignore_index=True)
    claim = claims.alignment_tracks_best(claims.compare(frame), frame)
    assert claim.verdict == claims.FAILS, claim.evidence
    assert "behind every one in 5" in claim.evidence


def test_matched_measures_are_used_where_every_run_has_them():
    acc = {0.01: 0.9, 0.1: 0.7, 1: 0.5, 10: 0.2}
    frame = tracking("sin", acc, {m: [1, 2, 3, 4] for m in MEASURES})  # final epoch: against test accuracy
    for m in MEASURES:
        frame[f"{m}_matched"] = (frame["sigma"].map(dict(zip(acc, [4, 3, 2, 1]))) + 0.01 * frame["seed"]) * (
            statistics.EXPECTED_SIGN[m])  # fmt: skip
    result = claims.compare(frame)
    assert result["matched"] and result["combined"]["taus"] == pytest.approx([1, 1, 1, 1], abs=0.02)
    assert "(at the matched training state)" in claims.alignment_tracks_best(result, frame).evidence


def test_true_and_shuffled_labels_compare_at_matched_train_accuracy_beside_random_groups():
    rows = [{**SWEEP, "init": "glorot", "sigma": np.nan, "model": model, "labels": labels, "seed": 0,
             "train_acc": 1.0, "diagnosis": "fitted", "grad_alignment_w2": 0.4,
             "grad_alignment_w2_matched": 0.5 if labels == "true" else 0.3,
             "grad_alignment_w2_random_matched": 0.25} for model in ("mlp", "convnet")
            for labels in ("true", "shuffled")]  # fmt: skip
    claim = claims.labels_separate(pd.DataFrame(rows))
    assert claim.verdict == claims.HOLDS  # the final-epoch values (0.4 each) would not separate
    assert "grad_alignment_w2_matched true vs shuffled, at matched train accuracy" in claim.evidence
    assert (
        "convnet: 0.500 vs 0.300 (gap 0.200; random groups 0.250 vs 0.250; shuffled train acc 1.00)" in claim.evidence
    )


def test_a_model_that_failed_to_train_on_shuffled_labels_is_named_not_compared():
    rows = [{**SWEEP, "init": "glorot", "sigma": np.nan, "model": model, "labels": labels, "seed": 0,
             "train_acc": 0.1 if (model, labels) == ("densenet", "shuffled") else 1.0,
             "diagnosis": "stuck" if (model, labels) == ("densenet", "shuffled") else "fitted",
             "grad_alignment_w2": 0.5 if labels == "true" else 0.3} for model in ("mlp", "convnet", "densenet")
            for labels in ("true", "shuffled")]  # fmt: skip
    claim = claims.labels_separate(pd.DataFrame(rows))
    assert claim.verdict == claims.HOLDS and "densenet" not in claim.evidence
    assert claim.mechanism == ("Mechanism: optimization failure, not compared: densenet labels=shuffled (1 stuck of "
                               "1 runs; train 0.100)")  # fmt: skip


def write_run(path, train_acc: list, status="completed", **recorded):
    """A finished run's folder: run.json, metrics.json, history.csv, alignment.csv (old-style unless
    ``recorded`` adds the newer fields)."""
    import json

    path.mkdir(parents=True)
    diverged = status == "diverged"
    epochs = np.arange(1, len(train_acc) + 1)
    pd.DataFrame({"epoch": epochs, "train_loss": 1.0, "train_acc": train_acc, "test_loss": 1.0, "test_acc": 0.1,
                  "best_test_acc": 0.1}).to_csv(path / "history.csv", index=False)  # fmt: skip
    pd.DataFrame({"epoch": [0, len(train_acc)], "grad_alignment_w1": [0.5, 0.4],
                  "mean_grad_norm": [2.0, np.nan if diverged else 1.0]}).to_csv(path / "alignment.csv", index=False)  # fmt: skip
    info = {**SWEEP, "activation": "relu", "loss": "squared", "sigma": 10.0, "seed": 1, "status": status,
            "epochs": len(train_acc), "input_shape": [8, 8, 1], "train_examples": 1437, "test_examples": 360,
            **{k: v for k, v in recorded.items() if k in ("diagnosis", "first_layer_step", "learning_rate")}}  # fmt: skip
    metrics = {"train_acc": train_acc[-1], "test_acc": 0.1, "best_test_acc": 0.1, "grad_alignment_w1": None if
               diverged else 0.4, "mean_grad_norm": None if diverged else 1.0, "diverged": int(diverged),
               **recorded}  # fmt: skip
    (path / "run.json").write_text(json.dumps(info))
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_a_diverged_run_reads_as_diverged_never_as_predating_the_gradient_norm(tmp_path):
    from extreme_memorization.report import results, write

    row, _, _ = results.read_run(write_run(tmp_path / "old", [0.0953], status="diverged"))
    assert row["diagnosis"] == "diverged" and row["gradients"] == "diverged"
    assert "diverged" in results.GRADIENT_STATES
    note = " ".join(write._gradient_note(pd.DataFrame([row])))
    assert "predate" not in note and "1 run(s) diverged and were stopped" in note


def test_runs_made_before_the_diagnosis_get_it_from_their_history_and_new_runs_keep_theirs(tmp_path):
    from extreme_memorization.report import results

    stuck, _, _ = results.read_run(write_run(tmp_path / "stuck", [0.1002] * 10 + [0.1016] * 10))
    assert stuck["diagnosis"] == "stuck" and np.isnan(stuck["epochs_to_fit"]) and np.isnan(stuck["active_fraction"])
    assert stuck["first_layer_step"] == "plain" and stuck["input_dim"] == 64
    rising, _, _ = results.read_run(write_run(tmp_path / "rising", list(np.linspace(0.1, 0.5, 20))))
    assert rising["diagnosis"] == "still learning" and rising["epochs_to_fit"] == pytest.approx(
        19
    )  # 0.4 to go at 0.4 / 19 a step
    new, _, _ = results.read_run(write_run(
        tmp_path / "new", [0.1] * 20, diagnosis="dead", active_fraction=0.0, w1_relative_change=2e-5,
        first_layer_step="compensated", learning_rate=0.001, matched_epoch=None, grad_alignment_w1_matched=None,
        rep_alignment_random=0.02, loss_scaling="normalized"))  # fmt: skip
    assert new["diagnosis"] == "dead" and new["active_fraction"] == 0.0 and new["w1_relative_change"] == 2e-5
    assert new["first_layer_step"] == "compensated" and new["learning_rate"] == 0.001
    assert np.isnan(new["matched_epoch"]) and np.isnan(new["grad_alignment_w1_matched"])
    assert new["rep_alignment_random"] == 0.02
    for column in ("diagnosis", "active_fraction", "w1_relative_change", "loss_scaling", "first_layer_step",
                   "learning_rate", "matched_epoch"):  # fmt: skip
        assert column in results.SUMMARY_COLUMNS


def test_the_digits_prose_takes_its_sizes_from_the_runs_and_compares_sigma_on_sigma_sqrt_d():
    from extreme_memorization.report import carry_over

    runs = relu_losses(stuck_squared=True).assign(input_dim=64.0, train_examples=1437, test_examples=360, epochs=300)
    text = "\n".join(carry_over.section([claims.relu_follows_loss(runs)], runs))
    assert "1,437 training and 360 test images (64 inputs, 10 classes), 300 epochs for the MLP sigma sweeps" in text
    assert "8 x sigma here (D = 64) and 55 x sigma on CIFAR (D = 3,072)" in text
    assert "Digits' largest sigma, 10, is a pre-activation scale of 80: CIFAR's sigma = 1.4" in text
    assert "failed to train" in text and "more epochs decide" not in text


def test_the_digits_prose_reads_the_sizes_and_epochs_the_runs_recorded(tmp_path):
    """From the run folders to the text: the examples, inputs and classes of the data the runs trained on and the
    epochs of their settings, as their run.json records them (none of digits' usual numbers here)."""
    import json

    from extreme_memorization.report import carry_over, results

    rows = []
    for seed in (0, 1):
        run = write_run(tmp_path / f"seed{seed}", [0.5, 1.0])
        record = json.loads((run / "run.json").read_text())
        record.update(
            seed=seed, epochs=40, train_examples=1000, test_examples=250, num_classes=5, input_shape=[3, 3, 3]
        )
        (run / "run.json").write_text(json.dumps(record))
        rows.append(results.read_run(run)[0])
    text = carry_over.digits_facts(pd.DataFrame(rows))
    assert text.startswith("Digits here: 1,000 training and 250 test images (27 inputs, 5 classes), 40 epochs for the "
                           "MLP sigma sweeps; the paper's CIFAR-10: 50,000 training images"), text  # fmt: skip
    assert "(1,024 and 1,000; on CIFAR 1,024 and 50,000)" in text and "(D = 27)" in text


def test_the_report_stage_prints_one_line():
    from pathlib import Path

    from extreme_memorization.report import write

    verdicts = [claims.Claim("a", "s", v, "") for v in (claims.HOLDS, claims.FAILS, claims.NOT_FITTED,
                                                        claims.INCONCLUSIVE, claims.NOT_RUN)]  # fmt: skip
    assert write.summary_line("digits", verdicts, Path("reports/digits/report.md")) == (
        "report digits: 5 claims: 1 hold, 1 does not hold, 2 inconclusive, 1 not run -> reports/digits/report.md"
    )


def test_the_random_group_baseline_shows_beside_in_class_alignment_where_recorded():
    floor = sweep({0.01: [0.440, 0.452], 1: [-0.0060, -0.0012], 10: [-0.0059, -0.0011]}, "grad_alignment_w1")
    floor["grad_alignment_w1_random"] = floor["sigma"].map({0.01: 0.30, 1: 0.0, 10: 0.0})
    claim = falls(floor)
    assert "in-class 0.446 -> -0.004 vs random groups 0.300 -> 0.000 (sigma 0.01 -> 10)" in claim.evidence


def test_at_chance_is_twice_chance_and_never_more_than_halfway_to_one():
    from extreme_memorization.report.verdicts import at_chance

    assert at_chance(10) == pytest.approx(0.2) and at_chance(100) == pytest.approx(0.02)
    assert at_chance(2) == pytest.approx(0.75)  # 2 x 1/2 would call a 0.95 test accuracy "at chance"
