#!/usr/bin/env bash
# make venv's work: a virtual environment of a supported Python with the
# locks installed (hashes checked, nothing resolved), and a stamp that
# records which Python made it.
#
#   requirements/venv.sh DIR PYTHON LOCK...  make DIR (PYTHON may be empty:
#                                            the Python that made DIR, else
#                                            the first of python3.11,
#                                            python3.12, python3.13 found)
#   requirements/venv.sh --find 3.12         print the path of a Python 3.12
#                                            that runs, or fail
#
# A Python outside SUPPORTED is refused before anything is installed. DIR is
# rebuilt from scratch, not reused, when it was made by another Python than
# the one asked for, when its Python no longer runs, or when an earlier
# install did not finish (no stamp).
set -euo pipefail
SUPPORTED=(3.11 3.12 3.13)
SUPPORTED_TEXT="Python 3.11, 3.12 or 3.13"

version_of() {  # "major.minor" of the Python $1, nothing if it does not run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

is_supported() {
  local v
  for v in "${SUPPORTED[@]}"; do [ "$1" = "$v" ] && return 0; done
  return 1
}

# pythonV on PATH when it runs (a pyenv shim of a version not selected does
# not), else the newest V.x that pyenv installed (CI machines have pyenv).
find_python() {
  local candidate root
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for candidate in "$(command -v "python$1" || true)" \
    $(find "$root/versions" -maxdepth 3 -path "*/versions/$1.*/bin/python$1" 2>/dev/null | sort -rV); do
    if [ -n "$candidate" ] && [ "$(version_of "$candidate")" = "$1" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

fail() {
  echo "error: $*" >&2
  exit 1
}

if [ "${1:-}" = --find ]; then
  find_python "$2"
  exit
fi

dir=$1 python=$2
shift 2
locks=("$@")
stamp=$dir/.installed
have=""
[ -e "$dir" ] && have=$(version_of "$dir/bin/python")

if [ -z "$python" ] && is_supported "$have"; then
  # No Python named: the one that made DIR, whichever of the supported it is.
  python=$("$dir/bin/python" -c 'import sys; print(sys._base_executable)')
elif [ -z "$python" ]; then
  for v in "${SUPPORTED[@]}"; do python=$(find_python "$v") && break; done
  [ -n "$python" ] || fail "no $SUPPORTED_TEXT found (python3.11, python3.12 or python3.13 on PATH); install one, or name one: make venv PYTHON=/path/to/python3.12"
fi
want=$(version_of "$python")
[ -n "$want" ] || fail "PYTHON=$python does not run (not installed?); this project needs $SUPPORTED_TEXT: make venv PYTHON=/path/to/python3.12"
is_supported "$want" || fail "PYTHON=$python is Python $want; this project needs $SUPPORTED_TEXT: make venv PYTHON=/path/to/python3.12 (or 3.11, 3.13)"

# Up to date: made by that Python, stamped after the locks last changed.
if [ -n "$have" ] && [ "$have" = "$want" ] && [ -f "$stamp" ]; then
  current=1
  for file in "${locks[@]}" pyproject.toml; do [ "$stamp" -nt "$file" ] || current=0; done
  if [ $current = 1 ]; then
    [ "$(cat "$stamp")" = "$want" ] || echo "$want" >"$stamp"
    exit 0
  fi
fi

if [ -e "$dir" ] || [ -L "$dir" ]; then
  if [ -z "$have" ]; then
    why="its Python does not run"
  elif [ "$have" != "$want" ]; then
    why="it was made by Python $have, and $python is Python $want"
  elif [ ! -f "$stamp" ]; then
    why="an earlier install into it did not finish"
  fi
  if [ -n "${why:-}" ]; then
    echo "removing $dir and making it again: $why"
    rm -rf "$dir"
  fi
fi

if [ ! -e "$dir" ]; then
  "$python" -m venv "$dir" || {
    rm -rf "$dir"
    fail "$python -m venv $dir failed (on Debian or Ubuntu: apt install python$want-venv)"
  }
fi
echo "installing ${locks[*]} into $dir with Python $want ($dir/bin/python; once, about 2 minutes)"
pip_install() {  # pip's status, without its warnings about the venv's location
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$@" 2>&1 |
    { grep -v "^WARNING: Location" || true; }
}
requirements=()
for lock in "${locks[@]}"; do requirements+=(-r "$lock"); done
pip_install --require-hashes "${requirements[@]}" || fail "the install into $dir failed; see pip's output above"
pip_install --no-build-isolation -e . || fail "the install of this project into $dir failed; see pip's output above"
# TensorFlow's import logs are kept for a failure only.
if ! log=$("$dir/bin/python" -c "import extreme_memorization, keras, tensorflow, dvc, pytest, moto" 2>&1) ||
  ! "$dir/bin/ruff" --version >/dev/null; then
  echo "$log" | tail -5
  fail "the install into $dir failed: it lacks what the locks hold; see the output above"
fi
echo "$want" >"$stamp"
