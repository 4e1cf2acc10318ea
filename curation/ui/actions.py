"""Label actions behind the buttons: each writes exactly one store batch (or none when nothing changes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation.store import POSITIVE
from curation.workspace import Workspace

BULK_ACTIONS = {
    "assign": "Assign label (replaces in single-label)",
    "add": "Add label (keep others)",
    "remove": "Remove label",
}
VERDICTS = {
    "label_wrong": "Label wrong",
    "model_wrong": "Model wrong",
    "both_valid": "Both valid",
    "ambiguous": "Ambiguous",
}


def bulk_label(ws: Workspace, ids: np.ndarray, class_name: str, action: str) -> int | None:
    """Assign, add or remove one class on many samples as one ``bulk`` batch.

    Assigning or adding a class name that does not exist yet creates the class.

    Returns
    -------
    The batch id, or None when no label changed.
    """
    ids = np.asarray(ids, np.int64)
    cid = ws.store.class_id(class_name) if action == "remove" else ws.store.add_classes([class_name])[0]
    note = f"{action} {class_name!r} on {len(ids)} samples"
    if action == "assign":
        return ws.store.set_label(ids, cid, source="bulk", note=note)
    if action == "add":
        return ws.store.add_label(ids, cid, source="bulk", note=note)
    if action == "remove":
        return ws.store.clear_label(ids, cid, source="bulk", note=note)
    raise ValueError(f"Unknown bulk action {action!r}; use one of {list(BULK_ACTIONS)}.")


def accept_suggestions(ws: Workspace, ids: np.ndarray, sugg: pd.DataFrame, *, source: str = "bulk") -> int | None:
    """Make each sample's suggested class positive (one batch); samples without a suggestion are left alone."""
    s = sugg.reindex(np.asarray(ids, np.int64)).dropna(subset=["class_idx"])
    if s.empty:
        return None
    class_ids = ws.store.classes().index.to_numpy(np.int64)[s["class_idx"].to_numpy(np.int64)]
    return ws.store.apply(s.index.to_numpy(np.int64), class_ids, POSITIVE, source=source,
                          note=f"accepted {len(s)} suggestions")


def correct_label(ws: Workspace, sample_id: int, class_name: str) -> int | None:
    """A human sets one sample's label (replacing it in single-label workspaces)."""
    return ws.store.set_label([int(sample_id)], ws.store.class_id(class_name), source="human",
                              note=f"corrected to {class_name!r}")


def record_verdict(ws: Workspace, sample_id: int, verdict: str, *, predicted_idx: int, run_id: int | None,
                   queue: str = "evaluate") -> int | None:
    """Record a review of a model mistake, changing labels when the verdict says so.

    ``label_wrong`` sets the label to the prediction; ``both_valid`` adds the prediction as a
    second label (multi-label workspaces only: single-label ones keep one label and just record
    the review); ``model_wrong`` and ``ambiguous`` change no label.

    Returns
    -------
    The label batch id, or None when no label changed.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"Unknown verdict {verdict!r}; use one of {list(VERDICTS)}.")
    cid = int(ws.store.classes().index[int(predicted_idx)])
    batch = None
    if verdict == "label_wrong":
        batch = ws.store.set_label([int(sample_id)], cid, source="review", note="review: label wrong")
    elif verdict == "both_valid" and ws.store.task == "multi":
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
    from curation.train import pin as add, unpin as remove

    return len((add if pin else remove)(ws, np.asarray(ids, np.int64)))
