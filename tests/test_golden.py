"""The numbers of a short run, pinned: a change that moves code without
changing a number (what `rekey` is for) keeps them; a real numeric change
(a constant, a loss, an initialization, the data order) does not.

The values are those of the tiny digits group every pipeline test trains
(conftest.TINY_RUN and TINY_SWEEP: sin at sigma 0.1 and 10, two epochs of a
16-unit MLP), under TensorFlow on an x86-64 CPU. Runs are reproducible to
about 1e-8 relative between such machines; the tolerance is 1e-6. If a
change is meant to change the numbers, regenerate tests/golden.json from the
runs of a `dvc repro report@digits` of that group and say so in the commit.
"""

import json
from pathlib import Path

import pytest

GOLDEN = json.loads((Path(__file__).parent / "golden.json").read_text())
PACK = "digits-mlp-sin-cross_entropy-true"


def pinned(runs_folder: Path) -> None:
    """The metrics of the runs under ``runs_folder`` are those golden.json pins."""
    from extreme_memorization.training import fingerprint

    backend = fingerprint.backend_name()
    if backend not in GOLDEN:
        pytest.skip(f"no pinned numbers for KERAS_BACKEND={backend}")
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(runs_folder.glob("*/metrics.json"))}
    assert sorted(runs) == sorted(GOLDEN[backend])
    for run, numbers in GOLDEN[backend].items():
        for measure, value in numbers.items():
            assert runs[run][measure] == pytest.approx(value, rel=1e-6, abs=1e-9), f"{run} {measure}"


@pytest.mark.pipeline
def test_a_short_run_gives_the_pinned_numbers(trained_template):
    """In-process twin: test_the_tiny_pack_trained_in_process_gives_the_pinned_numbers."""
    path, _ = trained_template
    pinned(path / "runs" / "digits" / PACK)


def test_the_tiny_pack_trained_in_process_gives_the_pinned_numbers(tmp_path, digits_npz, capsys, monkeypatch):
    """The tiny group's train stage (its command, run in this process, on the
    digits data its prepare stage makes) gives the pinned numbers, and a run
    folder per run beside a weights folder per run."""
    import yaml

    from conftest import TINY_RUN, TINY_SWEEP, committed_raw, run_cli

    raw = committed_raw()
    raw["digits"]["run"] = dict(TINY_RUN)
    raw["digits"]["sweep"].update(TINY_SWEEP)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("EM_REUSE_RUNS", "0")
    monkeypatch.setenv("EM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    out, weights = tmp_path / "runs" / "digits" / PACK, tmp_path / "weights" / "digits" / PACK
    assert run_cli("--params", tmp_path / "params.yaml", "train", "digits", "--set", "activation=sin", "--data",
                   digits_npz, "--out", out, "--weights", weights) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["sigma0.1-seed0", "sigma10-seed0"]
    for run in out.iterdir():
        assert {p.name for p in run.iterdir()} == {"metrics.json", "history.csv", "alignment.csv", "run.json"}
        assert (weights / run.name / "model.weights.h5").stat().st_size > 0
    pinned(out)
