"""Durability: kill -9 of writers and job workers loses no acknowledged event; concurrent writers all land."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.reliability import (
    ROOT,
    bad_files_trial,
    bad_manifests_trial,
    concurrent_trial,
    embed_kill,
    ingest_kill,
    kill_trial,
    make_workspace,
    train_kill,
)


@pytest.fixture(scope="module")
def bulk_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("rel") / "ws", 20_000).root / "curation.db"


@pytest.mark.slow
@pytest.mark.parametrize("mode,seed", [("bulk", 1), ("bulk", 2), ("undo", 3), ("small", 4)])
def test_kill_during_writes(bulk_db: Path, mode: str, seed: int) -> None:
    res = kill_trial(bulk_db, mode, seed=seed, max_wait=1.5)
    assert res["acked_before_kill"] >= 1 and res["alive_at_kill"], res  # something acknowledged was at stake
    assert res["ok"], res["problems"]
    assert res["lost"] == 0 and res["half"] == 0


@pytest.mark.slow
def test_three_concurrent_writers(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "conc", 600)
    res = concurrent_trial(ws.root / "curation.db", writers=3, actions=200)
    assert res == {"sent": 600, "landed": 600, "errors": 0, "ok": True}


@pytest.mark.slow
def test_kill_during_ingest_then_reingest(tmp_path: Path) -> None:
    """A kill -9 mid-ingest (seen started, frozen, then killed) leaves a consistent store with none of the
    ingest's rows; ingesting again completes without duplicates. (The benchmark also kills it while its write
    transaction is open.)"""
    res = ingest_kill(tmp_path, n=600, at="checking")
    assert res["seen"] and res["alive_at_kill"], res  # the kill landed while the ingest was running
    assert res["samples_at_kill"] == res["samples_after"] == 0, res  # before its one write: nothing written
    assert res["labels_with_samples"] and res["check"] == [] and res["reingested"], res


@pytest.fixture
def quick_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Job workers started by the test exit soon after their last job and skip warming UMAP."""
    monkeypatch.setenv("CURATION_WORKER_IDLE", "2")
    monkeypatch.setenv("CURATION_WARM_UMAP", "0")


@pytest.mark.slow
def test_worker_killed_during_embedding(tmp_path: Path, quick_workers: None) -> None:
    """kill -9 of the worker after some chunks: the job shows interrupted, resume completes, and the vectors
    equal an uninterrupted run's."""
    res = embed_kill(tmp_path, n=200)
    assert res["interrupted"] and res["resumed"], res
    assert res["complete"] and res["consistent"], res


@pytest.mark.slow
def test_worker_killed_during_training(tmp_path: Path, quick_workers: None) -> None:
    """kill -9 of the worker mid-run: the job and its run show interrupted (not "running" forever); resume trains."""
    res = train_kill(tmp_path)
    assert res["interrupted"] and res["resumed"] and res["runs_left_running"] == 0, res
    assert res["run_statuses"] == ["done", "interrupted"]


_PINNER = """
import sys
from curation.data.pins import pin, unpin
from curation.data.workspace import Workspace
ws = Workspace.open(sys.argv[1])
for i in range(int(sys.argv[2]), 120, 3):
    pin(ws, [i, i + 10_000])
    unpin(ws, [i + 10_000])
"""


@pytest.mark.slow
def test_concurrent_pin_and_unpin_lose_nothing(tmp_path: Path) -> None:
    """Three processes editing the must-not-fail slice at once: every pin lands (the edit is one transaction)."""
    from curation.data.pins import pinned

    ws = make_workspace(tmp_path / "ws", 10)
    procs = [subprocess.Popen([sys.executable, "-c", _PINNER, str(ws.root), str(k)], cwd=ROOT) for k in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert pinned(ws).tolist() == list(range(120))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_input_figures(tmp_path: Path) -> None:
    """The benchmark's bad-input figures: every bad file and broken manifest is handled."""
    handled, tried = bad_files_trial(tmp_path / "files")
    assert handled == tried >= 25
    handled, tried = bad_manifests_trial(tmp_path / "manifests")
    assert handled == tried >= 15
