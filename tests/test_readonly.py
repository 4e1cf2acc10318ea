"""Read-only and full workspaces: opening writes nothing, reads work, writes refuse with one clear line."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from curation.data.store import ReadOnlyStore, Store, StoreError, StoreFull
from curation.data.workspace import DB_NAME, Workspace

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _db_state(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob(DB_NAME + "*"))}


@pytest.fixture
def labelled(tmp_path: Path) -> Workspace:
    ws = Workspace.create(tmp_path / "ws")
    ws.store.add_classes(["cat", "dog"])
    ws.store.close()
    return Workspace.open(tmp_path / "ws")


@pytest.fixture
def read_only_ws(labelled: Workspace, tmp_path: Path) -> Iterator[Path]:
    """The workspace seen through a read-only bind mount (root), or with its folder and file chmod-ed (others)."""
    labelled.store.close()
    src = labelled.root
    if IS_ROOT:
        view = tmp_path / "ro"
        view.mkdir()
        if not _mount("--bind", "-o", "ro", str(src), str(view)):
            pytest.skip("cannot bind-mount read-only here")
        try:
            yield view
        finally:
            _umount(view)
    else:
        os.chmod(src / DB_NAME, 0o444)
        os.chmod(src, 0o555)
        try:
            yield src
        finally:
            os.chmod(src, 0o755)
            os.chmod(src / DB_NAME, 0o644)


def test_opening_a_current_store_writes_nothing(labelled: Workspace) -> None:
    """Opening never takes the write lock (so it works on read-only media and a full disk, and does not wait
    behind another process's long write): it opens while another connection holds that lock."""
    import threading

    root = labelled.root
    labelled.store.close()
    writer = sqlite3.connect(root / DB_NAME, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, held by "another process"
    opened: list[list[str]] = []

    def open_twice() -> None:
        Store(root / DB_NAME).close()
        ws = Workspace.open(root)
        opened.append(ws.store.class_names())
        ws.store.close()

    t = threading.Thread(target=open_twice, daemon=True)
    t.start()
    t.join(10)
    while_locked = list(opened)
    writer.execute("ROLLBACK")
    writer.close()
    t.join(60)
    assert while_locked == [["cat", "dog"]], opened


def test_read_only_workspace_opens_for_reading(read_only_ws: Path) -> None:
    ws = Workspace.open(read_only_ws)
    try:
        assert ws.read_only and "read-only" in ws.read_only_reason
        assert ws.store.class_names() == ["cat", "dog"]
        assert not str(ws.thumbs).startswith(str(read_only_ws))  # thumbnails are cached elsewhere
        with pytest.raises(ReadOnlyStore, match="nothing was written"):
            ws.store.add_classes(["bird"])
    finally:
        ws.store.close()


@pytest.mark.slow
def test_cli_on_read_only_workspace(read_only_ws: Path, tmp_path: Path) -> None:
    r = _cli("ingest", str(read_only_ws), str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workspace is read-only: ")
    r = _cli("doctor", str(read_only_ws))
    assert r.returncode == 0, r.stderr
    assert "read-only workspace" in r.stdout and "healthy" in r.stdout
    r = _cli("doctor", "--repair", str(read_only_ws))
    assert r.returncode == 1 and r.stderr.startswith("workspace is read-only: ")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs (root only)."""
    if not IS_ROOT:
        pytest.skip("a full disk is simulated with a small tmpfs mount (root only)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount tmpfs here")
    try:
        yield mnt
    finally:
        _umount(mnt)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_full_disk_open_and_commit_say_nothing_was_written(full_disk: Path) -> None:
    ws = Workspace.create(full_disk / "ws")
    ws.store.add_classes(["cat"])
    old = full_disk / "old"
    ws.store.close()
    shutil.copytree(ws.root, old)
    con = sqlite3.connect(old / DB_NAME)  # an older schema: opening it must migrate (write)
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    ws = Workspace.open(full_disk / "ws")
    ws.store.class_names()  # WAL and shared memory exist before the disk fills
    _fill(full_disk)
    reopened = Workspace.open(full_disk / "ws")  # a current store opens on a full disk: nothing to write
    assert reopened.store.class_names() == ["cat"]
    with pytest.raises(StoreFull, match="nothing was written"):
        ws.store.add_classes([f"class-{i}-" + "x" * 200 for i in range(3000)])
    assert ws.store.class_names() == ["cat"]
    with pytest.raises(StoreError, match="nothing was written"):
        Workspace.open(old)
    (full_disk / "filler").unlink()
    assert Workspace.open(old).store.meta("schema_version") == "2"


def test_app_on_read_only_workspace_shows_a_banner(read_only_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import open_page

    monkeypatch.setenv("CURATION_WORKSPACE", str(read_only_ws))
    at = open_page(no_errors=True)
    assert any("Read-only workspace" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not any(b.label == "Create / open" for b in at.button)


def test_app_on_an_unopenable_workspace_offers_no_create_form(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import open_page

    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / DB_NAME).write_bytes(b"this is not a database, but it is someone's file" * 100)
    monkeypatch.setenv("CURATION_WORKSPACE", str(tmp_path / "ws"))
    at = open_page(no_errors=False)
    assert at.error and "cannot be opened" in at.error[0].value
    assert not any(b.label == "Create / open" for b in at.button) and not at.info
