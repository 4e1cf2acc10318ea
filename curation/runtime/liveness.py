"""Whether a job's process still lives: the warm worker's pid and lock, and dead jobs marked interrupted."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pandas as pd

from curation.core.vocab import ACTIVE_JOB_STATES
from curation.data.workspace import Workspace

ACTIVE = ACTIVE_JOB_STATES
"""Job states that still own work (a job in one of them whose process is gone is ``interrupted``)."""
WORKER_LOCK, WORKER_PID = ".worker.lock", ".worker.pid"


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
