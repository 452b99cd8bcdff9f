# make help lists the targets. Every target creates .venv from the locks first
# (once: nothing is re-installed while the locks are unchanged).

SHELL := /bin/bash
# The Python .venv is made with: make venv PYTHON=python3.12 (or a path).
# Python 3.11, 3.12 and 3.13 are supported, with the same locks (their
# markers pick what differs). Left empty: the Python that made .venv, else
# the first of python3.11, python3.12, python3.13 found (requirements/venv.sh).
PYTHON ?=
LOCK := requirements/cpu.lock
# The test and lint tools, installed into .venv on top of LOCK (not into the image).
DEV_LOCK := requirements/dev.lock
ifeq ($(EM_CONTAINER),1)
# Inside the CUDA image: its packages are installed system-wide from cuda.lock.
BIN := /usr/local/bin
STAMP :=
else ifneq ($(ENV_BIN),)
# An environment made elsewhere, used as it is (nothing installed):
# make reproduce ENV_BIN=/abs/path/.venv/bin
BIN := $(ENV_BIN)
STAMP :=
else
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
endif
DATASETS ?= cifar10 cifar100 svhn_cropped
IMAGE ?= extreme-memorization:cuda
IMAGE_LOCK ?= requirements/cuda.lock
# Where the container keeps tfds data: a named volume, or a host folder
# holding a prepared tfds data directory (make ... TFDS_DIR=/abs/path).
TFDS_DIR ?= extreme-memorization-tfds

# Container engine: docker when its daemon answers, else podman. Worked out
# once, and only by the targets that use it.
ifeq ($(origin CONTAINER_ENGINE),undefined)
CONTAINER_ENGINE = $(eval CONTAINER_ENGINE := $(shell \
	command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1 && echo docker \
	|| { command -v podman >/dev/null 2>&1 && echo podman || echo docker; }))$(CONTAINER_ENGINE)
endif
# The container runs as the invoking user, with the checkout (which that
# user must own and be able to write: the caches go there) mounted at /work.
CONTAINER_USER ?= $(shell id -u):$(shell id -g)
CONTAINER_WORKDIR ?= $(CURDIR)
CONTAINER_FLAGS ?=
CONTAINER_BUILD_FLAGS ?=
REPRODUCE_TARGETS ?= gpu-check reproduce
# The GPU goes in the engine's own way: podman accepts docker's --gpus and
# ignores it. EM_HOST_GPU tells gpu-check inside that the host has a GPU.
HOST_GPU ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)
is_podman = $(findstring podman,$(notdir $(CONTAINER_ENGINE)))
GPU_FLAGS = $(if $(filter 1,$(HOST_GPU)),$(if $(is_podman),--device nvidia.com/gpu=all,--gpus all))
# Rootless podman maps the invoking user to root; keep-id keeps its own uid.
USERNS_FLAG = $(if $(is_podman),$(if $(filter 0,$(shell id -u)),,--userns=keep-id))
# A stop (docker stop) gives the training 60 s, not the engine's 10, to write
# its checkpoint: the image's tini passes the signal on and waits for it.
CONTAINER_RUN = $(CONTAINER_ENGINE) run --rm --stop-timeout 60 $(GPU_FLAGS) $(USERNS_FLAG) --user $(CONTAINER_USER) \
	-e EM_HOST_GPU=$(HOST_GPU) -v "$(CONTAINER_WORKDIR)":/work -v "$(TFDS_DIR)":/data/tfds $(CONTAINER_FLAGS)
CONTAINER_TEST = tests/container/run.sh

# What make lint checks: every shell script (.ci/run and every *.sh, package
# data under src/ included; found when make lint runs) and the Python sources.
SHELL_SCRIPTS = .ci/run $(sort $(shell find container benchmarks tests src requirements -type f -name '*.sh'))
PYTHON_DIRS = src tests benchmarks

# pytest with one worker per core (TEST_WORKERS=0 for one process; a worker
# that runs out of tests takes some of the other's, so no long file holds one
# back), in the shuffled order pytest-randomly prints the seed of
# (-p randomly -p "randomly_seed=N" repeats it; -p no:randomly keeps the file
# order), and each test's time in .cache/junit/<target>.xml.
TEST_WORKERS ?= auto
PYTEST = $(BIN)/python -m pytest --junitxml=.cache/junit/$@.xml
PYTEST_PARALLEL = $(PYTEST) $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

# Keep tool caches inside the project; run the pipeline with the venv's tools.
export PATH := $(abspath $(BIN)):$(PATH)
export KERAS_HOME := $(CURDIR)/.cache/keras
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONUNBUFFERED := 1

# Before DVC starts: the groups named exist, the checkout is writable, no
# other dvc repro runs here (one line each, pipeline/preflight.py).
PREFLIGHT = $(BIN)/python -m extreme_memorization preflight

.DEFAULT_GOAL := help
.PHONY: help venv demo offline-paper test test-pipeline push pull test-jax test-slow reproduce data validate plan status lint lock bench device-check device-wheels clean compare \
        image reproduce-in-container shell gpu-check slurm test-slurm container-test container-test-cuda clean-container

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-24s %s\n", $$1, $$2}'

$(VENV)/.installed: $(LOCK) $(DEV_LOCK) pyproject.toml
	@requirements/venv.sh $(VENV) "$(PYTHON)" $(LOCK) $(DEV_LOCK)

# Make .venv again when PYTHON on the command line is another Python than the
# one that made it (its version is in the stamp), or when its Python is gone.
ifneq ($(STAMP),)
ifeq ($(origin PYTHON),command line)
ifneq ($(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null),$(shell cat $(STAMP) 2>/dev/null))
.PHONY: $(STAMP)
endif
endif
ifneq ($(wildcard $(STAMP)),)
ifeq ($(realpath $(BIN)/python),)
.PHONY: $(STAMP)
endif
endif
endif

venv: $(STAMP) ## create .venv from the locks (done by every target): PYTHON=python3.12 for another Python than 3.11

validate: $(STAMP) ## check params.yaml and list the experiment groups
	@$(BIN)/python -m extreme_memorization validate

demo: validate ## the offline digits sweep through dvc repro, then its table
	@$(PREFLIGHT) report@digits
	$(BIN)/dvc repro report@digits
	@echo; echo "Report: reports/digits/report.md"; $(BIN)/python -m extreme_memorization table digits

offline-paper: validate ## the whole study on digits: all seven claims, Fig. 1-5, 3 seeds (62 minutes on an idle 2-core machine) -> reports/offline/
	@$(PREFLIGHT)
	$(BIN)/dvc repro report-offline
	@echo; echo "Report: reports/offline/report.md"

compare: $(STAMP) ## two revisions offline: make compare A=HEAD~1 [B=rev, default the workspace] [GROUP=digits] [ALL=1: unchanged groups too] -> reports/compare/
	@test -n "$(A)" || { echo "error: name the revision to compare: make compare A=HEAD~1 (and B=... for another than the workspace)"; exit 2; }
	$(BIN)/python -m extreme_memorization compare $(A) $(B) $(if $(GROUP),--group $(GROUP)) $(if $(filter 1,$(ALL)),--all)

# The tiers by kind: `make test` leaves out the tests marked pipeline (DVC end
# to end, real processes and signals, long real trainings), each of which has
# an in-process twin in it; `make test-pipeline` runs them. The slowest 15
# tests of `make test` are listed at its end.
test: $(STAMP) ## the fast tier: the code in pytest's processes, no DVC end to end or long training (times: docs/maintainers.md)
	$(PYTEST_PARALLEL) -m "not pipeline" --durations=15

test-pipeline: $(STAMP) ## the pipeline tier: dvc repro, push and pull end to end, stops sent to real trainings, long trainings
	$(PYTEST_PARALLEL) -m pipeline

test-jax: $(STAMP) ## the core's tests under the JAX backend (closed forms, packs, backends, resume, the public API)
	KERAS_BACKEND=jax $(PYTEST_PARALLEL) tests/test_alignment.py tests/test_losses.py tests/test_gradients.py tests/test_api.py tests/test_load.py \
	  tests/test_packs.py tests/test_backend.py tests/test_resume.py

# Each Python in its own environment, .venv-3.12 and so on (made as .venv
# is, by requirements/venv.sh); a Python that is not installed is skipped
# with a line that says so.
PYTHONS ?= 3.12 3.13
.PHONY: test-pythons
test-pythons: ## the fast tier under Python 3.12 and 3.13 too (PYTHONS="3.13" for some), each in .venv-3.12 ...; skips one not installed
	@status=0; for version in $(PYTHONS); do \
	  python=$$(requirements/venv.sh --find $$version) \
	    || { echo "test-pythons: Python $$version skipped: no python$$version on PATH or under pyenv"; continue; }; \
	  requirements/venv.sh .venv-$$version "$$python" $(LOCK) $(DEV_LOCK) || { status=1; continue; }; \
	  echo "pytest under Python $$version (.venv-$$version)"; \
	  PATH="$(CURDIR)/.venv-$$version/bin:$$PATH" .venv-$$version/bin/python -m pytest --junitxml=.cache/junit/$@-$$version.xml \
	    $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal) -m "not pipeline" $(TESTS) || status=1; \
	done; exit $$status

# The DVC-touching tests against the newest DVC on PyPI (the package is
# written against 3.67.x: src/extreme_memorization/dvc_api.py): .venv-dvc-newest
# is made from the locks as .venv is, with .venv's Python, then DVC and its
# own libraries are upgraded in it (what else they need moves with them);
# EM_DVC_ANY_VERSION=1 takes the tests past the version check. CI runs it
# and goes on whatever it finds.
DVC_NEWEST_VENV := .venv-dvc-newest
DVC_NEWEST_PACKAGES ?= dvc dvc-s3 dvc-data dvc-objects
DVC_TESTS ?= tests/test_dvc_api.py tests/test_results.py tests/test_own_data.py tests/test_status.py \
	tests/test_local.py tests/test_reproduce.py
.PHONY: test-dvc-newest
test-dvc-newest: $(STAMP) ## the DVC-touching fast tests against the newest DVC on PyPI, in .venv-dvc-newest (may fail: the pin is 3.67.x)
	@set -e; newest=$$($(BIN)/python -c 'import json, urllib.request as u; \
	  print(json.load(u.urlopen("https://pypi.org/pypi/dvc/json", timeout=30))["info"]["version"])') \
	  || { echo "test-dvc-newest: PyPI did not answer (no network?): nothing tried"; exit 1; }; \
	pinned=$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("dvc"))'); \
	if [ "$$newest" = "$$pinned" ]; then \
	  echo "test-dvc-newest: the newest DVC on PyPI is $$newest, the pinned one: make test already ran under it"; exit 0; fi; \
	python=$$($(BIN)/python -c 'import sys; print(sys._base_executable)'); \
	requirements/venv.sh $(DVC_NEWEST_VENV) "$$python" $(LOCK) $(DEV_LOCK); \
	$(DVC_NEWEST_VENV)/bin/uv pip install -q --python $(DVC_NEWEST_VENV)/bin/python --index-url https://pypi.org/simple \
	  $(addprefix --upgrade-package ,$(DVC_NEWEST_PACKAGES)) $(DVC_NEWEST_PACKAGES); \
	version=$$($(DVC_NEWEST_VENV)/bin/python -c 'import importlib.metadata as m; print(m.version("dvc"))'); \
	echo "pytest against DVC $$version ($(DVC_NEWEST_VENV); the pin is $$(grep -o 'dvc~=[0-9.]*' pyproject.toml))"; \
	EM_DVC_ANY_VERSION=1 PATH="$(CURDIR)/$(DVC_NEWEST_VENV)/bin:$$PATH" $(DVC_NEWEST_VENV)/bin/python -m pytest \
	  --junitxml=.cache/junit/$@.xml $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(DVC_TESTS) \
	  || { echo "test-dvc-newest: the tests above fail under DVC $$version: src/extreme_memorization/dvc_api.py needs work before the pin moves"; exit 1; }

test-slow: $(STAMP) ## the slow checks: digits sweep vs the claims, fresh clones, signals, remotes, fan-out, the offline study shrunk (about 16 minutes on 2 cores)
	$(PYTEST_PARALLEL) -m slow --durations=20

slurm: validate ## a group's training on a Slurm cluster: make slurm GROUP=section3 SLURM_ARGS="--gpus-per-task 1 --time 08:00:00"
	@test -n "$(GROUP)" || { echo "error: name the experiment group: make slurm GROUP=digits (make validate lists them)"; exit 2; }
	$(BIN)/python -m extreme_memorization slurm $(GROUP) $(SLURM_ARGS)

test-slurm: $(STAMP) ## the Slurm tests on a local single-node cluster (needs slurm-wlm and munge, as root)
	$(PYTEST) -m slurm tests/test_slurm.py

push: $(STAMP) ## send the weights and DVC's run-cache to the default DVC remote (REMOTE=name for another)
	@$(BIN)/python -m extreme_memorization push $(if $(REMOTE),-r $(REMOTE))

pull: $(STAMP) ## fetch what was pushed (stages never built are skipped), then reuse it: REMOTE=name
	@$(BIN)/python -m extreme_memorization pull $(if $(REMOTE),-r $(REMOTE))

reproduce: $(STAMP) ## every group (GPU box); side by side: JOBS=4 [GPUS=0,1,2,3]; GROUPS="section3" for some; DRY=1: what would run
	@$(PREFLIGHT) $(if $(filter 1,$(DRY)),--groups-only) $(addprefix report@,$(GROUPS))
	@$(BIN)/python -m extreme_memorization validate --data
ifneq ($(JOBS)$(GPUS),)
	$(BIN)/python -m extreme_memorization local $(GROUPS) $(if $(JOBS),--jobs $(JOBS)) $(if $(GPUS),--gpus $(GPUS)) $(if $(filter 1,$(DRY)),--dry-run)
else
	$(if $(filter 1,$(DRY)),$(BIN)/python -m extreme_memorization dry-run $(addprefix report@,$(GROUPS)),$(BIN)/dvc repro $(addprefix report@,$(GROUPS)))
endif

data: validate ## prepare tfds datasets only: make data DATASETS="cifar10 svhn_cropped"
	@$(PREFLIGHT)
	$(BIN)/dvc repro $(addprefix prepare-tfds@,$(DATASETS))

plan: validate ## runs and hours per group on this machine (measured); for a GPU: make plan TFLOPS=25 STEP_MS=2 [RATES=device_check.json]
	@$(BIN)/python -m extreme_memorization plan $(if $(TFLOPS),--tflops $(TFLOPS)) $(if $(STEP_MS),--step-ms $(STEP_MS)) $(if $(RATES),--rates $(RATES))

status: $(STAMP) ## one line per group: runs done / planned, stale, running, report (dvc status in short)
	@$(BIN)/python -m extreme_memorization status

bench: $(STAMP) ## the training core against the old path and this machine's matmul rate -> reports/bench.json; BENCH_ARGS="--quick --demo": small (CI's)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

device-check: $(STAMP) ## the GPU check (benchmarks/device_check.sh) run small on this CPU under JAX
	OUT=$(CURDIR)/.cache benchmarks/device_check.sh --cpu

device-wheels: ## Keras and what a bare JAX GPU machine lacks, as cp312 wheels in .whl/ (for device_check.sh)
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $$(grep -E '^(keras|namex|optree|ruamel-yaml)==' $(LOCK) | sed 's/ .*//')

lint: $(STAMP) ## hadolint (Dockerfile), shellcheck (every shell script), ruff check and ruff format --check (Python)
	@status=0; for check in "hadolint Dockerfile" "shellcheck $(SHELL_SCRIPTS)" \
	  "ruff check $(PYTHON_DIRS)" "ruff format --check --output-format concise $(PYTHON_DIRS)"; do \
	  echo "$$check"; $(BIN)/$$check || status=1; \
	done; exit $$status

# cpu.lock and dev.lock: one universal resolution for Python 3.11 to 3.13
# (environment markers where a version differs); cuda.lock: the image's
# Python 3.11 on Linux alone. CHECK=1 resolves into a scratch copy and fails
# when a lock differs from what the .in files give (CI runs it).
lock: $(STAMP) ## re-resolve requirements/*.in into cpu.lock, dev.lock and cuda.lock (hashes, same versions); CHECK=1: fail if one is stale
	@set -e; dir=requirements; \
	if [ "$(CHECK)" = 1 ]; then dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; cp requirements/*.in requirements/*.lock "$$dir"; fi; \
	for target in cpu dev cuda; do \
	  case $$target in \
	    cpu) how="--universal";; \
	    dev) how="--universal -c cpu.lock";; \
	    cuda) how="--python-platform x86_64-manylinux_2_28 -c cpu.lock";; \
	  esac; \
	  (cd "$$dir" && $(abspath $(BIN))/uv pip compile -q --generate-hashes --python-version 3.11 $$how \
	    --index-url https://pypi.org/simple --custom-compile-command "make lock" $$target.in -o $$target.lock); \
	done; \
	if [ "$(CHECK)" = 1 ]; then \
	  for target in cpu dev cuda; do \
	    cmp -s requirements/$$target.lock "$$dir/$$target.lock" || { diff -u requirements/$$target.lock "$$dir/$$target.lock" | head -40; \
	      echo "error: requirements/$$target.lock is not what requirements/*.in resolve to: run make lock and commit the locks"; exit 1; }; \
	  done; echo "the locks match requirements/*.in"; \
	fi

image: ## build the image: CONTAINER_ENGINE=docker|podman, IMAGE_LOCK=requirements/cuda.lock
	$(CONTAINER_ENGINE) build $(CONTAINER_BUILD_FLAGS) --build-arg LOCK=$(IMAGE_LOCK) -t $(IMAGE) .

reproduce-in-container: image ## make gpu-check reproduce inside the image (GPU if present), as your user
	$(CONTAINER_RUN) $(IMAGE) make $(REPRODUCE_TARGETS)

shell: image ## a shell inside the image, repository mounted at /work (reads stdin when not a terminal)
	$(CONTAINER_RUN) $$([ -t 0 ] && echo -it || echo -i) $(IMAGE) bash

container-test: ## build the image from cpu.lock with podman, make demo inside as another uid, podman stop + resume (13 min loaded)
	$(CONTAINER_TEST) test requirements/cpu.lock extreme-memorization:cpu

container-test-cuda: ## the same with cuda.lock (7.7 GB image, 36 GB free disk)
	$(CONTAINER_TEST) test requirements/cuda.lock extreme-memorization:cuda

clean-container: ## remove the container test's image store (.cache/containers)
	$(CONTAINER_TEST) clean

gpu-check: $(STAMP) ## fail if this host has a GPU that TensorFlow does not see
	@$(BIN)/python -m extreme_memorization gpu-check

clean: ## remove caches (keeps .venv, runs and reports)
	rm -rf .cache .pytest_cache
