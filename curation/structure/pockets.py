"""Pockets: small sub-populations set apart inside big clusters (rare classes hiding in common ones).

The idea follows Walmsley & Scaife, "Rare Galaxy Classes Identified In Foundation Model
Representations" (NeurIPS 2023 ML4PS workshop, arXiv:2312.02910): foundation-model embeddings
arrange images by appearance beyond the labels they were trained for, and rare classes show up as
small local groups that a coarse clustering swallows into a big cluster. Here each big cluster is
over-clustered into small groups; a group is a pocket when its members sit far from the centre of
the rest of the cluster (``distinctness``, relative to the rest's own spread, an outlier among the
cluster's groups) while staying a group: about as tight as the rest (``tightness``) and closer to
each other than to the rest (``separation``). Pieces of one pocket are merged. On real Fashion-MNIST
embeddings a rare class planted inside a big cluster is no tighter than the rest, but far out:
distance, not tightness, is what sets it apart (docs/performance.md), hence a tightness floor of
0.9 rather than a demand for extra tightness.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MIN_CLUSTER = 60
"""Clusters smaller than this are not searched (too few members to hold a pocket and a rest)."""
GROUP_SIZE = 15
"""Over-clustering aims at groups of about this many members (between 4 and 64 groups per cluster)."""
MIN_POCKET = 5
MAX_SHARE = 0.2
"""A pocket holds at most this share of its cluster: it is a sub-population, not a half."""
MIN_DISTINCT = 1.5
"""A pocket's members are at least this many times further from the rest's centre than the rest's own are..."""
FENCE = 3.0
"""... and further than the median + FENCE robust standard deviations (1.4826 MAD) of its cluster's groups."""
MIN_TIGHT = 0.9
"""A pocket's mean internal similarity is at least this multiple of the rest of its cluster's."""
COLUMNS = ["cluster", "ids", "size", "share", "distinctness", "tightness", "separation"]


def _stats(sums: np.ndarray, n: np.ndarray, total: np.ndarray, n_total: int) -> dict[str, np.ndarray]:
    """Distinctness, tightness and separation of groups against the rest of their cluster, from vector sums.

    For L2-normalised vectors the mean pairwise similarity inside a group of n with sum S is
    (|S|² - n) / (n (n - 1)), and the mean similarity between two groups is S_a · S_b / (n_a n_b).
    """
    rest = total[None, :] - sums
    n_rest = n_total - n
    intra = (np.einsum("ij,ij->i", sums, sums) - n) / np.maximum(n * (n - 1), 1)
    intra_rest = (np.einsum("ij,ij->i", rest, rest) - n_rest) / np.maximum(n_rest * (n_rest - 1), 1)
    cross = np.einsum("ij,ij->i", sums, rest) / np.maximum(n * n_rest, 1)
    rest_norm = np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
    d_group = 1.0 - np.einsum("ij,ij->i", sums, rest) / rest_norm / np.maximum(n, 1)  # to the rest's centre
    d_rest = 1.0 - rest_norm / np.maximum(n_rest, 1)                                  # the rest's own spread
    a, b = 1.0 - intra, 1.0 - cross
    return {"distinctness": d_group / np.maximum(d_rest, 1e-6), "tightness": intra / np.maximum(intra_rest, 1e-6),
            "separation": (b - a) / np.maximum(np.maximum(a, b), 1e-12)}


def find_pockets(vectors: np.ndarray, labels: np.ndarray, *, ids: np.ndarray | None = None,
                 clusters: Sequence[int] | None = None, min_cluster: int = MIN_CLUSTER,
                 group_size: int = GROUP_SIZE, min_size: int = MIN_POCKET, max_share: float = MAX_SHARE,
                 min_distinct: float = MIN_DISTINCT, fence: float = FENCE, min_tight: float = MIN_TIGHT,
                 seed: int = 0) -> pd.DataFrame:
    """Small distinct sub-populations inside big clusters.

    Each cluster with at least ``min_cluster`` members is over-clustered (spherical k-means into
    about size / ``group_size`` groups). A group of 2 or more members is flagged when its
    ``distinctness`` is at least ``min_distinct`` and above the median + ``fence`` robust standard
    deviations (1.4826 MAD) of the cluster's groups (robust, because a fragmented pocket puts several
    groups in the tail), its ``tightness`` at least ``min_tight`` and its ``separation`` positive. Flagged groups
    of one cluster that are closer to each other than to the rest are merged, and a pocket keeps
    ``min_size`` .. ``max_share`` x size members.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    labels : (N,) int cluster per row (-1 = noise, never searched).
    ids : (N,) int64 sample ids reported in ``ids`` (default: row positions).
    clusters : search only these clusters (default: all big enough).

    Returns
    -------
    DataFrame, most distinct first, with columns ``cluster``, ``ids`` (list of member ids), ``size``,
    ``share`` (of the cluster), ``distinctness`` (mean cosine distance of the pocket's members to the
    centroid of the rest of the cluster, over that of the rest's own members: > 1 = further out),
    ``tightness`` (mean pairwise cosine similarity inside the pocket over that inside the rest) and
    ``separation`` (silhouette of the pocket against the rest of its cluster, in [-1, 1]).
    """
    from curation.structure.cluster import kmeans

    x = np.asarray(vectors, np.float32)
    lab = np.asarray(labels, np.int64)
    ids = np.arange(len(x), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    wanted = np.unique(lab[lab >= 0]) if clusters is None else np.asarray(list(clusters), np.int64)
    rows_out = []
    for c in wanted:  # a loop over clusters
        members = np.flatnonzero(lab == c)
        if len(members) < min_cluster:
            continue
        xc = x[members]
        m = int(np.clip(len(members) // group_size, 4, 64))
        groups, _ = kmeans(xc, m, seed=seed, n_init=1)
        sums = np.zeros((m, x.shape[1]), np.float64)
        np.add.at(sums, groups, xc)
        n = np.bincount(groups, minlength=m).astype(np.float64)
        total = xc.sum(0, dtype=np.float64)
        st = _stats(sums, n, total, len(members))
        d = st["distinctness"][n >= 2]
        med = np.median(d)
        ok = ((n >= 2) & (st["distinctness"] >= max(min_distinct, med + fence * 1.4826 * np.median(np.abs(d - med))))
              & (st["tightness"] >= min_tight) & (st["separation"] > 0))
        for group in _merge(np.flatnonzero(ok), sums, n, total, len(members)):
            gs, gn = sums[group].sum(0, keepdims=True), n[group].sum(keepdims=True)
            if not min_size <= gn[0] <= max_share * len(members):
                continue
            merged = _stats(gs, gn, total, len(members))
            rows_out.append({"cluster": int(c), "ids": ids[members[np.isin(groups, group)]].tolist(),
                             "size": int(gn[0]), "share": float(gn[0] / len(members)),
                             **{k: float(v[0]) for k, v in merged.items()}})
    df = pd.DataFrame(rows_out, columns=COLUMNS)
    return df.sort_values(["distinctness", "cluster"], ascending=[False, True], ignore_index=True)


def _merge(flagged: np.ndarray, sums: np.ndarray, n: np.ndarray, total: np.ndarray, n_total: int) -> list[np.ndarray]:
    """Group flagged groups that are one pocket cut in pieces: two pieces join when their mean mutual
    similarity exceeds each one's mean similarity to the rest of the cluster (union-find over the few
    flagged groups)."""
    if len(flagged) == 0:
        return []
    s, k = sums[flagged], n[flagged]
    to_rest = np.einsum("ij,ij->i", s, total[None, :] - s) / np.maximum(k * (n_total - k), 1)
    join = (s @ s.T) / np.outer(k, k) > np.maximum(to_rest[:, None], to_rest[None, :])
    parent = np.arange(len(flagged))
    for i, j in zip(*np.nonzero(np.triu(join, 1))):
        parent[parent == parent[j]] = parent[i]
    return [flagged[parent == r] for r in np.unique(parent)]
