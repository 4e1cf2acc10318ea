"""Background rescoring: suggestions, issue scores and second-label candidates recomputed by the worker after label
changes (debounced), saved beside the store so pages show the newest scores they have without waiting."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.data.atomic import atomic_write
from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

KIND = "rescore"
"""The job kind (registered in :mod:`curation.runtime.tasks`)."""
FRAMES = ("suggestions", "issues", "missing")
SCORES_DIR = "scores"
"""Folder under the workspace root (not under ``artifacts/``: writing there would reset every cached artifact)."""
CURRENT = "current.json"
DEBOUNCE = 1.0
"""Seconds without a new label event the job waits for before scoring (a burst of clicks is scored once)."""
DEBOUNCE_MAX = 8.0
"""The longest the job waits for labels to settle."""
KEEP = 2
RETRY_AFTER = 120.0
"""Seconds after a failed rescore before a page queues another."""
"""Score folders kept (the current one and the one before, which a page may still be reading)."""


def _dir(ws: Workspace) -> Path:
    return ws.root / SCORES_DIR


def scores_meta(ws: Workspace) -> dict[str, Any] | None:
    """The saved scores' record (``folder``, ``last_event``, ``token``, ``time``, ``seconds``, ``n``), or None when
    none were saved yet."""
    path = _dir(ws) / CURRENT
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if (_dir(ws) / meta.get("folder", "")).is_dir() else None


def load_scores(ws: Workspace, meta: dict[str, Any] | None = None) -> dict[str, pd.DataFrame] | None:
    """The saved frames by name (:data:`FRAMES`) of ``meta`` (default: the current record), or None."""
    meta = meta or scores_meta(ws)
    if meta is None:
        return None
    folder = _dir(ws) / meta["folder"]
    try:
        return {name: pd.read_parquet(folder / f"{name}.parquet") for name in FRAMES}
    except (OSError, ValueError) as exc:  # removed under us by a newer save: the caller reads again
        log.warning("saved scores in %s unreadable (%s)", folder, exc)
        return None


def label_token(ws: Workspace) -> list:
    """What the scores depend on besides artifacts: the last label event and the classes with their prompts."""
    from curation.labels.suggest import state_token

    last, classes = state_token(ws)
    return [int(last), str(classes)]


def labels_behind(ws: Workspace, meta: dict[str, Any] | None, *, cap: int = 100_000) -> int:
    """Samples labelled since the scores in ``meta`` were computed (0 when current or none), counted over at most
    ``cap`` events (a rowid range: cheap however big the log); ``cap + 1`` means "more than ``cap``"."""
    if meta is None:
        return 0
    return ws.store.samples_labelled_since(int(meta["last_event"]), cap=cap)


def wait_for_quiet(ws: Workspace, *, quiet: float = DEBOUNCE, most: float = DEBOUNCE_MAX) -> None:
    """Return once no label event arrived for ``quiet`` seconds (or after ``most`` seconds)."""
    start = time.monotonic()
    last = ws.store.last_event_id()
    while time.monotonic() - start < most:
        time.sleep(min(quiet, max(0.0, most - (time.monotonic() - start))))
        now = ws.store.last_event_id()
        if now == last:
            return
        last = now


def rescore(ws: Workspace, *, debounce: float = DEBOUNCE, progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Compute suggestions, issue scores and second-label candidates for the current labels and save them.

    The expensive fits behind them (out-of-fold heads, propagation, ensemble) are reused from disk unless labels
    changed enough (:func:`curation.labels.suggest.refit_threshold`); scores already current are not recomputed.

    Parameters
    ----------
    debounce : seconds of label silence to wait for first (0: score at once).

    Returns
    -------
    The saved record (see :func:`scores_meta`) plus ``skipped`` (True when the saved scores were current).
    """
    from curation.features.embed import load_embeddings
    from curation.labels.issues import compute_issues, missing_labels
    from curation.labels.suggest import suggestions

    if debounce > 0:
        progress(0.01, "waiting for labels to settle")
        wait_for_quiet(ws, quiet=debounce)
    emb = load_embeddings(ws)
    if emb is None:
        raise RuntimeError("No embeddings yet: run the pipeline (or `python -m curation embed WS`) first.")
    token = label_token(ws)
    old = scores_meta(ws)
    if old is not None and old.get("token") == token and old.get("emb") == emb.key:
        return {**old, "skipped": True}
    t0 = time.perf_counter()
    progress(0.05, "scoring samples against the current labels")
    frames = {"suggestions": suggestions(ws, emb, progress=sub_progress(progress, 0.05, 0.7)),
              "issues": compute_issues(ws, emb, save=True, progress=sub_progress(progress, 0.7, 0.9)),
              "missing": missing_labels(ws, emb, progress=sub_progress(progress, 0.9, 0.98))}
    meta = {"folder": f"{token[0]:012d}-{time.time_ns()}", "last_event": token[0], "token": token,
            "emb": emb.key, "time": time.time(), "seconds": round(time.perf_counter() - t0, 3),
            "n": len(frames["suggestions"])}
    folder = _dir(ws) / meta["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        atomic_write(folder / f"{name}.parquet", lambda f, df=df: df.to_parquet(f))
    newest = scores_meta(ws)
    if newest is None or int(newest["last_event"]) <= meta["last_event"]:  # never replace newer scores
        atomic_write(_dir(ws) / CURRENT, json.dumps(meta))
    _prune(ws)
    progress(1.0, f"scores of {meta['n']:,} samples saved")
    return {**meta, "skipped": False}


def _prune(ws: Workspace) -> None:
    cur = (scores_meta(ws) or {}).get("folder")
    folders = sorted((p for p in _dir(ws).iterdir() if p.is_dir()), key=lambda p: p.name)
    for p in folders[:-KEEP]:
        if p.name != cur:
            shutil.rmtree(p, ignore_errors=True)


def needs_rescore(ws: Workspace, meta: dict[str, Any] | None = None) -> bool:
    """Whether the saved scores (``meta``, default: the current record) miss label changes or do not exist."""
    meta = meta if meta is not None else scores_meta(ws)
    return meta is None or meta.get("token") != label_token(ws)


def pending_job(ws: Workspace) -> dict[str, Any] | None:
    """The queued or running rescore job (``id``, ``status``, ``progress``), or None."""
    jobs = ws.store.jobs(limit=50)
    live = jobs[(jobs["kind"] == KIND) & jobs["status"].isin(["queued", "running"])]
    if live.empty:
        return None
    queued = live[live["status"] == "queued"]
    row = queued.iloc[0] if len(queued) else live.iloc[0]
    return {"id": int(row.name), "status": str(row["status"]), "progress": float(row["progress"] or 0.0)}


def failed_recently(ws: Workspace, *, within: float = RETRY_AFTER) -> bool:
    """Whether the newest rescore job failed less than ``within`` seconds ago (pages then wait before retrying)."""
    jobs = ws.store.jobs(limit=50)
    mine = jobs[jobs["kind"] == KIND]
    if mine.empty:
        return False
    newest = mine.iloc[0]
    return newest["status"] == "failed" and time.time() - float(newest["finished"] or 0) < within
