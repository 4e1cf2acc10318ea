"""Long work off the UI thread: a warm worker process per workspace runs the queued jobs in order;
progress and cancel go through the store."""

from __future__ import annotations

import fcntl
import gc
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import pandas as pd

from curation.core.progress import Cancelled, ProgressFn
from curation.core.validate import check_choice
from curation.data.atomic import atomic_write
from curation.data.workspace import Workspace
from curation.runtime.liveness import ACTIVE, WORKER_LOCK, WORKER_PID, process_alive, refresh, worker_pid
from curation.runtime.tasks import JOBS

log = logging.getLogger(__name__)

WORKER_IDLE = 600.0
"""Seconds a warm worker waits for another job before it exits (``$CURATION_WORKER_IDLE`` overrides)."""
POLL = 0.25
"""Seconds between a warm worker's looks at the queue."""
WORKER_START_LOCK = ".worker.start.lock"
IDLE_ENV, WARM_ENV, JOB_MODULES_ENV = "CURATION_WORKER_IDLE", "CURATION_WARM_UMAP", "CURATION_JOB_MODULES"


# ---------------------------------------------------------------------- job kinds


# ---------------------------------------------------------------------- submitting and watching
def submit(ws: Workspace, kind: str, params: dict | None = None) -> int:
    """Record a job and make sure the workspace's warm worker is running to take it.

    The first submit starts ``python -m curation worker WS`` (see :func:`serve`); later ones queue
    behind the running job in the same process, so numba's compilation is paid once.

    Returns
    -------
    The job id; follow it with ``ws.store.job(job_id)``.
    """
    check_choice("job kind", kind, sorted(JOBS))
    job_id = ws.store.submit_job(kind, params or {})
    with open(ws.root / WORKER_START_LOCK, "a+") as starting:  # two pages submitting at once start one worker
        fcntl.flock(starting, fcntl.LOCK_EX)
        pid = worker_pid(ws)
        if pid is None:
            pid = _start_worker(ws)
    ws.store.assign_job_pid(job_id, pid)  # unless the worker took it already (and wrote its own pid)
    return job_id


def _start_worker(ws: Workspace) -> int:
    """Start a warm worker for ``ws`` in its own session (it outlives the page that started it)."""
    logs = ws.root / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "worker.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "curation", "worker", str(ws.root)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
    atomic_write(ws.root / WORKER_PID, str(proc.pid))  # "starting": the next submit waits for this one
    threading.Thread(target=proc.wait, daemon=True).start()  # reap, so a finished worker is no zombie
    log.info("started the warm worker of %s (pid %d)", ws.root, proc.pid)
    return int(proc.pid)


def cancel(ws: Workspace, job_id: int) -> None:
    """Ask a job to stop; the worker stops at its next progress report, keeping completed chunks."""
    rec = ws.store.job(job_id)
    if rec["status"] in ("queued", "running"):
        ws.store.update_job(job_id, status="cancelling", message="cancelling…")


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
        if not process_alive(rec["pid"]):
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


@contextmanager
def _job_log(ws: Workspace, job_id: int) -> Iterator[None]:
    """Copy this process's log records to ``logs/job-<id>.log`` while the job runs."""
    logs = ws.root / "logs"
    logs.mkdir(exist_ok=True)
    handler = logging.FileHandler(logs / f"job-{job_id}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_job(ws: Workspace, job_id: int) -> dict:
    """Run a recorded job in this process; the job row ends done/failed/cancelled.

    Every exception is recorded as ``failed`` and swallowed, so a warm worker goes on with the
    next job. A job that another process already started is left alone.
    """
    try:
        with _compute_slot(ws, job_id):
            rec = ws.store.job(job_id)
            if rec["status"] not in ("queued", "cancelling") or not pd.isna(rec["started"]):
                log.info("job %s is %s elsewhere: skipped", job_id, rec["status"])
                return {}
            ws.store.update_job(job_id, pid=os.getpid(), heartbeat=time.time())
            if rec["status"] == "cancelling":
                raise Cancelled()
            if rec["kind"] not in JOBS:
                raise ValueError(f"Unknown job kind {rec['kind']!r} in this worker; known: {', '.join(sorted(JOBS))}.")
            ws.store.update_job(job_id, status="running", started=time.time(), pid=os.getpid(), message="started")
            with _job_log(ws, job_id):
                result = JOBS[rec["kind"]](ws, rec["params"], _reporter(ws, job_id))
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


def _next_job(ws: Workspace) -> int | None:
    """The oldest job waiting to start (queued, or cancelled before it started), or None."""
    try:
        jobs = ws.store.jobs(limit=1000)
    except Exception:  # a busy or vanished store must not crash the worker: it idles out instead
        log.warning("could not read the job queue of %s", ws.root, exc_info=True)
        return None
    todo = jobs[jobs["status"].isin(("queued", "cancelling")) & jobs["started"].isna()]
    return int(todo.index.min()) if len(todo) else None


def _take_worker_lock(ws: Workspace, *, wait: float) -> IO[str] | None:
    """Hold the workspace's worker lock (one warm worker per workspace) and write our pid; None if busy."""
    lock = open(ws.root / WORKER_LOCK, "a+")
    end = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:  # another worker serves, or someone probes the lock for a moment
            if time.monotonic() >= end:
                lock.close()
                return None
            time.sleep(0.05)
    atomic_write(ws.root / WORKER_PID, str(os.getpid()))
    return lock


def _let_go(ws: Workspace, lock: IO[str]) -> None:
    """Stop being the workspace's worker: clear the pid file, then release the worker lock."""
    try:
        atomic_write(ws.root / WORKER_PID, "")
    except OSError:  # the workspace folder was deleted
        pass
    lock.close()


def _free_memory() -> None:
    """Give memory back between jobs: Python garbage and, when a job used CUDA, torch's cached blocks."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _warm() -> None:
    """Compile UMAP's numba code in the background, so the first map job does not pay for it."""
    try:
        from curation.features.project import warm_umap

        warm_umap()
    except Exception:  # a missing umap-learn only matters to map jobs, which say so themselves
        log.warning("could not warm UMAP", exc_info=True)


def _load_job_modules() -> None:
    """Import the modules named in ``$CURATION_JOB_MODULES`` (comma-separated) so their ``@job`` kinds register."""
    for name in filter(None, (n.strip() for n in os.environ.get(JOB_MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception:  # jobs of that kind will fail with "Unknown job kind"; the others still run
            log.exception("could not import job module %s", name)


def serve(ws: Workspace, *, idle: float | None = None, warm: bool | None = None) -> int:
    """The warm worker: run the workspace's queued jobs one at a time, oldest first, until idle.

    One worker per workspace (a second one exits at once). While idle it compiles UMAP in a
    background thread; after each job it frees memory. It exits after ``idle`` seconds without
    a job, or when the workspace folder is gone.

    Parameters
    ----------
    idle : seconds without work before exiting (default ``$CURATION_WORKER_IDLE`` or WORKER_IDLE).
    warm : warm UMAP when idle (default: unless ``$CURATION_WARM_UMAP`` is 0).

    Returns
    -------
    The number of jobs this worker ran.
    """
    idle = float(os.environ.get(IDLE_ENV, WORKER_IDLE)) if idle is None else float(idle)
    warm = os.environ.get(WARM_ENV, "1") != "0" if warm is None else warm
    lock = _take_worker_lock(ws, wait=3.0)
    if lock is None:
        log.info("another worker serves %s", ws.root)
        return 0
    _load_job_modules()
    warmer: threading.Thread | None = None
    ran, last = 0, time.monotonic()
    try:
        while True:
            job_id = _next_job(ws)
            if job_id is not None:
                run_job(ws, job_id)
                ran += 1
                _free_memory()
                last = time.monotonic()
                continue
            if warm and warmer is None:
                warmer = threading.Thread(target=_warm, name="warm-umap", daemon=True)
                warmer.start()
            if time.monotonic() - last >= idle or not ws.root.exists():
                _let_go(ws, lock)  # first, then look once more: a job submitted meanwhile is not stranded
                lock = None
                if not ws.root.exists() or _next_job(ws) is None:
                    break
                lock = _take_worker_lock(ws, wait=1.0)
                if lock is None:
                    break  # a new worker took over
                last = time.monotonic()
                continue
            time.sleep(POLL)
    finally:
        if lock is not None:
            _let_go(ws, lock)
        if warmer is not None:
            warmer.join()
    log.info("warm worker of %s exits after %d jobs", ws.root, ran)
    return ran
