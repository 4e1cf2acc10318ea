"""Label store: events, projection, undo, single vs multi-label, runs, migrations, concurrency."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN
from curation.data.store import SCHEMA_VERSION, StoreError
from curation.data.workspace import Workspace, WorkspaceError


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
    assert hist.loc[u, "source"] == "undo" and hist.loc[u, "undoes"] == b
    assert pd.isna(hist.loc[b, "undone_by"])  # its undo was undone: b is in effect again
    assert ws.store.check() == []


def test_undo_twice_is_refused_and_redo_works(ws: Workspace) -> None:
    """Two windows undoing one batch: the second is refused, so later edits are never reverted twice."""
    ids, (cat, dog, bird) = _filled(ws)
    ws.store.set_label(ids, cat)
    b = ws.store.set_label(ids[:4], dog)
    u = ws.store.undo(b)
    assert ws.store.batches().loc[b, "undone_by"] == u
    later = ws.store.set_label(ids[:2], bird)  # someone edits after the undo
    with pytest.raises(StoreError, match=f"Batch {b} is undone already \\(by batch {u}.*undo batch {u}"):
        ws.store.undo(b)
    m = ws.store.label_matrix(ids)
    assert (m[:2, 2] == POSITIVE).all()  # the later edit survives
    redo = ws.store.undo(u)
    assert pd.isna(ws.store.batches().loc[b, "undone_by"]) and ws.store.batches().loc[u, "undone_by"] == redo
    assert ws.store.undo(b) is not None  # in effect again, so undoable again
    assert ws.store.undo(later) is not None and ws.store.check() == []
    with pytest.raises(StoreError, match="No batch 999"):
        ws.store.undo(999)


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


class _CountingConnection:
    """A connection stand-in counting the statements Python hands to SQLite (execute/executemany calls)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con, self.calls = con, 0

    def execute(self, *a: object, **k: object) -> sqlite3.Cursor:
        self.calls += 1
        return self._con.execute(*a, **k)

    def executemany(self, *a: object, **k: object) -> sqlite3.Cursor:
        self.calls += 1
        return self._con.executemany(*a, **k)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)


@pytest.mark.slow
def test_bulk_100k_is_vectorised(ws: Workspace) -> None:
    """A bulk relabel and its undo of 100,000 samples hand SQLite a bounded number of statements (executemany
    over arrays), not one per sample: the same count as for 1,000 samples."""
    ids, (cat, dog, _) = _filled(ws, n=100_000)

    def statements(action) -> int:
        real = ws.store._con()
        counter = _CountingConnection(real)
        ws.store._local.con = counter
        try:
            action()
        finally:
            ws.store._local.con = real
        return counter.calls

    small = statements(lambda: ws.store.set_label(ids[:1000], dog, source="bulk"))
    box: dict[str, int] = {}
    big = statements(lambda: box.setdefault("b", ws.store.set_label(ids, cat, source="bulk")))
    assert 0 < big <= max(small, 1) + 5 and big < 100, (small, big)
    m = ws.store.label_matrix(ids)
    assert (m[:, 0] == 1).all() and m.sum() == len(ids)
    undo = statements(lambda: ws.store.undo(box["b"]))
    assert 0 < undo < 100, undo
    m = ws.store.label_matrix(ids)
    assert (m[:1000, 1] == 1).all() and m.sum() == 1000
    assert ws.store.check() == []


_WRITER = """
import json, sys
from curation.data.store import Store
store = Store(sys.argv[1])
for i in json.loads(sys.argv[2]):
    store.set_label([i], int(sys.argv[3]), actor=sys.argv[4])
"""


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(ws: Workspace) -> None:
    ids, (cat, dog, bird) = _filled(ws, n=300)
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(ws.root / "curation.db"),
                               json.dumps(ids[k::3].tolist()), str(c), f"p{k}"], cwd=root)
             for k, c in enumerate((cat, dog, bird))]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert int(ws.store.batches(limit=10_000).shape[0]) == 300
    m = ws.store.label_matrix(ids)
    assert (m.sum(1) == 1).all() and ws.store.check() == []


ACTIONS = st.lists(st.tuples(st.sampled_from(["set", "add", "reject", "clear", "undo"]),
                             st.lists(st.integers(0, 7), min_size=1, max_size=5), st.integers(0, 2)),
                   min_size=1, max_size=25)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, task=st.sampled_from(["single", "multi"]))
def test_event_algebra_projection_equals_replay(tmp_path_factory: pytest.TempPathFactory, actions: list,
                                                task: str) -> None:
    """Any sequence of label actions and undos (of any batch, undos included) keeps projection == replay and
    one positive per sample in single-label workspaces; an undo puts exactly the cells of the samples nobody
    relabelled since back to their earlier state and touches nothing else; undo of that undo restores."""
    ws = Workspace.create(tmp_path_factory.mktemp("h"), task=task)
    ids, cls = _filled(ws, n=8)
    col = {c: k for k, c in enumerate(cls)}
    row = {int(i): k for k, i in enumerate(ids)}
    done: list[int] = []
    for op, rows, k in actions:
        sel, c = ids[rows], cls[k]
        before = ws.store.label_matrix(ids)
        if op == "undo":
            if not done:
                continue
            target = done[rows[0] % len(done)]
            if not pd.isna(ws.store.batches(limit=1000).loc[target, "undone_by"]):
                with pytest.raises(StoreError, match="undone already"):
                    ws.store.undo(target)
                continue
            ev = ws.store.events(target)
            moved = {int(e.sample_id) for e in ev.itertuples()
                     if before[row[int(e.sample_id)], col[int(e.class_id)]] != e.state}
            if task == "single":  # any class of the sample changed since the batch counts
                after = ws.store.label_matrix(ids, upto_event=int(ev.index.max()))
                moved |= {int(i) for i in ids[(after != before).any(1)] if i in set(ev["sample_id"].tolist())}
            want = before.copy()
            for e in ev.itertuples():
                if int(e.sample_id) not in moved:
                    want[row[int(e.sample_id)], col[int(e.class_id)]] = e.prev_state
            if moved == {int(s_) for s_ in ev["sample_id"]}:
                with pytest.raises(StoreError, match="labelled again"):
                    ws.store.undo(target)
                continue
            u = ws.store.undo(target)
            assert (ws.store.label_matrix(ids) == want).all()
            if k == 0:  # undo of the undo restores
                ws.store.undo(u)
                assert (ws.store.label_matrix(ids) == before).all()
            done.append(u)
        elif op == "add" and task == "single":
            with pytest.raises(StoreError, match="single-label"):
                ws.store.add_label(sel, c)
        else:
            fn = {"set": ws.store.set_label, "add": ws.store.add_label, "reject": ws.store.reject_label,
                  "clear": ws.store.clear_label}[op]
            b = fn(sel, c)
            if b is not None:
                done.append(b)
        assert ws.store.check() == []
        assert (ws.store.label_matrix(ids, upto_event=ws.store.last_event_id()) == ws.store.label_matrix(ids)).all()
        if task == "single":
            assert ((ws.store.label_matrix(ids) == POSITIVE).sum(1) <= 1).all()


def test_undo_of_an_old_batch_keeps_newer_labels(ws: Workspace) -> None:
    """Undoing an old batch reverts only the samples nobody relabelled since (single-label stays single)."""
    ids, (cat, dog, bird) = _filled(ws)
    ws.store.set_label(ids[:4], cat)
    old = ws.store.set_label(ids[:4], dog)
    ws.store.set_label(ids[:1], bird)  # sample 0 relabelled after the old batch
    u = ws.store.undo(old)
    m = ws.store.label_matrix(ids)
    assert m[0].tolist() == [0, 0, 1] and (m[1:4] == [1, 0, 0]).all()
    assert "1 samples labelled again since kept their newer labels" in ws.store.batches().loc[u, "note"]
    only_moved = ws.store.set_label(ids[5:6], bird)
    ws.store.set_label(ids[5:6], cat)
    with pytest.raises(StoreError, match="labelled again after it.*nothing was changed"):
        ws.store.undo(only_moved)
    assert ws.store.check() == []


def test_schema_1_store_is_migrated(tmp_path: Path) -> None:
    """A store written before runs recorded their process id opens, gains the column, and keeps its runs."""
    ws = Workspace.create(tmp_path / "w")
    rid = ws.store.add_run("head", {"epochs": 1}, last_event_id=0)
    ws.store.close()
    con = sqlite3.connect(ws.root / "curation.db")
    con.execute("ALTER TABLE runs DROP COLUMN pid")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    store = Workspace.open(tmp_path / "w").store
    assert store.meta("schema_version") == str(SCHEMA_VERSION) and store.run(rid)["config"] == {"epochs": 1}
    assert pd.isna(store.run(rid)["pid"]) and store.check() == []


def test_interrupted_job_interrupts_its_running_runs(ws: Workspace) -> None:
    """A run is not left "running" forever when the worker that ran it died."""
    job = ws.store.submit_job("train", {})
    ws.store.update_job(job, status="running", pid=os.getpid())
    mine = ws.store.add_run("head", {}, last_event_id=0)  # recorded with this process's pid
    other = ws.store.add_run("head", {}, last_event_id=0)
    ws.store._con().execute("UPDATE runs SET pid=? WHERE id=?", (os.getpid() + 1, other))
    done = ws.store.add_run("head", {}, last_event_id=0, status="done")
    ws.store.update_job(job, status="interrupted")
    assert [ws.store.run(r)["status"] for r in (mine, other, done)] == ["interrupted", "running", "done"]
    assert ws.store.interrupt_runs([os.getpid() + 1]) == [other]
    assert ws.store.run(other)["status"] == "interrupted"


def test_update_meta_is_read_modify_write(ws: Workspace) -> None:
    assert ws.store.update_meta("counter", lambda old: str(int(old or 0) + 1)) == "1"
    assert ws.store.update_meta("counter", lambda old: str(int(old or 0) + 1)) == "2"
    with pytest.raises(ValueError):
        ws.store.update_meta("counter", lambda old: str(int("x")))
    assert ws.store.meta("counter") == "2"  # a failing update writes nothing


@pytest.mark.parametrize("name", ["a, b", 'say "hi"', "<script>alert(1)</script>", "🐱 cat", "👩‍💻", "x/y",
                                  "it's"])
def test_visible_class_names_are_kept_as_given(ws: Workspace, name: str) -> None:
    (cid,) = ws.store.add_classes([name])
    assert ws.store.class_names() == [name] and ws.store.class_id(name) == cid


@pytest.mark.parametrize("name,why", [("two\nlines", "control characters"), ("tab\there", "control characters"),
                                      ("nul\x00", "control characters"), ("\u200b\u200d", "no visible characters"),
                                      ("bad\udcff", "not valid text")])
def test_unusable_class_names_are_refused(ws: Workspace, name: str, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        ws.store.add_classes([name])
    assert ws.store.class_names() == []


def test_writer_waits_for_a_held_lock(ws: Workspace) -> None:
    """Another connection holding the write lock makes a label change wait and retry, never fail as locked."""
    ids, (cat, _, _) = _filled(ws)
    ws.store._con().execute("PRAGMA busy_timeout=20")  # exercise the retry loop, not only SQLite's own wait
    holder = sqlite3.connect(ws.root / "curation.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        assert ws.store.set_label(ids, cat) is not None
    finally:
        release.join()
        holder.close()
    assert ws.store.check() == []


def test_redo_never_gives_a_single_label_sample_two_labels(tmp_path: Path) -> None:
    """Set A, undo, set B, then undo the undo (redo A): B is newer, so the redo is refused (found by hypothesis)."""
    ws = Workspace.create(tmp_path / "w", task="single")
    ids, cls = _filled(ws, n=2)
    first = ws.store.set_label(ids[:1], cls[0])
    u = ws.store.undo(first)
    ws.store.set_label(ids[:1], cls[1])
    with pytest.raises(StoreError, match="labelled again"):
        ws.store.undo(u)
    assert ws.store.single_labels(ids[:1]).tolist() == [1] and ws.store.check() == []


def test_newest_run_id_and_single_from_matrix(tmp_path: Path) -> None:
    from curation.data.store import single_from_matrix

    ws = Workspace.create(tmp_path / "w")
    assert ws.store.newest_run_id() is None
    a = ws.store.add_run("head", {}, last_event_id=0, encoder="e", device="cpu")
    b = ws.store.add_run("finetune", {}, last_event_id=0, encoder="e", device="cpu")
    ws.store.add_run("head", {}, last_event_id=0, encoder="e", device="cpu")  # still running
    ws.store.update_run(a, status="done")
    ws.store.update_run(b, status="done")
    assert ws.store.newest_run_id() == b and ws.store.newest_run_id(kinds=["head"]) == a
    assert ws.store.newest_run_id(status=None, kinds=["head"]) == a + 2
    m = np.array([[0, 1, 1], [-1, 0, 0], [0, 0, 1]], np.int8)
    assert single_from_matrix(m).tolist() == [1, -1, 2]
    assert single_from_matrix(np.zeros((2, 0), np.int8)).tolist() == [-1, -1]


def test_label_matrix_of_a_few_ids_reads_by_key_and_equals_the_full_matrix(tmp_path: Path) -> None:
    import curation.data.store as store_mod

    ws = Workspace.create(tmp_path / "w", task="multi")
    ids, cls = _filled(ws, n=30)
    ws.store.set_label(ids[::2], cls[0])
    ws.store.add_label(ids[::3], cls[2])
    ws.store.reject_label(ids[1::5], cls[1])
    full = ws.store.label_matrix(ids)
    few = ids[[7, 0, 29, 12]]
    assert len(few) <= store_mod.FEW_SAMPLES
    np.testing.assert_array_equal(ws.store.label_matrix(few), full[[7, 0, 29, 12]])
    np.testing.assert_array_equal(ws.store.label_matrix(np.array([10_000], np.int64)), np.zeros((1, 3), np.int8))


def test_assign_job_pid_never_overwrites_a_started_job(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "w")
    job = ws.store.submit_job("map", {})
    assert ws.store.assign_job_pid(job, 111) and ws.store.job(job)["pid"] == 111
    ws.store.update_job(job, status="running", started=1.0, pid=222)
    assert not ws.store.assign_job_pid(job, 111) and ws.store.job(job)["pid"] == 222


def test_in_memory_projection_follows_other_writers_undos_and_restores(tmp_path: Path) -> None:
    """label_matrix() (all samples) reads the in-memory copy: it must equal the projection read by key and the
    replay after writes from another Store, bulk relabels and their undo, new classes, new samples, and a
    restored backup whose history differs."""
    from curation.data.store import Store
    from curation.runtime.doctor import restore

    ws = Workspace.create(tmp_path / "w")
    ids, cls = _filled(ws, n=40)
    reader, writer = ws.store, Store(ws.store.path)
    rng = np.random.default_rng(0)

    def agree() -> None:
        full = reader.label_matrix()
        by_key = reader.label_matrix(reader.sample_ids())  # <= FEW_SAMPLES: read by key from SQLite
        assert full.shape == by_key.shape and (full == by_key).all()
        assert (full == reader.label_matrix(upto_event=reader.last_event_id())).all()

    reader.label_matrix()  # warm the copy
    for step in range(12):
        writer.set_label(rng.choice(ids, 5, replace=False), cls[step % 3])
        if step % 4 == 3:
            writer.reject_label(rng.choice(ids, 3, replace=False), cls[0])
        agree()
    before = reader.label_matrix()
    b = writer.set_label(ids, cls[1], source="bulk")
    assert (reader.label_matrix()[:, 1] == POSITIVE).all()
    writer.undo(b)
    assert (reader.label_matrix() == before).all()
    agree()
    new_cls = writer.add_classes(["eel"])[0]
    more, _ = writer.add_samples(writer.root_id(ws.root), _records(3, prefix="more"))
    writer.set_label(more, new_cls)
    assert reader.label_matrix().shape == (43, 4)
    agree()
    backup = reader.backup(tmp_path / "b.db")
    writer.set_label(ids[:5], cls[0])
    writer.reject_label(ids[:5], cls[2])
    reader.label_matrix()  # the copy now holds labels the backup lacks
    writer.close()
    restore(backup, ws.root)
    Workspace.open(ws.root).store.set_label(ids[5:30], cls[2])  # the restored log runs past the copy's last event
    agree()


def test_bulk_relabel_and_undo_rows(ws: Workspace) -> None:
    """A bulk relabel writes one event per changed cell (old positives cleared, new ones set; unchanged cells
    skipped) and its undo writes their inverses, in one batch each."""
    ids, cls = _filled(ws, n=30)
    ws.store.set_label(ids[:10], cls[0])
    ws.store.set_label(ids[10:20], cls[1])
    b = ws.store.set_label(ids, cls[1], source="bulk")
    ev = ws.store.events(b)
    assert len(ev) == 10 + 10 + 0 + 10  # clear 10 cls0, set 10 cls1; 10 already cls1; 10 new cls1
    assert int(ws.store.batches(limit=1).loc[b, "n_events"]) == len(ev)
    assert set(ev.loc[ev["state"] == 0, "sample_id"]) == set(ids[:10].tolist())
    u = ws.store.undo(b)
    uev = ws.store.events(u)
    assert len(uev) == len(ev)
    m = ws.store.label_matrix()
    assert (m[:10, 0] == POSITIVE).all() and (m[10:20, 1] == POSITIVE).all() and (m[20:] == 0).all()
    assert ws.store.set_label(ids[10:20], cls[1]) is None  # a no-op writes no batch
    assert ws.store.check() == []


def test_events_limit_reads_the_first_events_of_a_batch(ws: Workspace) -> None:
    ids, cls = _filled(ws, n=30)
    b = ws.store.set_label(ids, cls[0], source="bulk")
    first = ws.store.events(b, limit=7)
    assert len(first) == 7 and (first.index.to_numpy() == ws.store.events(b).index.to_numpy()[:7]).all()
