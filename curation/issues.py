"""Ranked issues: likely label errors, missing multi-labels, near-duplicates, outliers, ambiguous images.

Every score lies in [0, 1], lower = worse; tables are DataFrames indexed by sample id (cleanlab's contract).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from curation.progress import ProgressFn, null_progress, sub_progress

log = logging.getLogger(__name__)

POSITIVE, UNKNOWN, REJECTED = 1, 0, -1
METHODS = ("ensemble", "self_confidence", "normalized_margin", "knn")
KNN_WEIGHT = 0.15
"""Share of the kNN vote in the mixed class probabilities of the ensemble."""
KNN_K = 30
KNN_TEMPERATURE = 0.05


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
                          "e.g. curation.oof.out_of_fold_probs).")
    return np.clip(p, 0.0, 1.0)


def _check_labels(labels: np.ndarray, K: int) -> np.ndarray:
    y = np.asarray(labels, np.int64).ravel()
    if y.size and (y.max() >= K or y.min() < -1):
        raise IssuesError(f"labels must lie in -1..{K - 1} (-1 = unlabelled); got {y.min()}..{y.max()}.")
    return y


def _check_knn(knn_idx: np.ndarray | None, knn_sims: np.ndarray | None, n: int) -> tuple[Any, Any]:
    if (knn_idx is None) != (knn_sims is None):
        raise IssuesError("Pass both knn_idx and knn_sims (from curation.neighbors.knn), or neither.")
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


def noise_structure(labels: np.ndarray, pred_probs: np.ndarray) -> float:
    """How concentrated the estimated label noise is on a few class pairs, in [0, 1].

    1 - normalised entropy of the off-diagonal of the confident joint: near 0 when errors spread over all
    class pairs (uniform noise), larger when they concentrate on visually close pairs (class confusion).
    """
    J = confident_joint(labels, pred_probs)
    K = J.shape[0]
    off = J.copy()
    np.fill_diagonal(off, 0.0)
    tot = off.sum()
    if tot <= 0 or K < 3:
        return 0.0
    q = off[off > 0] / tot
    return float(np.clip(1.0 - (-(q * np.log(q)).sum()) / np.log(K * (K - 1)), 0.0, 1.0))


def _mixed_probs(y: np.ndarray, p: np.ndarray, idx: Any, sims: Any, knn_weight: float) -> np.ndarray:
    if idx is None or knn_weight <= 0:
        return p
    from curation.oof import knn_oof_probs

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
            raise IssuesError("method='knn' needs knn_idx and knn_sims (curation.neighbors.knn).")
        pm = _mixed_probs(y, p, idx, sims, 1.0)
        return _take(pm, y), pm
    pm = _mixed_probs(y, p, idx, sims, knn_weight)
    lam = noise_structure(y, pm)
    score = (_take(pm, y) + lam * _normalized_margin(pm, y)) / (1.0 + lam)
    log.debug("ensemble label quality: noise structure %.3f", lam)
    return score, pm


def label_quality_scores(labels: np.ndarray, pred_probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                         knn_sims: np.ndarray | None = None, method: str = "ensemble",
                         knn_weight: float = KNN_WEIGHT) -> np.ndarray:
    """How likely each given label is correct, in [0, 1], lower = more likely a label error.

    Parameters
    ----------
    labels : (N,) int given class index, -1 for unlabelled (scored 1.0: nothing to doubt).
    pred_probs : (N, K) out-of-fold class probabilities (:func:`curation.oof.out_of_fold_probs`).
    knn_idx, knn_sims : (N, k) neighbours of each sample, self excluded (:func:`curation.neighbors.knn`).
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
    *noise structure* estimated from the confident joint: uniform noise (errors on far-away classes, where
    ``p_y`` alone separates best) gives a weight near 0; class-confusion noise (errors on visually close
    pairs, where only the margin to the competing class separates a wrong label from a hard image) gives a
    larger one.
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
    probs : (N, K) out-of-fold per-class probabilities (:func:`curation.oof.out_of_fold_probs_multi`).
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
    thresholds : scalar or (K,) per-class thresholds (e.g. from ``curation.evaluate.tune_thresholds``).
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


def outlier_scores(vectors: np.ndarray, *, knn_sims: np.ndarray, labels: np.ndarray | None = None,
                   ids: np.ndarray | None = None) -> pd.DataFrame:
    """How typical each image is, in [0, 1], lower = more outlying.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised embeddings.
    knn_sims : (N, k) cosine similarities to the k nearest other samples.
    labels : (N,) int given labels (-1 = none): class Gaussians are fitted on classes with ≥ 2 samples;
        without labels one Gaussian models all the data.
    ids : (N,) sample ids.

    Returns
    -------
    DataFrame indexed by sample id, sorted by score: ``knn_score`` (from the mean cosine distance to the
    neighbours), ``gaussian_score`` (from the squared Mahalanobis distance to the nearest class), ``score``
    (their geometric mean). Each is ``0.5 ** (d / median d)``, so a typical sample scores about 0.5.
    """
    X = np.asarray(vectors, np.float32)
    sims = np.asarray(knn_sims, np.float32)
    if X.ndim != 2 or sims.ndim != 2 or len(sims) != len(X):
        raise IssuesError(f"vectors {X.shape} and knn_sims {sims.shape} must be (N, D) and (N, k).")
    knn_score = _to_unit(np.maximum(1.0 - sims.astype(np.float64).mean(1), 0.0)) if sims.shape[1] else np.ones(len(X))
    gauss = _to_unit(_gaussian_distances(X, labels)) if len(X) > 2 else np.ones(len(X))
    df = pd.DataFrame({"knn_score": knn_score, "gaussian_score": gauss, "score": np.sqrt(knn_score * gauss)},
                      index=_ids(ids, len(X)))
    return df.sort_values("score", kind="stable")


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


# ---------------------------------------------------------------------- workspace entry point
ISSUES_VERSION = 1


def _issue_key(ws: Any, emb: Any, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from curation.artifacts import make_key
    from curation.neighbors import ids_fingerprint

    cfg = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "last_event": int(ws.store.last_event_id()),
           "version": ISSUES_VERSION, **config}
    return make_key(cfg), cfg


def compute_issues(ws: Any, emb: Any, *, k: int = 15, folds: int = 5, seed: int = 0, C: float | None = None,
                   duplicate_threshold: float = 0.98, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Every per-sample issue score of a workspace, cached as artifact kind ``issues``.

    Parameters
    ----------
    ws : Workspace (labels come from ``ws.store.single_labels(emb.ids)``).
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key`` str.
    k : neighbours in the kNN graph (``curation.neighbors.knn_graph``).
    folds, seed, C : out-of-fold head settings (:func:`curation.oof.out_of_fold_probs`).
    duplicate_threshold : cosine similarity above which two images count as near-duplicates.
    progress : ``progress(fraction, message)``.

    Returns
    -------
    DataFrame indexed by sample id (the order of ``emb.ids``) with columns ``given`` (class index, -1 none),
    ``label_score`` (1.0 for unlabelled samples), ``is_label_issue``, ``suggested``, ``suggested_prob``,
    ``outlier_score``, ``ambiguity_score``, ``ambiguous_with``, ``duplicate_of`` (id of the most similar
    near-duplicate, -1 none), ``duplicate_conflict``. Scores in [0, 1], lower = worse. The key covers
    the embeddings, the sample ids and the label store's last event id, so any label edit recomputes it.
    """
    from curation.oof import DEFAULT_C, out_of_fold_probs

    progress = progress or null_progress
    ids = np.asarray(emb.ids, np.int64)
    X = np.asarray(emb.vectors, np.float32)
    if X.ndim != 2 or len(X) != len(ids):
        raise IssuesError(f"Embeddings vectors {X.shape} do not match {len(ids)} ids; re-run `python -m curation "
                          "embed`.")
    C = DEFAULT_C if C is None else float(C)
    key, config = _issue_key(ws, emb, {"k": k, "folds": folds, "seed": seed, "C": C, "dup": duplicate_threshold})
    cached = ws.artifacts.load_frame("issues", key)
    if cached is not None:
        log.debug("issues %s loaded from cache", key)
        return cached
    y = np.asarray(ws.store.single_labels(ids), np.int64)
    K = len(ws.store.class_names())
    progress(0.0, "neighbours")
    try:
        from curation.neighbors import knn_graph

        idx, sims = knn_graph(ws, emb, k=max(k, KNN_K) if len(ids) > KNN_K else k,
                              progress=sub_progress(progress, 0.0, 0.3))
    except ImportError:
        from curation.neighbors import knn

        idx, sims = knn(X, k=k)
    idx, sims = np.asarray(idx), np.asarray(sims)
    n_lab = int((y >= 0).sum())
    counts = np.bincount(y[y >= 0], minlength=max(K, 1))
    if K >= 2 and n_lab >= 2 * max(2, min(folds, 2)) and (counts > 0).sum() >= 2:
        p = out_of_fold_probs(X, y, n_classes=K, folds=folds, seed=seed, C=C,
                              progress=sub_progress(progress, 0.3, 0.8))
        lab = find_label_issues(y, p, knn_idx=idx, knn_sims=sims, ids=ids).reindex(ids)
        amb = ambiguous_scores(p, ids=ids).reindex(ids)
        label_score, is_issue = lab["score"].to_numpy(), lab["is_issue"].to_numpy()
        suggested, suggested_prob = lab["suggested"].to_numpy(), lab["suggested_prob"].to_numpy()
        ambiguity, amb_with = amb["score"].to_numpy(), np.where(amb["first"] == y, amb["second"], amb["first"])
    else:
        log.warning("Label issues need at least 2 classes with labelled samples (found %d labelled); label more "
                    "images to get label scores and suggestions.", n_lab)
        label_score, is_issue = np.ones(len(ids)), np.zeros(len(ids), bool)
        suggested, suggested_prob = np.full(len(ids), -1), np.zeros(len(ids))
        ambiguity, amb_with = np.ones(len(ids)), np.full(len(ids), -1)
    progress(0.85, "outliers and duplicates")
    out = outlier_scores(X, knn_sims=sims, labels=y, ids=ids).reindex(ids)
    dup_of = np.full(len(ids), -1, np.int64)
    dup_conflict = np.zeros(len(ids), bool)
    if idx.shape[1]:
        is_dup = sims[:, 0] >= duplicate_threshold
        dup_of[is_dup] = ids[idx[is_dup, 0]]
        ny = y[np.maximum(idx[:, 0], 0)]
        dup_conflict = is_dup & (y >= 0) & (ny >= 0) & (ny != y)
    df = pd.DataFrame({"given": y, "label_score": label_score, "is_label_issue": is_issue,
                       "suggested": suggested.astype(np.int64), "suggested_prob": suggested_prob,
                       "outlier_score": out["score"].to_numpy(), "ambiguity_score": ambiguity,
                       "ambiguous_with": np.asarray(amb_with, np.int64), "duplicate_of": dup_of,
                       "duplicate_conflict": dup_conflict}, index=pd.Index(ids, name="id"))
    ws.artifacts.save_frame("issues", key, df, config=config)
    progress(1.0, "issues ready")
    log.info("issues of %d samples saved as issues/%s (%d likely label errors)", len(df), key, int(is_issue.sum()))
    return df
