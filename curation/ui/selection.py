"""Pure conversions from widget state and model outputs to sample ids (no streamlit, fully testable)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def selected_ids(chart_state: Mapping[str, Any] | None) -> np.ndarray:
    """Sample ids selected in a plotly chart, read from each point's ``customdata``.

    Point indices are never used: they are per trace and collide across traces.

    Parameters
    ----------
    chart_state : the ``st.plotly_chart(..., on_select="rerun")`` state, i.e.
        ``{"selection": {"points": [{"customdata": id | [id, ...], ...}], ...}}``, or None.

    Returns
    -------
    (M,) int64, unique ids in ascending order (points without customdata are ignored).
    """
    if not chart_state:
        return np.zeros(0, np.int64)
    selection = chart_state.get("selection") or {}
    out = []
    for point in selection.get("points") or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is None:
            continue
        try:
            out.append(int(data))
        except (TypeError, ValueError):
            continue
    return np.unique(np.asarray(out, np.int64))


def confusion_cell_ids(ids: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, true_idx: int,
                       pred_idx: int, *, confidence: np.ndarray | None = None) -> np.ndarray:
    """Sample ids behind cell (true_idx, pred_idx) of a confusion matrix.

    Parameters
    ----------
    ids : (N,) int64 sample ids.
    y_true, y_pred : (N,) int class indices (-1 = none; such samples are in no cell).
    true_idx, pred_idx : the row (true class) and column (predicted class).
    confidence : optional (N,) float; when given the ids are ordered most confident first
        (confident mistakes are the likeliest label errors), else by id.

    Returns
    -------
    (M,) int64 sample ids.
    """
    from curation.evaluate import confusion_cell

    ids = np.asarray(ids, np.int64)
    rows = confusion_cell(y_true, y_pred, true_idx, pred_idx)
    if confidence is None:
        return np.sort(ids[rows])
    order = np.argsort(-np.asarray(confidence)[rows], kind="stable")
    return ids[rows][order]


def worst_cell(confusion: np.ndarray) -> tuple[int, int]:
    """The off-diagonal cell with the most samples (the first place to look), or (0, 0) when there is none."""
    c = np.array(confusion, dtype=np.int64, copy=True)
    if c.size == 0:
        return 0, 0
    np.fill_diagonal(c, -1)
    i, j = np.unravel_index(int(np.argmax(c)), c.shape)
    return (int(i), int(j)) if c[i, j] > 0 else (0, 0)


def subsample(n: int, max_points: int, *, seed: int = 0) -> np.ndarray:
    """Row positions to draw: all of them up to ``max_points``, else a seeded sorted random subset."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))
