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
