"""Where and when a run ran, for its run.json: a reader can see which runs
ran side by side (their spans overlap), on which host, on which devices and
under which runtime (``core.backend.runtime``: the device kind, CUDA/cuDNN or
the JAX plugin, the oneDNN switch, the thread counts). The run store serves a
run only to the device kind recorded here (training/store.py).
"""

from __future__ import annotations

import datetime
import os
import socket


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the millisecond: ``2026-12-02T06:11:04.123+00:00``."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def where_and_when(started_at: str) -> dict:
    """run.json's ``started_at``, ``finished_at`` (now), ``hostname``,
    ``visible_devices`` (the CUDA_VISIBLE_DEVICES this process had, or None),
    ``device_kind`` and ``runtime`` (:func:`core.backend.runtime`)."""
    from ..core import backend

    runtime = backend.runtime()
    return {
        "device_kind": runtime["device_kind"],
        "runtime": runtime,
        "started_at": started_at,
        "finished_at": utc_now(),
        "hostname": socket.gethostname(),
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
