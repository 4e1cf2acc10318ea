"""Neighbour vote: each sample's labelled kNN neighbours vote for its classes (the pure graph computation)."""

from __future__ import annotations

import numpy as np

from curation.core.validate import check_choice
from curation.core.vocab import TASKS

TEMPERATURE = 0.1
"""Similarity scale of the vote: a neighbour 0.1 less similar than the nearest weighs 1/e as much."""
HOPS = 2
"""Samples with no labelled neighbour borrow their neighbours' votes (each extra hop halves the weight)."""
HOP_DECAY = 0.5
CHUNK = 16384


# ---------------------------------------------------------------------- neighbour vote
def check_graph(label_matrix: np.ndarray, knn_idx: np.ndarray, knn_sims: np.ndarray,
                 task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label matrix int8, knn_idx int64, knn_sims float32), validated against each other and the task."""
    check_choice("task", task, TASKS)
    lm = np.asarray(label_matrix, np.int8)
    idx = np.asarray(knn_idx, np.int64)
    sims = np.asarray(knn_sims, np.float32)
    if lm.ndim != 2 or idx.ndim != 2 or idx.shape[0] != len(lm) or sims.shape != idx.shape:
        raise ValueError(f"label_matrix {lm.shape}, knn_idx {idx.shape} and knn_sims {sims.shape} must be (N, K), "
                         "(N, k) and (N, k): one graph row per label row (curation.features.neighbors.knn).")
    return lm, idx, sims


def labelled_rows(lm: np.ndarray, task: str) -> np.ndarray:
    """(N,) bool: rows that carry a label (single-label: a positive; multi-label: any known cell)."""
    return (lm == 1).any(1) if task == "single" else (lm != 0).any(1)


def _votes(lm: np.ndarray, idx: np.ndarray, w: np.ndarray, labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-hop evidence, in row chunks: (pos (N, K) weighted positive votes, wlab (N,) weight of labelled
    neighbours, ``labelled`` (N,) bool from :func:`labelled_rows`)."""
    n, kk = lm.shape
    pos = np.zeros((n, kk), np.float32)
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        pos[a:b] = (w[a:b, :, None] * (lm[idx[a:b]] == 1)).sum(1)
    wlab = (w * labelled[idx]).sum(1).astype(np.float32)
    return pos, wlab


def class_prior(lm: np.ndarray, task: str) -> np.ndarray:
    """(K,) prior of each class: uniform single-label, the base rate among labelled rows multi-label."""
    kk = lm.shape[1]
    if task == "single":
        return np.full(kk, 1.0 / kk, np.float32)
    return ((lm == 1).sum(0) / max(int(labelled_rows(lm, task).sum()), 1)).astype(np.float32)


def neighbor_vote(label_matrix: np.ndarray, knn_idx: np.ndarray, knn_sims: np.ndarray, *, task: str = "single",
                  temperature: float = TEMPERATURE, hops: int = HOPS, prior: float = 1.0,
                  scale_free: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every sample from a similarity-weighted vote of its labelled neighbours.

    The one neighbour-vote implementation: suggestions use it as is; label-quality scoring uses its
    scale-free form through :func:`curation.labels.oof.knn_oof_probs`. A sample's own label never enters its vote
    (the graph excludes self, and the 2-hop fallback removes the sample's contribution to its neighbours'
    votes), so a suggestion may disagree with the current label: that disagreement feeds label-error finding.

    Weights: ``w = exp((sim - sim_nearest) / temperature)`` in (0, 1]. Neighbours with no label are
    ignored. Single-label: ``p_c = (V_c + prior / K) / (W + prior)`` where ``V_c`` is the weight of
    neighbours labelled c and ``W`` that of all labelled neighbours (few or distant labelled neighbours give
    a flatter distribution); multi-label, per class: ``p_c = (V+_c + prior * pi_c) / (W + prior)`` with
    ``V+_c`` the weight of neighbours positive for c, ``W`` the weight of labelled neighbours (so a labelled
    neighbour without c, or one that rejected c, counts against c) and ``pi_c`` the base rate of c.
    Samples with no labelled neighbour take the mean vote of their neighbours (up to ``hops`` hops, each
    hop's weight multiplied by 0.5, which lowers their confidence); with no evidence at all the row is all
    zeros and confidence 0.

    Parameters
    ----------
    label_matrix : (N, K) int8 states: 1 positive, 0 unknown, -1 rejected.
    knn_idx : (N, k) int64 row positions of each sample's neighbours (self excluded, -1 = none).
    knn_sims : (N, k) float32 cosine similarities, most similar first.
    task : ``"single"`` or ``"multi"``.
    temperature : similarity scale of the weights.
    hops : 1 = neighbours only; 2 = also neighbours' votes for samples without a labelled neighbour.
    prior : pseudo-count of the smoothing.
    scale_free : rescale each row's evidence to ``k`` votes (``V -> k V / W``, ``W -> k``) before smoothing,
        so the vote says *which share* of the labelled neighbours agree whatever their number and distance
        (label-quality scoring, where almost every neighbour is labelled); the default keeps the amount of
        evidence in the confidence (suggestions, where most neighbours may be unlabelled).

    Returns
    -------
    probs : (N, K) float32 (rows sum to 1 for single-label when any evidence exists).
    confidence : (N,) float32 in [0, 1].
    """
    lm, idx, sims = check_graph(label_matrix, knn_idx, knn_sims, task)
    n, kk = lm.shape
    if n == 0 or kk == 0 or idx.shape[1] == 0:
        return np.zeros((n, kk), np.float32), np.zeros(n, np.float32)
    valid = idx >= 0
    idx = np.where(valid, idx, 0)
    w = np.exp((sims - sims.max(1, keepdims=True)) / max(float(temperature), 1e-6)) * valid
    w = w.astype(np.float32)
    labelled = labelled_rows(lm, task)
    pos, wlab = _votes(lm, idx, w, labelled)

    # fallback: rows without labelled neighbours borrow their neighbours' votes, minus their own share
    self_pos = (lm == 1).astype(np.float32)
    for _ in range(max(hops, 1) - 1):
        todo = np.flatnonzero(wlab <= 0)
        if len(todo) == 0:
            break
        ni = idx[todo]                                            # (T, k)
        back = (idx[ni] == todo[:, None, None]) & valid[ni]       # (T, k, k): is the row in its neighbour's list
        wback = (w[ni] * back).sum(-1)                            # (T, k) weight of the row in each neighbour's vote
        own_lab = labelled[todo].astype(np.float32)[:, None]
        nb_w = np.maximum(wlab[ni] - wback * own_lab, 0.0)        # (T, k)
        nb_pos = np.maximum(pos[ni] - wback[..., None] * self_pos[todo][:, None, :], 0.0)
        share = np.divide(nb_pos, nb_w[..., None], out=np.zeros_like(nb_pos), where=nb_w[..., None] > 0)
        ww = w[todo] * (nb_w > 0) * HOP_DECAY                     # only neighbours that have evidence
        pos[todo] = (ww[..., None] * share).sum(1)
        wlab[todo] = ww.sum(1)

    has = wlab > 0
    if scale_free:
        scale = np.divide(np.float32(idx.shape[1]), wlab, out=np.zeros_like(wlab), where=has)
        pos, wlab = pos * scale[:, None], np.where(has, np.float32(idx.shape[1]), np.float32(0))
    den = (wlab + prior)[:, None]
    probs = np.divide(pos + prior * class_prior(lm, task)[None, :], den, out=np.zeros_like(pos),
                      where=has[:, None] & (den > 0))                # float32; all zeros without evidence
    return probs, probs.max(1).astype(np.float32)
