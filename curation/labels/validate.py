"""Validation shared by the label-issue modules: one place that checks probabilities, labels, kNN graphs, ids."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)



class IssuesError(ValueError):
    """Inputs that cannot be scored; the message says what to do."""


# ---------------------------------------------------------------------- validation helpers
def _check_choice(what: str, value: object, valid: tuple) -> None:
    """Raise :class:`IssuesError` (a ValueError) when ``value`` is not one of ``valid``, listing them."""
    from curation.core.validate import check_choice

    try:
        check_choice(what, value, valid)
    except ValueError as exc:
        raise IssuesError(str(exc)) from None


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


def _check_matrix(Y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Y = np.asarray(Y)
    p = _check_probs(probs)
    if Y.shape != p.shape:
        raise IssuesError(f"Y {Y.shape} and probs {p.shape} must have the same (N, K) shape.")
    if not np.isin(Y, (POSITIVE, UNKNOWN, REJECTED)).all():
        raise IssuesError("Y must hold 1 (positive), 0 (unknown) or -1 (rejected).")
    return Y, p

