"""Label store: events, projection, undo, single vs multi-label, runs, migrations, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.store import POSITIVE, REJECTED, UNKNOWN, SCHEMA_VERSION, Store, StoreError
from curation.workspace import Workspace, WorkspaceError


def _records(n: int, prefix: str = "img") -> pd.DataFrame:
    return pd.DataFrame({"path": [f"{prefix}{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 10, "width": 4, "height": 4})


def _filled(ws: Workspace, n: int = 10, classes: tuple[str, ...] = ("cat", "dog", "bird")) -> tuple[np.ndarray, list]:
    ids, _ = ws.store.add_samples(ws.store.root_id(ws.root), _records(n))
    return ids, ws.store.add_classes(list(classes))


def test_create_open_and_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="curation init"):
        Workspace.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(WorkspaceError, match="not a workspace"):
        Workspace.open(tmp_path / "plain")
    ws = Workspace.create(tmp_path / "w")
    assert (ws.root / "curation.db").exists() and ws.artifacts.root.exists() and ws.thumbs.exists()
    assert Workspace.open(tmp_path / "w").store.task == "single"
    con = sqlite3.connect(ws.root / "curation.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "w")
    ws.store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer curation"):
        Workspace.open(tmp_path / "w")


def test_add_samples_imports_labels_once(ws: Workspace) -> None:
    root = ws.store.root_id(ws.root)
    ids, new = ws.store.add_samples(root, _records(3), labels=[["cat"], [], ["dog", "cat"]])
    assert new.all()
    m = ws.store.label_matrix(ids)
    assert m.tolist() == [[1, 0], [0, 0], [1, 1]]
    ws.store.set_label(ids[:1], ws.store.class_id("dog"))
    ids2, new2 = ws.store.add_samples(root, _records(4), labels=[["bird"]] * 4)
    assert (ids2[:3] == ids).all() and new2.tolist() == [False, False, False, True]
    m2 = ws.store.label_matrix(ids2)
    assert m2[0].tolist() == [0, 1, 0]  # re-ingest never touches labels
    assert m2[3].tolist() == [0, 0, 1]


def test_single_label_replaces_in_one_batch(ws: Workspace) -> None:
    ids, (cat, dog, _) = _filled(ws)
    b1 = ws.store.set_label(ids[:4], cat)
    b2 = ws.store.set_label(ids[2:6], dog)
    m = ws.store.label_matrix(ids)
    assert (m[:2, 0] == POSITIVE).all() and (m[2:6, 1] == POSITIVE).all() and (m[2:6, 0] == UNKNOWN).all()
    assert (m.sum(1) <= 1).all()
    ev = ws.store.events(b2)
    assert len(ev) == 6 and set(ev["batch_id"]) == {b2}  # 4 positives + 2 cleared, one batch
    assert ws.store.set_label(ids[:2], cat) is None  # no-op writes no batch
    assert b1 < b2


def test_multi_label_keeps_and_rejects(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "m", task="multi")
    ids, (cat, dog, bird) = _filled(ws)
    ws.store.set_label(ids[:3], cat)
    ws.store.set_label(ids[:3], dog)
    ws.store.reject_label(ids[3:5], bird)
    m = ws.store.label_matrix(ids)
    assert (m[:3, :2] == POSITIVE).all() and (m[3:5, 2] == REJECTED).all()
    with pytest.raises(StoreError, match="several labels"):
        ws.store.set_task("single")


def test_undo_and_undo_of_undo(ws: Workspace) -> None:
    ids, (cat, dog, _) = _filled(ws)
    ws.store.set_label(ids, cat, source="import")
    before = ws.store.label_matrix(ids)
    b = ws.store.set_label(ids[::2], dog, source="bulk")
    after = ws.store.label_matrix(ids)
    u = ws.store.undo(b)
    assert (ws.store.label_matrix(ids) == before).all()
    ws.store.undo(u)
    assert (ws.store.label_matrix(ids) == after).all()
    hist = ws.store.batches()
    assert hist.loc[b, "undone_by"] == u and hist.loc[u, "source"] == "undo"
    assert ws.store.check() == []


def test_snapshot_replay(ws: Workspace) -> None:
    ids, (cat, dog, _) = _filled(ws)
    ws.store.set_label(ids, cat)
    snap = ws.store.last_event_id()
    m_snap = ws.store.label_matrix(ids)
    ws.store.set_label(ids[:5], dog)
    assert (ws.store.label_matrix(ids, upto_event=snap) == m_snap).all()
    assert (ws.store.label_matrix(ids, upto_event=ws.store.last_event_id()) == ws.store.label_matrix(ids)).all()


def test_bad_class_names_and_ids(ws: Workspace) -> None:
    ids, _ = _filled(ws)
    for bad in ("", "   ", None):
        with pytest.raises(StoreError, match="empty"):
            ws.store.add_classes([bad])
    with pytest.raises(StoreError, match="Unknown class"):
        ws.store.class_id("zebra")
    with pytest.raises(StoreError, match="Unknown class ids"):
        ws.store.set_label(ids[:1], 999)
    assert ws.store.add_classes([" cat "]) == [ws.store.class_id("cat")]


def test_runs_record_snapshot(ws: Workspace) -> None:
    ids, (cat, _, _) = _filled(ws)
    ws.store.set_label(ids, cat)
    rid = ws.store.add_run("head", {"epochs": 3}, last_event_id=ws.store.last_event_id(), encoder="e", device="cpu")
    ws.store.update_run(rid, status="done", metrics={"accuracy": 0.5}, duration=1.0)
    run = ws.store.run(rid)
    assert run["config"] == {"epochs": 3} and run["metrics"]["accuracy"] == 0.5
    assert run["last_event_id"] == ws.store.last_event_id()


def test_projection_damage_is_found_and_repaired(ws: Workspace) -> None:
    ids, (cat, _, _) = _filled(ws)
    ws.store.set_label(ids, cat)
    con = sqlite3.connect(ws.root / "curation.db")
    con.execute("DELETE FROM labels WHERE sample_id = ?", (int(ids[0]),))
    con.commit()
    assert any("projection" in p for p in ws.store.check())
    ws.store.rebuild_projection()
    assert ws.store.check() == []


def test_bulk_100k_is_vectorised(ws: Workspace) -> None:
    ids, (cat, dog, _) = _filled(ws, n=20_000)
    b = ws.store.set_label(ids, cat, source="bulk")
    ws.store.set_label(ids[::3], dog, source="bulk")
    m = ws.store.label_matrix(ids)
    assert (m[::3, 1] == 1).all() and m.sum() == len(ids)
    ws.store.undo(b)
    assert ws.store.check() == []


def _writer(path: str, ids: list[int], class_id: int, actor: str) -> None:
    store = Store(path)
    for i in ids:
        store.set_label([i], class_id, actor=actor)


def test_concurrent_writers_lose_nothing(ws: Workspace) -> None:
    ids, (cat, dog, bird) = _filled(ws, n=300)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(ws.root / "curation.db"), ids[k::3].tolist(), c, f"p{k}"))
             for k, c in enumerate((cat, dog, bird))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert int(ws.store.batches(limit=10_000).shape[0]) == 300
    m = ws.store.label_matrix(ids)
    assert (m.sum(1) == 1).all() and ws.store.check() == []


ACTIONS = st.lists(st.tuples(st.sampled_from(["set", "add", "reject", "clear", "undo"]),
                             st.lists(st.integers(0, 7), min_size=1, max_size=5), st.integers(0, 2)),
                   min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, task=st.sampled_from(["single", "multi"]))
def test_event_algebra_projection_equals_replay(tmp_path_factory: pytest.TempPathFactory, actions: list,
                                                task: str) -> None:
    ws = Workspace.create(tmp_path_factory.mktemp("h"), task=task)
    ids, cls = _filled(ws, n=8)
    done: list[int] = []
    for op, rows, k in actions:
        sel, c = ids[rows], cls[k]
        if op == "undo":
            if done:
                before = ws.store.label_matrix(ids)
                u = ws.store.undo(done[-1])
                if u is not None:
                    ws.store.undo(u)  # undo of undo restores
                    assert (ws.store.label_matrix(ids) == before).all()
            continue
        if op == "add" and task == "single":
            with pytest.raises(StoreError, match="single-label"):
                ws.store.add_label(sel, c)
            continue
        fn = {"set": ws.store.set_label, "add": ws.store.add_label, "reject": ws.store.reject_label,
              "clear": ws.store.clear_label}[op]
        b = fn(sel, c)
        if b is not None:
            done.append(b)
        assert ws.store.check() == []
        if task == "single":
            assert ((ws.store.label_matrix(ids) == POSITIVE).sum(1) <= 1).all()
