"""Multi-label label quality: positive-unlabelled weights, per (image, label) wrong-label scores, missing labels.

A multi-label task knows three states per (image, class): positive, rejected (a person said no) and unknown.
Unknown is not negative, but a model that sees no negatives calls everything positive: every given label then
scores 1.0 and no wrong label is ever found. Here unknown cells of labelled images count as *weak* negatives
(positive-unlabelled learning): weight ``1 - prior_k`` (``prior_k`` = share of labelled images carrying class k,
an upper bound on the chance that an unknown cell is a missing positive), rejections as full negatives.
A "no" stays a "no": rejected cells are never scored as errors.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from curation.labels.validate import POSITIVE, UNKNOWN, _check_choice, _check_knn, _check_matrix, _ids
from curation.models.heads import pu_cell_weights, unknown_weights  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

ML_METHODS = ("ensemble", "self_confidence", "normalized")
ML_KNN_WEIGHT = 0.3
"""Share of the neighbour vote in the mixed per-class probabilities of the multi-label ensemble."""
ML_KNN_TEMPERATURE = 0.05
ML_KNN_K = 20
ML_ISSUE_CUT = 0.25
"""A positive cell is flagged as a likely wrong label when its score is below this (its probability well under
the class threshold: score 0.5 = at the threshold)."""


def knn_label_share(Y: np.ndarray, knn_idx: np.ndarray, knn_sims: np.ndarray, *,
                    temperature: float = ML_KNN_TEMPERATURE, prior: float = 1.0) -> np.ndarray:
    """(N, K) float64 similarity-weighted share of each sample's labelled neighbours carrying each class.

    Out-of-sample by construction (a sample is not its own neighbour). Neighbours weigh
    ``exp((sim - sim_nearest) / temperature)``; only neighbours with a positive vote; ``prior`` pseudo-votes
    at the class prior smooth samples with few labelled neighbours.
    """
    Y = np.asarray(Y)
    idx, sims = np.asarray(knn_idx, np.int64), np.asarray(knn_sims, np.float64)
    n, K = Y.shape
    pos = (Y == POSITIVE).astype(np.float64)
    lab = pos.any(1)
    cls_prior = pos[lab].mean(0) if lab.any() else np.full(K, 1.0 / max(K, 1))
    ok = idx >= 0
    top = np.where(ok, sims, -np.inf).max(1, keepdims=True) if idx.shape[1] else np.zeros((n, 1))
    w = np.where(ok, np.exp((sims - np.where(np.isfinite(top), top, 0.0)) / temperature), 0.0)
    w = w * lab[np.maximum(idx, 0)]
    num = np.zeros((n, K))
    for j in range(idx.shape[1]):                               # a loop over neighbour columns, not samples
        num += w[:, j:j + 1] * pos[np.maximum(idx[:, j], 0)]
    return (num + prior * cls_prior[None, :]) / (w.sum(1, keepdims=True) + prior)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _class_normalised(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``sigmoid(logit p - logit t_k)``: 0.5 at the class threshold, so scores compare across classes."""
    return 1.0 / (1.0 + np.exp(-(_logit(p) - _logit(np.broadcast_to(t, p.shape[1:])[None, :]))))


def multilabel_mixed_probs(Y: np.ndarray, probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                           knn_sims: np.ndarray | None = None, knn_weight: float = ML_KNN_WEIGHT) -> np.ndarray:
    """(N, K) the out-of-fold probabilities mixed with the neighbour label share (:func:`knn_label_share`)."""
    p = np.asarray(probs, np.float64)
    if knn_idx is None or knn_weight <= 0:
        return p
    k = min(ML_KNN_K, np.shape(knn_idx)[1])
    v = knn_label_share(Y, np.asarray(knn_idx)[:, :k], np.asarray(knn_sims)[:, :k])
    return (1.0 - knn_weight) * p + knn_weight * v


def multilabel_label_scores(Y: np.ndarray, probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                            knn_sims: np.ndarray | None = None, method: str = "ensemble",
                            knn_weight: float = ML_KNN_WEIGHT) -> np.ndarray:
    """How likely each given (image, label) is right, in [0, 1], lower = more likely a wrong label.

    Parameters
    ----------
    Y : (N, K) int8 label states (POSITIVE / UNKNOWN / REJECTED).
    probs : (N, K) out-of-fold per-class probabilities of heads trained positive-unlabelled
        (:func:`curation.labels.oof.out_of_fold_probs_multi` with ``unknown_weight="prior"``).
    knn_idx, knn_sims : (N, k) neighbours (self excluded) and cosine similarities, for the ensemble.
    method : ``"ensemble"`` (default: probabilities mixed with the neighbour label share, then class-normalised),
        ``"normalized"`` (class-normalised probabilities, no neighbours) or ``"self_confidence"`` (``p``, as
        cleanlab's per-class score).
    knn_weight : share of the neighbour vote in the ensemble.

    Returns
    -------
    (N, K) float64: scores of the POSITIVE cells; 1.0 on UNKNOWN and REJECTED cells (a person's "no" is never
    doubted, and an unknown cell is not a given label).

    Notes
    -----
    Class-normalised: ``sigmoid(logit p - logit t_k)`` with ``t_k`` the class's F1-best threshold tuned on the
    known cells with unknown cells as weak negatives (:func:`pu_cell_weights`). A rare class's probabilities
    are lower across the board; dividing out its threshold lets a wrong "love" and a wrong "person" compete on
    one scale (measured: docs/quality.md).
    """
    _check_choice("method", method, ML_METHODS)
    Y, p = _check_matrix(Y, probs)
    idx, sims = _check_knn(knn_idx, knn_sims, len(Y))
    if method == "ensemble" and idx is None:
        method = "normalized"
    if method == "self_confidence":
        s = p
    else:
        from curation.models.evaluate import tune_thresholds

        pm = multilabel_mixed_probs(Y, p, knn_idx=idx, knn_sims=sims, knn_weight=knn_weight) \
            if method == "ensemble" else p
        t = tune_thresholds(Y, pm, weights=pu_cell_weights(Y)).astype(np.float64)
        s = _class_normalised(pm, t)
    return np.where(Y == POSITIVE, np.clip(s, 0.0, 1.0), 1.0)


def estimate_wrong_labels(scores: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(K,) estimated number of wrong positive labels per class: the positive cells scored below
    :data:`ML_ISSUE_CUT` (the flagged ones).

    Measured on the emoji set (benchmarks/multilabel_quality.py) this over-counts by +107 % / +34 % / +18 % at
    5 / 10 / 20 % planted extra labels (hard but true labels also score low); sums of ``1 - p`` or the count
    below the class threshold over-count 2-20 times. A rough count, stated as such where it is shown.
    """
    Y = np.asarray(Y)
    s = np.asarray(scores, np.float64)
    return ((Y == POSITIVE) & (s < ML_ISSUE_CUT)).sum(0).astype(np.float64)


def multilabel_issue_scores(Y: np.ndarray, probs: np.ndarray, *, knn_idx: np.ndarray | None = None,
                            knn_sims: np.ndarray | None = None, method: str = "ensemble",
                            ids: np.ndarray | None = None) -> pd.DataFrame:
    """Per-image quality of a multi-label row: its most doubtful *given* label.

    Parameters
    ----------
    Y : (N, K) int8 label states (POSITIVE / UNKNOWN / REJECTED); only positive cells are judged.
    probs, knn_idx, knn_sims, method : as in :func:`multilabel_label_scores`.
    ids : (N,) sample ids.

    Returns
    -------
    DataFrame indexed by sample id, sorted by score: ``score`` in [0, 1] (the worst positive cell's score,
    1.0 without a positive), ``worst_class`` int (that cell's class, -1 when none), ``is_issue`` bool
    (score < :data:`ML_ISSUE_CUT`), ``n_positive`` int.
    """
    Y, p = _check_matrix(Y, probs)
    cell = multilabel_label_scores(Y, p, knn_idx=knn_idx, knn_sims=knn_sims, method=method)
    n_pos = (Y == POSITIVE).sum(1)
    if Y.shape[1]:
        worst = cell.argmin(1)
        score = cell[np.arange(len(Y)), worst]
    else:
        worst, score = np.zeros(len(Y), np.int64), np.ones(len(Y))
    score = np.where(n_pos > 0, score, 1.0)
    df = pd.DataFrame({"score": score, "worst_class": np.where(n_pos > 0, worst, -1).astype(np.int64),
                       "is_issue": (n_pos > 0) & (score < ML_ISSUE_CUT), "n_positive": n_pos},
                      index=_ids(ids, len(Y)))
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



def cap_by_expected(candidates: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """Keep per class only the strongest ``ceil(sum of scores)`` candidates: as many as are expected to be real
    missing labels when the scores are calibrated probabilities.

    A retrained model that raises many unknown cells just over their thresholds adds many weak candidates but
    little expected value, so the queue grows by what it is worth, not by what cleared a cut.

    Parameters
    ----------
    candidates : DataFrame[sample, class, score] (:func:`missing_label_candidates`), strongest first.
    n_classes : K.

    Returns
    -------
    The kept rows, in the input order.
    """
    if candidates.empty:
        return candidates
    c = candidates["class"].to_numpy(np.int64)
    s = candidates["score"].to_numpy(np.float64)
    cap = np.ceil(np.bincount(c, weights=s, minlength=n_classes) - 1e-9).astype(np.int64)
    order = np.lexsort((-s, c))
    cs = c[order]
    starts = np.r_[0, np.flatnonzero(np.diff(cs)) + 1]
    rank = np.empty(len(c), np.int64)
    rank[order] = np.arange(len(c)) - np.repeat(starts, np.diff(np.r_[starts, len(c)]))
    return candidates[rank < cap[c]]
