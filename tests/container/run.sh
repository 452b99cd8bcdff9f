#!/usr/bin/env bash
# The container, built and run for real with podman (make container-test):
#
#   tests/container/run.sh test LOCK IMAGE   build the Dockerfile with LOCK, then run
#                                            make gpu-check and make demo inside it,
#                                            then stop a training with podman stop and
#                                            rerun it
#   tests/container/run.sh stop LOCK IMAGE   build, then the podman stop check alone
#   tests/container/run.sh clean             remove the image store (make clean-container)
#
# What it does: installs podman, buildah, runc and debootstrap with apt-get when
# missing; makes a local stand-in for the base image when it cannot be pulled;
# builds with `make image` (the Dockerfile unchanged); copies the repository,
# hands the copy to a uid that is neither root nor the image's user, and runs
# `make reproduce-in-container REPRODUCE_TARGETS="gpu-check demo"` on it
# without network; then checks that every output in runs/ and reports/ was
# written by that uid and that every run's metrics equal the committed ones
# (tests/container/compare_metrics.py states the tolerances). Last, with the
# digits group changed to a longer checkpointed run, `podman stop` during
# `make demo` inside: the training must write its checkpoint and say so (the
# image's tini and entrypoint pass the stop on and wait for it), and a rerun
# must resume from there and leave the stage up to date.
#
# Images, containers and temporary files live under .cache/containers, so
# a second run reuses the base and the image's layers. Needs root: apt-get,
# debootstrap and chown of the copy.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=$ROOT/.cache/containers
TEST_UID=${TEST_UID:-4242}
LABEL=extreme-memorization-test

say() { printf '\n== %s [%ds]\n' "$*" "$SECONDS"; }
die() { echo "error: $*" >&2; exit 1; }

# podman's configuration, all of it under $CACHE. This machine needed: runc
# (crun 1.8 refuses a hybrid cgroup v1/v2 host), rlimits under the host's hard
# limits (podman's default nofile 1048576 is refused), cgroupfs (no systemd).
configure_podman() {
    mkdir -p "$CACHE/tmp" "$CACHE/run"
    local nofile nproc
    nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ] && nofile=1048576
    [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
    cat >"$CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$CACHE/run/libpod"
EOF
    cat >"$CACHE/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$CACHE/run/storage"
EOF
    cat >"$CACHE/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
    export CONTAINERS_CONF=$CACHE/containers.conf CONTAINERS_STORAGE_CONF=$CACHE/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$CACHE/registries.conf TMPDIR=$CACHE/tmp
}

clean() {
    [ -d "$CACHE" ] || return 0
    if command -v podman >/dev/null && [ -f "$CACHE/storage.conf" ]; then
        configure_podman
        podman system reset --force >/dev/null 2>&1 || true
    fi
    # The overlay driver bind-mounts its folder onto itself: unmount first.
    grep -o " ${CACHE}[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$CACHE"
    echo "removed $CACHE"
}

install_tools() {
    local missing=()
    for tool in podman buildah runc debootstrap; do command -v $tool >/dev/null || missing+=("$tool"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} (apt-get)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman buildah runc debootstrap uidmap fuse-overlayfs containernetworking-plugins >/dev/null
}

# The first Debian mirror serving SUITE among the host's apt sources (one-line
# and deb822 formats); DEBIAN_MIRROR overrides it.
debian_mirror() {
    local suite=$1 lists=() sources=() file
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$file" ] && lists+=("$file"); done
    for file in /etc/apt/sources.list.d/*.sources; do [ -f "$file" ] && sources+=("$file"); done
    {
        awk -v suite="$suite" '$1 == "deb" {
            i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) print $i }' /dev/null "${lists[@]}"
        awk -v suite="$suite" '
            FNR == 1 || /^[ \t]*$/ { if (uris != "" && found) print uris; uris = ""; found = 0 }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
            END { if (uris != "" && found) print uris }' /dev/null "${sources[@]}"
    } | head -n1
}

# No image registry may be reachable: then the Dockerfile's base is built here.
# A stand-in, not the official image: Debian's python3.11 (3.11.2) as a venv at
# /usr/local, so python, python3 and pip are in /usr/local/bin as there; it
# trusts the host's extra CA certificates, so pip in the build reaches the
# package index the way the host does (through the same proxy, if any).
base_image() {
    local base=$1 suite=${1##*-}
    if podman image exists "$base"; then
        echo "base $base: present ($(podman image inspect --format '{{index .Labels "description"}}' "$base"))"
        return
    fi
    say "pulling $base"
    if timeout 60 podman pull -q "$base" >/dev/null 2>&1; then return; fi
    local mirror rootfs=$CACHE/tmp/rootfs
    mirror=$(debian_mirror "$suite")
    [ -n "$mirror" ] || die "cannot pull $base and no Debian $suite mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR=http://..."
    say "no registry: a stand-in for $base from Debian $suite ($mirror)"
    rm -rf "$rootfs"
    # python3-distutils is named because debootstrap does not resolve the
    # virtual package python3.11-venv depends on.
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$CACHE/tmp/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/tmp/debootstrap.log"; die "debootstrap failed (log above)"; }
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    TMPDIR=/tmp chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    TMPDIR=/tmp chroot "$rootfs" python3.11 -m venv /usr/local
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    local bundle=/etc/ssl/certs/ca-certificates.crt
    tar -C "$rootfs" -c . | podman import -q \
        --change "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV LANG=C.UTF-8" \
        --change "ENV PIP_CERT=$bundle" --change "ENV SSL_CERT_FILE=$bundle" --change "ENV REQUESTS_CA_BUNDLE=$bundle" \
        --change "LABEL description=\"stand-in: Debian $suite, python $(TMPDIR=/tmp chroot "$rootfs" python3.11 -V | cut -d' ' -f2)\"" \
        --change 'CMD ["python3"]' - "$base" >/dev/null
    rm -rf "$rootfs"
}

# The repository as it is in this checkout (tracked and new files, not what
# git ignores: no .venv, caches, weights or data), made a git repository of
# its own (DVC needs one) and given to TEST_UID.
copy_repository() {
    local copy=$1
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$ROOT is not a git checkout: the test copies what git tracks"
    rm -rf "$copy"; mkdir -p "$copy"
    git ls-files -z --cached --others --exclude-standard --deduplicate \
        | tar --null -T - --ignore-failed-read -c 2>/dev/null | tar -x -C "$copy"
    git -C "$copy" init -q
    git -C "$copy" add -A
    git -C "$copy" -c user.name=test -c user.email=test@localhost commit -q -m "copy for the container test"
    chown -R "$TEST_UID:$TEST_UID" "$copy"
}

# podman stop while `make demo` trains inside; the rerun resumes.
stop_and_resume() {
    local copy=$1 image=$2 tfds=$3 name=em-stop-test log=$CACHE/tmp/stop.log
    local stage=report@digits
    local run=(podman run --network=none --label "$LABEL" --user "$TEST_UID:$TEST_UID" -v "$copy":/work -v "$tfds":/data/tfds)
    say "podman stop during a training inside, then a rerun that resumes"
    sed -i '/^digits:/,/^$/ s/^    epochs: [0-9]*$/    epochs: 60\n    checkpoint_every: 2/' "$copy/params.yaml"
    grep -q "checkpoint_every: 2" "$copy/params.yaml" || die "could not set the digits group's epochs in params.yaml"
    chown "$TEST_UID:$TEST_UID" "$copy/params.yaml"
    rm -rf "$copy/checkpoints"
    podman rm -f "$name" >/dev/null 2>&1 || true
    "${run[@]}" -d --name "$name" "$image" make demo >/dev/null
    local waited=0
    until find "$copy/checkpoints" -name '*.npz' 2>/dev/null | grep -q .; do
        [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] \
            || { podman logs "$name" | tail -20; die "the training ended before its first checkpoint"; }
        [ $waited -lt 600 ] || die "no checkpoint after 300 s"
        sleep 0.5; waited=$((waited + 1))
    done
    local start=$SECONDS
    podman stop -t 60 "$name" >/dev/null
    echo "podman stop took $((SECONDS - start)) s; exit status $(podman inspect --format '{{.State.ExitCode}}' "$name")"
    podman logs "$name" >"$log" 2>&1
    podman rm "$name" >/dev/null
    grep "received SIGTERM\|interrupted at epoch" "$log" || { tail -20 "$log"; die "the training did not stop cleanly on podman stop"; }
    grep -q "rerun to resume" "$log" || die "no 'rerun to resume' after podman stop"
    find "$copy/checkpoints" -name '*.npz' | grep -q . || die "no checkpoint left after podman stop"
    "${run[@]}" --rm "$image" dvc repro "$stage" >"$log" 2>&1 || { tail -20 "$log"; die "the rerun failed"; }
    grep "resuming from checkpoint at epoch" "$log" || { tail -20 "$log"; die "the rerun did not resume"; }
    "${run[@]}" --rm "$image" dvc status "$stage" | grep -q "up to date" || die "$stage is not up to date after the rerun"
    echo "stopped and resumed: $stage up to date"
}

remove_containers() {
    podman ps -aq --filter "label=$LABEL" | xargs -r podman rm -f >/dev/null 2>&1 || true
}

test_container() {
    local lock=${1:?LOCK} image=${2:?IMAGE} need_gb=15
    [ -f "$lock" ] || die "no lock $lock"
    [[ $lock == *cuda* ]] && need_gb=36
    [ "$(id -u)" = 0 ] || die "the container test needs root (apt-get, debootstrap, chown); run it as root or in CI"
    local free_gb
    free_gb=$(df -Pk "$ROOT" | awk 'NR == 2 { print int($4 / 1048576) }')
    [ "$free_gb" -ge "$need_gb" ] || die "$free_gb GB free under $ROOT; building from $lock needs $need_gb GB (make clean-container frees the last build)"

    install_tools
    configure_podman
    trap remove_containers EXIT
    local start=$SECONDS
    local base
    base=$(awk '/^FROM / { print $2; exit }' Dockerfile)
    [[ $base == */* ]] || base=docker.io/library/$base
    base_image "$base"
    local t_base=$((SECONDS - start))

    say "building $image from $lock"
    start=$SECONDS
    # The CPU image cannot use a GPU: it is checked as on a host without one.
    local make_args=(CONTAINER_ENGINE=podman IMAGE="$image" IMAGE_LOCK="$lock" CONTAINER_BUILD_FLAGS="--pull=never --force-rm")
    [[ $lock == *cuda* ]] || make_args+=(HOST_GPU=0)
    make --no-print-directory image "${make_args[@]}"
    local t_build=$((SECONDS - start))
    echo "image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.2f GB", $1 / 1e9 }')"

    local work=$CACHE/work copy=$CACHE/work/repo
    say "copying the repository to $copy for uid $TEST_UID"
    copy_repository "$copy"
    rm -rf "$work/expected"; mkdir -p "$work/expected"
    (cd "$copy/runs/digits" && find . -name metrics.json -exec cp --parents {} "$work/expected/" \;)
    touch "$work/started"
    make_args+=(CONTAINER_WORKDIR="$copy" CONTAINER_USER="$TEST_UID:$TEST_UID" TFDS_DIR="$work/tfds"
        CONTAINER_FLAGS="--network=none --label $LABEL")
    mkdir -p "$work/tfds"

    say "make shell without a terminal: runs the piped commands and exits"
    local who
    who=$(echo 'id -u; test -w /work && echo writable' | make --no-print-directory -s shell "${make_args[@]}" | tail -n2 | tr '\n' ' ')
    [ "$who" = "$TEST_UID writable " ] || die "make shell printed '$who', not '$TEST_UID writable'"

    say "gpu-check inside fails when the host has a GPU that TensorFlow does not see"
    if podman run --rm --network=none --label "$LABEL" --user "$TEST_UID:$TEST_UID" -e EM_HOST_GPU=1 -v "$copy":/work "$image" \
        make -s gpu-check; then die "gpu-check passed with EM_HOST_GPU=1 and no GPU in the container"; fi
    echo "(that error is the one expected)"

    say "make gpu-check demo inside $image as uid $TEST_UID, no network"
    start=$SECONDS
    make --no-print-directory reproduce-in-container REPRODUCE_TARGETS="gpu-check demo" "${make_args[@]}"
    local t_run=$((SECONDS - start))

    say "checking the outputs"
    local foreign stale
    foreign=$(find "$copy/runs" "$copy/reports" ! -uid "$TEST_UID" | head -5)
    [ -z "$foreign" ] || die "not owned by uid $TEST_UID: $foreign"
    stale=$(find "$copy/runs/digits" -name metrics.json ! -newer "$work/started"; find "$copy/reports/digits" -type f ! -newer "$work/started")
    [ -z "$stale" ] || die "not rewritten by the container run: $stale"
    podman run --rm --network=none --label "$LABEL" --user "$TEST_UID:$TEST_UID" -v "$copy":/work:ro -v "$work/expected":/expected:ro \
        "$image" python tests/container/compare_metrics.py /expected runs/digits

    start=$SECONDS
    stop_and_resume "$copy" "$image" "$work/tfds"
    local t_stop=$((SECONDS - start))

    echo
    echo "container test passed: base ${t_base}s, build ${t_build}s, gpu-check + demo inside ${t_run}s," \
        "stop and resume ${t_stop}s, total ${SECONDS}s"
}

# The build and the podman stop check alone (a shorter loop while working on it).
test_stop() {
    local lock=${1:?LOCK} image=${2:?IMAGE}
    [ "$(id -u)" = 0 ] || die "the container test needs root"
    install_tools
    configure_podman
    trap remove_containers EXIT
    local base
    base=$(awk '/^FROM / { print $2; exit }' Dockerfile)
    [[ $base == */* ]] || base=docker.io/library/$base
    base_image "$base"
    local make_args=(CONTAINER_ENGINE=podman IMAGE="$image" IMAGE_LOCK="$lock" CONTAINER_BUILD_FLAGS="--pull=never --force-rm")
    make --no-print-directory image "${make_args[@]}"
    local work=$CACHE/work copy=$CACHE/work/repo
    copy_repository "$copy"
    mkdir -p "$work/tfds"
    stop_and_resume "$copy" "$image" "$work/tfds"
    echo "stop check passed in ${SECONDS}s"
}

case "${1:-}" in
    test) shift; test_container "$@" ;;
    stop) shift; test_stop "$@" ;;
    clean) clean ;;
    *) die "usage: $0 test LOCK IMAGE | stop LOCK IMAGE | clean" ;;
esac
