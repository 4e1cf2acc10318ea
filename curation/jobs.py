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
from typing import IO, Any, Callable, Iterator

import pandas as pd

from curation.progress import Cancelled, ProgressFn, null_progress, sub_progress
from curation.workspace import Workspace

log = logging.getLogger(__name__)

JobFn = Callable[[Workspace, dict, ProgressFn], dict]
JOBS: dict[str, JobFn] = {}
ACTIVE = ("queued", "running", "cancelling")
WORKER_IDLE = 600.0
"""Seconds a warm worker waits for another job before it exits (``$CURATION_WORKER_IDLE`` overrides)."""
POLL = 0.25
"""Seconds between a warm worker's looks at the queue."""
WORKER_LOCK, WORKER_PID, WORKER_START_LOCK = ".worker.lock", ".worker.pid", ".worker.start.lock"
IDLE_ENV, WARM_ENV, JOB_MODULES_ENV = "CURATION_WORKER_IDLE", "CURATION_WARM_UMAP", "CURATION_JOB_MODULES"


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

    options = {k: int(params[k]) for k in ("chunk_size", "batch_size", "num_workers")
               if params.get(k) is not None}
    emb = embed_workspace(ws, params.get("encoder"), progress=progress, **options)
    return {"n": int(len(emb.ids)), "encoder": emb.encoder_name, "device": emb.device, "key": emb.key}


@job("map")
def _map(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.project import compute_map

    emb = embeddings_or_raise(ws)
    coords = compute_map(ws, emb, method=params.get("method", "umap"),
                         reproducible=params.get("reproducible", True), progress=progress)
    return {"n": int(len(coords)), "method": params.get("method", "umap")}


@job("clusters")
def _clusters(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Params: ``method`` (``auto`` | ``kmeans`` | ``hkmeans`` | ``hdbscan``, default auto), ``k`` (None = automatic)."""
    from curation.cluster import compute_clusters

    progress(0.02, "clustering")
    k = params.get("k")
    df = compute_clusters(ws, embeddings_or_raise(ws), k=None if k is None else int(k), method=params.get("method") or "auto",
                          progress=progress)
    noise = df["cluster"] < 0
    return {"n_clusters": int(df.loc[~noise, "cluster"].nunique()), "noise": int(noise.sum())}


@job("suggest")
def _suggest(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.suggest import suggestions

    df = suggestions(ws, embeddings_or_raise(ws), progress=progress)
    return {"n": int(len(df))}


def run_issues(ws: Workspace, *, force: bool = False, progress: ProgressFn = null_progress
               ) -> tuple[pd.DataFrame, dict]:
    """Refresh the expensive label fit (out-of-fold heads, propagation, ensemble) when labels changed enough
    since the last one (``force``: anyway), then compute and store the issue table of the current labels; the
    noise of the clustering in use (HDBSCAN's -1) feeds the outlier scores.

    Returns
    -------
    The issue table (``curation.issues.compute_issues``) and a summary: n, label_issues, refitted, fit key,
    samples changed since the fit, and the change threshold of the next refit.
    """
    from curation.issues import compute_issues
    from curation.suggest import refresh

    emb = embeddings_or_raise(ws)
    fit = refresh(ws, emb, force=force, progress=sub_progress(progress, 0.0, 0.9))
    df = compute_issues(ws, emb, save=True, progress=sub_progress(progress, 0.9, 1.0))
    return df, {"n": int(len(df)), "label_issues": int(df["is_label_issue"].sum()),
                "refitted": bool(fit["refitted"]), "fit": fit["key"], "changed": int(fit["changed"]),
                "threshold": int(fit["threshold"])}


@job("issues")
def _issues(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """:func:`run_issues` as a job; returns its summary."""
    return run_issues(ws, force=bool(params.get("force", False)), progress=progress)[1]


@job("pipeline")
def _pipeline(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Embed → map → clusters → suggestions → issues, each reusing what its artifact key already holds.

    Params: the ``embed`` job's (``encoder``, ``chunk_size``, ...) at top level; ``map`` and ``clusters``
    optional dicts of those jobs' params (default: seeded UMAP, automatic clusters).
    """
    embed_params = {k: v for k, v in params.items() if k not in ("map", "clusters")}
    out = {"embed": _embed(ws, embed_params, sub_progress(progress, 0.0, 0.7))}
    out["map"] = _map(ws, params.get("map") or {}, sub_progress(progress, 0.7, 0.9))
    out["clusters"] = _clusters(ws, params.get("clusters") or {}, sub_progress(progress, 0.9, 0.95))
    out["suggest"] = _suggest(ws, {}, sub_progress(progress, 0.95, 0.99))
    out["issues"] = _issues(ws, {}, sub_progress(progress, 0.99, 1.0))  # reuses the suggestions' fit
    return out


@job("train")
def _train(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.train import run_training

    run_id = run_training(ws, params, progress=progress)
    return {"run_id": int(run_id), "status": ws.store.run(run_id)["status"]}


@job("finetune")
def _finetune(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Fine-tune the image tower; a resubmitted job (Resume) continues its unfinished run from the last epoch."""
    from curation.finetune import run_finetune

    params = dict(params)
    run_id = run_finetune(ws, params, resume=params.pop("resume", True), progress=progress)
    return {"run_id": int(run_id), "status": ws.store.run(run_id)["status"]}


@job("reembed")
def _reembed(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Re-embed with a fine-tune run's tower (``finetuned:run-<id>`` becomes the active encoder), then map,
    clusters and suggestions; the tower is built uncached, so the worker keeps none after the job."""
    from curation.finetune import tuned_encoder

    return _pipeline(ws, {"encoder": tuned_encoder(ws, int(params["run_id"]))}, progress)


@job("doctor")
def _doctor(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.doctor import doctor

    progress(0.1, "checking the workspace")
    rep = doctor(ws, repair=bool(params.get("repair", False)))
    return {"problems": rep.problems, "repaired": rep.repaired, "left": rep.problems_left}


def embeddings_or_raise(ws: Workspace) -> Any:
    """The workspace's embeddings (``curation.embed.Embeddings``), or a RuntimeError saying how to make them."""
    from curation.embed import load_embeddings

    emb = load_embeddings(ws)
    if emb is None:
        raise RuntimeError("No embeddings yet: run the pipeline (or `python -m curation embed WS`) first.")
    return emb


# ---------------------------------------------------------------------- submitting and watching
def submit(ws: Workspace, kind: str, params: dict | None = None) -> int:
    """Record a job and make sure the workspace's warm worker is running to take it.

    The first submit starts ``python -m curation worker WS`` (see :func:`serve`); later ones queue
    behind the running job in the same process, so numba's compilation is paid once.

    Returns
    -------
    The job id; follow it with ``ws.store.job(job_id)``.
    """
    if kind not in JOBS:
        raise ValueError(f"Unknown job kind {kind!r}; known: {', '.join(sorted(JOBS))}.")
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
                                start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent))
    (ws.root / WORKER_PID).write_text(str(proc.pid))  # "starting": the next submit waits for this one
    threading.Thread(target=proc.wait, daemon=True).start()  # reap, so a finished worker is no zombie
    log.info("started the warm worker of %s (pid %d)", ws.root, proc.pid)
    return int(proc.pid)


def worker_pid(ws: Workspace) -> int | None:
    """The pid of the workspace's warm worker (serving, or started and not yet serving), else None.

    The pid file names the worker from its start until it decides to exit (it clears the file
    before letting go of the worker lock), so a worker that is still importing counts as running
    and one that is leaving does not. A killed worker shows as a zombie a moment before its other
    threads are gone and the kernel drops its lock: that moment is waited out (up to 5 s).
    """
    path = ws.root / WORKER_PID
    text = path.read_text().strip() if path.exists() else ""
    pid = int(text) if text.isdigit() else None
    end = time.monotonic() + 5.0
    with open(ws.root / WORKER_LOCK, "a+") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not pid or process_alive(pid) or time.monotonic() > end:
                    return pid or 0  # serving (0: a worker that is just writing its pid)
                time.sleep(0.05)
    return pid if pid is not None and _is_worker(pid) else None


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` is a live ``python -m curation worker`` process (not a recycled pid)."""
    if not process_alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # reaped just now, or a system without /proc (then trust the pid)
        return not os.path.isdir("/proc/self")
    return b"curation" in args and b"worker" in args


def cancel(ws: Workspace, job_id: int) -> None:
    """Ask a job to stop; the worker stops at its next progress report, keeping completed chunks."""
    rec = ws.store.job(job_id)
    if rec["status"] in ("queued", "running"):
        ws.store.update_job(job_id, status="cancelling", message="cancelling…")


def process_alive(pid: int | float | None) -> bool:
    """Whether a process runs with this pid (a NULL pid read from the store is NaN)."""
    if pid is None or pd.isna(pid) or not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie counts as dead
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # reaped just now, or a system without /proc (then trust kill's answer)
        return not os.path.isdir("/proc/self")


def refresh(ws: Workspace) -> pd.DataFrame:
    """Mark jobs whose worker died (kill -9, crash, reboot) as ``interrupted``; return recent jobs.

    A started job is lost when its process is gone. A job still waiting in the queue is lost when
    the process meant to run it is gone and no warm worker holds the workspace (after a 10 s grace
    for rows written without a pid).
    """
    jobs = ws.store.jobs()
    active = jobs[jobs["status"].isin(ACTIVE)]
    serving = None
    for job_id, rec in active.iterrows():
        if process_alive(rec["pid"]):
            continue
        if pd.isna(rec["started"]):
            serving = worker_pid(ws) is not None if serving is None else serving
            if serving or (pd.isna(rec["pid"]) and time.time() - (rec["created"] or 0) <= 10):
                continue
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
    (ws.root / WORKER_PID).write_text(str(os.getpid()))
    return lock


def _let_go(ws: Workspace, lock: IO[str]) -> None:
    """Stop being the workspace's worker: clear the pid file, then release the worker lock."""
    try:
        (ws.root / WORKER_PID).write_text("")
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
        from curation.project import warm_umap

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
