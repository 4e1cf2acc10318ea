"""Ranked issues: likely label errors, missing multi-labels, near-duplicates, outliers, ambiguous images.

One cohesive module for now: every issue type is scored from the same out-of-fold probabilities and graph.

Every score lies in [0, 1], lower = worse; tables are DataFrames indexed by sample id (cleanlab's contract).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN

log = logging.getLogger(__name__)

METHODS = ("ensemble", "self_confidence", "normalized_margin", "knn")
KNN_WEIGHT = 0.15
"""Share of the kNN vote in the mixed class probabilities of the ensemble."""
KNN_K = 30
KNN_TEMPERATURE = 0.05
TRANSITION_GAIN = 2.0
"""Weight ``2 λ²`` (λ = noise structure) of the noise-transition posterior in the ensemble score."""


class IssuesError(ValueError):
    """Inputs that cannot be scored; the message says what to do."""


# ---------------------------------------------------------------------- validation helpers
def _ids(ids: np.ndarray | None, n: int) -> pd.Index:
    if ids is None:
        return pd.RangeIndex(n, name="id")
    ids = np.asarray(ids, np.int64).ravel()
    if len(ids) != n:
        raise IssuesError(f"ids has {len(ids)} entries for {n} samples.")
    return pd.Index(ids, name="id")


def _check_probs(pred_probs: np.ndarray, n: int | None = None) -> np.ndarray:
    p = np.asarray(pred_probs, np.float64)
    if p.ndim != 2:
        raise IssuesError(f"pred_probs must be (N, K), got shape {p.shape}.")
    if n is not None and len(p) != n:
        raise IssuesError(f"pred_probs has {len(p)} rows for {n} labels; align them by sample.")
    if not np.isfinite(p).all() or p.min(initial=0) < -1e-6 or p.max(initial=0) > 1 + 1e-6:
        raise IssuesError("pred_probs must be finite probabilities in [0, 1] (use out-of-fold probabilities, "
                          "e.g. curation.labels.oof.out_of_fold_probs).")
    return np.clip(p, 0.0, 1.0)


def _check_labels(labels: np.ndarray, K: int) -> np.ndarray:
    y = np.asarray(labels, np.int64).ravel()
    if y.size and (y.max() >= K or y.min() < -1):
        raise IssuesError(f"labels must lie in -1..{K - 1} (-1 = unlabelled); got {y.min()}..{y.max()}.")
    return y


def _check_knn(knn_idx: np.ndarray | None, knn_sims: np.ndarray | None, n: int) -> tuple[Any, Any]:
    if (knn_idx is None) != (knn_sims is None):
        raise IssuesError("Pass both knn_idx and knn_sims (from curation.features.neighbors.knn), or neither.")
    if knn_idx is None:
        return None, None
    idx, sims = np.asarray(knn_idx, np.int64), np.asarray(knn_sims, np.float32)
    if idx.shape != sims.shape or idx.ndim != 2 or len(idx) != n:
        raise IssuesError(f"knn_idx {idx.shape} and knn_sims {sims.shape} must both be (N, k) with N = {n}.")
    return idx, sims


def _take(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p[i, y[i]] (0 where y < 0)."""
    return np.where(y >= 0, p[np.arange(len(y)), np.maximum(y, 0)], 0.0)


def _normalized_margin(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(p_y - max_{k != y} p_k + 1) / 2 in [0, 1]."""
    own = _take(p, y)
    other = p.copy()
    other[np.arange(len(y)), np.maximum(y, 0)] = -np.inf
    return (own - other.max(1) + 1.0) / 2.0


# ---------------------------------------------------------------------- confident learning
def class_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per-class thresholds ``t_j`` = mean self-confidence of the samples labelled j (confident learning).

    Returns (K,) float64; classes without labelled samples get 1.0 (nothing is confidently in them).
    """
    p = _check_probs(pred_probs)
    y = _check_labels(labels, p.shape[1])
    lab = y >= 0
    K = p.shape[1]
    s = np.bincount(y[lab], weights=p[lab, y[lab]], minlength=K)
    c = np.bincount(y[lab], minlength=K)
    return np.where(c > 0, s / np.maximum(c, 1), 1.0)


def _confident_assignment(y: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Confidently-true class of each sample (argmax of p among classes with p_j >= t_j), -1 when none."""
    above = p >= t[None, :] - 1e-12
    q = np.where(above, p, -1.0)
    return np.where(above.any(1) & (y >= 0), q.argmax(1), -1)


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Calibrated confident joint ``C[given, true]`` (K, K) float64: rows sum to the given-label counts."""
    p = _check_probs(pred_probs)
    y = _check_labels(labels, p.shape[1])
    K = p.shape[1]
    true = _confident_assignment(y, p, class_thresholds(y, p))
    has = true >= 0
    J = np.zeros((K, K))
    np.add.at(J, (y[has], true[has]), 1.0)
    counts = np.bincount(y[y >= 0], minlength=K)
    return J / np.maximum(J.sum(1, keepdims=True), 1.0) * counts[:, None]


def _structure(J: np.ndarray) -> float:
    """Noise structure λ in [0, 1] of a (K, K) confident joint (:func:`confident_joint`): how concentrated the
    estimated label noise is on a few class pairs.

    1 - normalised entropy of the off-diagonal of ``J``: near 0 when errors spread over all class pairs
    (uniform noise), larger when they concentrate on visually close pairs (class confusion).
    """
    K = J.shape[0]
    off = J.copy()
    np.fill_diagonal(off, 0.0)
    tot = off.sum()
    if tot <= 0 or K < 3:
        return 0.0
    q = off[off > 0] / tot
    return float(np.clip(1.0 - (-(q * np.log(q)).sum()) / np.log(K * (K - 1)), 0.0, 1.0))


def _posterior(y: np.ndarray, p: np.ndarray, J: np.ndarray) -> np.ndarray:
    """P(true = given | x) under the noise transition ``T[given, true]`` estimated from the confident joint
    ``J`` (Laplace-smoothed, columns normalised): ``p_y T[y, y] / sum_j p_j T[y, j]``; 1.0 when unlabelled."""
    T = (J + 1.0) / (J + 1.0).sum(0, keepdims=True)
    yy = np.maximum(y, 0)
    num = p * T[yy]
    post = num[np.arange(len(y)), yy] / np.maximum(num.sum(1), 1e-300)
    return np.where(y >= 0, post, 1.0)


def _mixed_probs(y: np.ndarray, p: np.ndarray, idx: Any, sims: Any, knn_weight: float) -> np.ndarray:
    if idx is None or knn_weight <= 0:
        return p
    from curation.labels.oof import knn_oof_probs

    k = min(KNN_K, idx.shape[1])
    pk = knn_oof_probs(y, idx[:, :k], sims[:, :k], n_classes=p.shape[1], temperature=KNN_TEMPERATURE)
    return (1.0 - knn_weight) * p + knn_weight * pk


def _label_quality(y: np.ndarray, p: np.ndarray, idx: Any, sims: Any, method: str,
                   knn_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), the probabilities they were computed from (N, K))."""
    if method == "self_confidence":
        return _take(p, y), p
    if method == "normalized_margin":
        return _normalized_margin(p, y), p
    if method == "knn":
        if idx is None:
            raise IssuesError("method='knn' needs knn_idx and knn_sims (curation.features.neighbors.knn).")
        pm = _mixed_probs(y, p, idx, sims, 1.0)
        return _take(pm, y), pm
    pm = _mixed_probs(y, p, idx, sims, knn_weight)
    J = confident_joint(y, pm)
    lam = _structure(J)
    score = (_take(pm, y) + lam * _normalized_margin(pm, y)) / (1.0 + lam)
    w = min(1.0, TRANSITION_GAIN * lam * lam)
    if w > 0:
        score = np.clip(score, 0.0, 1.0) ** (1.0 - w) * _posterior(y, pm, J) ** w
    log.debug("ensemble label quality: noise structure %.3f, transition weight %.3f", lam, w)
    return score, pm


def label_quality_scores(labels: np.ndarray, pred_probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                         knn_sims: np.ndarray | None = None, method: str = "ensemble",
                         knn_weight: float = KNN_WEIGHT) -> np.ndarray:
    """How likely each given label is correct, in [0, 1], lower = more likely a label error.

    Parameters
    ----------
    labels : (N,) int given class index, -1 for unlabelled (scored 1.0: nothing to doubt).
    pred_probs : (N, K) out-of-fold class probabilities (:func:`curation.labels.oof.out_of_fold_probs`).
    knn_idx, knn_sims : (N, k) neighbours of each sample, self excluded (:func:`curation.features.neighbors.knn`).
    method : ``"ensemble"`` (default), ``"self_confidence"`` (cleanlab's default), ``"normalized_margin"``,
        or ``"knn"`` (similarity-weighted neighbour agreement only).
    knn_weight : share of the neighbour vote in the ensemble's probabilities.

    Returns
    -------
    (N,) float64 in [0, 1].

    Notes
    -----
    The ensemble mixes the linear head's out-of-fold probabilities with an out-of-fold kNN vote over the
    given labels (the neighbours see local structure the linear head smooths over), then blends the
    self-confidence ``p_y`` with the normalised margin ``p_y - max_{k≠y} p_k``. The blend weight is the
    *noise structure* λ estimated from the confident joint: uniform noise (errors on far-away classes, where
    ``p_y`` alone separates best) gives a weight near 0; class-confusion noise (errors on visually close
    pairs, where only the margin to the competing class separates a wrong label from a hard image) gives a
    larger one. Finally the score is blended geometrically, with weight ``2 λ²``, with the posterior that
    the label is right under the noise transition ``P(given | true)`` estimated from the confident joint
    (a "Shirt" whose probability mass sits on T-shirt, often mislabelled as Shirt, is more suspect than one
    whose mass sits on Bag): the transition estimate is trusted only when the noise is clearly structured.
    """
    if method not in METHODS:
        raise IssuesError(f"Unknown method {method!r}; use one of {METHODS}.")
    p = _check_probs(pred_probs)
    y = _check_labels(labels, p.shape[1])
    if len(y) != len(p):
        raise IssuesError(f"labels has {len(y)} entries but pred_probs {len(p)} rows; align them by sample.")
    idx, sims = _check_knn(knn_idx, knn_sims, len(y))
    score, _ = _label_quality(y, p, idx, sims, method, knn_weight)
    return np.where(y >= 0, np.clip(score, 0.0, 1.0), 1.0)


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                      knn_sims: np.ndarray | None = None, ids: np.ndarray | None = None,
                      method: str = "ensemble", knn_weight: float = KNN_WEIGHT) -> pd.DataFrame:
    """Label issues by confident learning, ranked by :func:`label_quality_scores`.

    A sample is an issue when it falls off the diagonal of the confident joint: some other class j has
    ``p_j >= t_j`` (``t_j`` = mean self-confidence of class j) and is the most probable such class. Each
    sample that no class claims confidently is an issue when it falls below its own class threshold and
    another class is more probable.

    Parameters
    ----------
    labels, pred_probs, knn_idx, knn_sims, method, knn_weight : as in :func:`label_quality_scores`.
    ids : (N,) int64 sample ids for the index (default ``0..N-1``).

    Returns
    -------
    DataFrame indexed by sample id, sorted by score ascending: ``is_issue`` bool, ``score`` float in [0, 1],
    ``given`` int (-1 = unlabelled), ``suggested`` int (most probable class), ``suggested_prob`` float.
    """
    p = _check_probs(pred_probs)
    y = _check_labels(labels, p.shape[1])
    if len(y) != len(p):
        raise IssuesError(f"labels has {len(y)} entries but pred_probs {len(p)} rows; align them by sample.")
    idx, sims = _check_knn(knn_idx, knn_sims, len(y))
    index = _ids(ids, len(y))
    score, pm = _label_quality(y, p, idx, sims, method if method in METHODS else "ensemble", knn_weight)
    score = np.where(y >= 0, np.clip(score, 0.0, 1.0), 1.0)
    K = p.shape[1]
    t = class_thresholds(y, pm)
    true = _confident_assignment(y, pm, t)
    lab = y >= 0
    own = _take(pm, y)
    # off the confident joint's diagonal, or (no class confident) below its own threshold and out-voted
    is_issue = lab & (((true >= 0) & (true != y)) | ((true < 0) & (own < t[np.maximum(y, 0)]) & (pm.argmax(1) != y)))
    df = pd.DataFrame({"is_issue": is_issue, "score": score, "given": y, "suggested": pm.argmax(1),
                       "suggested_prob": pm.max(1)}, index=index)
    return df.sort_values("score", kind="stable")


# ---------------------------------------------------------------------- multi-label
def _check_matrix(Y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Y = np.asarray(Y)
    p = _check_probs(probs)
    if Y.shape != p.shape:
        raise IssuesError(f"Y {Y.shape} and probs {p.shape} must have the same (N, K) shape.")
    if not np.isin(Y, (POSITIVE, UNKNOWN, REJECTED)).all():
        raise IssuesError("Y must hold 1 (positive), 0 (unknown) or -1 (rejected).")
    return Y, p


def multilabel_issue_scores(Y: np.ndarray, probs: np.ndarray, *, ids: np.ndarray | None = None) -> pd.DataFrame:
    """Per-sample quality of a multi-label row: how well every *known* cell agrees with the model.

    Parameters
    ----------
    Y : (N, K) int8 label states (POSITIVE / UNKNOWN / REJECTED); unknown cells are never judged.
    probs : (N, K) out-of-fold per-class probabilities (:func:`curation.labels.oof.out_of_fold_probs_multi`).
    ids : (N,) sample ids.

    Returns
    -------
    DataFrame indexed by sample id, sorted by score: ``score`` in [0, 1] (the worst cell's agreement: ``p`` for a
    positive, ``1 - p`` for a rejection; 1.0 when no cell is known), ``worst_class`` int (-1 when none),
    ``worst_state`` int, ``n_known`` int.
    """
    Y, p = _check_matrix(Y, probs)
    agree = np.where(Y == POSITIVE, p, np.where(Y == REJECTED, 1.0 - p, np.inf))
    worst = agree.argmin(1) if agree.shape[1] else np.zeros(len(Y), np.int64)
    known = (Y != UNKNOWN).sum(1)
    score = np.where(known > 0, agree[np.arange(len(Y)), worst] if agree.shape[1] else 1.0, 1.0)
    df = pd.DataFrame({"score": score, "worst_class": np.where(known > 0, worst, -1),
                       "worst_state": np.where(known > 0, Y[np.arange(len(Y)), worst], 0) if Y.shape[1] else 0,
                       "n_known": known}, index=_ids(ids, len(Y)))
    return df.sort_values("score", kind="stable")


def missing_label_candidates(Y: np.ndarray, probs: np.ndarray, *, thresholds: float | np.ndarray = 0.5,
                             ids: np.ndarray | None = None, labelled_only: bool = True) -> pd.DataFrame:
    """Likely missing positives: UNKNOWN cells whose probability clears the class threshold.

    These are candidates for a *second* label (the image fits two classes), not errors.

    Parameters
    ----------
    Y : (N, K) int8 label states.
    probs : (N, K) out-of-fold per-class probabilities.
    thresholds : scalar or (K,) per-class thresholds (e.g. from ``curation.models.evaluate.tune_thresholds``).
    ids : (N,) sample ids.
    labelled_only : only rows that already carry a positive (a row with no label is a labelling task,
        not a missing label).

    Returns
    -------
    DataFrame with columns ``sample`` (id), ``class`` (column index), ``score`` (the probability), sorted by
    score descending. (Here a *higher* score is a stronger candidate: it ranks additions, not problems.)
    """
    Y, p = _check_matrix(Y, probs)
    t = np.broadcast_to(np.asarray(thresholds, np.float64), (Y.shape[1],))
    cand = (Y == UNKNOWN) & (p >= t[None, :])
    if labelled_only:
        cand &= (Y == POSITIVE).any(1, keepdims=True)
    r, c = np.nonzero(cand)
    index = _ids(ids, len(Y))
    df = pd.DataFrame({"sample": index.to_numpy()[r].astype(np.int64), "class": c.astype(np.int64),
                       "score": p[r, c]})
    return df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- duplicates, outliers, ambiguity
def near_duplicates(vectors: np.ndarray | None = None, *, knn_idx: np.ndarray, knn_sims: np.ndarray,
                    threshold: float = 0.98, labels: np.ndarray | None = None,
                    ids: np.ndarray | None = None) -> pd.DataFrame:
    """Pairs of near-identical images from the kNN graph.

    Parameters
    ----------
    vectors : (N, D) embeddings (only their count is checked; the graph carries the similarities).
    knn_idx, knn_sims : (N, k) neighbours (self excluded) and cosine similarities.
    threshold : minimum cosine similarity of a pair.
    labels : (N,) int given labels (-1 = none); pairs with two different labels are flagged.
    ids : (N,) sample ids.

    Returns
    -------
    DataFrame with columns ``a``, ``b`` (sample ids, a < b), ``similarity``, ``conflicting_labels``, one row
    per pair, conflicting pairs first, then by similarity descending.
    """
    idx = np.asarray(knn_idx, np.int64)
    sims = np.asarray(knn_sims, np.float32)
    n = len(idx)
    if vectors is not None and len(vectors) != n:
        raise IssuesError(f"vectors has {len(vectors)} rows but the kNN graph {n}; rebuild the graph.")
    idx, sims = _check_knn(idx, sims, n)
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols, s = idx.ravel(), sims.ravel()
    ok = (cols >= 0) & (s >= threshold) & (cols != rows)
    a, b, s = np.minimum(rows, cols)[ok], np.maximum(rows, cols)[ok], s[ok]
    pair = a * n + b
    _, first = np.unique(pair, return_index=True)
    a, b, s = a[first], b[first], s[first]
    if labels is not None:
        y = np.asarray(labels, np.int64).ravel()
        conflict = (y[a] >= 0) & (y[b] >= 0) & (y[a] != y[b])
    else:
        conflict = np.zeros(len(a), bool)
    index = _ids(ids, n).to_numpy()
    df = pd.DataFrame({"a": index[a], "b": index[b], "similarity": s.astype(np.float64),
                       "conflicting_labels": conflict})
    return df.sort_values(["conflicting_labels", "similarity"], ascending=[False, False],
                          kind="stable").reset_index(drop=True)


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


def ambiguous_scores(probs: np.ndarray, *, ids: np.ndarray | None = None) -> pd.DataFrame:
    """Images that fit two classes: a small top-2 margin with both classes probable.

    Parameters
    ----------
    probs : (N, K) class probabilities (softmax rows, or independent sigmoids in multi-label tasks).
    ids : (N,) sample ids.

    Returns
    -------
    DataFrame indexed by sample id, sorted by score: ``score`` in [0, 1] (1 - ambiguity, lower = more
    ambiguous), ``ambiguity`` = ``sqrt((p2 / p1) * min(1, 2 p2))`` (1 when two classes tie at ≥ 0.5),
    ``first``, ``second`` (class indices), ``p1``, ``p2``.
    """
    p = _check_probs(probs)
    if p.shape[1] < 2:
        raise IssuesError("Ambiguity needs at least 2 classes.")
    top = np.argsort(-p, axis=1, kind="stable")[:, :2]
    r = np.arange(len(p))
    p1, p2 = p[r, top[:, 0]], p[r, top[:, 1]]
    amb = np.sqrt(np.where(p1 > 0, p2 / np.maximum(p1, 1e-12), 0.0) * np.minimum(1.0, 2.0 * p2))
    df = pd.DataFrame({"score": 1.0 - amb, "ambiguity": amb, "first": top[:, 0], "second": top[:, 1],
                       "p1": p1, "p2": p2}, index=_ids(ids, len(p)))
    return df.sort_values("score", kind="stable")


# ---------------------------------------------------------------------- workspace entry points
ISSUES_VERSION = 2
NOISE_IN_USE = "in use"
"""``compute_issues(noise=...)`` default: take the noise of the clustering in use."""
GAUSS_KIND = "outlier_gauss"
MISSING_COLUMNS = ["sample", "class", "class_name", "score"]


def _issue_probs(state: Any) -> np.ndarray | None:
    """(N, K) out-of-sample probabilities that judge the given labels: the out-of-fold heads, averaged with
    the latest model's probabilities on the samples that model did not train on; None without OOF heads."""
    p = state.sources.get("oof")
    if p is None:
        return None
    p = np.asarray(p, np.float64)
    m = state.sources.get("model")
    if m is not None:
        held = np.isfinite(m).all(1)
        p = p.copy()
        p[held] = 0.5 * (p[held] + m[held])
    return p


def _gaussian(ws: Any, state: Any, X: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distances to the nearest class (:func:`_gaussian_distances`), cached per expensive
    fit: the class Gaussians come from the labels current when it is first computed after a fit."""
    from curation.data.artifacts import make_key

    config = {"fit": state.info["fit_key"], "version": ISSUES_VERSION}
    key = make_key(config)
    hit = ws.artifacts.load_array(GAUSS_KIND, key, mmap=False)
    if hit is not None and len(hit) == len(X):
        return np.asarray(hit)
    d2 = _gaussian_distances(X, state.labels) if len(X) > 2 else np.zeros(len(X))
    ws.artifacts.save_array(GAUSS_KIND, key, d2, config=config)
    return d2


def _multilabel_flags(Y: np.ndarray, p: np.ndarray, worst: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Multi-label issue: the worst known cell is on the wrong side of its class threshold (tuned on the known
    cells) by a margin: a positive below half the threshold, or a rejection above halfway to 1."""
    from curation.models.evaluate import tune_thresholds

    t = tune_thresholds(Y, p).astype(np.float64)
    r = np.arange(len(Y))
    c = np.maximum(worst, 0)
    pw, state = p[r, c], Y[r, c]
    return known & (((state == POSITIVE) & (pw < t[c] / 2)) | ((state == REJECTED) & (pw > (1 + t[c]) / 2)))


def compute_issues(ws: Any, emb: Any, *, folds: int = 5, seed: int = 0, C: float | None = None,
                   duplicate_threshold: float = 0.98, noise: np.ndarray | str | None = NOISE_IN_USE,
                   refit: str = "auto",
                   save: bool = False, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Every per-sample issue score of a workspace for the current labels.

    The expensive inputs (out-of-fold heads, the ensemble, class Gaussians) come from the fit shared with
    the suggestions (:func:`curation.labels.suggest.label_state`), refreshed only when labels changed enough
    (:func:`curation.labels.suggest.refit_threshold`); everything else follows each label event and costs well
    under a second at 50k samples.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key`` str.
    folds, seed, C : out-of-fold head settings (:func:`curation.labels.oof.out_of_fold_probs`).
    duplicate_threshold : cosine similarity above which two images count as near-duplicates.
    noise : cluster-noise samples feeding the outlier score (:func:`outlier_scores`): an (N,) bool mask
        aligned with ``emb.ids`` or an array of sample ids; :data:`NOISE_IN_USE` (default): the noise of the
        clustering in use (HDBSCAN's -1; none after k-means or without clusters); None: no noise.
    refit : ``"auto"`` / ``"never"`` / ``"always"`` (:func:`curation.labels.suggest.label_state`).
    save : also store the table as artifact kind ``issues``, keyed by the fit, the ensemble, the last label
        event, the noise set and the settings (the ``issues`` job and the CLI do; the app recomputes it
        instead of writing a file per click). A stored table for the same key is returned as is.
    progress : ``progress(fraction, message)``.

    Returns
    -------
    DataFrame indexed by sample id (the order of ``emb.ids``) with columns ``given`` (class index, -1 none;
    the lowest positive in multi-label), ``label_score`` (1.0 for unlabelled samples), ``is_label_issue``,
    ``suggested``, ``suggested_prob``, ``outlier_score``, ``ambiguity_score``, ``ambiguous_with``,
    ``duplicate_of`` (id of the most similar near-duplicate, -1 none), ``duplicate_conflict``, and
    ``cluster_noise`` (bool, the sample was passed in ``noise``). Scores in [0, 1], lower = worse.
    Single-label: confident learning + kNN (:func:`find_label_issues`) on the out-of-fold probabilities,
    averaged with the latest model's where it did not train on the sample; multi-label: the worst known
    cell (:func:`multilabel_issue_scores`). Ambiguity comes from the calibrated ensemble.
    """
    from curation.data.artifacts import make_key
    from curation.labels.suggest import label_state

    progress = progress or null_progress
    X = np.asarray(emb.vectors, np.float32)
    if X.ndim != 2 or len(X) != len(emb.ids):
        raise IssuesError(f"Embeddings vectors {X.shape} do not match {len(emb.ids)} ids; re-run `python -m curation "
                          "embed`.")
    state = label_state(ws, emb, refit=refit, folds=folds, seed=seed, C=C, progress=sub_progress(progress, 0.0, 0.8))
    ids, y, lm = state.ids, state.labels, state.label_matrix
    index = pd.Index(ids, name="id")
    if isinstance(noise, str) and noise == NOISE_IN_USE:
        from curation.structure.cluster import load_clusters, noise_ids

        clusters = load_clusters(ws, emb)
        noise = None if clusters is None else noise_ids(clusters)
    noise_mask = _noise_mask(noise, index)
    config = {"fit": state.info["fit_key"], "ensemble": state.info["ensemble_key"],
              "last_event": state.info["last_event"], "dup": float(duplicate_threshold),
              "noise": make_key({"ids": ids[noise_mask].tolist()}), "version": ISSUES_VERSION}
    key = make_key(config)
    cached = ws.artifacts.load_frame("issues", key)
    if cached is not None:
        return cached
    idx, sims = state.knn_idx, state.knn_sims
    n, K = lm.shape
    has = state.probs.sum(1) > 0                        # rows the ensemble has a prediction for
    p = _issue_probs(state)
    label_score, is_issue = np.ones(n), np.zeros(n, bool)
    suggested, suggested_prob = np.full(n, -1, np.int64), np.zeros(n)
    if p is None:
        log.warning("Label issues need out-of-fold probabilities: %s", state.info["sources"]["oof"]["reason"])
    elif state.task == "single":
        lab = find_label_issues(y, p, knn_idx=idx, knn_sims=sims, ids=ids).reindex(ids)
        label_score, is_issue = lab["score"].to_numpy(), lab["is_issue"].to_numpy(bool)
        suggested, suggested_prob = lab["suggested"].to_numpy(np.int64), lab["suggested_prob"].to_numpy()
    else:
        ms = multilabel_issue_scores(lm, p, ids=ids).reindex(ids)
        label_score = ms["score"].to_numpy()
        known = ms["n_known"].to_numpy() > 0
        is_issue = _multilabel_flags(lm, p, ms["worst_class"].to_numpy(np.int64), known)
        suggested = np.where(has, state.probs.argmax(1), -1).astype(np.int64)
        suggested_prob = np.where(has, state.probs.max(1), 0.0)
    ambiguity, amb_with = np.ones(n), np.full(n, -1, np.int64)
    if K >= 2:
        amb = ambiguous_scores(state.probs, ids=ids).reindex(ids)
        ambiguity = np.where(has, amb["score"].to_numpy(), 1.0)
        first, second = amb["first"].to_numpy(np.int64), amb["second"].to_numpy(np.int64)
        amb_with = np.where(has, np.where(first == y, second, first), -1)
    progress(0.85, "outliers and duplicates")
    out = _outlier_frame(sims, _gaussian(ws, state, X), noise_mask, index)       # already in the order of ids
    dup_of = np.full(n, -1, np.int64)
    dup_conflict = np.zeros(n, bool)
    if idx.shape[1]:
        is_dup = sims[:, 0] >= duplicate_threshold
        dup_of[is_dup] = ids[idx[is_dup, 0]]
        ny = y[np.maximum(idx[:, 0], 0)]
        dup_conflict = is_dup & (y >= 0) & (ny >= 0) & (ny != y)
    df = pd.DataFrame({"given": y, "label_score": np.clip(label_score, 0.0, 1.0), "is_label_issue": is_issue,
                       "suggested": suggested, "suggested_prob": suggested_prob,
                       "outlier_score": out["score"].to_numpy(), "ambiguity_score": ambiguity,
                       "ambiguous_with": np.asarray(amb_with, np.int64), "duplicate_of": dup_of,
                       "duplicate_conflict": dup_conflict, "cluster_noise": noise_mask}, index=index)
    if save:
        ws.artifacts.save_frame("issues", key, df, config=config)
    progress(1.0, "issues ready")
    log.info("issues of %d samples (%d likely label errors)", len(df), int(is_issue.sum()))
    return df


def missing_labels(ws: Any, emb: Any, *, min_score: float = 0.5, folds: int = 5, seed: int = 0, C: float | None = None,
                   refit: str = "auto", progress: ProgressFn | None = None) -> pd.DataFrame:
    """Candidates for a second label of labelled images, strongest first.

    Multi-label workspaces: UNKNOWN cells of rows with a positive whose calibrated ensemble score clears the
    class threshold (tuned on the known cells, :func:`curation.models.evaluate.tune_thresholds`;
    :func:`missing_label_candidates`). Unknown cells are never negatives and rejected cells never candidates.
    Single-label workspaces: images that fit their label *and* another class (both probable in the
    ensemble): the other class, scored ``sqrt((p_lo / p_hi) * min(1, 2 p_lo))`` over the pair ``(p_label,
    p_other)``, kept when ``score >= min_score`` (a label that is merely wrong scores low: its own
    probability is small).

    Parameters
    ----------
    ws, emb : as in :func:`compute_issues`.
    min_score : single-label only: the least pair score kept.
    folds, seed, C, refit : as in :func:`compute_issues`.

    Returns
    -------
    DataFrame with columns ``sample`` (id), ``class`` (column index), ``class_name``, ``score`` (in [0, 1];
    *higher* = stronger candidate: it ranks additions, not problems), sorted by score descending.
    """
    from curation.labels.suggest import label_state

    state = label_state(ws, emb, refit=refit, folds=folds, seed=seed, C=C, progress=progress)
    lm, P, ids = state.label_matrix, np.asarray(state.probs, np.float64), state.ids
    names = np.asarray(state.class_names, dtype=object)
    if lm.shape[1] < 2 or not (P.sum(1) > 0).any():
        return pd.DataFrame({"sample": np.zeros(0, np.int64), "class": np.zeros(0, np.int64),
                             "class_name": np.zeros(0, object), "score": np.zeros(0)})[MISSING_COLUMNS]
    if state.task == "multi":
        t = state.info.get("thresholds") or 0.5
        df = missing_label_candidates(lm, P, thresholds=np.asarray(t, np.float64), ids=ids)
    else:
        y = state.labels
        r = np.flatnonzero((y >= 0) & (P.sum(1) > 0))
        py = P[r, y[r]]
        other = P[r].copy()
        other[np.arange(len(r)), y[r]] = -1.0
        c = other.argmax(1)
        po = other[np.arange(len(r)), c]
        lo, hi = np.minimum(py, po), np.maximum(py, po)
        score = np.sqrt(np.divide(lo, hi, out=np.zeros_like(lo), where=hi > 0) * np.minimum(1.0, 2.0 * lo))
        keep = score >= min_score
        df = pd.DataFrame({"sample": ids[r[keep]], "class": c[keep].astype(np.int64), "score": score[keep]})
        df = df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    df["class_name"] = names[df["class"].to_numpy(np.int64)].astype(str) if len(df) else ""
    return df[MISSING_COLUMNS]
