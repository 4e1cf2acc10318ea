"""Jobs: worker processes, progress, cancel, failure, interruption, queueing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from curation import jobs
from curation.progress import ProgressFn
from curation.workspace import Workspace


@pytest.fixture
def slow_job():
    calls: list[float] = []

    def fn(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
        for i in range(params.get("steps", 5)):
            progress(i / 5, f"step {i}")
            calls.append(i)
        if params.get("fail"):
            raise ValueError("planted failure")
        return {"steps": len(calls)}

    jobs.JOBS["_test_slow"] = fn
    yield calls
    del jobs.JOBS["_test_slow"]


def test_run_job_inline_done(ws: Workspace, slow_job: list) -> None:
    jid = ws.store.submit_job("_test_slow", {"steps": 3})
    assert jobs.run_job(ws, jid) == {"steps": 3}
    rec = ws.store.job(jid)
    assert rec["status"] == "done" and rec["progress"] == 1.0 and rec["result"] == {"steps": 3}


def test_run_job_failure_is_recorded(ws: Workspace, slow_job: list) -> None:
    jid = ws.store.submit_job("_test_slow", {"fail": True})
    jobs.run_job(ws, jid)
    rec = ws.store.job(jid)
    assert rec["status"] == "failed" and "planted failure" in rec["error"]


def test_cancel_before_start(ws: Workspace, slow_job: list) -> None:
    jid = ws.store.submit_job("_test_slow", {"steps": 50})
    jobs.cancel(ws, jid)
    jobs.run_job(ws, jid)
    assert ws.store.job(jid)["status"] == "cancelled"
    assert len(slow_job) <= 1


def test_real_worker_process(ws: Workspace) -> None:
    jid = jobs.submit(ws, "doctor", {})
    rec = jobs.wait(ws, jid, timeout=120)
    assert rec["status"] == "done", rec
    assert rec["result"]["problems"] == []
    assert rec["pid"] != os.getpid()


def test_killed_worker_shows_interrupted(ws: Workspace) -> None:
    jid = ws.store.submit_job("doctor", {})
    pid = os.fork() if hasattr(os, "fork") else None
    if pid == 0:  # a stand-in worker that dies without a word
        time.sleep(30)
        os._exit(0)
    ws.store.update_job(jid, status="running", pid=pid)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    jobs.refresh(ws)
    assert ws.store.job(jid)["status"] == "interrupted"
