# CUDA image for `make reproduce`: the same pinned Python packages as the CPU
# set-up (requirements/cuda.lock and requirements/cpu.lock come from one
# source by `make lock`), TensorFlow with its CUDA and cuDNN wheels. The
# runtime packages only: the test and lint tools (requirements/dev.lock) stay
# out of the image.
#
# Why not tensorflow/tensorflow:<2.18+>-gpu: those images ship CUDA 12.3 and
# cuDNN 8.9, while TensorFlow 2.18-2.21 are built for CUDA 12.5 and cuDNN 9.3,
# and they do not see the GPU (TensorFlow issues 62412, 81344, 88348).
# tensorflow[and-cuda] brings the CUDA and cuDNN libraries it was built
# against as pip wheels, pinned with hashes in the lock, so a plain Python
# base suffices; the host provides only the NVIDIA driver (through the NVIDIA
# Container Toolkit: `docker run --gpus all`, or `podman run --device
# nvidia.com/gpu=all` with the toolkit's CDI spec; `make` picks the flag).
#
# Build argument LOCK: the lock to install, requirements/cuda.lock by default;
# `make container-test` builds this same file with requirements/cpu.lock
# (TensorFlow without CUDA, a third of the size) to check it end to end.
FROM python:3.11.11-slim-bookworm
ARG LOCK=requirements/cuda.lock

# make runs the pipeline; git is what DVC uses to version parameters and
# metrics; tini, as PID 1, passes a stop signal on to every process (below).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make git tini \
    && rm -rf /var/lib/apt/lists/*
# DL3008 (pin apt versions) is ignored on purpose: Debian removes superseded
# versions from its archive at each point release, so pinned versions would
# make this file unbuildable within months; the base tag pins the release.

# Only the lock is copied (.dockerignore admits nothing else to the context):
# the pip layer is rebuilt only when the lock changes. buildah (podman build)
# also compares the copied file's owner, so a checkout owned by another user
# rebuilds this layer once.
COPY ${LOCK} /tmp/requirements.lock
RUN python -m pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

# Any host user id can write the tfds volume (make runs the container as the
# host's user so files in the bind-mounted repository keep their owner).
RUN useradd --create-home --uid 1000 researcher \
    && mkdir -p /data/tfds \
    && chmod 1777 /data/tfds

# The repository is bind-mounted at /work; the package runs from its src/.
# Caches go to the repository (.cache) or the tfds volume, never the image.
ENV PYTHONPATH=/work/src \
    EM_CONTAINER=1 \
    TFDS_DATA_DIR=/data/tfds \
    KERAS_HOME=/work/.cache/keras \
    MPLCONFIGDIR=/work/.cache/matplotlib \
    HOME=/tmp \
    PYTHONUNBUFFERED=1
VOLUME ["/data/tfds"]
WORKDIR /work

# docker stop / podman stop send SIGTERM to PID 1 alone. tini -g passes it
# to the whole process group, so the training gets it as well as make and
# dvc (which do not pass it on), and container/entrypoint.sh keeps the
# container up until the training has written its checkpoint.
COPY container/entrypoint.sh /usr/local/bin/em-entrypoint
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/local/bin/em-entrypoint"]
USER 1000
CMD ["make", "help"]
