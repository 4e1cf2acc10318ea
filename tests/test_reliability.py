"""Durability: kill -9 in the middle of writes loses no acknowledged event; concurrent writers all land."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability import concurrent_trial, kill_trial, make_workspace


@pytest.fixture(scope="module")
def bulk_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("rel") / "ws", 20_000).root / "curation.db"


@pytest.mark.parametrize("mode,seed", [("bulk", 1), ("bulk", 2), ("undo", 3), ("small", 4)])
def test_kill_during_writes(bulk_db: Path, mode: str, seed: int) -> None:
    res = kill_trial(bulk_db, mode, seed=seed, max_wait=1.5)
    assert res["ok"], res["problems"]
    assert res["lost"] == 0 and res["half"] == 0


def test_three_concurrent_writers(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "conc", 600)
    res = concurrent_trial(ws.root / "curation.db", writers=3, actions=200)
    assert res == {"sent": 600, "landed": 600, "errors": 0, "ok": True}


def test_kill_during_ingest_then_reingest(tmp_path: Path) -> None:
    """A kill -9 mid-ingest leaves a consistent store; ingesting again completes without duplicates."""
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    from PIL import Image

    from curation.store import Store
    from curation.workspace import Workspace

    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for k in range(3):
        (folder / f"class{k}").mkdir(parents=True)
        for i in range(400):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"class{k}" / f"{i}.png")
    ws_dir = tmp_path / "ws"
    Workspace.create(ws_dir)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "curation", "ingest", str(ws_dir), str(folder)], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(ws_dir / "curation.db")
    assert store.check() == []
    n_before = len(store.sample_ids())
    labelled = (store.label_matrix() == 1).any(1)
    assert labelled.all()  # samples and their imported labels land together or not at all
    subprocess.run([sys.executable, "-m", "curation", "ingest", str(ws_dir), str(folder)], cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = store.sample_ids()
    assert len(ids) == 1200 >= n_before and store.check() == []
    assert (store.label_matrix(ids) == 1).sum() == 1200
