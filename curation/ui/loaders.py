"""Cached loaders: the workspace, embeddings, map, clusters, suggestions and predictions.

Big read-only things live in ``st.cache_resource`` keyed by the workspace path plus a cheap
*stamp* (artifact folder times, sample count, last label event), never by hashing arrays.
Labels are not cached: pages read them fresh with ``ws.store.label_matrix(ids)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from curation.data.workspace import DB_NAME, Workspace
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
    if path != state.launch_workspace():
        path = state.confine(path, what="open the workspace")
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
    return max(times), *ws.store.sample_count()


@st.cache_resource(show_spinner="Loading embeddings…", max_entries=2)
def _embeddings(root: str, token: Stamp) -> Any:
    from curation.features.embed import load_embeddings
    emb = load_embeddings(_workspace(root))
    if emb is not None:
        emb.vectors.setflags(write=False)
    return emb


def embeddings(ws: Workspace) -> Any:
    """The active encoder's ``Embeddings`` for the present samples, or None before the pipeline ran."""
    return _embeddings(str(ws.root), stamp(ws))


@st.cache_resource(show_spinner="Loading the map…", max_entries=4)
def _layout(root: str, token: Stamp, method: str | None) -> tuple[np.ndarray, dict] | None:
    from curation.features.project import latest_map, pca_map

    emb = _embeddings(root, token)
    if emb is None:
        return None
    ws = _workspace(root)
    found = None
    for m in ("umap", "pca") if method is None else (method,):
        found = latest_map(ws, emb, method=m)
        if found is not None:
            break
    if found is None and method == "pca":  # instant: computed here, not saved (saving would reset every cache)
        found = pca_map(emb.vectors), {"method": "pca"}
    if found is None:
        return None
    xy = np.asarray(found[0], np.float32)
    xy.setflags(write=False)
    return xy, found[1]


def coords(ws: Workspace) -> np.ndarray | None:
    """(N, 2) float32 map coordinates aligned with ``embeddings(ws).ids``, or None before the map exists."""
    found = _layout(str(ws.root), stamp(ws), None)
    return None if found is None else found[0]


def layout(ws: Workspace, method: str) -> tuple[np.ndarray, dict] | None:
    """The newest map by ``method`` ("umap" or "pca") and the config that made it; PCA is computed when
    not cached; None when there are no embeddings or no UMAP map yet.

    Returns
    -------
    ((N, 2) float32 read-only, aligned with ``embeddings(ws).ids``, config dict), or None.
    """
    return _layout(str(ws.root), stamp(ws), method)


@st.cache_resource(show_spinner="Loading clusters…", max_entries=2)
def _clustering(root: str, token: Stamp) -> Any:
    from curation.structure.cluster import load_clustering

    emb = _embeddings(root, token)
    cl = None if emb is None else load_clustering(_workspace(root), emb)
    if cl is not None:
        for arr in (cl.labels, cl.centroids, cl.medoids, cl.clusters):
            arr.setflags(write=False)
    return cl


def clustering(ws: Workspace) -> Any:
    """The clustering in use (``curation.structure.cluster.Clustering``: labels, medoids, names, silhouette), or None."""
    return _clustering(str(ws.root), stamp(ws))


@st.cache_resource(show_spinner=False, max_entries=2)
def _clusters(root: str, token: Stamp) -> pd.Series | None:
    cl = _clustering(root, token)  # the same artifact: read once, shared with the Clusters page
    if cl is None:
        return None
    return pd.Series(cl.labels, index=pd.Index(cl.ids, name="id", copy=False), name="cluster", copy=False)


def clusters(ws: Workspace) -> pd.Series | None:
    """Cluster id per sample id (read-only) of the clustering in use, or None when no clustering was computed."""
    return _clusters(str(ws.root), stamp(ws))


@st.cache_resource(show_spinner="Splitting the cluster…", max_entries=8)
def _cluster_split(root: str, token: Stamp, cluster: int) -> Any:
    from curation.structure.cluster import split_cluster

    emb, cl = _embeddings(root, token), _clustering(root, token)
    return split_cluster(np.asarray(emb.vectors)[cl.labels == cluster])


def cluster_split(ws: Workspace, cluster: int) -> Any:
    """``curation.structure.cluster.split_cluster`` of one cluster of the clustering in use (labels follow its members)."""
    return _cluster_split(str(ws.root), stamp(ws), int(cluster))


@st.cache_resource(show_spinner="Looking for pockets…", max_entries=8)
def _cluster_pockets(root: str, token: Stamp, cluster: int) -> pd.DataFrame:
    from curation.structure.pockets import find_pockets

    emb, cl = _embeddings(root, token), _clustering(root, token)
    return find_pockets(np.asarray(emb.vectors), cl.labels, ids=cl.ids, clusters=[cluster])


def cluster_pockets(ws: Workspace, cluster: int) -> pd.DataFrame:
    """``curation.structure.pockets.find_pockets`` inside one cluster of the clustering in use (member sample ids)."""
    return _cluster_pockets(str(ws.root), stamp(ws), int(cluster))


# Frames that depend on the current labels. The worker computes and saves them after label changes
# (``curation.runtime.rescore``, job kind ``rescore``, debounced); a page run only reads the newest saved ones,
# so no action ever waits for rescoring. Only a small workspace that has none saved at all scores inline once.
RESCORE_ENV = "CURATION_RESCORE"
"""Set to ``off`` to never queue background rescoring from a page (the pages show the scores they have)."""
INLINE_LIMIT = 20_000
"""Up to this many samples, missing scores are computed in the page run once (seconds); above, by the worker."""


@st.cache_resource(show_spinner="Loading scores…", max_entries=4)
def _saved_scores(root: str, folder: str) -> dict[str, pd.DataFrame] | None:
    from curation.runtime import rescore

    ws = _workspace(root)
    meta = rescore.scores_meta(ws)
    if meta is None or meta["folder"] != folder:
        meta = {"folder": folder}
    return rescore.load_scores(ws, meta)


def request_rescore(ws: Workspace) -> int | None:
    """Queue a background rescore unless the saved scores are current or a queued one will pick the change up
    (clicks in a burst share one job). Returns the job id, or None when nothing needs scoring."""
    from curation.runtime import jobs, rescore

    if os.environ.get(RESCORE_ENV, "").lower() in ("0", "off", "no"):  # read-only viewing, browser benchmarks
        return None
    if not rescore.needs_rescore(ws):
        return None
    pending = rescore.pending_job(ws)
    if pending is not None and pending["status"] == "queued":
        return pending["id"]
    if rescore.failed_recently(ws):  # no retry on every rerun: the job panel shows the error
        return None
    try:
        return jobs.submit(ws, rescore.KIND, {})
    except Exception:  # noqa: BLE001 - the page still shows the scores it has; the panel shows the job error
        log.exception("could not queue a rescore")
        return None


def scores_meta(ws: Workspace) -> dict[str, Any] | None:
    """The record of the saved scores pages show (``last_event``, ``time``, ...; ``curation.runtime.rescore``)."""
    from curation.runtime import rescore

    return rescore.scores_meta(ws)


def _label_derived(ws: Workspace, what: str) -> pd.DataFrame | None:
    from curation.runtime import rescore

    emb = embeddings(ws)
    if emb is None:
        return None
    meta = rescore.scores_meta(ws)
    if meta is None or meta.get("emb") != emb.key:  # none yet, or of other embeddings
        if len(emb.ids) > INLINE_LIMIT:
            request_rescore(ws)
            return None
        with st.spinner("Scoring samples against the current labels (first time)…"):
            meta = rescore.rescore(ws, debounce=0)
    elif rescore.needs_rescore(ws, meta):
        request_rescore(ws)
    frames = _saved_scores(str(ws.root), meta["folder"])
    if frames is None:  # replaced while we read: the newer ones are there now
        _saved_scores.clear()
        meta = rescore.scores_meta(ws)
        frames = None if meta is None else _saved_scores(str(ws.root), meta["folder"])
    return None if frames is None else frames[what]


def suggestions(ws: Workspace) -> pd.DataFrame | None:
    """Suggestions indexed by sample id (class_idx, class_name, confidence, source, label_idx, agrees, and each
    source's probability of the suggested class p_knn, p_prop, p_zeroshot, p_model, p_oof), or None; the newest
    saved ones (see :func:`_label_derived`)."""
    return _label_derived(ws, "suggestions")


def issues(ws: Workspace) -> pd.DataFrame | None:
    """Label-quality, outlier and duplicate scores per sample id (``curation.labels.issues``), or None."""
    return _label_derived(ws, "issues")


def missing_labels(ws: Workspace) -> pd.DataFrame | None:
    """Second-label candidates DataFrame[sample, class, class_name, score] (``curation.labels.issues.missing_labels``)."""
    return _label_derived(ws, "missing")


@st.cache_resource(show_spinner="Loading predictions…", max_entries=4)
def _predictions(root: str, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    from curation.models.runs import load_predictions

    ids, probs = load_predictions(_workspace(root), run_id)
    ids, probs = np.asarray(ids, np.int64), np.asarray(probs, np.float32)
    ids.setflags(write=False)
    probs.setflags(write=False)
    return ids, probs


def predictions(ws: Workspace, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A run's (ids (N,), probs (N, K)) for every sample; runs never change, so the run id is the key."""
    return _predictions(str(ws.root), int(run_id))
