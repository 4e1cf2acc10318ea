"""Cached loaders: the workspace, embeddings, map, clusters, suggestions and predictions.

Big read-only things live in ``st.cache_resource`` keyed by the workspace path plus a cheap
*stamp* (artifact folder times, sample count, last label event), never by hashing arrays.
Labels are not cached: pages read them fresh with ``ws.store.label_matrix(ids)``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from curation.workspace import DB_NAME, Workspace

from curation.ui import state

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]


def workspace_exists(path: Path) -> bool:
    """Whether ``path`` holds a workspace database."""
    return (Path(path) / DB_NAME).exists()


@st.cache_resource(show_spinner=False, max_entries=8)
def _workspace(root: str) -> Workspace:
    return Workspace.open(root)


def current_workspace() -> Workspace | None:
    """The session's workspace (opened once per server process), or None when the folder has none."""
    path = state.workspace_path()
    if not workspace_exists(path):
        return None
    return _workspace(str(path))


def forget_workspace() -> None:
    """Drop the cached workspace objects (after building or creating one at the same path)."""
    _workspace.clear()


def stamp(ws: Workspace) -> Stamp:
    """A cheap token that changes whenever an artifact is written or the sample set changes."""
    root = ws.artifacts.root
    times = [root.stat().st_mtime_ns] if root.exists() else [0]
    if root.exists():
        times += [p.stat().st_mtime_ns for p in root.iterdir() if p.is_dir()]
    ids = ws.store.sample_ids()
    return max(times), len(ids), int(ids[-1]) if len(ids) else 0


@st.cache_resource(show_spinner="Loading embeddings…", max_entries=2)
def _embeddings(root: str, token: Stamp) -> Any:
    from curation.embed import load_embeddings

    emb = load_embeddings(_workspace(root))
    if emb is not None:
        emb.vectors.setflags(write=False)
    return emb


def embeddings(ws: Workspace) -> Any:
    """The active encoder's ``Embeddings`` for the present samples, or None before the pipeline ran."""
    return _embeddings(str(ws.root), stamp(ws))


@st.cache_resource(show_spinner="Loading the map…", max_entries=2)
def _coords(root: str, token: Stamp) -> np.ndarray | None:
    from curation.project import load_map

    emb = _embeddings(root, token)
    if emb is None:
        return None
    ws = _workspace(root)
    for method in ("umap", "pca"):
        xy = load_map(ws, emb, method=method)
        if xy is not None:
            xy = np.asarray(xy, np.float32)
            xy.setflags(write=False)
            return xy
    return None


def coords(ws: Workspace) -> np.ndarray | None:
    """(N, 2) float32 map coordinates aligned with ``embeddings(ws).ids``, or None before the map exists."""
    return _coords(str(ws.root), stamp(ws))


@st.cache_resource(show_spinner=False, max_entries=2)
def _clusters(root: str, token: Stamp) -> pd.Series | None:
    from curation.cluster import load_clusters

    emb = _embeddings(root, token)
    if emb is None:
        return None
    df = load_clusters(_workspace(root), emb)
    return None if df is None else df["cluster"]


def clusters(ws: Workspace) -> pd.Series | None:
    """Cluster id per sample id, or None when no clustering was computed."""
    return _clusters(str(ws.root), stamp(ws))


# Frames that depend on the current labels: (module, function(ws, emb)), recomputed per label event.
_LABEL_DERIVED = {"suggestions": ("curation.suggest", "suggestions"),
                  "issues": ("curation.issues", "compute_issues")}


@st.cache_resource(show_spinner="Scoring samples against the current labels…", max_entries=4)
def _label_derived(root: str, token: Stamp, last_event: int, what: str) -> pd.DataFrame | None:
    emb = _embeddings(root, token)
    if emb is None:
        return None
    module, name = _LABEL_DERIVED[what]
    return getattr(importlib.import_module(module), name)(_workspace(root), emb)


def suggestions(ws: Workspace) -> pd.DataFrame | None:
    """Suggestions indexed by sample id (class_idx, class_name, confidence, source), or None without embeddings."""
    return _label_derived(str(ws.root), stamp(ws), ws.store.last_event_id(), "suggestions")


def issues(ws: Workspace) -> pd.DataFrame | None:
    """Label-quality, outlier and duplicate scores per sample id (``curation.issues``), or None."""
    return _label_derived(str(ws.root), stamp(ws), ws.store.last_event_id(), "issues")


@st.cache_resource(show_spinner="Loading predictions…", max_entries=4)
def _predictions(root: str, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    from curation.train import load_predictions

    ids, probs = load_predictions(_workspace(root), run_id)
    ids, probs = np.asarray(ids, np.int64), np.asarray(probs, np.float32)
    ids.setflags(write=False)
    probs.setflags(write=False)
    return ids, probs


def predictions(ws: Workspace, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A run's (ids (N,), probs (N, K)) for every sample; runs never change, so the run id is the key."""
    return _predictions(str(ws.root), int(run_id))


def clear_all() -> None:
    """Forget every cached resource (tests, and after replacing a workspace)."""
    st.cache_resource.clear()
    st.cache_data.clear()
