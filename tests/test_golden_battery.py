"""The golden battery `rekey` runs first: a tiny run per activation x loss x
loss_scaling and a ConvNet, against numbers pinned for the code the runs
were trained with (pipeline/golden.py)."""

import json

import pytest

from extreme_memorization.config.settings import ACTIVATIONS, LOSS_SCALINGS, LOSSES
from extreme_memorization.pipeline import golden


def test_the_battery_has_a_run_per_activation_loss_and_loss_scaling_and_a_convnet():
    runs = golden.battery()
    assert {(s["activation"], s["loss"], s["loss_scaling"]) for s in runs.values() if s["model"] == "mlp"} == {
        (a, loss, s) for a in ACTIVATIONS for loss in LOSSES for s in LOSS_SCALINGS
    }
    assert {s["model"] for s in runs.values()} == {"mlp", "convnet"}


def test_a_number_moved_past_one_in_a_million_is_named_and_a_rounding_is_not():
    pinned = {"mlp-sin-cross_entropy-none": {"train_loss": 2.25, "grad_alignment_w1": None, "test_acc": 0.5}}
    same = {"mlp-sin-cross_entropy-none": {"train_loss": 2.25 * (1 + 1e-8), "grad_alignment_w1": None, "test_acc": 0.5}}
    moved = {"mlp-sin-cross_entropy-none": {"train_loss": 2.25 * (1 + 1e-5), "grad_alignment_w1": 0.1, "test_acc": 0.5}}
    assert golden.differences(pinned, same) == []
    assert golden.differences(pinned, moved) == [
        f"mlp-sin-cross_entropy-none train_loss: pinned 2.25, now {2.25 * (1 + 1e-5)}",
        "mlp-sin-cross_entropy-none grad_alignment_w1: pinned None, now 0.1",
    ]


def test_without_a_battery_pinned_for_the_runs_code_there_is_no_rekey(tmp_path):
    with pytest.raises(golden.GoldenError, match="no golden battery pinned for tensorflow in golden-battery.json"):
        golden.pinned_for(tmp_path, "tensorflow", {"abc"})
    (tmp_path / golden.FILE).write_text(json.dumps({"settings": {}, "tensorflow": {"fingerprint_md5": "old"}}))
    with pytest.raises(golden.GoldenError, match="pinned for other code than the runs were trained with"):
        golden.pinned_for(tmp_path, "tensorflow", {"new"})
    golden.pinned_for(tmp_path, "tensorflow", {"old"})


@pytest.mark.slow  # two tiny trainings, twice
def test_the_pinned_numbers_hold_for_the_same_code_and_a_moved_one_is_refused(tmp_path):
    from extreme_memorization.training import fingerprint

    backend = fingerprint.backend_name()
    names = ["mlp-sin-cross_entropy-none", "mlp-relu-squared-output"]
    assert golden.write(tmp_path, names) == 2
    assert golden.check(tmp_path, backend) == 2
    pinned = json.loads((tmp_path / golden.FILE).read_text())
    pinned[backend]["numbers"][names[1]]["train_loss"] *= 1 + 1e-4
    (tmp_path / golden.FILE).write_text(json.dumps(pinned))
    with pytest.raises(golden.GoldenError, match=f"the golden battery moved under {backend} \\(1 numbers, e.g. "
                                                 f"{names[1]} train_loss"):  # fmt: skip
        golden.check(tmp_path, backend)
