"""Label actions behind the buttons: each writes exactly one store batch (or none when nothing changes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation.data.store import POSITIVE, REJECTED
from curation.data.workspace import Workspace

BULK_ACTIONS = {
    "assign": "Assign label (replaces in single-label)",
    "add": "Add label (keep others)",
    "remove": "Remove label (records a rejection)",
    "clear": "Clear label (back to unknown)",
}
"""Removing records that a person said no (``rejected``): the "no" is learned from and never proposed again;
clearing only forgets the label (``unknown``)."""
VERDICTS = {
    "label_wrong": "Label wrong",
    "model_wrong": "Model wrong",
    "both_valid": "Both valid",
    "ambiguous": "Ambiguous",
}


def bulk_label(ws: Workspace, ids: np.ndarray, class_name: str, action: str) -> int | None:
    """Assign, add, remove (reject) or clear one class on many samples as one ``bulk`` batch.

    Assigning or adding a class name that does not exist yet creates the class.

    Returns
    -------
    The batch id, or None when no label changed.
    """
    ids = np.asarray(ids, np.int64)
    if action not in BULK_ACTIONS:
        raise ValueError(f"Unknown bulk action {action!r}; use one of {list(BULK_ACTIONS)}.")
    cid = ws.store.class_id(class_name) if action in ("remove", "clear") else ws.store.add_classes([class_name])[0]
    note = f"{action} {class_name!r} on {len(ids)} samples"
    if action == "assign":
        return ws.store.set_label(ids, cid, source="bulk", note=note)
    if action == "add":
        return ws.store.add_label(ids, cid, source="bulk", note=note)
    if action == "remove":
        return ws.store.reject_label(ids, cid, source="bulk", note=note)
    return ws.store.clear_label(ids, cid, source="bulk", note=note)


def suggestions_to_accept(ws: Workspace, ids: np.ndarray, sugg: pd.DataFrame, *,
                          replace_labels: bool = False) -> pd.DataFrame:
    """The rows of ``sugg`` that accepting would apply to ``ids``.

    A sample qualifies when it has a suggestion, nobody rejected the suggested class for it, and, unless
    ``replace_labels``, it has no positive label yet (a bulk accept fills gaps; overwriting labels that
    disagree with the suggestion is a separate, explicit choice).

    Parameters
    ----------
    ids : (M,) int64 sample ids.
    sugg : indexed by sample id, with ``class_idx`` (column of the label matrix; -1 / NaN = none).

    Returns
    -------
    ``sugg`` rows indexed by the qualifying sample ids, ``class_idx`` as int64.
    """
    s = sugg.reindex(np.asarray(ids, np.int64)).dropna(subset=["class_idx"])
    s = s[s["class_idx"] >= 0].assign(class_idx=lambda f: f["class_idx"].astype(np.int64))  # -1: no evidence
    if s.empty:
        return s
    m = ws.store.label_matrix(s.index.to_numpy(np.int64))
    keep = m[np.arange(len(s)), s["class_idx"].to_numpy()] != REJECTED
    if not replace_labels:
        keep &= ~(m == POSITIVE).any(1)
    return s[keep]


def accept_suggestions(ws: Workspace, ids: np.ndarray, sugg: pd.DataFrame, *,
                       replace_labels: bool = False) -> int | None:
    """Make the suggested class positive for :func:`suggestions_to_accept`'s samples as one ``bulk`` batch, and
    record a ``bulk_accepted`` review per accepted sample (so the queues' measured precision leaves these
    labels out: they *are* the suggestion).

    Returns
    -------
    The batch id, or None when no label changed.
    """
    s = suggestions_to_accept(ws, ids, sugg, replace_labels=replace_labels)
    if s.empty:
        return None
    accepted = s.index.to_numpy(np.int64)
    class_ids = ws.store.classes().index.to_numpy(np.int64)[s["class_idx"].to_numpy(np.int64)]
    batch = ws.store.apply(accepted, class_ids, POSITIVE, source="bulk", note=f"accepted {len(s)} suggestions")
    if batch is not None:
        ws.store.add_reviews(accepted.tolist(), queue="confirm", verdict="bulk_accepted", batch_id=batch)
    return batch


def record_verdict(ws: Workspace, sample_id: int, verdict: str, *, predicted_idx: int, run_id: int | None,
                   queue: str = "evaluate", true_idx: int | None = None) -> int | None:
    """Record a review of a model mistake, changing labels when the verdict says so.

    ``label_wrong`` sets the label to the prediction (in a multi-label workspace the wrong label
    ``true_idx``, when given, is rejected in the same batch, since a person said it does not apply);
    ``both_valid`` adds the prediction as a second label (multi-label workspaces only: single-label
    ones keep one label and just record the review); ``model_wrong`` and ``ambiguous`` change no label.

    Returns
    -------
    The label batch id, or None when no label changed.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"Unknown verdict {verdict!r}; use one of {list(VERDICTS)}.")
    cid = int(ws.store.classes().index[int(predicted_idx)])
    batch = None
    multi = ws.store.task == "multi"
    if verdict == "label_wrong" and multi and true_idx is not None and int(true_idx) != int(predicted_idx):
        wrong = int(ws.store.classes().index[int(true_idx)])
        batch = ws.store.apply([int(sample_id)] * 2, [wrong, cid], [REJECTED, POSITIVE], source="review",
                               note="review: label wrong")
    elif verdict == "label_wrong":
        batch = ws.store.set_label([int(sample_id)], cid, source="review", note="review: label wrong")
    elif verdict == "both_valid" and multi:
        batch = ws.store.add_label([int(sample_id)], cid, source="review", note="review: both valid")
    ws.store.add_reviews([int(sample_id)], queue=queue, verdict=verdict, run_id=run_id, batch_id=batch)
    return batch


def mark_reviewed(ws: Workspace, ids: np.ndarray, *, queue: str = "map") -> int:
    """Record that a person looked at these samples and found their labels right (no label changes).

    Returns
    -------
    The number of samples recorded.
    """
    ids = np.unique(np.asarray(ids, np.int64))
    ws.store.add_reviews(ids.tolist(), queue=queue, verdict="reviewed")
    return len(ids)


def pin_samples(ws: Workspace, ids: np.ndarray, *, pin: bool = True) -> int:
    """Add samples to (or remove them from) the must-not-fail slice every training run reports on.

    Returns
    -------
    The size of the slice afterwards.
    """
    from curation.data.pins import pin as add
    from curation.data.pins import unpin as remove

    return len((add if pin else remove)(ws, np.asarray(ids, np.int64)))


REVIEW_VERDICTS = {
    "accepted": "Accept",
    "corrected": "Correct",
    "both_valid": "Both valid",
    "rejected": "Reject",
    "ambiguous": "Ambiguous",
    "out_of_vocabulary": "Out of vocabulary",
    "label_right": "Label is right",
    "duplicate": "Same image",
    "skipped": "Skip",
}


def review_item(ws: Workspace, sample_id: int, verdict: str, *, queue: str, class_name: str = "",
                replace: bool = False, reject: bool = False) -> int | None:
    """One review-queue decision on one sample: at most one label batch, and one review row.

    ``accepted`` makes ``class_name`` positive (replacing the other labels when ``replace``, else as the
    task does: replacing in single-label, adding in multi-label); ``corrected`` makes it the only label;
    ``both_valid`` adds it beside the others (single-label workspaces refuse: the store raises);
    ``rejected`` records that it does not apply; ``ambiguous`` and ``out_of_vocabulary`` also reject it when
    ``reject``; ``label_right``, ``duplicate`` and ``skipped`` change no label.

    Returns
    -------
    The label batch id, or None when no label changed.
    """
    if verdict not in REVIEW_VERDICTS:
        raise ValueError(f"Unknown review verdict {verdict!r}; use one of {list(REVIEW_VERDICTS)}.")
    sid, note = [int(sample_id)], f"review ({queue}): {REVIEW_VERDICTS[verdict].lower()} {class_name!r}"
    cid = ws.store.class_id(class_name) if class_name else None
    if cid is None and verdict in ("accepted", "corrected", "both_valid", "rejected"):
        raise ValueError(f"{REVIEW_VERDICTS[verdict]} needs a class; pick one first.")
    batch = None
    if verdict in ("accepted", "corrected"):
        exclusive = True if replace or verdict == "corrected" else None
        source = "suggestion" if verdict == "accepted" else "human"
        batch = ws.store.apply(sid, [cid], POSITIVE, source=source, note=note, exclusive=exclusive)
    elif verdict == "both_valid":
        batch = ws.store.add_label(sid, cid, source="review", note=note)
    elif verdict == "rejected" or (reject and cid is not None and verdict in ("ambiguous", "out_of_vocabulary")):
        batch = ws.store.reject_label(sid, cid, source="review", note=note)
    ws.store.add_reviews(sid, queue=queue, verdict=verdict, batch_id=batch)
    return batch
