"""Pseudo-labels from the kNN graph: a similarity-weighted vote of labelled neighbours, cached per label state."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from curation.progress import ProgressFn, null_progress, sub_progress

log = logging.getLogger(__name__)

TEMPERATURE = 0.1
"""Similarity scale of the vote: a neighbour 0.1 less similar than the nearest weighs 1/e as much."""
HOPS = 2
"""Samples with no labelled neighbour borrow their neighbours' votes (each extra hop halves the weight)."""
HOP_DECAY = 0.5
CHUNK = 16384
COLUMNS = ["class_idx", "class_name", "confidence", "source", "label_idx", "agrees"]


def _votes(lm: np.ndarray, idx: np.ndarray, w: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-hop evidence, in row chunks.

    Returns (pos (N, K) weighted positive votes, neg (N, K) weighted rejections, wlab (N,) weight of
    labelled neighbours: with a positive for single-label, with any known state for multi-label).
    """
    n, kk = lm.shape
    pos = np.zeros((n, kk), np.float32)
    neg = np.zeros((n, kk), np.float32)
    labelled = (lm == 1).any(1) if task == "single" else (lm != 0).any(1)
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        nb = lm[idx[a:b]]                                    # (B, k, K) int8
        ww = w[a:b, :, None]
        pos[a:b] = (ww * (nb == 1)).sum(1)
        if task == "multi":
            neg[a:b] = (ww * (nb == -1)).sum(1)
    wlab = (w * labelled[idx]).sum(1).astype(np.float32)
    return pos, neg, wlab


def neighbor_vote(label_matrix: np.ndarray, knn_idx: np.ndarray, knn_sims: np.ndarray, *, task: str = "single",
                  temperature: float = TEMPERATURE, hops: int = HOPS) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every sample from a similarity-weighted vote of its labelled neighbours.

    A sample's own label never enters its vote (the graph excludes self, and the 2-hop fallback
    removes the sample's contribution to its neighbours' votes), so a suggestion may disagree with
    the current label: that disagreement feeds label-error finding.

    Weights: ``w = exp((sim - sim_nearest) / temperature)`` in (0, 1]. Neighbours with no label are
    ignored. Single-label: ``p_c = (V_c + 1/K) / (W + 1)`` where ``V_c`` is the weight of neighbours
    labelled c and ``W`` that of all labelled neighbours (Laplace smoothing: few or distant labelled
    neighbours give a flatter distribution); confidence = max_c p_c. Multi-label: per class,
    ``p_c = (V+_c + pi_c) / (W + 1)`` with ``V+_c`` the weight of neighbours positive for c, ``W``
    the weight of labelled neighbours (so a labelled neighbour without c, or one that rejected c,
    counts against c) and ``pi_c`` the base rate of c; confidence = max_c p_c. Samples with no
    labelled neighbour take the mean vote of their neighbours (up to ``hops`` hops, each hop's
    weight multiplied by 0.5, which lowers their confidence); with no evidence at all the row is
    all zeros and confidence 0.

    Parameters
    ----------
    label_matrix : (N, K) int8 states: 1 positive, 0 unknown, -1 rejected.
    knn_idx : (N, k) int64 row positions of each sample's neighbours (self excluded).
    knn_sims : (N, k) float32 cosine similarities, most similar first.
    task : ``"single"`` or ``"multi"``.
    temperature : similarity scale of the weights.
    hops : 1 = neighbours only; 2 = also neighbours' votes for samples without a labelled neighbour.

    Returns
    -------
    probs : (N, K) float32 (rows sum to 1 for single-label when any evidence exists).
    confidence : (N,) float32 in [0, 1].
    """
    if task not in ("single", "multi"):
        raise ValueError(f"task must be 'single' or 'multi', not {task!r}.")
    lm = np.asarray(label_matrix, np.int8)
    idx = np.asarray(knn_idx, np.int64)
    sims = np.asarray(knn_sims, np.float32)
    n, kk = lm.shape
    if idx.shape[0] != n or sims.shape != idx.shape:
        raise ValueError(f"knn_idx {idx.shape} / knn_sims {sims.shape} must have one row per label row ({n}).")
    if n == 0 or kk == 0 or idx.shape[1] == 0:
        return np.zeros((n, kk), np.float32), np.zeros(n, np.float32)
    valid = idx >= 0
    idx = np.where(valid, idx, 0)
    w = np.exp((sims - sims.max(1, keepdims=True)) / max(float(temperature), 1e-6)) * valid
    w = w.astype(np.float32)
    pos, neg, wlab = _votes(lm, idx, w, task)
    labelled = (lm == 1).any(1) if task == "single" else (lm != 0).any(1)

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
        if task == "multi":  # rejections are not propagated beyond one hop
            neg[todo] = 0.0

    has = wlab > 0
    if task == "single":
        probs = (pos + 1.0 / kk) / (wlab[:, None] + 1.0)
    else:
        n_lab = max(int(labelled.sum()), 1)
        prior = ((lm == 1).sum(0) / n_lab).astype(np.float32)
        probs = (pos + prior[None, :]) / (wlab[:, None] + 1.0)
    probs = np.where(has[:, None], probs, 0.0).astype(np.float32)
    conf = probs.max(1).astype(np.float32)
    return probs, conf


def _key(ws: Any, emb: Any, *, k: int, temperature: float, model_weight: float) -> tuple[str, dict[str, Any]]:
    from curation.artifacts import make_key
    from curation.neighbors import ids_fingerprint

    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "k": int(k),
              "last_event": int(ws.store.last_event_id()), "task": ws.store.task,
              "classes": ws.store.class_names(), "temperature": float(temperature),
              "model_weight": float(model_weight)}
    return make_key(config), config


def _latest_predictions(ws: Any, ids: np.ndarray, k_classes: int) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(run id, rows present, probs) of the newest finished run's predictions aligned to ``ids``, or None."""
    runs = ws.store.runs()
    if runs.empty:
        return None
    done = runs[runs["status"].isin(["done", "finished", "succeeded"])]
    for run_id in done.index:  # newest first
        p_ids = ws.artifacts.load_array("predictions", f"run-{run_id}", name="ids", mmap=False)
        probs = ws.artifacts.load_array("predictions", f"run-{run_id}", name="probs", mmap=False)
        if p_ids is None or probs is None or probs.shape[1] != k_classes:
            continue
        order = np.argsort(p_ids)
        pos = np.searchsorted(p_ids[order], ids)
        pos = np.clip(pos, 0, len(p_ids) - 1)
        present = p_ids[order][pos] == ids
        return int(run_id), present, np.asarray(probs)[order][pos]
    return None


def suggestions(ws: Any, emb: Any, *, k: int = 15, temperature: float = TEMPERATURE, model_weight: float = 0.0,
                progress: ProgressFn | None = None) -> pd.DataFrame:
    """Neighbour-vote suggestions for every sample, cached as artifact kind ``suggestions``.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key``.
    k : neighbours in the vote (the shared ``knn_graph(ws, emb, k=k)``).
    model_weight : in [0, 1]; above 0, the newest finished training run's predictions (artifact
        ``predictions/run-<id>``) are blended in as ``(1 - w) * vote + w * model`` where present
        (source ``"knn+model"``). Off by default: a model scores its own training labels optimistically.

    Returns
    -------
    DataFrame indexed by sample id (``id``) with ``class_idx`` (int64, column of ``label_matrix``, -1 when
    no evidence), ``class_name`` ("" when none), ``confidence`` (float32 in [0, 1]), ``source`` ("knn"),
    ``label_idx`` (current positive label, lowest index in multi-label, -1 when none) and ``agrees``
    (bool: the suggested class is a positive label of the sample). The full (N, K) probabilities are
    kept too: :func:`load_suggestion_probs`.
    """
    from curation.neighbors import knn_graph

    progress = progress or null_progress
    key, config = _key(ws, emb, k=k, temperature=temperature, model_weight=model_weight)
    df = ws.artifacts.load_frame("suggestions", key)
    if df is not None and len(df) == len(emb.ids):
        return df
    ids = np.asarray(emb.ids, np.int64)
    names = ws.store.class_names()
    task = ws.store.task
    lm = ws.store.label_matrix(ids)
    if not names:
        log.info("no classes yet: add classes or import labels to get suggestions")
    idx, sims = knn_graph(ws, emb, k=k, progress=sub_progress(progress, 0.0, 0.7))
    progress(0.75, "neighbour vote")
    probs, conf = neighbor_vote(lm, idx, sims, task=task, temperature=temperature)
    source = np.full(len(ids), "knn", dtype=object)
    if model_weight > 0 and names:
        found = _latest_predictions(ws, ids, len(names))
        if found is not None:
            run_id, present, mprobs = found
            blended = (1 - model_weight) * probs + model_weight * mprobs
            probs = np.where(present[:, None], blended, probs).astype(np.float32)
            conf = np.where(present, probs.max(1), conf).astype(np.float32)
            source[present] = "knn+model"
            log.info("blended predictions of run %d into %d suggestions", run_id, int(present.sum()))
    has = conf > 0
    cls = np.where(has, probs.argmax(1) if names else -1, -1).astype(np.int64)
    pos = lm == 1
    label_idx = np.where(pos.any(1), pos.argmax(1), -1).astype(np.int64) if names else np.full(len(ids), -1)
    agrees = pos[np.arange(len(ids)), np.maximum(cls, 0)] & (cls >= 0) if names else np.zeros(len(ids), bool)
    name_arr = np.array([*names, ""], dtype=object)
    df = pd.DataFrame({"class_idx": cls, "class_name": name_arr[cls], "confidence": conf.astype(np.float32),
                       "source": source, "label_idx": label_idx.astype(np.int64), "agrees": agrees.astype(bool)},
                      index=pd.Index(ids, name="id"))
    df["class_name"] = df["class_name"].astype(str)
    df["source"] = df["source"].astype(str)
    ws.artifacts.save_frame("suggestions", key, df, config=config)
    ws.artifacts.save_array("suggestions_probs", key, probs, config=config)
    progress(1.0, f"{int(has.sum()):,} suggestions")
    return df


def load_suggestion_probs(ws: Any, emb: Any, *, k: int = 15, temperature: float = TEMPERATURE,
                          model_weight: float = 0.0) -> np.ndarray | None:
    """(N, K) float32 vote probabilities saved by :func:`suggestions` for the current labels, or None."""
    key, _ = _key(ws, emb, k=k, temperature=temperature, model_weight=model_weight)
    return ws.artifacts.load_array("suggestions_probs", key, mmap=False)
