# shellcheck shell=bash
# shellcheck disable=SC2034  # REPO ... are read by stage.sh, which follows
# What every stage script starts with, after its variables.
set -uo pipefail

say() { echo "[$WHO $(date +%H:%M:%S)] $*"; }
