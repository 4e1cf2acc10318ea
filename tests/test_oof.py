"""Out-of-fold probabilities and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from curation.calibrate import apply_temperature, ece, fit_temperature
from curation.oof import OOFError, knn_oof_probs, out_of_fold_probs, out_of_fold_probs_multi, stratified_folds


def test_stratified_folds_balanced_and_skip_unlabelled():
    y = np.r_[np.repeat(np.arange(3), 20), [-1] * 5]
    f = stratified_folds(y, folds=5, seed=0)
    assert (f[-5:] == -1).all()
    for c in range(3):
        assert np.bincount(f[y == c], minlength=5).tolist() == [4] * 5


def test_oof_probs_shape_and_accuracy(blobs):
    X, y = blobs
    p = out_of_fold_probs(X, y, n_classes=6)
    assert p.shape == (600, 6) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == y).mean() > 0.95


def test_oof_never_uses_own_label(blobs):
    """A flipped label is scored by a model that never saw it: its probability stays low."""
    X, y = blobs
    yn = y.copy()
    flipped = np.arange(0, 600, 50)
    yn[flipped] = (y[flipped] + 1) % 6
    p = out_of_fold_probs(X, yn, n_classes=6, C=100.0)  # weak regularisation: an in-fold model would memorise
    assert p[flipped, yn[flipped]].max() < 0.2
    assert (p[flipped].argmax(1) == y[flipped]).all()


def test_oof_unlabelled_get_fold_average(blobs):
    X, y = blobs
    yn = y.copy()
    yn[::3] = -1
    p = out_of_fold_probs(X, yn, n_classes=6)
    assert (p[::3].argmax(1) == y[::3]).mean() > 0.95


def test_oof_errors_tell_what_to_do(blobs):
    X, y = blobs
    with pytest.raises(OOFError, match="label"):
        out_of_fold_probs(X, np.full(600, -1), n_classes=6)
    with pytest.raises(OOFError):
        out_of_fold_probs(X, y[:10], n_classes=6)


def test_oof_multi_masks_unknown(blobs):
    X, y = blobs
    Y = np.zeros((600, 6), np.int8)
    Y[np.arange(600), y] = 1
    Y[np.arange(600), (y + 1) % 6] = -1          # one rejection per row
    p = out_of_fold_probs_multi(X, Y)
    assert p.shape == (600, 6)
    assert (p.argmax(1) == y).mean() > 0.9
    assert p[np.arange(600), y].mean() > p[np.arange(600), (y + 1) % 6].mean() + 0.3
    with pytest.raises(OOFError):
        out_of_fold_probs_multi(X, Y, weak_negatives=2.0)


def test_knn_oof_probs_votes_of_neighbours():
    labels = np.array([0, 0, 1, -1])
    idx = np.array([[1, 2], [0, 2], [0, 1], [0, 2]])
    sims = np.ones((4, 2), np.float32)
    p = knn_oof_probs(labels, idx, sims, n_classes=2, prior=0.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5])       # own label never votes
    np.testing.assert_allclose(p[2], [1.0, 0.0])


def test_temperature_reduces_ece():
    rng = np.random.default_rng(0)
    n, K = 3000, 5
    y = rng.integers(0, K, n)
    logits = rng.normal(size=(n, K))
    logits[np.arange(n), y] += 1.0
    over = logits * 4.0                                  # over-confident
    p = apply_temperature(over, 1.0)
    T = fit_temperature(over, y)
    assert T > 2.0
    assert ece(apply_temperature(p, T), y) < 0.5 * ece(p, y)
    assert abs(fit_temperature(p, y) - T) < 0.05        # probabilities work as input too
