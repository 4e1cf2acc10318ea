"""Out-of-fold class probabilities of a workspace for tools that judge labels (the cleanlab export)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from curation.core.progress import ProgressFn

log = logging.getLogger(__name__)


class HeldoutError(RuntimeError):
    """Out-of-fold probabilities cannot be computed yet; the message says what to do."""


def heldout_probs(ws: Any, *, progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of every embedded sample: no labelled sample is scored by a head that saw its label.

    They are the out-of-fold heads of the fit shared with suggestions and issues
    (:func:`curation.labels.suggest.label_state`, :mod:`curation.labels.oof`), refitted when labels changed
    enough since the last fit, so the exported probabilities are the ones the studio's issue finder judges by.

    Returns
    -------
    (ids (N,) int64, probs (N, K) float32): softmax rows in single-label workspaces, independent per-class
    sigmoids in multi-label ones.

    Raises
    ------
    HeldoutError without embeddings or labels.
    """
    from curation.features.embed import load_embeddings
    from curation.labels.suggest import label_state

    emb = load_embeddings(ws)
    if emb is None:
        raise HeldoutError("No embeddings yet: run `python -m curation embed WS` (or the pipeline) first; the "
                           "out-of-fold probabilities are fitted on them.")
    state = label_state(ws, emb, refit="auto", progress=progress)
    p = state.sources.get("oof")
    if p is None:
        reason = state.info.get("sources", {}).get("oof", {}).get("reason", "no labels")
        raise HeldoutError(f"No out-of-fold probabilities: {reason}.")
    return np.asarray(state.ids, np.int64), np.asarray(p, np.float32)


def export_cleanlab(ws: Any, dest: Path | str | None = None, *, overwrite: bool = False,
                    progress: ProgressFn | None = None) -> Path:
    """Write the cleanlab arrays (:func:`curation.data.export.export`, format "cleanlab") with out-of-fold
    ``pred_probs`` from :func:`heldout_probs`. Returns the ``.npz`` written."""
    from curation.data.export import export

    probs = heldout_probs(ws, progress=progress)
    return export(ws, "cleanlab", dest, overwrite=overwrite, pred_probs=probs)
