# make help lists the targets. Every target creates .venv from the locks first
# (once: nothing is re-installed while the locks are unchanged).

SHELL := /bin/bash
PYTHON ?= python3.11
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
SHELL_SCRIPTS = .ci/run $(sort $(shell find container benchmarks tests src -type f -name '*.sh'))
PYTHON_DIRS = src tests benchmarks

# pytest with one worker per core (a test file per worker; TEST_WORKERS=0 for
# one process), in the shuffled order pytest-randomly prints the seed of
# (-p randomly -p "randomly_seed=N" repeats it; -p no:randomly keeps the file
# order), and each test's time in .cache/junit/<target>.xml.
TEST_WORKERS ?= auto
PYTEST = $(BIN)/python -m pytest --junitxml=.cache/junit/$@.xml
PYTEST_PARALLEL = $(PYTEST) $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Keep tool caches inside the project; run the pipeline with the venv's tools.
export PATH := $(abspath $(BIN)):$(PATH)
export KERAS_HOME := $(CURDIR)/.cache/keras
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONUNBUFFERED := 1

# Before DVC starts: the groups named exist, the checkout is writable, no
# other dvc repro runs here (one line each, pipeline/preflight.py).
PREFLIGHT = $(BIN)/python -m extreme_memorization.pipeline.preflight

.DEFAULT_GOAL := help
.PHONY: help venv demo offline-paper test push pull test-jax test-slow reproduce data validate plan status lint lock bench device-check device-wheels clean compare \
        image reproduce-in-container shell gpu-check slurm test-slurm container-test container-test-cuda clean-container

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-24s %s\n", $$1, $$2}'

$(VENV)/.installed: $(LOCK) $(DEV_LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing $(LOCK) and $(DEV_LOCK) into $(VENV) (once; about 2 minutes)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK) -r $(DEV_LOCK) 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import extreme_memorization, keras, tensorflow, dvc, pytest, moto" && $(BIN)/ruff --version >/dev/null \
	  || { echo "error: the install into $(VENV) failed; see the pip output above"; exit 1; }
	@touch $@

venv: $(STAMP) ## create .venv from the locks: the runtime's and the tools' (done by every target)

validate: $(STAMP) ## check params.yaml and list the experiment groups
	@$(BIN)/python -m extreme_memorization validate

demo: validate ## the offline digits sweep through dvc repro, then its table
	@$(PREFLIGHT) report@digits
	$(BIN)/dvc repro report@digits
	@echo; echo "Report: reports/digits/report.md"; $(BIN)/python -m extreme_memorization table digits

offline-paper: validate ## the whole study on digits: all seven claims, Fig. 1-5, 3 seeds (about 45 minutes on an idle 2-core machine) -> reports/offline/
	@$(PREFLIGHT)
	$(BIN)/dvc repro report-offline
	@echo; echo "Report: reports/offline/report.md"

compare: $(STAMP) ## two revisions offline: make compare A=HEAD~1 [B=rev, default the workspace] [GROUP=digits] [ALL=1: unchanged groups too] -> reports/compare/
	@test -n "$(A)" || { echo "error: name the revision to compare: make compare A=HEAD~1 (and B=... for another than the workspace)"; exit 2; }
	$(BIN)/python -m extreme_memorization compare $(A) $(B) $(if $(GROUP),--group $(GROUP)) $(if $(filter 1,$(ALL)),--all)

test: $(STAMP) ## the test suite (about 3.5 minutes on an idle 2-core machine)
	$(PYTEST_PARALLEL)

test-jax: $(STAMP) ## the core's tests under the JAX backend (closed forms, packs, backends, resume, the public API)
	KERAS_BACKEND=jax $(PYTEST_PARALLEL) tests/test_alignment.py tests/test_losses.py tests/test_gradients.py tests/test_api.py tests/test_load.py \
	  tests/test_packs.py tests/test_backend.py tests/test_resume.py

test-slow: $(STAMP) ## the slow checks: digits sweep vs the claims, fresh clones, signals, remotes, fan-out, the offline study shrunk (about 15 minutes)
	$(PYTEST) -m slow

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
	$(if $(filter 1,$(DRY)),$(BIN)/python -m extreme_memorization.pipeline.dry_plan $(addprefix report@,$(GROUPS)),$(BIN)/dvc repro $(addprefix report@,$(GROUPS)))
endif

data: validate ## prepare tfds datasets only: make data DATASETS="cifar10 svhn_cropped"
	@$(PREFLIGHT)
	$(BIN)/dvc repro $(addprefix prepare-tfds@,$(DATASETS))

plan: validate ## runs and hours per group on this machine (measured); for a GPU: make plan TFLOPS=25 STEP_MS=2 [RATES=device_check.json]
	@$(BIN)/python -m extreme_memorization plan $(if $(TFLOPS),--tflops $(TFLOPS)) $(if $(STEP_MS),--step-ms $(STEP_MS)) $(if $(RATES),--rates $(RATES))

status: $(STAMP) ## one line per group: runs done / planned, stale, running, report (dvc status in short)
	@$(BIN)/python -m extreme_memorization status

bench: $(STAMP) ## the training core against the old path and this machine's matmul rate -> reports/bench.json
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

lock: $(STAMP) ## re-resolve requirements/*.in into cpu.lock, cuda.lock and dev.lock (hashes, same versions)
	cd requirements && for target in cpu cuda dev; do \
	  constraint=$$([ $$target = cpu ] || echo "-c cpu.lock"); \
	  $(abspath $(BIN))/uv pip compile -q --generate-hashes --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple \
	    --custom-compile-command "make lock" $$constraint $$target.in -o $$target.lock || exit 1; \
	done

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
