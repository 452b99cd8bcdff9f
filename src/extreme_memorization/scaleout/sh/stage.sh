# shellcheck shell=bash
# One stage in a git worktree of its own, with the shared DVC cache: the part
# of every stage script that the local runner (local.py) and the Slurm jobs
# (slurm.py) share. Before this text the script sets REPO, COMMIT, CACHE,
# AREA, PYTHON and WHO (scripts.variables), defines say (common.sh), STAGE,
# SIGTERM_FROM (who sends the signal) and stop_for_signal (what to do once
# the stage command has stopped on a signal: requeue on Slurm, exit locally).
# shellcheck disable=SC2154  # those variables are set above this text
SLUG=${STAGE//[^A-Za-z0-9._-]/_}
WORKTREE=$AREA/worktrees/$SLUG
# A stable place per stage, outside the worktree: a rerun, which gets a
# fresh worktree, finds the checkpoint its previous run saved there.
export EM_CHECKPOINT_DIR=$AREA/checkpoints/$SLUG
PATH="$(dirname "$PYTHON"):$PATH"
export PATH

fail() {
    say "FAILED: $STAGE: $*"
    [ -d "$WORKTREE" ] && say "its worktree is kept for inspection: $WORKTREE"
    exit 1
}

# SIGTERM is passed on to every process of the running command except DVC
# itself: the stage command saves a checkpoint and exits, DVC records the
# failure and releases its locks, and stop_for_signal decides what next.
signalled=0
group=
on_term() {
    signalled=1
    say "SIGTERM $SIGTERM_FROM: passing it on to the stage command of $STAGE"
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

mkdir -p "$AREA/worktrees" "$AREA/locks" "$EM_CHECKPOINT_DIR" || fail "cannot create the folders under $AREA"
# The worktree's lock, held on fd 9 by this script and everything it starts
# (dvc, the training): a worker of an earlier run still ending keeps it, and
# this one waits rather than pull the worktree from under it; the lock of a
# process that died is gone with it.
exec 9>"$AREA/locks/$SLUG.lock" || fail "cannot create $AREA/locks/$SLUG.lock"
if ! flock -n 9; then
    say "waiting for the worker of an earlier run that still uses $WORKTREE to end"
    flock -w 300 9 || fail "a live process still holds $AREA/locks/$SLUG.lock after 300 s (fuser -v it)"
fi
if [ -e "$WORKTREE" ]; then
    git -C "$REPO" worktree remove --force --force "$WORKTREE" 2>/dev/null || rm -rf "$WORKTREE"
fi
git -C "$REPO" worktree add --force --detach --quiet "$WORKTREE" "$COMMIT" || fail "git worktree add failed"
cd "$WORKTREE" || fail "cannot enter $WORKTREE"
# The worktree's own code, not the starting checkout's editable install.
export PYTHONPATH="$WORKTREE/src${PYTHONPATH:+:$PYTHONPATH}"
# The checkout's own DVC settings (cache.shared group on a lab's shared cache,
# cache.type), which git does not carry into a worktree; then the cache.
if [ -f "$REPO/.dvc/config.local" ]; then
    cp "$REPO/.dvc/config.local" .dvc/config.local || fail "cannot copy $REPO/.dvc/config.local"
fi
"$PYTHON" -m dvc cache dir --local "$CACHE" || fail "cannot point DVC at the cache $CACHE"
[ "$signalled" = 1 ] && stop_for_signal

# Upstream stages (the prepared datasets) are restored from the run-cache.
in_group "$PYTHON" -m dvc repro "$STAGE"
status=$?
if [ $status -ne 0 ]; then
    [ "$signalled" = 1 ] && stop_for_signal
    fail "dvc repro $STAGE exited with status $status (its error is above)"
fi
# dvc repro saved the stage in the shared run-cache (its run folders are
# plots outputs and its weights cached ones), so every other workspace
# restores the stage instead of running it.
cd "$REPO" && git worktree remove --force --force "$WORKTREE"
rm -rf "$EM_CHECKPOINT_DIR"
say "done: $STAGE is in the cache and run-cache of $CACHE"
