"""The stage scripts: the local runner's (``local.py``) and the Slurm jobs'
(``slurm.py``). Each is a few generated lines (its variables, and on Slurm
the sbatch header and the stage list) followed by plain bash fragments kept
as package data in ``sh/`` (shellcheck runs on them in ``make lint``, and on
whole generated scripts in tests/test_slurm.py):

- ``common.sh``: ``set -uo pipefail`` and ``say``;
- ``local_stop.sh`` / ``slurm_requeue.sh``: what a signal does (the worker
  stops; the Slurm task is requeued);
- ``stage.sh``: the stage in a git worktree of its own, with the shared DVC
  cache, ``dvc repro STAGE``.

Values are inserted with ``shlex.quote``.
"""

from __future__ import annotations

import shlex
import sys
from importlib import resources


def fragment(name: str) -> str:
    """The text of ``sh/<name>``."""
    return resources.files(__package__).joinpath("sh", name).read_text()


def variables(plan, who: str) -> str:
    """The lines that set what the fragments read: REPO, COMMIT, CACHE, AREA, PYTHON, WHO."""
    q = shlex.quote
    return (
        f"# It runs commit {plan.commit} of {plan.root}\n"
        f"# in a git worktree of its own, with the DVC cache {plan.cache}\n"
        "# shared by every stage and by the repository.\n"
        f"REPO={q(str(plan.root))}\nCOMMIT={plan.commit}\nCACHE={q(str(plan.cache))}\nAREA={q(str(plan.area))}\n"
        f"PYTHON={q(sys.executable)}\nWHO={who}\n"
    )


def local_script(plan) -> str:
    """The local runner's script: ``bash stage.sh STAGE`` in each worker."""
    return (
        f"#!/bin/bash\n# One train stage, written by `python -m extreme_memorization local {' '.join(plan.groups)}`.\n"
        + variables(plan, "local")
        + fragment("common.sh")
        + fragment("local_stop.sh")
        + fragment("stage.sh")
    )


def slurm_script(plan, sbatch_lines: str, what: str, choice: str) -> str:
    """A Slurm job's script: the sbatch header, the variables, ``choice``
    (the lines that set STAGE and JOB), requeue on a signal, the stage."""
    return (
        f"#!/bin/bash\n{sbatch_lines}\n# {what}, written by `python -m extreme_memorization slurm {plan.group}`.\n"
        + variables(plan, "slurm")
        + fragment("common.sh")
        + choice
        + fragment("slurm_requeue.sh")
        + fragment("stage.sh")
    )


def array_choice(stages: list[str]) -> str:
    """The train array's task picks its stage by SLURM_ARRAY_TASK_ID."""
    listed = "\n".join(f"    {shlex.quote(s)}" for s in stages)
    return (
        f"STAGES=(\n{listed}\n)\n"
        "STAGE=${STAGES[$SLURM_ARRAY_TASK_ID]}\n"
        "JOB=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\n"
    )


def single_choice(stage: str) -> str:
    return f"STAGE={shlex.quote(stage)}\nJOB=$SLURM_JOB_ID\n"
