"""Pure conversions from widget state and model outputs to sample ids (no streamlit, fully testable)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


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
    from curation.models.evaluate import confusion_cell

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


def confusion_click(chart_state: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The confusion-matrix cell a click chose, read from the clicked point's ``customdata``.

    Parameters
    ----------
    chart_state : the ``st.plotly_chart(..., on_select="rerun", selection_mode="points")`` state of a
        figure whose clickable points carry ``customdata = [true_idx, pred_idx]``, or None. The browser
        sends a customdata row given as a numpy array back as ``{"0": true_idx, "1": pred_idx}``; both
        forms are read.

    Returns
    -------
    (true_idx, pred_idx) of the last clicked point, or None when nothing usable was clicked.
    """
    if not chart_state:
        return None
    for point in reversed((chart_state.get("selection") or {}).get("points") or []):
        data = point.get("customdata")
        if isinstance(data, Mapping):
            data = [data.get("0"), data.get("1")]
        if isinstance(data, (list, tuple)) and len(data) == 2:
            try:
                return int(data[0]), int(data[1])
            except (TypeError, ValueError):
                continue
    return None


FILTERS = {"all": "All points", "class": "Class", "unlabelled": "Unlabelled only", "errors": "Likely label errors",
           "cluster": "Cluster"}


def filter_mask(kind: str, ids: np.ndarray, *, labels: np.ndarray | None = None, classes: Sequence[int] = (),
                issues: pd.DataFrame | None = None, clusters: pd.Series | None = None,
                cluster_ids: Sequence[int] = ()) -> np.ndarray:
    """Which samples a map filter keeps.

    Parameters
    ----------
    kind : one of FILTERS: ``all``; ``class`` (positive for any of ``classes``); ``unlabelled`` (no
        positive label); ``errors`` (``issues["is_label_issue"]``); ``cluster`` (in ``cluster_ids``).
    ids : (N,) int64 sample ids.
    labels : (N, K) int8 label matrix aligned with ``ids`` (for ``class`` and ``unlabelled``).
    classes : column positions of ``labels``.
    issues, clusters : indexed by sample id (missing samples are not kept).

    Returns
    -------
    (N,) bool.
    """
    from curation.core.vocab import POSITIVE

    ids = np.asarray(ids, np.int64)
    if kind == "all":
        return np.ones(len(ids), bool)
    if kind in ("class", "unlabelled"):
        if labels is None:
            raise ValueError(f"The {kind!r} filter needs the label matrix of the samples.")
        positive = np.asarray(labels) == POSITIVE
        if kind == "unlabelled":
            return ~positive.any(1)
        return positive[:, np.asarray(list(classes), np.int64)].any(1)
    if kind == "errors":
        if issues is None:
            return np.zeros(len(ids), bool)
        return issues["is_label_issue"].reindex(ids).fillna(False).to_numpy(bool)
    if kind == "cluster":
        if clusters is None:
            return np.zeros(len(ids), bool)
        return clusters.reindex(ids).isin(list(cluster_ids)).to_numpy(bool)
    raise ValueError(f"Unknown map filter {kind!r}; use one of {list(FILTERS)}.")


def density_sample(xy: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """A subsample of a 2-D layout that keeps its density: every grid cell keeps the same share of its points.

    Each occupied cell of a square grid (about ``budget / 4`` cells) keeps at least one point, so
    sparse regions and outliers stay visible while dense regions are thinned in proportion.

    Parameters
    ----------
    xy : (N, 2) float coordinates.
    budget : at most this many rows are returned.

    Returns
    -------
    (M,) int64 sorted row positions, M ≤ budget (all rows when N ≤ budget); seeded.
    """
    xy = np.asarray(xy, np.float64)
    n = len(xy)
    if n <= budget:
        return np.arange(n, dtype=np.int64)
    if budget <= 0:
        return np.zeros(0, np.int64)
    grid = int(np.clip(np.sqrt(budget / 4), 1, 256))
    lo, hi = np.nanmin(xy, 0), np.nanmax(xy, 0)
    cell_xy = np.clip(((xy - lo) / np.maximum(hi - lo, 1e-12) * grid).astype(np.int64), 0, grid - 1)
    cell = cell_xy[:, 0] * grid + cell_xy[:, 1]
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(cell[order], kind="stable")]     # by cell, random within a cell
    counts = np.bincount(cell, minlength=grid * grid)
    occupied = counts[counts > 0]
    lo_r, hi_r = 0.0, 1.0                                       # share kept per cell, found by bisection
    for _ in range(40):
        mid = (lo_r + hi_r) / 2
        if np.maximum(1, np.floor(occupied * mid)).sum() <= budget:
            lo_r = mid
        else:
            hi_r = mid
    quota = np.where(counts > 0, np.maximum(1, np.floor(counts * lo_r)), 0).astype(np.int64)
    sorted_cell = cell[order]
    rank = np.arange(n) - (np.cumsum(counts) - counts)[sorted_cell]
    return np.sort(order[rank < quota[sorted_cell]])


def rows_to_draw(xy: np.ndarray, keep: np.ndarray, max_points: int, *, seed: int = 0) -> np.ndarray:
    """Rows of a map to draw: every row of the filter plus a density-preserving sample of the rest.

    Parameters
    ----------
    xy : (N, 2) coordinates.
    keep : (N,) bool, the rows of the current filter (all drawn when they fit in ``max_points``;
        otherwise they are themselves density-sampled down to ``max_points``).
    max_points : most rows a browser should draw.

    Returns
    -------
    (M,) int64 sorted row positions, M ≤ max(max_points, N ≤ max_points and N).
    """
    keep = np.asarray(keep, bool)
    n = len(keep)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    kept = np.flatnonzero(keep)
    if len(kept) >= max_points:
        return kept[density_sample(np.asarray(xy)[kept], max_points, seed=seed)]
    rest = np.flatnonzero(~keep)
    context = rest[density_sample(np.asarray(xy)[rest], max_points - len(kept), seed=seed)]
    return np.sort(np.concatenate([kept, context]))
