"""Out-of-fold probabilities, temperature scaling and the calibrated pooled ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from curation.labels.calibrate import PooledEnsemble, apply_temperature, ece, fit_temperature
from curation.labels.oof import OOFError, knn_oof_probs, out_of_fold_probs, out_of_fold_probs_multi, stratified_folds


def test_stratified_folds_balanced_and_skip_unlabelled():
    y = np.r_[np.repeat(np.arange(3), 20), [-1] * 5]
    f = stratified_folds(y, folds=5, seed=0)
    assert (f[-5:] == -1).all()
    for c in range(3):
        assert np.bincount(f[y == c], minlength=5).tolist() == [4] * 5


@pytest.mark.slow
def test_oof_probs_shape_and_accuracy(blobs):
    X, y = blobs
    p = out_of_fold_probs(X, y, n_classes=6)
    assert p.shape == (600, 6) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == y).mean() > 0.95


@pytest.mark.slow
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


def _sources(seed: int = 0, n: int = 3000, K: int = 5):
    """Three miscalibrated sources of the same labels: two over-confident, one timid but accurate that only
    predicts the last 1,800 rows (like a model scoring only the samples it did not train on)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)

    def source(strength: float, sharpness: float) -> np.ndarray:
        z = rng.normal(size=(n, K))
        z[np.arange(n), y] += strength
        return apply_temperature(z * sharpness, 1.0)

    timid = source(2.5, 0.3)
    timid[:1200] = np.nan
    return y, {"a": source(1.0, 4.0), "b": source(0.7, 3.0), "timid": timid}


def test_pooled_ensemble_calibrates_miscalibrated_sources():
    y, src = _sources()
    fit = np.arange(len(y)) < 1500                      # fitted on the first half, judged on the rest
    pool = PooledEnsemble().fit(src, np.where(fit, y, -1))
    mean = PooledEnsemble(min_samples=10**9).fit(src, np.where(fit, y, -1))
    assert pool.fitted_ and not mean.fitted_ and "not fitted" in mean.reason_
    P, M = pool.predict_proba(src), mean.predict_proba(src)
    te = ~fit
    assert ece(P[te], y[te]) < 0.05 < ece(M[te], y[te])
    assert ece(P[te], y[te]) < 0.25 * ece(M[te], y[te])
    assert (P[te].argmax(1) == y[te]).mean() > (M[te].argmax(1) == y[te]).mean()
    assert pool.weights_[2] > pool.weights_[0] > 0      # the timid accurate source weighs most
    assert len(pool.temperatures_) == 2                 # with and without the partial source
    np.testing.assert_allclose(PooledEnsemble.from_dict(pool.to_dict()).predict_proba(src), P)
    src["a"][:3] = src["b"][:3] = np.nan
    assert (pool.predict_proba(src)[:3] == 0).all()     # no source, no suggestion
    with pytest.raises(ValueError, match="fitted but not given"):
        pool.predict_proba({"a": src["a"]})


def test_pooled_ensemble_multilabel_learns_from_rejections_only():
    rng = np.random.default_rng(1)
    n, K = 2000, 4
    truth = rng.random((n, K)) < 0.3
    z = np.where(truth, 1.0, -1.0) + rng.normal(size=(n, K))
    over = 1 / (1 + np.exp(-5 * z))                     # over-confident sigmoid scores
    Y = np.where(truth, 1, -1).astype(np.int8)
    Y[rng.random((n, K)) < 0.5] = 0                     # half the cells unknown: never negatives
    pool = PooledEnsemble(task="multi").fit({"s": over}, Y)
    P = pool.predict_proba({"s": over})
    known = Y != 0

    def bce(p: np.ndarray) -> float:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-np.where(truth, np.log(p), np.log(1 - p))[~known].mean())

    assert pool.fitted_ and bce(P) < bce(over)          # better calibrated on the cells it never saw
    only_pos = np.where(Y == 1, 1, 0).astype(np.int8)
    unfit = PooledEnsemble(task="multi").fit({"s": over}, only_pos)
    assert not unfit.fitted_ and "reject" in unfit.reason_
