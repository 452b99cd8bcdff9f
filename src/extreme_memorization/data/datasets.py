"""Datasets: a name in, train/test arrays, number of classes and input shape out.

The prepare stage turns each source into one compact cache file,
``data/prepared/<name>.npz`` (raw images, uint8 where the source is, plus
integer labels), so training never touches scikit-learn, tfds or the user's
file again. Training then applies the paper's per-image standardization.

Sources:
- ``digits``: scikit-learn's 8x8 handwritten digits (ships with the package,
  no network), split into train/test by a fixed stratified split.
- ``cifar10``, ``cifar100``, ``svhn_cropped``: tensorflow-datasets (train and
  test splits; SVHN's "extra" split is not used, as in the paper).
- the user's own datasets, each named in ``data.own`` of params.yaml: an
  ``.npz`` file with ``x_train, y_train, x_test, y_test`` (read and checked
  by data/npz.py).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from .. import files
from ..config.settings import DataConfig
from ..errors import UserError
from . import network

TFDS_DATASETS = {
    # name: (number of classes, host the tfds download comes from)
    "cifar10": (10, "www.cs.toronto.edu"),
    "cifar100": (100, "www.cs.toronto.edu"),
    "svhn_cropped": (10, "ufldl.stanford.edu"),
}
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


# --- sources -----------------------------------------------------------------


def digits(test_fraction: float, split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[..., None]  # (1797, 8, 8, 1), values 0..16
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def _remove_partial_downloads(data_dir: Path, name: str) -> None:
    """tfds leaves incomplete.* and *.tmp.* folders behind when a download fails."""
    for root in (data_dir / name, data_dir / "downloads"):
        if not root.exists():
            continue
        for path in list(root.rglob("*")):
            if not (path.name.startswith("incomplete.") or ".tmp." in path.name or path.name.endswith(".incomplete")):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def tfds_data_dir(config: DataConfig) -> Path:
    """params.yaml's data.tfds_data_dir, else $TFDS_DATA_DIR, else tfds' default."""
    chosen = config.tfds_data_dir or os.environ.get("TFDS_DATA_DIR")
    return Path(chosen).expanduser() if chosen else Path("~/tensorflow_datasets").expanduser()


def from_tfds(name: str, config: DataConfig) -> Dataset:
    num_classes, host = TFDS_DATASETS[name]
    data_dir = tfds_data_dir(config)
    if data_dir.exists() and not data_dir.is_dir():
        named = "data.tfds_data_dir in params.yaml" if config.tfds_data_dir else "TFDS_DATA_DIR"
        raise DataError(f"{named} is {data_dir}, which is a file, not a folder; point it at a tfds data "
                        "directory (a folder; a new one is created)")  # fmt: skip
    import tensorflow_datasets as tfds

    def load(download: bool):
        return tfds.load(
            name,
            split=["train", "test"],
            data_dir=str(data_dir),
            as_supervised=True,
            download=download,
        )

    try:
        splits = load(download=False)
    except AssertionError:
        # Not prepared yet. tfds alone retries an unreachable download for
        # minutes; probe the source host first and fail fast instead.
        if not network.reachable(host, config.download_timeout):
            proxy = network.proxy_for(host)
            via = f" through the proxy {network.without_password(proxy)} (HTTPS_PROXY)" if proxy else ""
            raise DataError(
                f"dataset {name!r} is not prepared in {data_dir} and {host} cannot be reached{via} "
                f"(no network within {config.download_timeout:g} s). Either run "
                f"`make data DATASETS={name}` on a machine with network and copy its tfds data "
                f"directory here, then point TFDS_DATA_DIR (or data.tfds_data_dir in params.yaml) "
                f"at it; or place an already prepared tfds data directory there."
            ) from None
        try:
            splits = load(download=True)
        except BaseException:
            _remove_partial_downloads(data_dir, name)
            raise
    arrays = []
    for split in splits:
        # Batches of a fixed size: batch_size=-1 needs a known split size,
        # which tfds' mock data (the tests) does not have.
        batches = list(tfds.as_numpy(split.batch(4096)))
        arrays.append(np.concatenate([b[0] for b in batches]).astype(np.uint8))
        arrays.append(np.concatenate([b[1] for b in batches]).astype(np.int64))
    return Dataset(name, *arrays, num_classes)


def build(name: str, config: DataConfig) -> Dataset:
    """The raw dataset from its source (what the prepare stage caches)."""
    if name == "digits":
        return digits(config.digits_test_fraction, config.split_seed)
    if name in TFDS_DATASETS:
        return from_tfds(name, config)
    if name in config.own:
        from . import npz

        return npz.dataset(config.own[name], name)
    raise DataError(
        f"unknown dataset {name!r}; allowed: digits, {', '.join(TFDS_DATASETS)}"
        + (f", {', '.join(config.own)}" if config.own else "")
        + f"; for your own data add data: own: {{{name}: path/to/{name}.npz}} to params.yaml"
    )


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
