"""`dvc repro --dry` that plans the whole pipeline from a fresh clone.

DVC 3.67's dry run hashes each stage's inputs to look it up in the
run-cache, and stops with ``[Errno 2] No such file or directory`` at the
first stage whose input an earlier stage would make (prepared data, a
group's runs): it was not made, because the run is dry (DVC issue 9818; the
fix proposed upstream, PR 11100, skips the run-cache lookup when an input is
missing). This does the same (``dvc_api.allow_dry_repro_without_inputs``):
an input that does not exist yet means "nothing to restore from the
run-cache", and the stage is listed as to run.
The dry run runs with ``fingerprint.txt`` as the fingerprint stage would
write it first (``training.fingerprint_file.live_fingerprint``; the
committed bytes are put back after), so a numeric edit of the training code
shows every train stage as to run before any ``dvc repro``. The command
(cli/scaleout.py) first stops at a target ``report@<group>`` of a group
params.yaml lacks (a typo in ``make reproduce GROUPS=...``), with one line
naming the known groups (``preflight.unknown_group``).

    python -m extreme_memorization dry-run [dvc repro options and targets]
    make reproduce DRY=1
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..training import fingerprint_file


def repro(argv: list[str]) -> int:
    """``dvc repro --dry`` with ``argv`` (options and targets), planned as from a fresh clone."""
    from .. import dvc_api

    dvc_api.allow_dry_repro_without_inputs()
    # The fingerprint stage runs first in every `dvc repro` and rewrites
    # fingerprint.txt for the code as it is: the plan sees what it will see.
    with fingerprint_file.live_fingerprint(Path.cwd()) as change:
        if change:
            print(f"{change} changed since fingerprint.txt was written: the train stages that depend on it "
                  "run (the fingerprint stage rewrites it first)", file=sys.stderr, flush=True)  # fmt: skip
        return dvc_api.cli(["repro", "--dry", *argv])
