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


def test_a_short_run_gives_the_pinned_numbers(trained_template):
    path, _ = trained_template
    from extreme_memorization.training import fingerprint

    backend = fingerprint.backend_name()
    if backend not in GOLDEN:
        pytest.skip(f"no pinned numbers for KERAS_BACKEND={backend}")
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(path.glob("runs/digits/*/*/metrics.json"))}
    assert sorted(runs) == sorted(GOLDEN[backend])
    for run, pinned in GOLDEN[backend].items():
        for measure, value in pinned.items():
            assert runs[run][measure] == pytest.approx(value, rel=1e-6, abs=1e-9), f"{run} {measure}"
