"""Compare every run's metrics.json under two folders: the committed ones
and those a container run just wrote. Standard library only, so it runs
in the image (python tests/container/compare_metrics.py EXPECTED ACTUAL).

Tolerances, and why: the same seed on the same TensorFlow build and thread
count gives the same numbers, but another CPU (other vector kernels) or
thread count moves the last bits, and the memorizing runs (sin, sigma >= 1)
amplify that. So an accuracy may move by 0.02 (7 of the 360 digits test
images); an alignment by 5% of its size plus 0.01 (the absolute part covers
the memorizing runs, where alignment is noise around 0 and a relative
tolerance means nothing); other measures (losses, norms, diversity) by 10%
plus 0.001. Epoch counts and divergence flags must match exactly. A
metric the committed runs lack (a measure added since) is listed, not
compared.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

EXACT = ("epochs_run", "diverged")


def tolerance(key: str) -> tuple[float, float]:
    """(relative, absolute) tolerance of one metric."""
    if key in EXACT:
        return 0.0, 0.0
    if key.endswith("_acc"):
        return 0.0, 0.02
    if "alignment" in key:
        return 0.05, 0.01
    return 0.1, 1e-3


def differences(expected: dict, actual: dict) -> list[str]:
    """One line per metric of `actual` outside the tolerance of `expected`."""
    problems = [f"{key}: missing" for key in sorted(set(expected) - set(actual))]
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        if want is None or got is None or isinstance(want, str) or isinstance(got, str):
            if want != got:
                problems.append(f"{key}: {got!r}, committed {want!r}")
            continue
        if math.isnan(want) and math.isnan(got):
            continue
        rel, abs_ = tolerance(key)
        if not abs(got - want) <= rel * max(abs(want), abs(got)) + abs_:
            problems.append(f"{key}: {got:.6g}, committed {want:.6g} (allowed {rel:g} relative + {abs_:g})")
    return problems


def compare(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Problems of every run, found by a recursive search for metrics.json."""
    expected = {p.relative_to(expected_dir): p for p in expected_dir.rglob("metrics.json")}
    actual = {p.relative_to(actual_dir): p for p in actual_dir.rglob("metrics.json")}
    if not expected:
        return [f"no metrics.json under {expected_dir}"]
    problems = [f"{run.parent}: no metrics.json written" for run in sorted(set(expected) - set(actual))]
    problems += [f"{run.parent}: not a committed run" for run in sorted(set(actual) - set(expected))]
    for run in sorted(set(expected) & set(actual)):
        found = differences(json.loads(expected[run].read_text()), json.loads(actual[run].read_text()))
        problems += [f"{run.parent}: {line}" for line in found]
    return problems


def largest_deviations(expected_dir: Path, actual_dir: Path) -> dict[str, float]:
    """The largest absolute difference of each metric over all runs."""
    largest: dict[str, float] = {}
    for path in expected_dir.rglob("metrics.json"):
        other = actual_dir / path.relative_to(expected_dir)
        if not other.exists():
            continue
        want, got = json.loads(path.read_text()), json.loads(other.read_text())
        for key in set(want) & set(got):
            if isinstance(want[key], (int, float)) and isinstance(got[key], (int, float)):
                delta = abs(got[key] - want[key])
                if not math.isnan(delta):
                    largest[key] = max(largest.get(key, 0.0), delta)
    return largest


def new_metrics(expected_dir: Path, actual_dir: Path) -> set[str]:
    """Metrics written now that the committed runs do not have."""
    new: set[str] = set()
    for path in expected_dir.rglob("metrics.json"):
        other = actual_dir / path.relative_to(expected_dir)
        if other.exists():
            new |= set(json.loads(other.read_text())) - set(json.loads(path.read_text()))
    return new


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: compare_metrics.py EXPECTED_DIR ACTUAL_DIR", file=sys.stderr)
        return 2
    expected_dir, actual_dir = map(Path, argv)
    problems = compare(expected_dir, actual_dir)
    runs = len(list(expected_dir.rglob("metrics.json")))
    worst = largest_deviations(expected_dir, actual_dir)
    print(
        "largest difference per metric over", runs, "runs:", ", ".join(f"{k} {v:.3g}" for k, v in sorted(worst.items()))
    )
    new = sorted(new_metrics(expected_dir, actual_dir))
    if new:
        print("not in the committed metrics, not compared:", ", ".join(new))
    if problems:
        print(f"error: {len(problems)} metrics differ from the committed runs:", file=sys.stderr)
        print("\n".join("  " + line for line in problems), file=sys.stderr)
        return 1
    print(f"all {runs} runs match the committed metrics within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
