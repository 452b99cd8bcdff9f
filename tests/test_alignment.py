"""The alignment measure of the paper, on hand-made vectors."""

import numpy as np
import pytest

from extreme_memorization.core import alignment as al

rng = np.random.default_rng(0)


def brute_force(v):
    n = len(v)
    m = np.mean(np.linalg.norm(v, axis=1))
    pairs = sum(v[i] @ v[j] for i in range(n) for j in range(n) if i != j)
    return pairs / (n * (n - 1) * m**2)


def test_identical_vectors_have_alignment_one():
    v = np.tile(rng.normal(size=(1, 7)), (5, 1))
    assert al.alignment(v) == pytest.approx(1.0, abs=1e-6)


def test_mutually_orthogonal_vectors_have_alignment_zero():
    assert al.alignment(np.eye(6) * 3.0) == pytest.approx(0.0, abs=1e-7)


def test_alignment_is_invariant_to_a_common_rescaling():
    v = rng.normal(size=(9, 4)) + 1.0
    assert al.alignment(1e3 * v) == pytest.approx(al.alignment(v), rel=1e-5)
    assert al.alignment(1e-3 * v) == pytest.approx(al.alignment(v), rel=1e-5)


def test_alignment_divides_by_the_squared_mean_norm_not_the_mean_cosine():
    v = np.array([[1.0, 0.0], [4.0, 0.0]])  # parallel: cosine 1, norms differ
    assert al.alignment(v) == pytest.approx(2 * 4.0 / (2 * 1 * 2.5**2))
    assert al.alignment(v) < 1.0


def test_opposite_vectors_have_negative_alignment():
    assert al.alignment(np.array([[1.0, 2.0], [-1.0, -2.0]])) == pytest.approx(-1.0)


def test_alignment_matches_the_pairwise_definition():
    v = rng.normal(size=(11, 5)) + 0.3
    assert al.alignment(v) == pytest.approx(brute_force(v), rel=1e-5)


def test_fewer_than_two_vectors_raise_and_zero_vectors_give_nan():
    with pytest.raises(ValueError, match="at least 2"):
        al.alignment(np.ones((1, 3)))
    assert np.isnan(al.alignment(np.zeros((3, 2))))


def test_in_class_alignment_averages_classes_and_skips_singletons():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [5.0, 5.0]])
    labels = np.array([0, 0, 1, 1, 2])  # class 0: identical (1); class 1: orthogonal (0); class 2: one vector
    assert al.in_class(labels, al.alignment, v) == pytest.approx(0.5)


def test_minibatch_scope_groups_each_class_within_each_batch():
    labels = np.array([0, 0, 0, 0])
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    groups = np.array([0, 0, 1, 1])  # each batch holds two identical vectors
    assert al.in_class(labels, al.alignment, v, groups=groups) == pytest.approx(1.0)
    assert al.in_class(labels, al.alignment, v) == pytest.approx(1 / 3)
    batches = al.minibatches(10, 4, seed=0)
    assert sorted(np.bincount(batches)) == [2, 4, 4]


@pytest.mark.parametrize("n", [3, 50])  # Gram form (small n) and A^T B form (large n)
def test_outer_product_alignment_equals_alignment_of_the_explicit_gradients(n):
    a = rng.normal(size=(n, 6)) + 0.5
    b = rng.normal(size=(n, 4)) - 0.2
    explicit = np.einsum("ni,nj->nij", a, b).reshape(n, -1)
    assert al.outer_alignment(a, b) == pytest.approx(al.alignment(explicit), rel=1e-5)
    assert al.outer_sum_sq(a, b) == pytest.approx(np.sum(explicit.sum(0) ** 2), rel=1e-5)
    np.testing.assert_allclose(al.outer_gram(a, b), explicit @ explicit.T, rtol=1e-5)


def test_comparison_measures_match_their_definitions_on_concatenated_gradients():
    n = 8
    a1, b1 = rng.normal(size=(n, 5)), rng.normal(size=(n, 3))
    a2, b2 = rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
    g = np.concatenate(
        [np.einsum("ni,nj->nij", a1, b1).reshape(n, -1), np.einsum("ni,nj->nij", a2, b2).reshape(n, -1)], axis=1
    )
    parts = [(a1, b1), (a2, b2)]
    norms = np.linalg.norm(g, axis=1)
    assert al.gradient_diversity(parts) == pytest.approx(np.sum(norms**2) / np.sum(g.sum(0) ** 2), rel=1e-5)
    cos = (g @ g.T) / np.outer(norms, norms)
    off = ~np.eye(n, dtype=bool)
    assert al.cosine_stiffness(parts) == pytest.approx(cos[off].mean(), rel=1e-5, abs=1e-7)
    assert al.gradient_confusion(parts) == pytest.approx((g @ g.T)[off].min(), rel=1e-5)


def test_cosine_stiffness_leaves_out_examples_whose_logit_gradient_is_rounding_noise():
    n = 6
    a, b = rng.normal(size=(n, 5)), rng.normal(size=(n, 3))
    noise = rng.normal(size=(3, 3)) * al.ROUNDING_LEVEL / 10  # fitted examples: dl/dz is rounding noise
    with_noise = [(np.concatenate([a, a[:3]]), np.concatenate([b, noise]))]
    assert al.cosine_stiffness(with_noise) == pytest.approx(al.cosine_stiffness([(a, b)]), rel=1e-6)
    assert np.isnan(al.cosine_stiffness([(a[:3], noise)]))


def test_the_random_partition_keeps_the_class_sizes_and_is_fixed_by_the_seed():
    labels = np.repeat(np.arange(4), [3, 5, 7, 9])
    groups = al.random_partition(labels, seed=3)
    assert np.array_equal(np.bincount(groups), np.bincount(labels))
    assert np.array_equal(groups, al.random_partition(labels, seed=3))
    assert not np.array_equal(groups, labels) and not np.array_equal(groups, al.random_partition(labels, seed=4))


def _measures(y, representation, logits, loss):
    from extreme_memorization.core import measures

    return measures.measure(y, loss, representation, logits, batch_size=32, seed=0)


def test_random_partition_alignment_of_gradients_that_share_one_direction_equals_in_class_alignment():
    """Squared loss with large logits along one direction u for every example:
    the logit gradients (z - onehot(y)) share that direction whatever the
    class. In-class alignment is then near 1, and so is the random baseline:
    the high in-class value says nothing about classes."""
    from extreme_memorization.core import losses

    y = np.repeat(np.arange(5), 20)
    u = rng.normal(size=5)
    logits = 100.0 * u + rng.normal(size=(100, 5))
    representation = np.abs(rng.normal(size=(100, 8)))
    out = _measures(y, representation, logits, losses.Squared())
    assert out["grad_alignment_logits"] > 0.99
    assert out["grad_alignment_logits_random"] == pytest.approx(out["grad_alignment_logits"], abs=2e-3)
    assert out["grad_alignment_w2_random"] == pytest.approx(out["grad_alignment_w2"], abs=0.02)
    assert out["rep_alignment_random"] == pytest.approx(out["rep_alignment"], abs=0.02)


def test_with_class_separated_representations_in_class_alignment_exceeds_the_random_baseline():
    """Each class's representations around its own direction: in-class
    alignment near 1, random groups of the same sizes near 1/k (their mean
    pairs two classes' directions, orthogonal here, 1/k of the time)."""
    from extreme_memorization.core import losses

    k = 5
    y = np.repeat(np.arange(k), 20)
    representation = 10.0 * np.eye(k)[y] + 0.3 * rng.normal(size=(100, k))
    logits = 0.01 * rng.normal(size=(100, k))  # small logits: the softmax gradient 1/k - e_y, one per class
    out = _measures(y, representation, logits, losses.CrossEntropy())
    assert out["rep_alignment"] > 0.95
    assert out["rep_alignment_random"] < 0.5
    assert out["grad_alignment_logits"] > 0.95 > 0.5 > out["grad_alignment_logits_random"]
    assert out["grad_alignment_w2"] - out["grad_alignment_w2_random"] > 0.5
