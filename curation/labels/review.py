"""Human decisions as engine functions: each writes its label batch and its review rows in one transaction.

The app's buttons and the command line call these same functions, so a decision means the same thing
wherever it is taken. Verdicts and queues are the words of :mod:`curation.core.vocab`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation.core.validate import check_choice
from curation.core.vocab import MISTAKE_VERDICTS, POSITIVE, QUEUE_VERDICTS, QUEUES, REJECTED, UNKNOWN
from curation.data.store import Review, StoreError
from curation.data.workspace import Workspace

BULK_ACTIONS = {
    "assign": "Assign label (replaces in single-label)",
    "add": "Add label (keep others)",
    "remove": "Remove label (records a rejection)",
    "clear": "Clear label (back to unknown)",
}
"""Bulk label actions on a selection. Removing records that a person said no (``rejected``), so the "no"
is learned from and never proposed again; clearing only forgets the label (``unknown``)."""
_BULK_STATE = {"assign": POSITIVE, "add": POSITIVE, "remove": REJECTED, "clear": UNKNOWN}


def bulk_label(ws: Workspace, ids: np.ndarray, class_name: str, action: str) -> int | None:
    """Assign, add, remove (reject) or clear one class on many samples as one ``bulk`` batch.

    Parameters
    ----------
    ids : (M,) int64 sample ids.
    class_name : the class; assigning or adding a name that does not exist yet creates the class.
    action : a key of :data:`BULK_ACTIONS`.

    Returns
    -------
    The batch id, or None when no label changed.
    """
    check_choice("bulk action", action, BULK_ACTIONS)
    ids = np.asarray(ids, np.int64)
    creates = action in ("assign", "add")
    cid = ws.store.add_classes([class_name])[0] if creates else ws.store.class_id(class_name)
    note = f"{action} {class_name!r} on {len(ids)} samples"
    exclusive = None if action == "assign" else False
    return ws.store.apply(ids, [cid], _BULK_STATE[action], source="bulk", note=note, exclusive=exclusive)


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
    """Make the suggested class positive for :func:`suggestions_to_accept`'s samples as one ``bulk`` batch, with
    a ``bulk_accepted`` review per accepted sample in the same transaction (so the queues' measured precision
    leaves these labels out: they *are* the suggestion).

    Returns
    -------
    The batch id, or None when no label changed.
    """
    s = suggestions_to_accept(ws, ids, sugg, replace_labels=replace_labels)
    if s.empty:
        return None
    accepted = s.index.to_numpy(np.int64)
    class_ids = ws.store.classes().index.to_numpy(np.int64)[s["class_idx"].to_numpy(np.int64)]
    return ws.store.apply(accepted, class_ids, POSITIVE, source="bulk", note=f"accepted {len(s)} suggestions",
                          review=Review(accepted, queue="confirm", verdict="bulk_accepted"))


def record_verdict(ws: Workspace, sample_id: int, verdict: str, *, predicted_idx: int, run_id: int | None,
                   queue: str = "evaluate", true_idx: int | None = None) -> int | None:
    """Decide who was wrong about a model mistake, changing labels as the verdict says, in one transaction.

    =============  ======================================  =============================================
    verdict        single-label workspace                  multi-label workspace
    =============  ======================================  =============================================
    label_wrong    the prediction becomes the label        the given label ``true_idx`` is rejected and
                                                           the prediction added
    both_wrong     the given label is rejected (the        the given label and the prediction are both
                   sample is left unlabelled)              rejected
    both_valid     review only (one label per sample)      the prediction is added as a second label
    model_wrong    review only                             the prediction is rejected (a "no" to learn)
    ambiguous      review only                             review only
    =============  ======================================  =============================================

    Parameters
    ----------
    sample_id : the sample.
    verdict : a key of :data:`curation.core.vocab.MISTAKE_VERDICTS`.
    predicted_idx : column of the label matrix the model predicted.
    run_id : the run whose prediction is judged.
    queue : where the decision was taken (a key of :data:`curation.core.vocab.QUEUES`).
    true_idx : column of the given label being judged (needed for ``both_wrong`` and multi-label verdicts).

    Returns
    -------
    The label batch id, or None when no label changed.
    """
    check_choice("verdict", verdict, MISTAKE_VERDICTS)
    check_choice("review queue", queue, QUEUES)
    classes = ws.store.classes().index.to_numpy(np.int64)
    pred = int(classes[int(predicted_idx)])
    given = None if true_idx is None else int(classes[int(true_idx)])
    multi = ws.store.task == "multi"
    cells: list[tuple[int, int]] = []  # (class id, state)
    if verdict == "label_wrong":
        cells = [(pred, POSITIVE)] if not multi or given in (None, pred) else [(given, REJECTED), (pred, POSITIVE)]
    elif verdict == "both_wrong":
        cells = [(c, REJECTED) for c in dict.fromkeys([given, pred] if multi else [given]) if c is not None]
    elif verdict == "both_valid" and multi:
        cells = [(pred, POSITIVE)]
    elif verdict == "model_wrong" and multi and pred != given:
        cells = [(pred, REJECTED)]
    sid = int(sample_id)
    note = f"review: {MISTAKE_VERDICTS[verdict].lower()}"
    exclusive = None if verdict == "label_wrong" and not multi else False
    return ws.store.apply([sid] * len(cells), [c for c, _ in cells], [s for _, s in cells], source="review",
                          note=note, exclusive=exclusive,
                          review=Review([sid], queue=queue, verdict=verdict, run_id=run_id))


def review_item(ws: Workspace, sample_id: int, verdict: str, *, queue: str, class_name: str = "",
                replace: bool = False, reject: bool = False) -> int | None:
    """One review-queue decision on one sample: at most one label batch, and its review row, in one transaction.

    ``accepted`` makes ``class_name`` positive (replacing the other labels when ``replace``, else as the
    task does: replacing in single-label, adding in multi-label); ``corrected`` makes it the only label;
    ``both_valid`` adds it beside the others (single-label workspaces refuse: the store raises);
    ``rejected`` records that it does not apply; ``ambiguous`` and ``out_of_vocabulary`` also reject it when
    ``reject``; ``label_right``, ``duplicate`` and ``skipped`` change no label.

    Returns
    -------
    The label batch id, or None when no label changed.
    """
    check_choice("review verdict", verdict, QUEUE_VERDICTS)
    check_choice("review queue", queue, QUEUES)
    sid, note = [int(sample_id)], f"review ({queue}): {QUEUE_VERDICTS[verdict].lower()} {class_name!r}"
    cid = ws.store.class_id(class_name) if class_name else None
    if cid is None and verdict in ("accepted", "corrected", "both_valid", "rejected"):
        raise ValueError(f"{QUEUE_VERDICTS[verdict]} needs a class; pick one first.")
    review = Review(sid, queue=queue, verdict=verdict)
    if verdict in ("accepted", "corrected"):
        exclusive = True if replace or verdict == "corrected" else None
        source = "suggestion" if verdict == "accepted" else "human"
        return ws.store.apply(sid, [cid], POSITIVE, source=source, note=note, exclusive=exclusive, review=review)
    if verdict == "both_valid":
        if ws.store.task == "single":
            raise StoreError("This workspace is single-label, so an image keeps one label; switch it to multi-label "
                             "(`python -m curation init WS --task multi`) to add a second label.")
        return ws.store.apply(sid, [cid], POSITIVE, source="review", note=note, exclusive=False, review=review)
    if verdict == "rejected" or (reject and cid is not None and verdict in ("ambiguous", "out_of_vocabulary")):
        return ws.store.apply(sid, [cid], REJECTED, source="review", note=note, review=review)
    return ws.store.apply([], [], [], source="review", review=review)


def mark_reviewed(ws: Workspace, ids: np.ndarray, *, queue: str = "map") -> int:
    """Record that a person looked at these samples and found their labels right (no label changes).

    Returns
    -------
    The number of samples recorded.
    """
    ids = np.unique(np.asarray(ids, np.int64))
    ws.store.add_reviews(ids.tolist(), queue=queue, verdict="reviewed")
    return len(ids)
