#!/usr/bin/env bash
# The GPU check on a bare machine: one NVIDIA GPU, Python 3.12 with JAX (CUDA),
# no TensorFlow, no network. Keras and the few packages that machine lacks
# travel as wheels in .whl/ (git-ignored; make device-wheels fills it where pip
# reaches PyPI). Under 5 minutes on an H100.
#
#   benchmarks/device_check.sh          # on the GPU machine
#   benchmarks/device_check.sh --cpu    # the same script, small, on a CPU (CI)
#
# Writes $OUT/device_check.json (or ./device_check.json) with the measured
# rates; `python -m extreme_memorization plan --rates device_check.json`
# projects every experiment group from them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/em-site .whl/*.whl
  export PYTHONPATH="/tmp/em-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND="${KERAS_BACKEND:-jax}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || PYTHON=python
if [ -x .venv/bin/python ] && ! "$PYTHON" -c "import keras" 2>/dev/null; then PYTHON=.venv/bin/python; fi
"$PYTHON" -c "import keras, jax; print('keras', keras.__version__, 'on', keras.backend.backend(), '| jax', jax.__version__, jax.devices())"
exec "$PYTHON" benchmarks/device_check.py --out "${OUT:-.}/device_check.json" "$@"
