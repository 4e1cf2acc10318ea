"""Jobs: the warm worker process, progress, cancel, failure, interruption, queueing, idle exit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from curation.core.progress import ProgressFn
from curation.data.workspace import Workspace
from curation.runtime import jobs, liveness, tasks

TESTS = Path(__file__).resolve().parent


@tasks.job("_test_steps")
def _steps_job(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """A job for the worker tests (the worker imports this module through ``$CURATION_JOB_MODULES``)."""
    n = int(params.get("steps", 3))
    for i in range(n):
        progress(i / n, f"step {i}")
        time.sleep(float(params.get("delay", 0.0)))
    if params.get("fail"):
        raise ValueError("planted failure")
    return {"pid": os.getpid(), "steps": n}


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

    tasks.JOBS["_test_slow"] = fn
    yield calls
    del tasks.JOBS["_test_slow"]


@pytest.fixture
def served(ws: Workspace, monkeypatch: pytest.MonkeyPatch):
    """A workspace whose warm worker knows ``_test_steps``, does not warm UMAP and idles 60 s; killed at the end."""
    monkeypatch.setenv(jobs.JOB_MODULES_ENV, "test_jobs")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(jobs.WARM_ENV, "0")
    monkeypatch.setenv(jobs.IDLE_ENV, "60")
    yield ws
    pid = liveness.worker_pid(ws)
    if pid:
        os.kill(pid, signal.SIGKILL)


def _until(cond, what: str, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


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


def test_real_worker_process(served: Workspace) -> None:
    ws = served
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


# ---------------------------------------------------------------------- the warm worker (real processes)
def test_warm_worker_runs_queued_jobs_in_order_in_one_process(served: Workspace) -> None:
    ids = [jobs.submit(served, "_test_steps", {"steps": 3, "delay": 0.05}) for _ in range(3)]
    recs = [jobs.wait(served, j, timeout=120) for j in ids]
    assert [r["status"] for r in recs] == ["done"] * 3, recs
    pids = {r["result"]["pid"] for r in recs} | {r["pid"] for r in recs}
    assert len(pids) == 1 and os.getpid() not in pids  # the second and third job reused the worker
    assert recs[0]["finished"] <= recs[1]["started"] and recs[1]["finished"] <= recs[2]["started"]
    assert liveness.worker_pid(served) in pids
    assert (served.root / "logs" / f"job-{ids[0]}.log").exists()


def test_cancel_in_the_worker_and_the_worker_goes_on(served: Workspace) -> None:
    slow = jobs.submit(served, "_test_steps", {"steps": 400, "delay": 0.05})
    _until(lambda: served.store.job(slow)["progress"] > 0, "the job to report progress")
    jobs.cancel(served, slow)
    assert jobs.wait(served, slow, timeout=60)["status"] == "cancelled"
    after = jobs.wait(served, jobs.submit(served, "_test_steps", {}), timeout=60)
    assert after["status"] == "done" and after["pid"] == served.store.job(slow)["pid"]


def test_a_failing_job_does_not_kill_the_worker(served: Workspace) -> None:
    bad = jobs.submit(served, "_test_steps", {"fail": True})
    good = jobs.submit(served, "_test_steps", {})
    assert jobs.wait(served, good, timeout=120)["status"] == "done"
    rec = served.store.job(bad)
    assert rec["status"] == "failed" and "planted failure" in rec["error"]
    assert rec["pid"] == served.store.job(good)["pid"]
    unknown = served.store.submit_job("_no_such_kind", {})  # e.g. a kind whose module the worker lacks
    jobs.submit(served, "_test_steps", {})
    assert jobs.wait(served, unknown, timeout=60)["status"] == "failed"


@pytest.mark.slow
def test_kill_9_of_the_worker_interrupts_and_resume_completes(served: Workspace) -> None:
    jid = jobs.submit(served, "_test_steps", {"steps": 30, "delay": 0.1})
    _until(lambda: served.store.job(jid)["status"] == "running", "the job to start")
    pid = int(served.store.job(jid)["pid"])
    os.kill(pid, signal.SIGKILL)
    _until(lambda: not liveness.process_alive(pid), "the worker to die")
    jobs.refresh(served)
    assert served.store.job(jid)["status"] == "interrupted"
    again = jobs.resume(served, jid)
    rec = jobs.wait(served, again, timeout=120)
    assert rec["status"] == "done" and rec["pid"] != pid  # the next submit started a new worker
    assert served.store.job(again)["params"] == served.store.job(jid)["params"]


@pytest.mark.slow
def test_idle_worker_exits_and_the_next_submit_starts_another(served: Workspace,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jobs.IDLE_ENV, "0.5")
    first = jobs.wait(served, jobs.submit(served, "_test_steps", {}), timeout=60)
    assert first["status"] == "done"
    _until(lambda: liveness.worker_pid(served) is None and not liveness.process_alive(first["pid"]), "the idle worker to exit")
    second = jobs.wait(served, jobs.submit(served, "_test_steps", {}), timeout=60)
    assert second["status"] == "done" and second["pid"] != first["pid"]


def test_one_shot_worker_command_runs_one_job(ws: Workspace) -> None:
    import subprocess
    import sys

    jid = ws.store.submit_job("doctor", {})
    subprocess.run([sys.executable, "-m", "curation", "worker", str(ws.root), str(jid)], check=True, timeout=120,
                   cwd=TESTS.parent, capture_output=True)
    assert ws.store.job(jid)["status"] == "done"
    assert liveness.worker_pid(ws) is None  # no warm worker was left behind
