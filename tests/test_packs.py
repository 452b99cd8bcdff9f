"""Run packs: runs that differ only in sigma and seed train together as one
model with a leading run axis, and each member ends exactly where it would
have ended alone."""

import json
from pathlib import Path

import numpy as np
import pytest

from extreme_memorization.config import packs
from extreme_memorization.config import settings as config
from extreme_memorization.config.settings import make_run
from extreme_memorization.core import backend, loops, losses
from extreme_memorization.training import train as training

RTOL = 1e-5


def member_runs(run_settings, sigmas_seeds, **changes):
    return [make_run({**run_settings, **changes, "sigma": s, "seed": seed}) for s, seed in sigmas_seeds]


def weights(path: Path) -> list[np.ndarray]:
    import h5py

    out = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.append(np.asarray(obj)) if hasattr(obj, "shape") else None)
    return out


def assert_same_run(a: Path, b: Path):
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma.keys() == mb.keys()
    for key in ma:
        if ma[key] is None or mb[key] is None or isinstance(ma[key], str):
            assert ma[key] == mb[key], key
        else:
            assert ma[key] == pytest.approx(mb[key], rel=RTOL, abs=1e-7), key
    for name in ("history.csv", "alignment.csv"):
        ta = np.genfromtxt(a / name, delimiter=",", skip_header=1)
        tb = np.genfromtxt(b / name, delimiter=",", skip_header=1)
        np.testing.assert_allclose(ta, tb, rtol=RTOL, atol=1e-7, err_msg=name)
    for wa, wb in zip(weights(a / "model.weights.h5"), weights(b / "model.weights.h5"), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=RTOL, atol=1e-6)


def test_a_pack_of_three_ends_where_each_run_ends_alone(tmp_path, run_settings, digits_npz):
    runs = member_runs(run_settings, [(0.01, 0), (1.0, 1), (10.0, 2)], epochs=3, width=32, alignment_points=3)
    pack_dirs = [tmp_path / "pack" / packs.run_name(r) for r in runs]
    training.train_unit(runs, "test", digits_npz, pack_dirs)
    for run, packed in zip(runs, pack_dirs):
        training.train(run, "test", digits_npz, tmp_path / "solo" / packs.run_name(run))
        assert_same_run(packed, tmp_path / "solo" / packs.run_name(run))
    info = json.loads((pack_dirs[0] / "run.json").read_text())
    assert info["pack_size"] == 3 and info["status"] == "completed"


def test_a_diverging_member_is_frozen_and_does_not_change_the_others(tmp_path, run_settings, digits_npz, capsys):
    settings = dict(epochs=4, width=32, activation="linear", loss="squared", learning_rate=0.1, alignment_points=2)
    runs = member_runs(run_settings, [(0.01, 0), (1.0, 0)], **settings)  # sigma = 1 blows up at this rate
    dirs = [tmp_path / "pack" / packs.run_name(r) for r in runs]
    healthy, diverged = training.train_unit(runs, "test", digits_npz, dirs)
    assert diverged["diverged"] == 1 and diverged["epochs_run"] < 4
    assert healthy["diverged"] == 0 and healthy["epochs_run"] == 4
    info = json.loads((dirs[1] / "run.json").read_text())
    assert info["status"] == "diverged" and info["diverged_reason"]
    assert "the other runs go on" in capsys.readouterr().err
    training.train(runs[0], "test", digits_npz, tmp_path / "alone")
    assert_same_run(dirs[0], tmp_path / "alone")


def test_a_run_whose_hidden_units_all_die_stops_and_is_recorded_as_dead(tmp_path, run_settings, digits_npz, capsys):
    """learning_rate 100, relu, sigma 10: a few giant steps switch every ReLU
    off on the training set and the loss sits at a finite value, log 10 with
    all-zero logits; nothing can change any more. Recorded as dead (a finding),
    neither 'completed' nor 'diverged'."""
    run = make_run({**run_settings, "epochs": 5, "width": 32, "activation": "relu", "sigma": 10.0,
                    "learning_rate": 100.0, "alignment_points": 0})  # fmt: skip
    metrics = training.train(run, "test", digits_npz, tmp_path)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == info["diagnosis"] == metrics["diagnosis"] == "dead"
    assert metrics["diverged"] == 0 and metrics["active_fraction"] == 0.0 and metrics["epochs_run"] < 5
    assert info["stopped_reason"] == training.DEAD_REASON and info["stopped_at_epoch"] == metrics["epochs_run"]
    assert info["diverged_at_epoch"] is None and info["diverged_reason"] is None
    assert metrics["train_loss"] == pytest.approx(np.log(10), rel=1e-5)
    out = capsys.readouterr()
    assert f"died at epoch {metrics['epochs_run']}: every hidden unit is dead" in out.err
    assert f"gradient alignment W1 undefined (every hidden unit dead at epoch {metrics['epochs_run']})" in out.out


def test_the_packed_step_is_plain_sgd_on_each_members_mean_loss(run_settings):
    """The closed-form update of the pack equals autodiff of the summed mean
    losses, member by member (sin, hinge: a loss with kinks)."""
    from keras import ops

    runs = member_runs(run_settings, [(0.5, 0), (2.0, 1)], width=6, activation="sin", loss="hinge")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 4, size=(2, 20)).astype(np.int32)
    trainer = loops.PackedMLP(runs, 4, x, y, x, y)
    trainer.loss = losses.build(runs[0])
    w1, w2 = trainer.get_state()
    idx = np.stack([rng.permutation(20)[:8], rng.permutation(20)[:8]]).astype(np.int32)
    lr = np.array([0.1, 0.1], dtype=np.float32)
    new = trainer.step([ops.convert_to_tensor(w) for w in (w1, w2)], ops.convert_to_tensor(x),
                       ops.convert_to_tensor(y), ops.convert_to_tensor(idx), ops.convert_to_tensor(lr))  # fmt: skip

    def total_loss(params, xs, ys):
        a, b = params
        total = 0.0
        for r in range(2):
            z = ops.matmul(ops.sin(ops.matmul(xs[r], a[r])), b[r])
            total = total + ops.mean(trainer.loss.per_example(ys[r], z))
        return total, None

    grad = backend.value_and_grad(total_loss)
    _, _, (g1, g2) = grad([ops.convert_to_tensor(w1), ops.convert_to_tensor(w2)], x[idx], np.take_along_axis(y, idx, 1))
    np.testing.assert_allclose(ops.convert_to_numpy(new[0]), w1 - 0.1 * ops.convert_to_numpy(g1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(new[1]), w2 - 0.1 * ops.convert_to_numpy(g2), rtol=1e-5, atol=1e-6)


def test_the_cli_trains_every_sigma_and_seed_of_a_pack(params):
    members = packs.members(params, "digits", {"activation": "sin"})
    assert [packs.run_name(r) for r in members] == [f"sigma{s:g}-seed0" for s in params.group("digits").sweep["sigma"]]
    assert packs.stage_name("digits", members[0]) == "train-digits@digits-digits-mlp-sin-cross_entropy-true"
    assert packs.position(params, "digits", members[0]) == (1, 2)
    with pytest.raises(config.ConfigError, match="needs a value for axis"):
        packs.members(params, "digits", {})


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = loops.epoch_order(3, 7, 100)
    assert np.array_equal(a, loops.epoch_order(3, 7, 100)) and sorted(a) == list(range(100))
    assert not np.array_equal(a, loops.epoch_order(3, 8, 100))
    assert not np.array_equal(a, loops.epoch_order(4, 7, 100))


def _lr_params(learning_rates):
    """params.yaml with a group 'rates': the digits group sweeping learning_rate."""
    import copy

    from conftest import committed_raw

    raw = committed_raw()
    raw["rates"] = copy.deepcopy(raw["digits"])
    raw["rates"]["sweep"]["learning_rate"] = learning_rates
    return raw


def test_a_group_may_sweep_the_learning_rate_as_members_of_its_packs(params):
    """learning_rate varies within a pack like sigma and seed; run folders of
    such a group add -lr<value>, those of every other group keep their names."""
    raw = _lr_params([0.01, 0.1])
    swept = config.parse(raw)
    members = packs.members(swept, "rates", {"activation": "sin"})
    sigmas = params.group("digits").sweep["sigma"]
    assert [packs.run_name(r, swept.group("rates")) for r in members] == [
        f"sigma{s:g}-seed0-lr{lr:g}" for s in sigmas for lr in (0.01, 0.1)
    ]
    assert [r.learning_rate for r in members] == [0.01, 0.1] * len(sigmas)
    assert list(packs.packs(swept, "rates")) == list(packs.packs(swept, "digits"))  # the same stages
    assert [packs.run_name(r, swept.group("digits")) for r in packs.members(swept, "digits", {"activation": "sin"})] \
        == [f"sigma{s:g}-seed0" for s in sigmas]  # fmt: skip
    for learning_rates, message in [
        ([0.01, -1], r"rates.sweep.learning_rate = -1 is not allowed; allowed: a number > 0"),
        ([0.01, 1e-2], r"rates.sweep.learning_rate = \[0.01, 0.01\] lists 0.01 twice"),
        ("0.01", r"rates.sweep.learning_rate = '0.01' is not allowed; allowed: a non-empty list"),
    ]:
        with pytest.raises(config.ConfigError, match=message):
            config.parse(_lr_params(learning_rates))
    both = _lr_params([0.01, 0.1])
    both["rates"]["run"]["learning_rate"] = 0.5
    with pytest.raises(
        config.ConfigError, match="rates.run.learning_rate and rates.sweep.learning_rate are both given"
    ):
        config.parse(both)


def test_members_with_their_own_learning_rate_end_where_each_run_ends_alone(run_settings):
    """A pack steps each member at its own learning rate: two members
    (learning rates 0.003 and 0.3) end as each ends trained alone."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(24, 5)).astype(np.float32), rng.integers(0, 3, size=24).astype(np.int32)
    runs = [make_run({**run_settings, "width": 8, "batch_size": 8, "sigma": 1.0, "learning_rate": lr})
            for lr in (0.003, 0.3)]  # fmt: skip

    def trained(members):
        trainer = loops.PackedMLP(members, 3, x, np.stack([y] * len(members)), x, np.stack([y] * len(members)))
        trainer.set_loss(members)
        for epoch in (1, 2):
            order = np.stack([loops.epoch_order(0, epoch, len(x))] * len(members))
            trainer.run_steps(order, np.ones(len(members), bool), 0, trainer.steps_per_epoch)
        return trainer.get_state()

    w1, w2 = trained(runs)
    for r, run in enumerate(runs):
        alone = trained([run])
        np.testing.assert_allclose(w1[r], alone[0][0], rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(w2[r], alone[1][0], rtol=RTOL, atol=1e-6)
    assert not np.allclose(w2[0], w2[1], atol=1e-3)


def test_compensated_first_layer_records_its_factor_and_the_loss_scale(tmp_path, run_settings, digits_npz):
    """run.json records s (loss_scale) and W1's learning-rate factor s^2 next
    to the initial logit RMS alpha: s = max(alpha / alpha_ref, 1)."""
    runs = [make_run({**run_settings, "epochs": 1, "width": 32, "alignment_points": 0, "activation": "relu",
                      "sigma": sigma, "loss": "squared", "loss_scaling": "normalized",
                      "first_layer_step": "compensated"}) for sigma in (0.01, 10.0)]  # fmt: skip
    dirs = [tmp_path / f"sigma{r.sigma:g}" for r in runs]
    training.train_unit(runs, "test", digits_npz, dirs)
    small, large = (json.loads((d / "run.json").read_text()) for d in dirs)
    assert small["initial_logit_rms"] < 1 and small["loss_scale"] == 1.0 and small["first_layer_lr_factor"] == 1.0
    assert large["initial_logit_rms"] > 1 and large["loss_scale"] == pytest.approx(large["initial_logit_rms"])
    assert large["first_layer_lr_factor"] == pytest.approx(large["loss_scale"] ** 2)
    assert large["loss_parameter"] == 1.0 and large["first_layer_step"] == "compensated"
    changes = [json.loads((d / "metrics.json").read_text())["w1_relative_change"] for d in dirs]
    assert all(change > 0 for change in changes)
