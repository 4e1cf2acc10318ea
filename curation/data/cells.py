"""Label batches as set operations inside SQLite, and an in-memory columnar copy of the label projection.

The store's write path used to build Python rows per cell and scan the projection; here a batch's cells go into a
temporary table in one statement (``json_each``), and the events and the projection are written with
``INSERT ... SELECT``, so a one-sample action costs a few primary-key seeks and relabelling a million samples stays
in SQLite's C loops. :class:`Projection` keeps a dense ``int8`` matrix of the labels per process, brought up to
date by replaying only the events after the last one it saw (the event log is append-only), so reading the labels
of a million samples costs a copy, not a query.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import numpy as np

log = logging.getLogger(__name__)

DENSE_LIMIT = 512 * 2**20
"""Largest projection kept in memory (bytes of the (max sample id + 1, classes) int8 matrix); bigger workspaces
read the labels from SQLite on every call."""
REPLAY_LIMIT = 200_000
"""Above this many new events the in-memory copy is reloaded from the projection instead of replaying them."""


def _json_ints(a: np.ndarray) -> str:
    return json.dumps(np.asarray(a, np.int64).ravel().tolist())


def load_ids(con: sqlite3.Connection, sample_ids: np.ndarray) -> None:
    """Fill the temporary table ``_ids(id)`` with these sample ids (one statement)."""
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
    con.execute("DELETE FROM _ids")
    con.execute("INSERT OR IGNORE INTO _ids SELECT value FROM json_each(?)", (_json_ints(sample_ids),))


def load_cells(con: sqlite3.Connection, s: np.ndarray, c: np.ndarray, st: np.ndarray) -> None:
    """Fill the temporary table ``_cells(s, c, st)`` with a batch's cells; a cell listed twice keeps its last state.

    Parameters
    ----------
    s, c, st : (M,) int64 sample ids, class ids and states.
    """
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _cells (s INTEGER NOT NULL, c INTEGER NOT NULL, "
                "st INTEGER NOT NULL, PRIMARY KEY (s, c)) WITHOUT ROWID")
    con.execute("DELETE FROM _cells")
    if s.size == 0:
        return
    if (c == c[0]).all() and (st == st[0]).all():  # the common bulk case: one class, one state
        con.execute("INSERT OR REPLACE INTO _cells SELECT value, ?, ? FROM json_each(?)",
                    (int(c[0]), int(st[0]), _json_ints(s)))
    else:
        triples = json.dumps(np.stack([s, c, st], 1).astype(np.int64).tolist())
        con.execute("INSERT OR REPLACE INTO _cells SELECT value->>0, value->>1, value->>2 FROM json_each(?)",
                    (triples,))


def add_exclusive_clears(con: sqlite3.Connection) -> None:
    """For each sample set positive in ``_cells``, clear its other current positives (cells given explicitly keep
    their state): single-label workspaces hold one positive per sample."""
    con.execute("INSERT OR IGNORE INTO _cells SELECT l.sample_id, l.class_id, 0 FROM "
                "(SELECT DISTINCT s FROM _cells WHERE st=1) p CROSS JOIN labels l ON l.sample_id=p.s "
                "WHERE l.state=1")


def append_batch(con: sqlite3.Connection, *, source: str, actor: str, note: str, undoes: int | None = None,
                 skip_noop: bool = True) -> int | None:
    """Write ``_cells`` as one batch: its events (with each cell's previous state) and the projection.

    Parameters
    ----------
    skip_noop : leave out cells already in their state (no batch at all when none is left).

    Returns
    -------
    The batch id, or None when no event was written.
    """
    b = con.execute("INSERT INTO batches(time, actor, source, note, undoes, n_events) VALUES (?,?,?,?,?,0)",
                    (time.time(), actor, source, note, undoes))
    batch_id = int(b.lastrowid)
    first = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
    cond = "WHERE x.st != COALESCE(l.state, 0)" if skip_noop else ""
    n = con.execute("INSERT INTO events(batch_id, sample_id, class_id, state, prev_state) "
                    "SELECT ?, x.s, x.c, x.st, COALESCE(l.state, 0) FROM _cells x LEFT JOIN labels l "
                    f"ON l.sample_id=x.s AND l.class_id=x.c {cond} ORDER BY x.s, x.c", (batch_id,)).rowcount
    if n <= 0:
        con.execute("DELETE FROM batches WHERE id=?", (batch_id,))
        return None
    # an upsert updates the cells in place (INSERT OR REPLACE would delete and re-insert each one)
    con.execute("INSERT INTO labels(sample_id, class_id, state, event_id) "
                "SELECT sample_id, class_id, state, id FROM events WHERE id > ? ORDER BY sample_id, class_id "
                "ON CONFLICT(sample_id, class_id) DO UPDATE SET state=excluded.state, event_id=excluded.event_id",
                (first,))
    con.execute("UPDATE batches SET n_events=? WHERE id=?", (n, batch_id))
    return batch_id


def undo_cells(con: sqlite3.Connection, batch_id: int, *, single: bool) -> int:
    """Fill ``_cells`` with the inverse of a batch, leaving out samples labelled again since it.

    A sample counts as labelled again when one of the batch's cells differs now from the state the batch wrote;
    with ``single`` also when a later event changed any class of it (compared with its state right after the
    batch), so an undo never leaves two positives on a sample.

    Returns
    -------
    The number of samples left out.
    """
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _cells (s INTEGER NOT NULL, c INTEGER NOT NULL, "
                "st INTEGER NOT NULL, PRIMARY KEY (s, c)) WITHOUT ROWID")
    con.execute("DELETE FROM _cells")
    con.execute("INSERT OR REPLACE INTO _cells SELECT sample_id, class_id, prev_state FROM events "
                "WHERE batch_id=? ORDER BY id", (int(batch_id),))
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _moved (id INTEGER PRIMARY KEY)")
    con.execute("DELETE FROM _moved")
    con.execute("INSERT OR IGNORE INTO _moved SELECT e.sample_id FROM events e LEFT JOIN labels l "
                "ON l.sample_id=e.sample_id AND l.class_id=e.class_id "
                "WHERE e.batch_id=? AND COALESCE(l.state, 0) != e.state", (int(batch_id),))
    if single:
        last = con.execute("SELECT MAX(id) FROM events WHERE batch_id=?", (int(batch_id),)).fetchone()[0]
        # each cell's first event after the batch carries (as prev_state) its state right after the batch
        con.execute("INSERT OR IGNORE INTO _moved SELECT f.sample_id FROM (SELECT sample_id, class_id, prev_state, "
                    "MIN(id) FROM events WHERE id > ? AND sample_id IN (SELECT s FROM _cells) "
                    "GROUP BY sample_id, class_id) f LEFT JOIN labels l ON l.sample_id=f.sample_id AND "
                    "l.class_id=f.class_id WHERE COALESCE(l.state, 0) != f.prev_state", (int(last or 0),))
    moved = int(con.execute("SELECT COUNT(*) FROM _moved").fetchone()[0])
    if moved:
        con.execute("DELETE FROM _cells WHERE s IN (SELECT id FROM _moved)")
    return moved


def cells_count(con: sqlite3.Connection) -> int:
    return int(con.execute("SELECT COUNT(*) FROM _cells").fetchone()[0])


def read_cells(con: sqlite3.Connection, where: str = "state != 0", params: tuple = ()) -> np.ndarray:
    """(M, 3) int64 [sample, class, state] of the projection's rows matching ``where``, read packed (one integer a
    row, split with numpy)."""
    row = con.execute("SELECT group_concat((sample_id << 24) | (class_id << 2) | (state + 1)) FROM labels "
                      f"WHERE {where}", params).fetchone()
    if not row or row[0] is None:
        return np.zeros((0, 3), np.int64)
    packed = np.array(row[0].split(","), np.int64)
    return np.stack([packed >> 24, (packed >> 2) & (2**22 - 1), (packed & 3) - 1], 1)


class Projection:
    """A dense int8 copy of the label projection, rows indexed by sample id, columns by class (ascending id).

    :meth:`matrix` brings it up to date first: the events after the last one it saw are replayed onto it (a
    rowid range read), or, when the log no longer continues the history it saw (a restored backup) or too many
    events arrived, it is reloaded. Thread-safe; one per :class:`curation.data.store.Store`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mat: np.ndarray | None = None
        self._class_ids = np.zeros(0, np.int64)
        self._last = 0
        self._batch: tuple[int, float] = (0, 0.0)

    def _head(self, con: sqlite3.Connection) -> tuple[int, tuple[int, float]]:
        last = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
        row = con.execute("SELECT id, time FROM batches ORDER BY id DESC LIMIT 1").fetchone()
        return last, (int(row[0]), float(row[1])) if row else (0, 0.0)

    def matrix(self, con: sqlite3.Connection, class_ids: np.ndarray) -> np.ndarray | None:
        """The current (max sample id + 1, len(class_ids)) int8 label matrix (read-only view), or None when it
        would exceed :data:`DENSE_LIMIT`. Call inside a read transaction for a consistent view."""
        with self._lock:
            max_sid = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()[0])
            if (max_sid + 1) * max(1, len(class_ids)) > DENSE_LIMIT:
                return None
            last, batch = self._head(con)
            same_classes = (len(class_ids) >= len(self._class_ids)
                            and np.array_equal(class_ids[:len(self._class_ids)], self._class_ids))
            continues = False
            if self._mat is not None and same_classes and self._last <= last:
                row = con.execute("SELECT time FROM batches WHERE id=?", (self._batch[0],)).fetchone()
                continues = self._batch == (0, 0.0) or (row is not None and float(row[0]) == self._batch[1])
            if not continues or last - self._last > REPLAY_LIMIT:
                self._reload(con, class_ids, max_sid)
            else:
                self._grow(class_ids, max_sid)
                if last > self._last:
                    # copy on write: a reader in another thread may still be copying rows out of the old one
                    self._mat = self._mat.copy()
                    ev = np.array(con.execute("SELECT sample_id, class_id, state FROM events WHERE id > ? "
                                              "ORDER BY id", (self._last,)).fetchall(), np.int64).reshape(-1, 3)
                    self._scatter(ev, keep_last=True)
            self._last, self._batch = last, batch
            view = self._mat.view()
            view.setflags(write=False)
            return view

    def _grow(self, class_ids: np.ndarray, max_sid: int) -> None:
        assert self._mat is not None
        rows, cols = self._mat.shape
        if max_sid + 1 > rows or len(class_ids) > cols:
            grown = np.zeros((max(rows, max_sid + 1), len(class_ids)), np.int8)
            grown[:rows, :cols] = self._mat
            self._mat = grown
        self._class_ids = np.asarray(class_ids, np.int64).copy()

    def _reload(self, con: sqlite3.Connection, class_ids: np.ndarray, max_sid: int) -> None:
        self._mat = np.zeros((max_sid + 1, len(class_ids)), np.int8)
        self._class_ids = np.asarray(class_ids, np.int64).copy()
        self._scatter(read_cells(con), keep_last=False)

    def _scatter(self, cells: np.ndarray, *, keep_last: bool) -> None:
        if cells.size == 0 or self._mat is None:
            return
        if keep_last:  # the newest event of each cell wins
            key = cells[:, 0] * (2**22) + cells[:, 1]
            _, pos = np.unique(key[::-1], return_index=True)
            cells = cells[len(cells) - 1 - pos]
        k = np.searchsorted(self._class_ids, cells[:, 1])
        k = np.clip(k, 0, max(0, len(self._class_ids) - 1))
        ok = (len(self._class_ids) > 0) & (cells[:, 0] < len(self._mat))
        ok &= self._class_ids[k] == cells[:, 1] if len(self._class_ids) else ok
        self._mat[cells[ok, 0], k[ok]] = cells[ok, 2]
