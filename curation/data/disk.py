"""What a disk allows a SQLite store: whether an error means "full" or "read-only", and read-only connections."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path


def write_problem(exc: BaseException) -> str:
    """``"full"``, ``"read-only"`` or ``""``: what an SQLite or OS error says about writing."""
    if isinstance(exc, OSError):
        return {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only",
                errno.EACCES: "read-only", errno.EPERM: "read-only"}.get(exc.errno or 0, "")
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "database or disk is full" in text:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text or name == "SQLITE_CANTOPEN" \
            or "unable to open database file" in text:
        return "read-only"
    return ""


def unwritable_reason(db: Path) -> str:
    """Why the store file ``db`` or its folder cannot be written (SQLite writes its WAL beside it), or ""."""
    folder = db.parent
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is read-only"
    if db.exists() and not os.access(db, os.W_OK):
        return f"the file {db} is read-only"
    return ""


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; ``immutable`` when SQLite cannot even create its shared-memory file beside it."""
    uri = path.resolve().as_uri()
    con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError:
        con.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
