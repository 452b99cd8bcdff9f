"""The sbatch scripts that ``cluster.py`` writes: one job array of train
stages and one report job. Each is an sbatch header, the choice of its
stage, what a signal before the time limit does (requeue), and the stage
script shared with the local runner (``fanout.STAGE_SCRIPT``: a git worktree
of its own, the repository's DVC cache, ``dvc repro STAGE``).

Values are inserted with ``shlex.quote`` by the caller.
"""

from __future__ import annotations

HEADER = """\
#!/bin/bash
{sbatch_lines}
# {what}, written by `python -m extreme_memorization slurm {group}`.
"""

TRAIN_STAGE = """\
STAGES=(
{stages}
)
STAGE=${{STAGES[$SLURM_ARRAY_TASK_ID]}}
JOB=${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}
"""

REPORT_STAGE = """\
STAGE={stage}
JOB=$SLURM_JOB_ID
"""

# Slurm sends SIGTERM to the batch script (--signal=B:TERM@N) before the time
# limit: the stage checkpoints, and the task goes back into the queue.
REQUEUE = r"""
SIGTERM_FROM="before the time limit"
stop_for_signal() {
    trap - TERM
    say "requeueing $JOB: its next run resumes from the checkpoint in $EM_CHECKPOINT_DIR" \
        "if the stage saved one, else it starts the stage again"
    scontrol requeue "$JOB" || fail "scontrol requeue $JOB failed"
    sleep 60  # Slurm ends this run of the task now
    exit 0
}
say "$STAGE: job $JOB on $(hostname), run $((${SLURM_RESTART_COUNT:-0} + 1))"
"""
