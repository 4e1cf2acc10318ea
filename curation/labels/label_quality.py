"""Single-label label quality: confident learning on out-of-fold probabilities, mixed with a kNN vote; ambiguity."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from curation.labels.validate import IssuesError, _check_choice, _check_knn, _check_labels, _check_probs, _ids

log = logging.getLogger(__name__)

METHODS = ("ensemble", "self_confidence", "normalized_margin", "knn")
KNN_WEIGHT = 0.15
"""Share of the kNN vote in the mixed class probabilities of the ensemble."""
KNN_K = 30
KNN_TEMPERATURE = 0.05
AMBIGUOUS_MAX = 0.3
"""An image is an ambiguity issue when its ``ambiguous_score`` (1 - ambiguity) is at most this: e.g. top-2
probabilities 0.5 and 0.4 (ambiguity 0.8), not 0.6 and 0.3 (0.55)."""
TRANSITION_GAIN = 2.0
"""Weight ``2 λ²`` (λ = noise structure) of the noise-transition posterior in the ensemble score."""
STRUCTURED_FROM, STRUCTURED_SPAN = 0.2, 0.2
"""Share ``a = clip((λ - 0.2) / 0.2, 0, 1)`` of the structured-noise score ``sqrt(margin · posterior)`` in the
ensemble: 0 under uniform noise (λ ≈ 0.04–0.14 from 10 %), 0.4–1 under class confusion (λ ≈ 0.28–0.47).
Chosen on the tuning half of benchmarks/label_quality.py (best worst case over four noise kinds)."""


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
    post = _posterior(y, pm, J)
    if w > 0:
        score = np.clip(score, 0.0, 1.0) ** (1.0 - w) * post ** w
    a = float(np.clip((lam - STRUCTURED_FROM) / STRUCTURED_SPAN, 0.0, 1.0))
    if a > 0:
        structured = np.sqrt(np.clip(_normalized_margin(pm, y), 0.0, 1.0) * post)
        score = np.clip(score, 1e-12, 1.0) ** (1.0 - a) * np.clip(structured, 1e-12, 1.0) ** a
    log.debug("ensemble label quality: noise structure %.3f, transition weight %.3f, structured share %.3f",
              lam, w, a)
    return score, pm


def _checked(labels: np.ndarray, pred_probs: np.ndarray, knn_idx: np.ndarray | None, knn_sims: np.ndarray | None,
             method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The public functions' inputs, validated against each other: (labels, probs, knn_idx, knn_sims)."""
    _check_choice("method", method, METHODS)
    p = _check_probs(pred_probs)
    y = _check_labels(labels, p.shape[1])
    if len(y) != len(p):
        raise IssuesError(f"labels has {len(y)} entries but pred_probs {len(p)} rows; align them by sample.")
    idx, sims = _check_knn(knn_idx, knn_sims, len(y))
    return y, p, idx, sims


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
    y, p, idx, sims = _checked(labels, pred_probs, knn_idx, knn_sims, method)
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
    y, p, idx, sims = _checked(labels, pred_probs, knn_idx, knn_sims, method)
    index = _ids(ids, len(y))
    score, pm = _label_quality(y, p, idx, sims, method, knn_weight)
    score = np.where(y >= 0, np.clip(score, 0.0, 1.0), 1.0)
    t = class_thresholds(y, pm)
    true = _confident_assignment(y, pm, t)
    lab = y >= 0
    own = _take(pm, y)
    # off the confident joint's diagonal, or (no class confident) below its own threshold and out-voted
    is_issue = lab & (((true >= 0) & (true != y)) | ((true < 0) & (own < t[np.maximum(y, 0)]) & (pm.argmax(1) != y)))
    df = pd.DataFrame({"is_issue": is_issue, "score": score, "given": y, "suggested": pm.argmax(1),
                       "suggested_prob": pm.max(1)}, index=index)
    return df.sort_values("score", kind="stable")


def estimate_error_count(labels: np.ndarray, pred_probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                         knn_sims: np.ndarray | None = None, knn_weight: float = KNN_WEIGHT) -> np.ndarray:
    """Expected number of label errors per given class: ``sum_i (1 - P(true = given | x_i))`` over the samples
    labelled with it, the posterior under the noise transition estimated from the confident joint (Laplace
    smoothed; :func:`confident_joint`) on the ensemble's probabilities (out-of-fold head mixed with the kNN vote).

    Parameters
    ----------
    labels, pred_probs, knn_idx, knn_sims, knn_weight : as in :func:`label_quality_scores`.

    Returns
    -------
    (K,) float64 expected errors among the samples labelled with each class (sum: the expected total), the
    count a reviewer should plan for; cleanlab's rival is ``num_label_issues`` (benchmarks/label_quality.py).
    """
    p = _check_probs(pred_probs)
    y = _check_labels(labels, p.shape[1])
    if len(y) != len(p):
        raise IssuesError(f"labels has {len(y)} entries but pred_probs {len(p)} rows; align them by sample.")
    idx, sims = _check_knn(knn_idx, knn_sims, len(y))
    pm = _mixed_probs(y, p, idx, sims, knn_weight)
    post = _posterior(y, pm, confident_joint(y, pm))
    lab = y >= 0
    return np.bincount(y[lab], weights=1.0 - post[lab], minlength=p.shape[1]).astype(np.float64)


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

