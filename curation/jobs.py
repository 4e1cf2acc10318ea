"""Long work off the UI thread: one worker process per job, progress and cancel through the store."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from curation.progress import Cancelled, ProgressFn, sub_progress
from curation.workspace import Workspace

log = logging.getLogger(__name__)

JobFn = Callable[[Workspace, dict, ProgressFn], dict]
JOBS: dict[str, JobFn] = {}
ACTIVE = ("queued", "running", "cancelling")


def job(kind: str) -> Callable[[JobFn], JobFn]:
    """Register ``fn(ws, params, progress) -> result dict`` as the job kind ``kind``."""

    def register(fn: JobFn) -> JobFn:
        JOBS[kind] = fn
        return fn

    return register


# ---------------------------------------------------------------------- job kinds
@job("embed")
def _embed(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.embed import embed_workspace

    emb = embed_workspace(ws, params.get("encoder"), progress=progress)
    return {"n": int(len(emb.ids)), "encoder": emb.encoder_name, "device": emb.device, "key": emb.key}


@job("map")
def _map(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.project import compute_map

    emb = _embeddings(ws)
    coords = compute_map(ws, emb, method=params.get("method", "umap"),
                         reproducible=params.get("reproducible", True), progress=progress)
    return {"n": int(len(coords)), "method": params.get("method", "umap")}


@job("clusters")
def _clusters(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.cluster import compute_clusters

    progress(0.05, "clustering")
    df = compute_clusters(ws, _embeddings(ws), k=params.get("k"))
    return {"n_clusters": int(df["cluster"].nunique())}


@job("suggest")
def _suggest(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.suggest import suggestions

    df = suggestions(ws, _embeddings(ws), progress=progress)
    return {"n": int(len(df))}


@job("pipeline")
def _pipeline(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Embed → map → clusters → suggestions, each reusing what its artifact key already holds."""
    out = {"embed": _embed(ws, params, sub_progress(progress, 0.0, 0.7))}
    out["map"] = _map(ws, params, sub_progress(progress, 0.7, 0.9))
    out["clusters"] = _clusters(ws, params, sub_progress(progress, 0.9, 0.95))
    out["suggest"] = _suggest(ws, params, sub_progress(progress, 0.95, 1.0))
    return out


@job("train")
def _train(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.train import run_training

    run_id = run_training(ws, params, progress=progress)
    return {"run_id": int(run_id), "status": ws.store.run(run_id)["status"]}


@job("doctor")
def _doctor(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.doctor import doctor

    progress(0.1, "checking the workspace")
    rep = doctor(ws, repair=bool(params.get("repair", False)))
    return {"problems": rep.problems, "repaired": rep.repaired, "left": rep.problems_left}


def _embeddings(ws: Workspace) -> Any:
    from curation.embed import load_embeddings

    emb = load_embeddings(ws)
    if emb is None:
        raise RuntimeError("No embeddings yet: run the pipeline (or `python -m curation embed WS`) first.")
    return emb


# ---------------------------------------------------------------------- submitting and watching
def submit(ws: Workspace, kind: str, params: dict | None = None) -> int:
    """Record a job and start its worker process (``python -m curation worker WS JOB``).

    Returns
    -------
    The job id; follow it with ``ws.store.job(job_id)``.
    """
    if kind not in JOBS:
        raise ValueError(f"Unknown job kind {kind!r}; known: {', '.join(sorted(JOBS))}.")
    job_id = ws.store.submit_job(kind, params or {})
    logs = ws.root / "logs"
    logs.mkdir(exist_ok=True)
    out = open(logs / f"job-{job_id}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "curation", "worker", str(ws.root), str(job_id)],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent))
    out.close()
    ws.store.update_job(job_id, pid=proc.pid)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap, so a finished worker is no zombie
    return job_id


def cancel(ws: Workspace, job_id: int) -> None:
    """Ask a job to stop; the worker stops at its next progress report, keeping completed chunks."""
    rec = ws.store.job(job_id)
    if rec["status"] in ("queued", "running"):
        ws.store.update_job(job_id, status="cancelling", message="cancelling…")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie counts as dead
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def refresh(ws: Workspace) -> pd.DataFrame:
    """Mark jobs whose worker died (kill -9, crash, reboot) as ``interrupted``; return recent jobs."""
    jobs = ws.store.jobs()
    for job_id, rec in jobs[jobs["status"].isin(ACTIVE)].iterrows():
        started_long_ago = time.time() - (rec["created"] or 0) > 10
        if not _alive(rec["pid"]) and (rec["pid"] or started_long_ago):
            ws.store.update_job(int(job_id), status="interrupted", finished=time.time(),
                                message="the worker stopped unexpectedly; resume to continue from the last chunk")
    return ws.store.jobs()


def resume(ws: Workspace, job_id: int) -> int:
    """Start a new job with the params of an interrupted, failed or cancelled one (work already done is reused)."""
    rec = ws.store.job(job_id)
    return submit(ws, rec["kind"], rec["params"])


def active_jobs(ws: Workspace) -> pd.DataFrame:
    jobs = refresh(ws)
    return jobs[jobs["status"].isin(ACTIVE)]


def wait(ws: Workspace, job_id: int, *, timeout: float = 600.0, poll: float = 0.2) -> dict:
    """Block until a job ends (for scripts and tests); returns its record."""
    end = time.time() + timeout
    while time.time() < end:
        rec = ws.store.job(job_id)
        if rec["status"] not in ACTIVE:
            return rec
        if rec["pid"] and not _alive(rec["pid"]):
            refresh(ws)
        time.sleep(poll)
    raise TimeoutError(f"Job {job_id} still running after {timeout:.0f} s.")


# ---------------------------------------------------------------------- the worker side
@contextmanager
def _compute_slot(ws: Workspace, job_id: int) -> Iterator[None]:
    """One compute job at a time per workspace (jobs queue instead of fighting for the GPU)."""
    lock = open(ws.root / ".compute.lock", "a+")
    try:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if ws.store.job(job_id)["status"] == "cancelling":
                    raise Cancelled()
                ws.store.update_job(job_id, message="waiting for the running job to finish", heartbeat=time.time())
                time.sleep(0.5)
        yield
    finally:
        lock.close()


def _reporter(ws: Workspace, job_id: int, *, interval: float = 0.3) -> ProgressFn:
    """A progress callback writing to the job row (throttled) and raising Cancelled on request."""
    last = [0.0]

    def progress(fraction: float, message: str = "") -> None:
        now = time.time()
        if now - last[0] < interval and fraction < 1.0:
            return
        last[0] = now
        if ws.store.job(job_id)["status"] == "cancelling":
            raise Cancelled()
        ws.store.update_job(job_id, progress=float(min(max(fraction, 0.0), 1.0)), message=message[:500],
                            heartbeat=now)

    return progress


def run_job(ws: Workspace, job_id: int) -> dict:
    """Run a recorded job in this process (the worker's body); the job row ends done/failed/cancelled."""
    rec = ws.store.job(job_id)
    fn = JOBS[rec["kind"]]
    ws.store.update_job(job_id, pid=os.getpid(), heartbeat=time.time())
    try:
        with _compute_slot(ws, job_id):
            if ws.store.job(job_id)["status"] == "cancelling":
                raise Cancelled()
            ws.store.update_job(job_id, status="running", started=time.time(), message="started")
            result = fn(ws, rec["params"], _reporter(ws, job_id))
    except Cancelled:
        ws.store.update_job(job_id, status="cancelled", finished=time.time(), message="cancelled by the user")
        return {}
    except Exception as exc:  # the worker must record every failure, whatever it is
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        ws.store.update_job(job_id, status="failed", finished=time.time(), error=str(exc)[:2000],
                            message=f"failed: {exc}"[:500])
        return {}
    ws.store.update_job(job_id, status="done", progress=1.0, finished=time.time(), message="done", result=result)
    return result
