"""Datasets: the arrays every stage shares, the prepared cache and what
training sees.

The prepare stage turns each source (sources.py: scikit-learn's digits,
tensorflow-datasets, the user's own ``.npz``) into one compact cache file,
``data/prepared/<name>.npz`` (raw images, uint8 where the source is, plus
integer labels), so training never touches scikit-learn, tfds or the user's
file again. Training then applies the paper's per-image standardization.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import files
from ..errors import UserError

PREPARED_DIR = Path("data/prepared")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(UserError, RuntimeError):
    """A dataset that cannot be prepared or loaded; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (n, *input_shape)
    y_train: np.ndarray  # (n,) int64 in [0, num_classes)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def prepared_path(name: str) -> Path:
    return PREPARED_DIR / f"{name}.npz"


# --- the prepared cache ------------------------------------------------------


def save(dataset: Dataset, path: str | Path) -> None:
    """Write atomically: a crash leaves the old file or none, never half of one."""
    with files.atomic_path(path) as tmp:
        np.savez(
            tmp,
            x_train=dataset.x_train,
            y_train=dataset.y_train,
            x_test=dataset.x_test,
            y_test=dataset.y_test,
            num_classes=np.int64(dataset.num_classes),
        )


def load(path: str | Path, name: str | None = None) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prepared data {path} not found; run `dvc repro` (or `make data`) to prepare it")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in (*NPZ_KEYS, "num_classes")}
    except Exception as exc:
        raise DataError(
            f"prepared data {path} is corrupt ({type(exc).__name__}: {exc}); delete it and run `dvc repro`"
        ) from None
    return Dataset(
        name or path.stem,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        int(arrays["num_classes"]),
    )


# --- what training sees ------------------------------------------------------


def standardize(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per-image standardization of the paper (and tf.image.per_image_standardization):
    ``(x - mean) / max(std, 1/sqrt(D))`` over all D pixels and channels of one image.
    In float64, a chunk of images at a time (CIFAR whole in float64 would be 1.2 GB)."""
    flat = images.reshape(len(images), -1)
    d = flat.shape[1]
    out = np.empty(flat.shape, dtype=np.float32)
    for i in range(0, len(flat), chunk):
        x = flat[i : i + chunk].astype(np.float64)
        mean = x.mean(axis=1, keepdims=True)
        std = x.std(axis=1, keepdims=True)
        out[i : i + chunk] = (x - mean) / np.maximum(std, 1.0 / np.sqrt(d))
    return out.reshape(images.shape)


def shuffle_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """A fixed random permutation of the label vector: each example gets the
    label of another, class frequencies kept (the paper's shuffled labels)."""
    rng = np.random.default_rng(seed)
    return labels[rng.permutation(len(labels))]


def enlarge(images: np.ndarray, size: int | None) -> np.ndarray:
    """The one place images are resized (the run setting ``image_size``):
    each pixel becomes a block of (size / H) x (size / W) equal pixels, so an
    8x8 digit at size 32 is the same picture in 4x4 blocks, nothing
    interpolated. For models that need larger images than a dataset has
    (keras.applications' ResNet and DenseNet: 32x32; the ConvNet: 15x15)."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    if images.ndim != 4:
        raise DataError(f"image_size {size} needs images (n, H, W, C); these rows have shape {images.shape[1:]}; "
                        "set image_size: null")  # fmt: skip
    h, w = images.shape[1:3]
    if size % h or size % w:
        raise DataError(f"image_size {size} is not a multiple of the images' {h}x{w}; set image_size to a multiple "
                        f"of {h if h == w else f'{h} and {w}'} (pixels are repeated, not interpolated)")  # fmt: skip
    return images.repeat(size // h, axis=1).repeat(size // w, axis=2)


def for_training(dataset: Dataset, labels: str = "true", seed: int = 0, image_size: int | None = None) -> Dataset:
    """Standardized float32 images (enlarged to ``image_size`` if set);
    labels shuffled if asked (train and test)."""
    y_train, y_test = dataset.y_train, dataset.y_test
    if labels == "shuffled":
        y_train = shuffle_labels(y_train, seed)
        y_test = shuffle_labels(y_test, seed + 1)
    return dataclasses.replace(
        dataset,
        x_train=enlarge(standardize(dataset.x_train), image_size),
        y_train=y_train,
        x_test=enlarge(standardize(dataset.x_test), image_size),
        y_test=y_test,
    )
