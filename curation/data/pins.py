"""The must-not-fail slice: sample ids pinned by the user, kept in the store's meta and reported by every run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace


def pinned(ws: Workspace) -> np.ndarray:
    """(M,) int64 ascending ids of the must-not-fail samples (kept in the store's meta as JSON)."""
    return _id_set(ws.store.meta("pinned"))


def _id_set(raw: str | None) -> np.ndarray:
    return np.array(sorted(set(json.loads(raw))) if raw else [], np.int64)


def _edit_pinned(ws: Workspace, ids: Sequence[int] | np.ndarray,
                 combine: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """``combine(current, ids)`` applied to the slice in one store transaction (concurrent edits never lose one)."""
    ids = np.asarray(ids, np.int64).ravel()

    def update(old: str | None) -> str:
        return json.dumps(combine(_id_set(old), ids).astype(np.int64).tolist())

    return _id_set(ws.store.update_meta("pinned", update))


def pin(ws: Workspace, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Add samples to the must-not-fail slice; every later run reports its accuracy on them."""
    return _edit_pinned(ws, ids, np.union1d)


def unpin(ws: Workspace, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Remove samples from the must-not-fail slice."""
    return _edit_pinned(ws, ids, np.setdiff1d)
