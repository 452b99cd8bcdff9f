"""The sbatch scripts that ``cluster.py`` writes: one job array of train
stages and one report job, both running ``dvc repro STAGE`` in a git
worktree of their own with the repository's DVC cache.

Both scripts share one body; only the ``#SBATCH`` lines and the choice of
the stage differ. Values are inserted with ``shlex.quote`` by the caller.
"""

from __future__ import annotations

HEADER = """\
#!/bin/bash
{sbatch_lines}
# {what}, written by `python -m extreme_memorization slurm {group}`.
# It runs commit {commit} of {repo}
# in a git worktree of its own, with the DVC cache {cache}
# shared by every task and by the repository.
set -uo pipefail

REPO={repo_q}
COMMIT={commit}
CACHE={cache_q}
AREA={area_q}
PYTHON={python_q}
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

BODY = r"""
SLUG=${STAGE//[^A-Za-z0-9._-]/_}
WORKTREE=$AREA/worktrees/$SLUG
# A stable place per stage, outside the worktree: a requeued run, which gets
# a fresh worktree, finds the checkpoint its previous run saved there.
export EM_CHECKPOINT_DIR=$AREA/checkpoints/$SLUG
export PATH="$(dirname "$PYTHON"):$PATH"

say() { echo "[slurm $(date +%H:%M:%S)] $*"; }
fail() {
    say "FAILED: $STAGE: $*"
    [ -d "$WORKTREE" ] && say "its worktree is kept for inspection: $WORKTREE"
    exit 1
}

# Slurm sends SIGTERM to this script (--signal=B:TERM@N) before the time
# limit. It is passed on to every process of the running command except DVC
# itself: the stage command saves a checkpoint and exits, DVC records the
# failure and releases its locks, and this script requeues the task.
signalled=0
group=
on_term() {
    signalled=1
    say "SIGTERM before the time limit: passing it on to the stage command of $STAGE"
    if [ -n "$group" ]; then
        for pid in $(pgrep -g "$group"); do
            [ "$pid" != "$group" ] && kill -TERM "$pid" 2>/dev/null
        done
    fi
}
trap on_term TERM

# Run "$@" in a process group of its own and wait for all of it: the stage
# command may still be writing its checkpoint when DVC has already exited.
in_group() {
    setsid "$@" &
    group=$!
    local status
    while :; do
        wait "$group"
        status=$?
        kill -0 "$group" 2>/dev/null || break
    done
    while pgrep -g "$group" >/dev/null; do sleep 1; done
    group=
    return $status
}

requeue() {
    trap - TERM
    say "requeueing $JOB: its next run resumes from the checkpoint in $EM_CHECKPOINT_DIR" \
        "if the stage saved one, else it starts the stage again"
    scontrol requeue "$JOB" || fail "scontrol requeue $JOB failed"
    sleep 60  # Slurm ends this run of the task now
    exit 0
}

say "$STAGE: job $JOB on $(hostname), run $((${SLURM_RESTART_COUNT:-0} + 1))"
mkdir -p "$AREA/worktrees" "$EM_CHECKPOINT_DIR" || fail "cannot create the folders under $AREA"
if [ -e "$WORKTREE" ]; then
    git -C "$REPO" worktree remove --force --force "$WORKTREE" 2>/dev/null || rm -rf "$WORKTREE"
fi
git -C "$REPO" worktree add --force --detach --quiet "$WORKTREE" "$COMMIT" || fail "git worktree add failed"
cd "$WORKTREE" || fail "cannot enter $WORKTREE"
# The worktree's own code, not the submitting checkout's editable install.
export PYTHONPATH="$WORKTREE/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m dvc cache dir --local "$CACHE" || fail "cannot point DVC at the cache $CACHE"
[ "$signalled" = 1 ] && requeue

# Upstream stages (the prepared datasets) are restored from the run-cache.
in_group "$PYTHON" -m dvc repro "$STAGE"
status=$?
if [ $status -ne 0 ]; then
    [ "$signalled" = 1 ] && requeue
    fail "dvc repro $STAGE exited with status $status (its error is above)"
fi
# dvc repro keeps no run-cache entry for a stage with uncached outputs;
# dvc commit --force records one and copies those outputs into the cache,
# so that every other workspace restores the stage instead of running it.
in_group "$PYTHON" -m dvc commit --force "$STAGE" || fail "dvc commit --force $STAGE failed"
cd "$REPO" && git worktree remove --force --force "$WORKTREE"
rm -rf "$EM_CHECKPOINT_DIR"
say "done: $STAGE is in the cache and run-cache of $CACHE"
"""
