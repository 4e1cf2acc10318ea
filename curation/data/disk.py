"""What a disk allows the label store: its errors (read-only, full), what an error means, read-only connections."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path


class StoreError(RuntimeError):
    """A problem with the label store that the user can act on (the message says how)."""


class ReadOnlyStore(StoreError):
    """A write to a store that cannot be written (read-only file, folder or mount); nothing was written."""


class StoreFull(StoreError):
    """A write refused because the disk is full; nothing was written."""


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


READ_ONLY_COMMANDS = frozenset({"doctor", "export", "evaluate", "list", "jobs", "backup"})
"""CLI commands that only read a workspace: they run on a read-only one (``doctor --repair`` excepted)."""


DISK_ERRORS = (OSError, sqlite3.Error)
"""What a disk refusing a write raises below the store's own errors (see :func:`disk_message`)."""


def check_writable(command: str, workspace: Path | str | None, *, repair: bool = False,
                   db_name: str = "curation.db") -> None:
    """Refuse a writing CLI command on a workspace that cannot be written, before it does any work.

    Raises
    ------
    ReadOnlyStore saying why and which commands still work.
    """
    if workspace is None or (command in READ_ONLY_COMMANDS and not repair):
        return
    db = Path(workspace).expanduser() / db_name
    why = unwritable_reason(db) if db.exists() else ""
    if why:
        raise ReadOnlyStore(f"{why}; nothing was written. Copy it to a writable folder to change it (read-only "
                            f"commands work here: {', '.join(sorted(READ_ONLY_COMMANDS))}).")


def disk_message(exc: BaseException) -> str:
    """The one line the CLI prints for a write refused by the disk (read-only, full), or "" for other errors."""
    if isinstance(exc, ReadOnlyStore):
        return f"workspace is read-only: {exc}"
    if isinstance(exc, (sqlite3.Error, OSError)) and not isinstance(exc, FileNotFoundError):
        kind = write_problem(exc)
        if kind == "read-only":
            return f"workspace is read-only: {exc}; nothing was written."
        if kind == "full":
            return f"error: {exc}. The disk is full: nothing was written; free some space and retry."
    return ""
