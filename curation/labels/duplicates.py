"""Near-duplicate images from the kNN graph: pairs, and a per-image duplicate score."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from curation.labels.validate import IssuesError, _check_knn, _ids

log = logging.getLogger(__name__)


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



def duplicate_scores(knn_idx: np.ndarray, knn_sims: np.ndarray, *, threshold: float = 0.98,
                     labels: np.ndarray | None = None, ids: np.ndarray | None = None) -> pd.DataFrame:
    """Per image: how far it is from being a copy of its nearest neighbour, in [0, 1], lower = more duplicated.

    Parameters
    ----------
    knn_idx, knn_sims : (N, k) neighbours (self excluded) and cosine similarities; only the nearest is used.
    threshold : cosine similarity from which two images count as near-duplicates.
    labels : (N,) int given labels (-1 = none), to flag pairs with two different labels.
    ids : (N,) sample ids.

    Returns
    -------
    DataFrame indexed by sample id (input order): ``duplicate_score`` = ``0.5 * (1 - s) / (1 - threshold)``
    clipped to [0, 1] (``s`` the nearest similarity: 0 for an exact copy, 0.5 at the threshold),
    ``is_duplicate_issue`` (``s >= threshold``), ``duplicate_of`` (the nearest sample's id, -1 when not a
    duplicate), ``duplicate_conflict`` (a duplicate whose partner carries another label).
    """
    idx, sims = _check_knn(knn_idx, knn_sims, len(np.asarray(knn_idx)))
    n = len(idx)
    index = _ids(ids, n)
    if not 0.0 < threshold < 1.0:
        raise IssuesError(f"threshold must lie in (0, 1), got {threshold}.")
    if idx.shape[1] == 0:
        return pd.DataFrame({"duplicate_score": np.ones(n), "is_duplicate_issue": np.zeros(n, bool),
                             "duplicate_of": np.full(n, -1, np.int64), "duplicate_conflict": np.zeros(n, bool)},
                            index=index)
    s = np.where(idx[:, 0] >= 0, sims[:, 0].astype(np.float64), 0.0)
    is_dup = (idx[:, 0] >= 0) & (s >= threshold)
    dup_of = np.where(is_dup, index.to_numpy()[np.maximum(idx[:, 0], 0)], -1).astype(np.int64)
    conflict = np.zeros(n, bool)
    if labels is not None:
        y = np.asarray(labels, np.int64).ravel()
        ny = y[np.maximum(idx[:, 0], 0)]
        conflict = is_dup & (y >= 0) & (ny >= 0) & (ny != y)
    score = np.clip(0.5 * (1.0 - s) / (1.0 - threshold), 0.0, 1.0)
    return pd.DataFrame({"duplicate_score": score, "is_duplicate_issue": is_dup, "duplicate_of": dup_of,
                         "duplicate_conflict": conflict}, index=index)
