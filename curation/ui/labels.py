"""Pure helpers that turn label matrices and suggestions into text and ranked review queues."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from curation.store import POSITIVE

NONE = "(unlabelled)"
QUEUES = {
    "unlabelled": "Unlabelled: confirm suggestions",
    "disagree": "Likely errors: label ≠ suggestion",
    "issues": "Likely errors: ranked by label quality (confident learning + kNN)",
}


def label_text(matrix: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """One string per row: its positive class names joined by ", ", or ``(unlabelled)``."""
    names = np.asarray(list(class_names), dtype=object)
    return [", ".join(names[row == POSITIVE]) or NONE for row in np.asarray(matrix)]


def review_queue(ids: np.ndarray, matrix: np.ndarray, sugg: pd.DataFrame, *, queue: str) -> pd.DataFrame:
    """Samples to review, most confident suggestion first.

    Parameters
    ----------
    ids : (N,) int64 sample ids; ``matrix`` rows follow them.
    matrix : (N, K) int8 label states.
    sugg : suggestions indexed by sample id with ``class_idx`` and ``confidence``.
    queue : ``"unlabelled"`` (no positive label, a suggestion to confirm) or ``"disagree"``
        (labelled, but the suggested class is not among its positives: a likely error).

    Returns
    -------
    The rows of ``sugg`` in the queue, ordered by confidence (descending, ties by id).
    """
    if queue not in QUEUES:
        raise ValueError(f"Unknown review queue {queue!r}; use one of {list(QUEUES)}.")
    ids = np.asarray(ids, np.int64)
    s = sugg.reindex(ids)
    has = s["class_idx"].notna().to_numpy()
    pos = np.asarray(matrix) == POSITIVE
    labelled = pos.any(axis=1)
    if queue == "unlabelled":
        keep = has & ~labelled
    else:
        k = np.where(has, s["class_idx"].fillna(0).to_numpy(np.int64), 0)
        k = np.clip(k, 0, max(pos.shape[1] - 1, 0))
        agrees = pos[np.arange(len(ids)), k] if pos.shape[1] else np.zeros(len(ids), bool)
        keep = has & labelled & ~agrees
    out = s[keep].copy()
    out["class_idx"] = out["class_idx"].astype(np.int64)
    out["_id"] = out.index
    return out.sort_values(["confidence", "_id"], ascending=[False, True]).drop(columns="_id")


def issue_queue(issues: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Labelled samples whose label looks wrong, worst label-quality score first.

    Parameters
    ----------
    issues : ``curation.issues.compute_issues`` output, indexed by sample id (given, label_score,
        is_label_issue, suggested, suggested_prob).
    class_names : names of the label-matrix columns.

    Returns
    -------
    Rows shaped like suggestions (class_idx, class_name, confidence, source) plus ``label_score``,
    ordered by ``label_score`` ascending (ties by id).
    """
    df = issues[(issues["given"] >= 0) & issues["is_label_issue"].astype(bool)]
    names = np.asarray(list(class_names), dtype=object)
    out = pd.DataFrame({"class_idx": df["suggested"].astype(np.int64),
                        "class_name": names[df["suggested"].to_numpy(np.int64)] if len(df) else [],
                        "confidence": df["suggested_prob"].astype(float),
                        "source": "confident learning + kNN", "label_score": df["label_score"].astype(float)},
                       index=df.index)
    out["_id"] = out.index
    return out.sort_values(["label_score", "_id"]).drop(columns="_id")


def nearest_rows(vectors: np.ndarray, row: int, candidates: np.ndarray, *, k: int = 6) -> np.ndarray:
    """Row positions of the ``k`` candidates most similar (cosine) to ``vectors[row]``, itself excluded.

    Parameters
    ----------
    vectors : (N, D) float32, L2-normalised.
    candidates : (N,) bool, rows allowed as neighbours.
    """
    mask = np.asarray(candidates, bool).copy()
    mask[row] = False
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        return rows
    sims = np.asarray(vectors[rows]) @ np.asarray(vectors[row])
    top = np.argsort(-sims, kind="stable")[:k]
    return rows[top]
