#!/bin/sh
# How the image runs its command (ENTRYPOINT, under tini as PID 1).
#
# A stop (docker stop, podman stop: SIGTERM to PID 1) reaches the whole
# process group through tini -g: make, dvc and the training. make and dvc end
# at once; the training first finishes its compiled chunk and writes its
# checkpoint (about a second). The container ends when this script ends, and
# everything still running in it is then killed: so after a stop signal the
# script waits (at most STOP_WAIT_SECONDS) until no other process is left.
stopped=
trap 'stopped=1' TERM INT HUP
"$@"
status=$?
if [ -n "$stopped" ]; then
    deadline=$(($(date +%s) + ${STOP_WAIT_SECONDS:-60}))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        others=
        for proc in /proc/[0-9]*; do
            case ${proc#/proc/} in 1 | "$$") ;; *) others=1 ;; esac
        done
        [ -n "$others" ] || break
        sleep 0.2
    done
fi
exit "$status"
