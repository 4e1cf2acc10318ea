"""atomic_write: unique temporary names, all-or-nothing replacement, fsync of file and folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curation.data import atomic
from curation.data.atomic import atomic_write


def test_bytes_text_and_writer(tmp_path: Path) -> None:
    assert atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "t.txt", "héllo").read_text() == "héllo"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.arange(5))

    np.testing.assert_array_equal(np.load(atomic_write(tmp_path / "x.npy", write)), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "t.txt", "x.npy"]  # no temporary left


def test_new_files_get_the_usual_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    assert (atomic_write(tmp_path / "shared.html", "x").stat().st_mode & 0o777) == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    dest = atomic_write(tmp_path / "f.json", "old")

    def half(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(dest, half)
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_file_and_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    atomic_write(tmp_path / "f", b"x")
    assert len(synced) == 2  # the file before the rename, the folder after it


_WRITER = """
import sys
from curation.data.atomic import atomic_write
path, tag = sys.argv[1], sys.argv[2]
for i in range(200):
    atomic_write(path, (tag * 4096).encode())
"""


def test_two_processes_writing_one_key_never_mix(tmp_path: Path) -> None:
    """With a fixed ``.tmp`` name two writers share one temporary file and a reader can see a torn mix."""
    dest = tmp_path / "key.bin"
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(dest), tag], cwd=root) for tag in "ab"]
    seen = set()
    while any(p.poll() is None for p in procs):
        if dest.exists():
            data = dest.read_bytes()
            seen.add((len(data), len(set(data))))
    assert all(p.wait() == 0 for p in procs)
    assert seen <= {(4096, 1)} and len(set(dest.read_bytes())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["key.bin"]
