"""Outlier scores: neighbour distance and class-Gaussian (Mahalanobis) distance, with cluster noise."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from curation.labels.validate import IssuesError, _ids

log = logging.getLogger(__name__)

OUTLIER_MAX = 0.25
"""An image is an outlier issue when its ``outlier_score`` is at most this (the neighbour and Gaussian distances
about twice the median or more; a typical image scores about 0.5)."""


def _to_unit(d: np.ndarray) -> np.ndarray:
    """Map non-negative distances to (0, 1], lower = farther: ``0.5 ** (d / median(d))``."""
    med = float(np.median(d)) if d.size else 1.0
    return np.power(0.5, d / max(med, 1e-12))


def _gaussian_distances(X: np.ndarray, labels: np.ndarray | None, *, max_dim: int = 256) -> np.ndarray:
    """Squared Mahalanobis distance of each sample to the nearest class Gaussian (shared, shrunk covariance).

    As in Rippel et al. 2020 ("Modeling the Distribution of Normal Data in Pre-Trained Deep Features for
    Anomaly Detection"): class means, one covariance pooled over classes, Ledoit-Wolf shrinkage. Features are
    first reduced by PCA to ``max_dim`` dimensions when wider (keeps it fast and well conditioned).
    """
    from sklearn.covariance import LedoitWolf

    X = np.asarray(X, np.float64)
    X = X - X.mean(0)
    if X.shape[1] > max_dim and len(X) > max_dim:
        _, _, vt = np.linalg.svd(X[:: max(1, len(X) // 20000)], full_matrices=False)
        X = X @ vt[:max_dim].T
    y = np.full(len(X), -1, np.int64) if labels is None else np.asarray(labels, np.int64).ravel()
    classes = np.flatnonzero(np.bincount(y[y >= 0], minlength=1) >= 2) if (y >= 0).any() else np.zeros(0, int)
    if classes.size == 0:
        means = X.mean(0, keepdims=True)
        resid = X - means
    else:
        sums = np.zeros((int(y.max()) + 1, X.shape[1]))
        np.add.at(sums, y[y >= 0], X[y >= 0])
        cnt = np.bincount(y[y >= 0])
        means = sums[classes] / cnt[classes, None]
        pos = np.full(int(y.max()) + 1, -1)
        pos[classes] = np.arange(len(classes))
        fit = (y >= 0) & (pos[np.maximum(y, 0)] >= 0)
        resid = X[fit] - means[pos[y[fit]]]
    prec = LedoitWolf(assume_centered=True).fit(resid).precision_
    XP = X @ prec
    d2 = (XP * X).sum(1)[:, None] - 2 * XP @ means.T + ((means @ prec) * means).sum(1)[None, :]
    return np.maximum(d2.min(1), 0.0)


NOISE_FACTOR = 0.5
"""Outlier scores of cluster-noise samples (e.g. HDBSCAN's -1) are multiplied by this."""


def _noise_mask(noise: np.ndarray | None, ids: pd.Index) -> np.ndarray:
    """(N,) bool from a boolean mask aligned with the samples, or from an array of sample ids."""
    n = len(ids)
    if noise is None:
        return np.zeros(n, bool)
    a = np.asarray(noise)
    if a.dtype == bool:
        if a.shape != (n,):
            raise IssuesError(f"A boolean noise mask must have one entry per sample ({n}), got {a.shape}; or pass "
                              "the noise samples' ids.")
        return a
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise IssuesError(f"noise must be a boolean mask or an array of sample ids, got dtype {a.dtype}.")
    return np.isin(ids.to_numpy(), a.astype(np.int64).ravel())


def _outlier_frame(knn_sims: np.ndarray, d2: np.ndarray, noise: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """The :func:`outlier_scores` columns in the order of ``index`` (unsorted), from the (N, k) neighbour
    similarities, the (N,) squared Mahalanobis distances and the (N,) bool noise mask."""
    sims = np.asarray(knn_sims, np.float64)
    n = len(index)
    knn_score = _to_unit(np.maximum(1.0 - sims.mean(1), 0.0)) if sims.shape[1] else np.ones(n)
    gauss = _to_unit(d2) if n > 2 else np.ones(n)
    score = np.sqrt(knn_score * gauss) * np.where(noise, NOISE_FACTOR, 1.0)
    return pd.DataFrame({"knn_score": knn_score, "gaussian_score": gauss, "score": score, "noise": noise},
                        index=index)


def outlier_scores(vectors: np.ndarray, *, knn_sims: np.ndarray, labels: np.ndarray | None = None,
                   ids: np.ndarray | None = None, noise: np.ndarray | None = None) -> pd.DataFrame:
    """How typical each image is, in [0, 1], lower = more outlying.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised embeddings.
    knn_sims : (N, k) cosine similarities to the k nearest other samples.
    labels : (N,) int given labels (-1 = none): class Gaussians are fitted on classes with ≥ 2 samples;
        without labels one Gaussian models all the data.
    ids : (N,) sample ids.
    noise : optional cluster-noise samples (e.g. HDBSCAN's -1 from ``curation.structure.cluster``): an (N,) bool mask,
        or an array of sample ids (of ``ids``). Their score is multiplied by :data:`NOISE_FACTOR`.

    Returns
    -------
    DataFrame indexed by sample id, sorted by score: ``knn_score`` (from the mean cosine distance to the
    neighbours), ``gaussian_score`` (from the squared Mahalanobis distance to the nearest class), ``score``
    (their geometric mean, times :data:`NOISE_FACTOR` for noise samples), ``noise`` (bool). Each of the two
    scores is ``0.5 ** (d / median d)``, so a typical sample scores about 0.5.
    """
    X = np.asarray(vectors, np.float32)
    sims = np.asarray(knn_sims, np.float32)
    if X.ndim != 2 or sims.ndim != 2 or len(sims) != len(X):
        raise IssuesError(f"vectors {X.shape} and knn_sims {sims.shape} must be (N, D) and (N, k).")
    index = _ids(ids, len(X))
    d2 = _gaussian_distances(X, labels) if len(X) > 2 else np.zeros(len(X))
    return _outlier_frame(sims, d2, _noise_mask(noise, index), index).sort_values("score", kind="stable")

