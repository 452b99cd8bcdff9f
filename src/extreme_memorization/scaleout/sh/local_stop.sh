# shellcheck shell=bash
# shellcheck disable=SC2034  # SIGTERM_FROM is read by stage.sh, which follows
# What the stage script does on a signal here (the local runner): the stage
# has checkpointed; the worker ends, and the same command again resumes the
# stage. The runner passes the stage as the first argument, and its own pid
# in EM_DRIVER_PID: a watchdog stops the worker as on SIGTERM once the runner
# is gone, however it ended (SIGKILL, the OOM killer), within a second or two.
STAGE=$1
SIGTERM_FROM="from the local runner"
stop_for_signal() {
    trap - TERM
    say "stopped: $STAGE keeps its checkpoint in $EM_CHECKPOINT_DIR (if it saved one); run the same command again"
    exit 143
}
say "$STAGE: worker $EM_WORKER on $(hostname), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-(not set)}"
if [ -n "${EM_DRIVER_PID:-}" ]; then
    (
        while kill -0 "$EM_DRIVER_PID" 2>/dev/null; do sleep 1; done
        kill -TERM $$ 2>/dev/null
    ) &
    watchdog=$!
    trap 'kill "$watchdog" 2>/dev/null' EXIT
fi
