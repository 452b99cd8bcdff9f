"""The user's own dataset file (``data.own``): an ``.npz`` of ``x_train,
y_train, x_test, y_test``, read without unpickling anything and checked
(shapes, dtypes, labels 0..k-1), with a one-line error naming what is wrong
and how to save it right; and its sizes read from the arrays' headers (what
``make plan`` needs, without loading the pixels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .datasets import NPZ_KEYS, DataError, Dataset

SAVE_WITH = "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive of .npy files
NPY_MAGIC = b"\x93NUMPY"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of the user's .npz, never unpickling anything.

    numpy's loader treats any file that is neither a zip nor an .npy as a
    pickle, and its error then suggests loading it unsafely; look at the
    file's first bytes instead and say what it is not.
    """
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(NPY_MAGIC):
        raise DataError(f"{path} is a single .npy array, not an .npz of named arrays; save your data with {SAVE_WITH}")
    if not head.startswith(ZIP_MAGIC):
        raise DataError(
            f"{path} is not a valid .npz file (not a zip archive of arrays); save your data with {SAVE_WITH}"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(
                    f"{path} lacks array(s) {', '.join(missing)}; it needs {', '.join(NPZ_KEYS)} (has: {', '.join(f.files)})"
                )
            arrays = {}
            for key in NPZ_KEYS:
                try:
                    arrays[key] = f[key]
                except ValueError:  # object arrays are pickles, which are never loaded
                    raise DataError(
                        f"{path}: array {key} holds Python objects (dtype object), which are not loaded "
                        "because unpickling can run code; save plain numeric arrays (e.g. y.astype(np.int64))"
                    ) from None
    except DataError:
        raise
    except Exception as exc:  # zip/format errors of a truncated or corrupt file
        raise DataError(
            f"{path} is not a valid .npz file ({type(exc).__name__}: {exc}); save it again with {SAVE_WITH}"
        ) from None
    return arrays


def _check_classes(path: Path, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """The number of classes k; labels must be 0..k-1, each present in y_train.

    Labels are not renumbered: {0, 5} is refused rather than silently turned
    into 6 classes (four of them empty) or silently mapped to {0, 1}.
    """
    found = np.unique(y_train)
    if len(found) < 2:
        raise DataError(f"{path}: y_train has only label(s) {found.tolist()}; at least 2 classes are needed")
    k = len(found)
    if found[-1] != k - 1:
        shown = ", ".join(str(c) for c in found[:12]) + (", ..." if k > 12 else "")
        raise DataError(
            f"{path}: y_train has labels {{{shown}}}; labels must be 0..k-1, every class present in y_train "
            f"({k} labels found: use 0..{k - 1}); renumber them, e.g. y = np.searchsorted(np.unique(y_train), y)"
        )
    if y_test.max() >= k:
        raise DataError(f"{path}: y_test has label {y_test.max()}, not seen in y_train (labels 0..{k - 1})")
    counts = np.bincount(y_train, minlength=k)
    few = np.flatnonzero(counts < 2)
    if len(few):
        # Alignment is a mean over pairs of examples of one class: undefined
        # for a class of one. Say it once here rather than as NaNs in training.
        scope = "every class" if len(few) == k else f"class(es) {', '.join(str(c) for c in few[:12])}"
        print(
            f"warning: {path}: {scope} {'have' if 1 < len(few) < k else 'has'} fewer than 2 training examples; "
            f"alignment is undefined for such a class and it is skipped in the alignment means"
            + (" (all alignments will be NaN)" if len(few) == k else ""),
            file=sys.stderr,
        )
    return k


def dataset(path: str | Path, name: str = "npz") -> Dataset:
    """The user's own data: an .npz with x_train, y_train, x_test, y_test.

    Images are (n, H, W, C), (n, H, W) or flat (n, D); uint8 or float.
    Labels are integers 0..k-1, every class present in y_train.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(missing_own(name, path))
    arrays = _arrays(path)
    x = {}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim not in (2, 4):
            raise DataError(f"{path}: x_{split} has shape {images.shape}; expected (n, H, W, C), (n, H, W) or (n, D)")
        if len(images) == 0:
            use = "learns from" if split == "train" else "measures test accuracy on"
            raise DataError(f"{path}: x_{split} has 0 examples; training {use} it, so put examples in it")
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise DataError(f"{path}: x_{split} has dtype {images.dtype}; expected uint8 or a float type")
        if np.issubdtype(images.dtype, np.floating):
            images = images.astype(np.float32)
            if not np.all(np.isfinite(images)):
                raise DataError(f"{path}: x_{split} contains NaN or infinite values")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{path}: y_{split} has shape {labels.shape}; expected ({len(images)},), one label per row of x_{split}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: y_{split} has dtype {labels.dtype}; expected integer class labels")
        if labels.min() < 0:
            raise DataError(f"{path}: y_{split} has negative label {labels.min()}; labels must be 0..k-1")
        x[split] = (images, labels.astype(np.int64))
    if x["train"][0].shape[1:] != x["test"][0].shape[1:]:
        raise DataError(
            f"{path}: x_train rows have shape {x['train'][0].shape[1:]} but x_test rows {x['test'][0].shape[1:]}"
        )
    num_classes = _check_classes(path, x["train"][1], x["test"][1])
    return Dataset(name, *x["train"], *x["test"], num_classes)


def sizes(path: str | Path) -> tuple[int, int, tuple[int, ...], int]:
    """(train examples, test examples, input shape, classes) of an .npz, from
    the image arrays' headers (never their pixels) and the training labels."""
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {}
            for key in ("x_train", "x_test"):
                with archive.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shapes[key] = read(f)[0]
        with np.load(path, allow_pickle=False) as f:
            classes = int(np.max(f["y_train"])) + 1
    except Exception as exc:
        raise DataError(
            f"{path} has no readable x_train, x_test and y_train ({type(exc).__name__}); "
            f"run `python -m extreme_memorization prepare` on it for the details"
        ) from None
    shape = tuple(shapes["x_train"][1:])
    return shapes["x_train"][0], shapes["x_test"][0], shape + (1,) if len(shape) == 2 else shape, classes


def missing_own(name: str, path: str | Path) -> str:
    """What to do when the file of an own dataset is not there (one line)."""
    return (
        f"own dataset {name!r}: {path} not found; save your data there with {SAVE_WITH}, "
        f"or point data.own.{name} in params.yaml at your .npz file"
    )
