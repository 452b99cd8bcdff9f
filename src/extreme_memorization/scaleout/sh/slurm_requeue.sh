# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # SIGTERM_FROM is read by stage.sh; JOB and STAGE are set above
# Slurm sends SIGTERM to the batch script (--signal=B:TERM@N) before the time
# limit: the stage checkpoints, and the task goes back into the queue.
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
