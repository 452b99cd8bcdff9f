"""`dvc repro --dry` that plans the whole pipeline from a fresh clone.

DVC 3.67's dry run hashes each stage's inputs to look it up in the
run-cache, and stops with ``[Errno 2] No such file or directory`` at the
first stage whose input an earlier stage would make (prepared data, a
group's runs): it was not made, because the run is dry (DVC issue 9818; the
fix proposed upstream, PR 11100, skips the run-cache lookup when an input is
missing). This does the same (``dvc_api.allow_dry_repro_without_inputs``):
an input that does not exist yet means "nothing to restore from the
run-cache", and the stage is listed as to run.
The plan runs with ``fingerprint.txt`` as the fingerprint stage would
write it first (``training.fingerprint_file.live_fingerprint``; the
committed bytes are put back after), so a numeric edit of the training code
shows every train stage as to run before any ``dvc repro``. A target
``report@<group>`` of a group params.yaml lacks (a typo in ``make reproduce
GROUPS=...``) stops first, with one line naming the known groups.

    python -m extreme_memorization dry-run [dvc repro options and targets]
    make reproduce DRY=1
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..training import fingerprint_file


def unknown_group(argv: list[str], params_path: str = "params.yaml") -> str | None:
    """The line for a target ``report@<group>`` whose group params.yaml lacks
    (DVC itself says only that the stage is not in dvc.yaml); None if all are known."""
    from ..config import settings as config

    named = [arg.partition("@")[2] for arg in argv if arg.startswith("report@")]
    if not named:
        return None
    groups = list(config.load(params_path).groups)
    unknown = [group for group in named if group not in groups]
    if not unknown:
        return None
    return f"no group {unknown[0]!r} in {params_path}; known groups: {', '.join(groups)}"


def main(argv: list[str]) -> int:
    from ..config import settings as config

    try:
        problem = unknown_group(argv)
    except config.ConfigError as exc:
        problem = f"params: {exc}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from .. import dvc_api

    dvc_api.allow_dry_repro_without_inputs()
    # The fingerprint stage runs first in every `dvc repro` and rewrites
    # fingerprint.txt for the code as it is: the plan sees what it will see.
    with fingerprint_file.live_fingerprint(Path.cwd()) as change:
        if change:
            print(f"{change} changed since fingerprint.txt was written: the train stages that depend on it "
                  "run (the fingerprint stage rewrites it first)", file=sys.stderr, flush=True)  # fmt: skip
        return dvc_api.cli(["repro", "--dry", *argv])
