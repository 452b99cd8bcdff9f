"""The paper's alignment measure and the measures it is compared with.

Pure math on arrays (numpy in, Python floats out); nothing here trains.

For vectors v_1..v_n (n >= 2) with mean norm m = mean_i ||v_i||::

    A(v) = sum_{i != j} <v_i, v_j> / (n (n-1) m^2)
         = (||sum_i v_i||^2 - sum_i ||v_i||^2) / (n (n-1) m^2)

the mean inner product over distinct pairs divided by the squared *mean
norm* (not the mean cosine). A <= 1, A = 1 iff all vectors are equal, A can
be negative. It is undefined for n < 2 (:func:`alignment` raises) and for
all-zero vectors (it returns NaN).

Per-example gradients are never materialized. For a dense layer whose
per-example gradient is an outer product ``g_i = a_i b_i^T`` (W2: a = phi(W1 x),
b = delta = dl/dz; W1: a = x, b = e = (W2 delta) * phi'(W1 x)), every sum the
measures need has a closed form::

    ||g_i|| = ||a_i|| ||b_i||,    <g_i, g_j> = <a_i, a_j> <b_i, b_j>,
    ||sum_i g_i||^2 = ||A^T B||_F^2 = sum_ij (A A^T)_ij (B B^T)_ij.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def _np(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else np.asarray(ops.convert_to_numpy(x))


def _from_sums(sum_sq: float, norms: np.ndarray) -> float:
    """A from ||sum_i v_i||^2 and the norms ||v_i||."""
    n = len(norms)
    if n < 2:
        raise ValueError(f"alignment needs at least 2 vectors, got {n}")
    m = float(np.mean(norms, dtype=np.float64))
    if m == 0.0:
        return float("nan")
    return (float(sum_sq) - float(np.sum(np.square(norms, dtype=np.float64)))) / (n * (n - 1) * m * m)


def row_norms(a, chunk: int = 4096) -> np.ndarray:
    """||a_i|| in float64, a chunk of rows at a time (no float64 copy of all of a)."""
    a = _np(a)
    a = a.reshape(len(a), -1)
    out = np.empty(len(a))
    for i in range(0, len(a), chunk):
        rows = a[i : i + chunk].astype(np.float64)
        out[i : i + chunk] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return out


def alignment(v) -> float:
    """A(v) for an (n, d) array of n vectors (rows). Raises ValueError for n < 2."""
    v = _np(v)
    v = v.reshape(len(v), -1)
    total = v.sum(axis=0, dtype=np.float64)
    return _from_sums(float(total @ total), row_norms(v))


def outer_sum_sq(a, b) -> float:
    """||sum_i a_i b_i^T||_F^2 without forming any a_i b_i^T.

    Uses the n x n Gram form for small n (minibatches) and ``A^T B`` for large
    n (whole classes), whichever does fewer multiplications.
    """
    a = _np(a)
    b = _np(b).astype(a.dtype, copy=False)
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    if n * (p + q) < p * q:
        gram = (a @ a.T) * (b @ b.T)
        return float(gram.sum(dtype=np.float64))
    s = a.T @ b
    return float(np.einsum("ij,ij->", s, s, dtype=np.float64))


def outer_alignment(a, b) -> float:
    """A of the per-example gradients g_i = a_i b_i^T of a dense layer."""
    return _from_sums(outer_sum_sq(a, b), row_norms(a) * row_norms(b))


def outer_gram(a, b) -> np.ndarray:
    """The n x n matrix <g_i, g_j> of g_i = a_i b_i^T (small n only)."""
    a = _np(a)
    b = _np(b).astype(a.dtype, copy=False)
    return (a @ a.T) * (b @ b.T)


def gradient_diversity(parts) -> float:
    """sum_i ||g_i||^2 / ||sum_i g_i||^2 for g_i = concat of a_i b_i^T over ``parts``
    [(a, b), ...] (one pair per dense layer)."""
    sum_sq = sum(outer_sum_sq(a, b) for a, b in parts)
    norms_sq = sum(np.square(row_norms(a) * row_norms(b)) for a, b in parts)
    return float(np.sum(norms_sq) / sum_sq) if sum_sq > 0 else float("nan")


# Float32 resolves a probability near 1 to eps = 1.2e-7, so a softmax logit
# gradient p - onehot(y) of an example fitted to p_y ~ 1 is rounding noise
# in its direction: the same weights gave cosine stiffness 0.365 with
# TensorFlow's oneDNN kernels and 0.599 without. Below 100 eps (1.2e-5) the
# logit gradient carries over 1% rounding error, and the W1 and W2 gradients
# built from it inherit that error.
ROUNDING_LEVEL = 100 * float(np.finfo(np.float32).eps)


def above_rounding_level(logit_gradient) -> np.ndarray:
    """The examples whose logit gradient dl/dz is larger than :data:`ROUNDING_LEVEL`."""
    return row_norms(logit_gradient) > ROUNDING_LEVEL


def cosine_stiffness(parts) -> float:
    """mean_{i != j} cos(g_i, g_j) for g_i = concat of a_i b_i^T over ``parts``,
    one (a, b) pair per dense layer with the output layer last (its b is the
    logit gradient dl/dz).

    A cosine normalizes each example, so an example whose gradient is rounding
    noise counts as much as any other: examples whose logit gradient is at
    or below :data:`ROUNDING_LEVEL` are left out (NaN when fewer than two remain).
    """
    n = len(row_norms(parts[0][0]))
    if n < 2:
        raise ValueError(f"cosine stiffness needs at least 2 vectors, got {n}")
    keep = above_rounding_level(parts[-1][1])
    if keep.sum() < 2:
        return float("nan")
    parts = [(_np(a)[keep], _np(b)[keep]) for a, b in parts]
    norms = np.sqrt(sum(np.square(row_norms(a) * row_norms(b)) for a, b in parts))
    n = len(norms)
    # u_i = g_i / ||g_i||: scaling a_i by 1/||g_i|| keeps the outer-product form.
    sum_sq = sum(outer_sum_sq((a / norms[:, None]).astype(a.dtype), b) for a, b in parts)
    return (sum_sq - n) / (n * (n - 1))


def gradient_confusion(parts) -> float:
    """min_{i != j} <g_i, g_j> (small n only: it needs the n x n Gram matrix)."""
    gram = sum(outer_gram(a, b) for a, b in parts)
    n = gram.shape[0]
    if n < 2:
        raise ValueError(f"gradient confusion needs at least 2 vectors, got {n}")
    return float(np.min(gram[~np.eye(n, dtype=bool)]))


def in_class(labels: np.ndarray, measure, *arrays, groups: np.ndarray | None = None) -> float:
    """Mean over classes (and over ``groups``, e.g. minibatches) of
    ``measure(*rows of arrays for that class)``; classes with fewer than two
    examples, and NaN values (all-zero gradients), are skipped."""
    labels = np.asarray(labels)
    arrays = [_np(a) for a in arrays]
    # With groups (minibatches), every (minibatch, class) pair counts once, as
    # in the released code.
    keys = labels if groups is None else np.asarray(groups) * (int(labels.max()) + 1) + labels
    values = []
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        if len(idx) >= 2:
            values.append(measure(*(a[idx] for a in arrays)))
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


# The random stream of the random partition, apart from the minibatch shuffle's (same seed).
RANDOM_PARTITION_STREAM = 1


def random_partition(labels: np.ndarray, seed: int) -> np.ndarray:
    """The labels permuted once (a fixed function of ``seed``): random groups
    of exactly the classes' sizes, for the in-class measures' baseline."""
    labels = np.asarray(labels)
    return np.random.default_rng([seed, RANDOM_PARTITION_STREAM]).permutation(labels)


def minibatches(n: int, batch_size: int, seed: int) -> np.ndarray:
    """Minibatch index of each example under one fixed shuffle (the released
    code's scope: alignment within each class of each minibatch)."""
    order = np.random.default_rng(seed).permutation(n)
    groups = np.empty(n, dtype=np.int64)
    groups[order] = np.arange(n) // batch_size
    return groups
