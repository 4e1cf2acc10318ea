"""doctor (check and repair a workspace), backup and restore: what is found, what is repaired, what is left."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.reliability import make_workspace
from curation.data.ingest import ingest
from curation.data.store import Store, StoreError
from curation.data.workspace import Workspace
from curation.runtime.doctor import STALE_TMP_SECONDS, doctor, restore

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def labelled(tmp_path: Path) -> Workspace:
    """Six real images in two class folders, ingested, one edit, and one saved artifact."""
    rng = np.random.default_rng(0)
    for i in range(6):
        folder = tmp_path / "imgs" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "imgs")
    ws.store.set_label(ws.store.sample_ids()[:2], ws.store.class_id("c1"))
    ws.artifacts.save_arrays("vectors", "k1", {"ids": np.arange(6), "vecs": np.ones((6, 4), np.float32)},
                             config={"what": "test"})
    return ws


def test_healthy_workspace(labelled: Workspace) -> None:
    rep = doctor(labelled)
    assert rep.problems == [] and "healthy" in rep.summary()
    out = _cli("doctor", str(labelled.root))
    assert out.returncode == 0 and "healthy" in out.stdout


def test_tampered_artifact_found_and_repaired(labelled: Workspace) -> None:
    path = labelled.artifacts.path("vectors", "k1", "vecs.npy")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the vectors
    path.write_bytes(bytes(data))
    rep = doctor(labelled)
    assert any("vecs.npy was modified" in p for p in rep.problems_left)
    out = _cli("doctor", str(labelled.root))
    assert out.returncode == 1 and "left (needs you)" in out.stdout
    out = _cli("doctor", str(labelled.root), "--repair")
    assert "deleted damaged artifact vectors/k1" in out.stdout
    assert not labelled.artifacts.exists("vectors", "k1") and doctor(labelled).problems == []


def test_artifact_meta_of_another_key_is_found(labelled: Workspace) -> None:
    meta = labelled.artifacts.path("vectors", "k1", "meta.json")
    for ext in ("ids.npy", "vecs.npy"):
        shutil.copy(labelled.artifacts.path("vectors", "k1", ext), labelled.artifacts.path("vectors", "k2", ext))
    shutil.copy(meta, labelled.artifacts.path("vectors", "k2", "meta.json"))  # claims to be k1
    rep = doctor(labelled, repair=True)
    assert any("records the key vectors/k1, not its own" in p for p in rep.problems)
    assert labelled.artifacts.exists("vectors", "k1") and not labelled.artifacts.exists("vectors", "k2")


def test_leftover_temporary_files(labelled: Workspace) -> None:
    old = labelled.artifacts.root / "vectors" / "k9.npy.tmp"
    old.write_bytes(b"half written")
    stale = time.time() - STALE_TMP_SECONDS - 60
    os.utime(old, (stale, stale))
    fresh = labelled.thumbs / "160" / ".7.jpg.123.456.tmp"  # maybe being written right now: left alone
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"x")
    assert any("1 temporary files" in p for p in doctor(labelled).problems_left)
    rep = doctor(labelled, repair=True)
    assert rep.repaired == ["deleted 1 leftover temporary files"] and rep.problems_left == []
    assert not old.exists() and fresh.exists()


def test_missing_images_flagged_labels_kept(labelled: Workspace) -> None:
    samples = labelled.store.samples()
    gone = int(samples.index[0])
    (Path(samples.loc[gone, "root"]) / samples.loc[gone, "path"]).unlink()
    before = labelled.store.label_matrix(samples.index.to_numpy())
    assert any("1 image files are missing" in p for p in doctor(labelled).problems_left)
    rep = doctor(labelled, repair=True)
    assert "flagged 1 samples as missing (their labels are kept)" in rep.repaired
    assert gone not in labelled.store.sample_ids()
    assert (labelled.store.label_matrix(samples.index.to_numpy()) == before).all()


def test_projection_rebuilt(labelled: Workspace) -> None:
    con = sqlite3.connect(labelled.store.path)
    con.execute("DELETE FROM labels WHERE sample_id IN (SELECT sample_id FROM labels LIMIT 2)")
    con.commit()
    con.close()
    rep = doctor(labelled, repair=True)
    assert "rebuilt the label projection from the event log" in rep.repaired and rep.problems_left == []
    assert labelled.store.check() == []


def test_run_of_a_dead_process_marked_interrupted(labelled: Workspace) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = labelled.store.add_run("head", {}, last_event_id=labelled.store.last_event_id())
    mine = labelled.store.add_run("head", {}, last_event_id=labelled.store.last_event_id())
    labelled.store._con().execute("UPDATE runs SET pid=? WHERE id=?", (dead.pid, run))
    rep = doctor(labelled)
    assert any("left running by a process that died" in p for p in rep.problems)
    assert labelled.store.run(run)["status"] == "interrupted"
    assert labelled.store.run(mine)["status"] == "running"  # this process is alive


def test_unreadable_store_says_restore(labelled: Workspace, tmp_path: Path) -> None:
    backup = labelled.store.backup(tmp_path / "backups" / "b.db")
    labelled.store.close()
    db = labelled.root / "curation.db"
    for extra in ("curation.db-wal", "curation.db-shm"):
        (labelled.root / extra).unlink(missing_ok=True)
    db.write_bytes(b"not a database at all " * 200)
    with pytest.raises(StoreError, match="cannot be opened as a label store.*curation restore"):
        Workspace.open(labelled.root)
    out = _cli("doctor", str(labelled.root))
    assert out.returncode == 1 and "curation restore" in out.stderr and "Traceback" not in out.stderr
    out = _cli("restore", str(labelled.root), str(backup))
    assert out.returncode == 0, out.stderr
    assert doctor(Workspace.open(labelled.root)).problems == []


@pytest.mark.slow
def test_backup_while_writing_then_restore(tmp_path: Path) -> None:
    """An online backup taken while another process writes is consistent; restore brings it back."""
    ws = make_workspace(tmp_path / "ws", 3000)
    code = ("import sys; from curation.data.store import Store; s = Store(sys.argv[1]); ids = s.sample_ids()\n"
            "for i in range(400): s.set_label(ids[i::7], 1 + i % 5, source='bulk')\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(ws.store.path)], cwd=ROOT)
    backups = []
    try:
        for k in range(3):
            out = _cli("backup", str(ws.root), str(tmp_path / f"b{k}.db"))
            assert out.returncode == 0, out.stderr
            backups.append(tmp_path / f"b{k}.db")
    finally:
        writer.kill()
        writer.wait()
    for b in backups:
        assert Store(b).check() == []
    restore(backups[-1], tmp_path / "restored")
    restored = Workspace.open(tmp_path / "restored")
    assert restored.store.check() == [] and len(restored.store.sample_ids()) == 3000
    assert not list(tmp_path.glob(".*.tmp"))  # backups are renamed into place


def test_backup_and_restore_refuse_bad_targets(labelled: Workspace, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="onto itself"):
        labelled.store.backup(labelled.store.path)
    (tmp_path / "junk.db").write_text(json.dumps({"not": "sqlite"}) * 100)
    before = labelled.store.path.read_bytes()
    with pytest.raises(StoreError, match="not a curation label store"):
        restore(tmp_path / "junk.db", labelled.root)
    with pytest.raises(StoreError, match="No backup file"):
        restore(tmp_path / "nope.db", labelled.root)
    assert labelled.store.path.read_bytes() == before
