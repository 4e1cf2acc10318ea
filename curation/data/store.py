"""SQLite label store (WAL): samples, classes, append-only label events, runs, jobs, reviews.

One cohesive module: the SQLite schema and every transaction on it (events, projection, undo, runs, jobs,
reviews); the words it checks come from :mod:`curation.core.vocab`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from curation.core.validate import check_choice
from curation.core.vocab import POSITIVE, QUEUES, REJECTED, SOURCES, STATES, TASKS, UNKNOWN, VERDICTS
from curation.data import cells as _cells
from curation.data.atomic import atomic_write
from curation.data.disk import ReadOnlyStore, StoreError, StoreFull, unwritable_reason, write_problem  # noqa: F401 - the errors and checks are re-exported
from curation.data.disk import connect_read_only as _connect_read_only

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SPLITS = ("train", "val", "test", "")
FEW_SAMPLES = 5_000
"""Up to this many ids, ``label_matrix`` reads their cells by key instead of scanning every label."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    root_id INTEGER NOT NULL REFERENCES roots(id),
    path TEXT NOT NULL,
    sha1 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    split TEXT NOT NULL DEFAULT '',
    missing INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL,
    UNIQUE (root_id, path)
);
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    undoes INTEGER REFERENCES batches(id),
    n_events INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    sample_id INTEGER NOT NULL,
    class_id INTEGER NOT NULL,
    state INTEGER NOT NULL,
    prev_state INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_batch ON events(batch_id);
CREATE TABLE IF NOT EXISTS labels (
    sample_id INTEGER NOT NULL,
    class_id INTEGER NOT NULL,
    state INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (sample_id, class_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    last_event_id INTEGER NOT NULL,
    encoder TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    duration REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    artifact TEXT NOT NULL DEFAULT '',
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    heartbeat REAL,
    error TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    sample_id INTEGER NOT NULL,
    queue TEXT NOT NULL,
    verdict TEXT NOT NULL,
    run_id INTEGER,
    batch_id INTEGER,
    actor TEXT NOT NULL DEFAULT 'user'
);
CREATE INDEX IF NOT EXISTS reviews_sample ON reviews(sample_id);
CREATE INDEX IF NOT EXISTS samples_present ON samples(missing, id);
"""



class Review:
    """Review rows to record: the samples, the queue they were judged in and the verdict (validated here).

    Parameters
    ----------
    sample_ids : (M,) int sample ids.
    queue : a key of :data:`curation.core.vocab.QUEUES`.
    verdict : a key of :data:`curation.core.vocab.VERDICTS`.
    run_id : the training run whose prediction was judged, if any.
    """

    def __init__(self, sample_ids: Sequence[int] | np.ndarray, *, queue: str, verdict: str,
                 run_id: int | None = None) -> None:
        check_choice("review queue", queue, QUEUES)
        check_choice("verdict", verdict, VERDICTS)
        self.sample_ids = np.asarray(sample_ids, np.int64).ravel()
        self.queue, self.verdict, self.run_id = queue, verdict, None if run_id is None else int(run_id)


_SCHEMA_OBJECTS = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", _SCHEMA))


class Store:
    """The workspace's SQLite database.

    Every public method runs in its own transaction; writes take the write lock up front
    (``BEGIN IMMEDIATE``) and are retried when another process holds it, so concurrent
    sessions and the CLI never surface "database is locked".

    Parameters
    ----------
    path : Path
        The ``curation.db`` file. Created (with the current schema) when ``create`` is true.
    create : bool
        Create the database when missing.
    """

    def __init__(self, path: Path | str, *, create: bool = False, read_only: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise StoreError(f"No label store at {self.path}: run `python -m curation init {self.path.parent}`.")
        self._local = threading.local()
        self._projection = _cells.Projection()
        self._ids_cache: dict[bool, tuple[tuple, np.ndarray]] = {}
        self.read_only_reason = "" if not read_only else "opened read-only on request"
        if not read_only and self.path.exists():
            self.read_only_reason = unwritable_reason(self.path)
        try:
            if not self.read_only:
                self._prepare()
            else:
                self._check_version()
        except sqlite3.OperationalError as exc:
            self.close()
            problem = write_problem(exc)
            if problem == "full":
                raise StoreFull(f"{self.path} could not be opened: the disk is full ({exc}); nothing was written. "
                                "Free some space and retry.") from exc
            if problem == "read-only" and self.path.exists() and not create:
                self.read_only_reason = f"{exc}"
                self._check_version()
            else:
                raise StoreError(f"{self.path} cannot be opened ({exc}); nothing was written. Check that the "
                                 "folder exists and is readable, then retry.") from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed
            self.close()
            raise StoreError(f"{self.path} cannot be opened as a label store ({exc}): restore a backup with "
                             f"`python -m curation restore {self.path.parent} BACKUP_FILE`.") from exc

    @property
    def read_only(self) -> bool:
        """True when the store cannot be written (its file or folder is read-only): reads work, writes raise
        :class:`ReadOnlyStore`."""
        return bool(self.read_only_reason)

    def _prepare(self) -> None:
        """Create or migrate the schema, writing only when something is missing or the version changes (so
        opening a current store on a full disk or a read-only mount writes nothing)."""
        con = self._con()
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
        version = None
        if "meta" in have:
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            _migrate(con, version, self.path)  # raises: written by a newer curation
        if version == SCHEMA_VERSION and _SCHEMA_OBJECTS <= have:
            return
        con.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        with self._write() as con:
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                con.execute("INSERT OR IGNORE INTO meta VALUES ('task', 'single')")
                con.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
            else:
                _migrate(con, int(row[0]), self.path)

    def _check_version(self) -> None:
        """A read-only store must already have the current schema (it cannot be migrated)."""
        row = self._con().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                _migrate(self._con(), version, self.path)  # raises with what to do
            raise ReadOnlyStore(f"{self.path} is read-only ({self.read_only_reason}) and uses the older schema "
                                f"{version}; open it once where it can be written to upgrade it.")

    # ------------------------------------------------------------------ connection
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None or getattr(self._local, "pid", None) != os.getpid():
            if self.read_only:
                con = _connect_read_only(self.path)
            else:
                con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")  # an acknowledged label survives a power cut
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA temp_store=MEMORY")  # a batch's cells sit in temporary tables: keep them off disk
            con.execute("PRAGMA cache_size=-65536")  # 64 MB of pages: bulk batches touch the projection's B-tree
            self._local.con, self._local.pid = con, os.getpid()
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, retried while another writer holds the lock."""
        if self.read_only:
            raise ReadOnlyStore(f"{self.path.parent} cannot be written ({self.read_only_reason}); nothing was "
                                "written. Browse, search and export elsewhere work; to change labels, copy the "
                                "workspace to a writable folder.")
        con = self._con()
        for attempt in range(200):
            try:
                con.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    if write_problem(exc) == "full":
                        raise StoreFull(f"Could not save the change to {self.path}: the disk is full ({exc}); "
                                        "nothing was written. Free some space and retry.") from exc
                    if write_problem(exc) == "read-only":
                        raise ReadOnlyStore(f"{self.path.parent} cannot be written ({exc}); nothing was "
                                            "written.") from exc
                    raise
                time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * (0.5 + random.random()))
        else:
            raise StoreError(f"{self.path} stayed locked by another process for minutes; close it and retry.")
        try:
            yield con
        except sqlite3.OperationalError as exc:
            if con.in_transaction:  # a failed statement may have rolled back already
                con.execute("ROLLBACK")
            if write_problem(exc) == "full":
                raise StoreFull(f"Could not save the change to {self.path}: the disk is full ({exc}); nothing "
                                "was written. Free some space and retry.") from exc
            raise
        except BaseException:
            if con.in_transaction:  # a failed statement may have rolled back already
                con.execute("ROLLBACK")
            raise
        try:
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            kind = StoreFull if write_problem(exc) == "full" else StoreError
            raise kind(f"Could not save the change to {self.path} ({exc}); nothing was written. Check "
                       "that the disk has free space and the folder is writable, then retry.") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._con().execute(sql, params).fetchall()

    def _frame(self, sql: str, params: Sequence[Any] = (), index: str | None = None) -> pd.DataFrame:
        cur = self._con().execute(sql, params)
        cols = [c[0] for c in cur.description]
        df = pd.DataFrame.from_records(cur.fetchall(), columns=cols)
        return df.set_index(index) if index else df

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # ------------------------------------------------------------------ meta
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return row[0][0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def update_meta(self, key: str, update: Callable[[str | None], str]) -> str:
        """Read-modify-write one meta value atomically (two processes updating it never lose a change).

        Parameters
        ----------
        key : the meta key.
        update : ``update(old) -> new``, called inside the write transaction with the current value
            (None when absent); it must not touch the store itself.

        Returns
        -------
        The value written.
        """
        with self._write() as con:
            row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            new = str(update(row[0] if row else None))
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, new))
        return new

    @property
    def task(self) -> str:
        """``"single"`` (exactly one positive class per labelled sample) or ``"multi"``."""
        return self.meta("task", "single") or "single"

    def set_task(self, task: str) -> None:
        if task not in TASKS:
            raise StoreError(f"Task must be one of {TASKS}, not {task!r}.")
        if task == "single" and self.task == "multi":
            many = self._read("SELECT COUNT(*) FROM (SELECT sample_id FROM labels WHERE state=1 "
                              "GROUP BY sample_id HAVING COUNT(*) > 1)")[0][0]
            if many:
                raise StoreError(f"{many} samples carry several labels; resolve them before switching to single-label.")
        self.set_meta("task", task)

    # ------------------------------------------------------------------ roots & samples
    def root_id(self, root: Path | str) -> int:
        """Id of an image root folder (absolute path), registering it when new."""
        root = str(Path(root).resolve())
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO roots(path) VALUES (?)", (root,))
            return con.execute("SELECT id FROM roots WHERE path=?", (root,)).fetchone()[0]

    def roots(self) -> dict[int, Path]:
        return {i: Path(p) for i, p in self._read("SELECT id, path FROM roots")}

    def add_samples(self, root_id: int, records: pd.DataFrame, *, labels: Sequence[Sequence[str]] | None = None,
                    actor: str = "import", note: str = "",
                    rejected: Sequence[Sequence[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Insert samples and their imported labels in one transaction; known paths are left untouched.

        Parameters
        ----------
        root_id : id of the image root (``root_id(folder)``); ``path`` is relative to it.
        records : DataFrame with columns path, sha1, bytes, width, height and optional split.
        labels : one list of class names per record (empty list = unlabelled). Classes are created
            as needed. Labels are imported (source "import", one batch) only for *new* samples, so
            re-ingesting a folder never touches labels people have edited.
        rejected : optional, one list of class names per record that a person ruled out (an exported
            ``rejected`` column); imported in the same batch, new samples only.

        Returns
        -------
        ids : (len(records),) int64, the id of each record's sample (new or existing).
        is_new : (len(records),) bool, whether the record created its sample.
        """
        if len(records) == 0:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        recs = records.reset_index(drop=True).copy()
        if "split" not in recs:
            recs["split"] = ""
        recs["split"] = recs["split"].fillna("").astype(str)
        paths = recs["path"].astype(str).tolist()
        now = time.time()
        rows = list(zip([root_id] * len(recs), paths, recs["sha1"].astype(str),
                        recs["bytes"].astype(int).tolist(), recs["width"].astype(int).tolist(),
                        recs["height"].astype(int).tolist(), recs["split"], [now] * len(recs)))
        with self._write() as con:
            before = dict(con.execute("SELECT path, id FROM samples WHERE root_id=?", (root_id,)).fetchall())
            con.executemany("INSERT OR IGNORE INTO samples(root_id, path, sha1, bytes, width, height, split, added) "
                            "VALUES (?,?,?,?,?,?,?,?)", rows)
            known = dict(con.execute("SELECT path, id FROM samples WHERE root_id=?", (root_id,)).fetchall())
            path_series = pd.Series(paths)
            ids = path_series.map(known).to_numpy(np.int64)
            is_new = ~path_series.isin(before.keys()).to_numpy()
            # a path listed twice in one call is new only the first time
            _, first = np.unique(ids, return_index=True)
            dup = np.ones(len(ids), bool)
            dup[first] = False
            is_new &= ~dup
            if labels is not None or rejected is not None:
                given = [(labels, POSITIVE), (rejected, REJECTED)]
                if any(x is not None and len(x) != len(recs) for x, _ in given):
                    raise StoreError("labels must hold one list of class names per record.")
                pairs = [(i, validate_class_name(n), state) for x, state in given if x is not None
                         for i, names in enumerate(x) if is_new[i] for n in names]
                if pairs:
                    names = sorted({n for _, n, _ in pairs})
                    con.executemany("INSERT OR IGNORE INTO classes(name) VALUES (?)", [(n,) for n in names])
                    cid = dict(con.execute("SELECT name, id FROM classes").fetchall())
                    s = ids[[i for i, _, _ in pairs]]
                    c = np.array([cid[n] for _, n, _ in pairs], np.int64)
                    st = np.array([state for _, _, state in pairs], np.int64)
                    _cells.load_cells(con, s, c, st)
                    _cells.append_batch(con, source="import", actor=actor,
                                        note=note or f"imported labels of {int(is_new.sum())} new samples")
        return ids, is_new

    def set_missing(self, sample_ids: Sequence[int], missing: bool = True) -> None:
        """Flag samples whose files vanished (or came back); labels are kept."""
        with self._write() as con:
            con.executemany("UPDATE samples SET missing=? WHERE id=?", [(int(missing), int(i)) for i in sample_ids])

    def set_split(self, sample_ids: Sequence[int], split: str) -> None:
        if split not in SPLITS:
            raise StoreError(f"Split must be one of {SPLITS}, not {split!r}.")
        with self._write() as con:
            con.executemany("UPDATE samples SET split=? WHERE id=?", [(split, int(i)) for i in sample_ids])

    def samples(self, *, include_missing: bool = False) -> pd.DataFrame:
        """All samples, indexed by id (ascending), with root path joined in as ``root``."""
        where = "" if include_missing else "WHERE s.missing=0"
        return self._frame("SELECT s.id, s.root_id, r.path AS root, s.path, s.sha1, s.bytes, s.width, s.height, "
                           f"s.split, s.missing, s.added FROM samples s JOIN roots r ON r.id=s.root_id {where} "
                           "ORDER BY s.id", index="id")

    def sample_ids(self, *, include_missing: bool = False) -> np.ndarray:
        """(N,) int64 ids of the samples, ascending."""
        # samples are never deleted: the largest id and the missing ones (an index range) tell the set apart
        token = (include_missing, *self._read("SELECT (SELECT COALESCE(MAX(id), 0) FROM samples), COUNT(*), "
                                              "COALESCE(SUM(id), 0) FROM samples WHERE missing=1")[0])
        cached = self._ids_cache.get(include_missing)
        if cached is None or cached[0] != token:
            where = "" if include_missing else "WHERE missing=0"
            row = self._read(f"SELECT group_concat(id) FROM (SELECT id FROM samples {where} ORDER BY id)")
            ids = np.array(row[0][0].split(","), np.int64) if row and row[0][0] else np.zeros(0, np.int64)
            cached = self._ids_cache[include_missing] = (token, ids)
        return cached[1].copy()

    def sample_count(self) -> tuple[int, int]:
        """(number of present samples, largest present id or 0): a cheap token of the sample set."""
        n, last = self._read("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM samples WHERE missing=0")[0]
        return int(n), int(last)

    def sample_path(self, sample_id: int) -> Path:
        row = self._read("SELECT r.path, s.path FROM samples s JOIN roots r ON r.id=s.root_id WHERE s.id=?",
                         (int(sample_id),))
        if not row:
            raise StoreError(f"No sample with id {sample_id}.")
        return Path(row[0][0]) / row[0][1]

    # ------------------------------------------------------------------ classes
    def add_classes(self, names: Sequence[str], prompts: Sequence[str] | None = None) -> list[int]:
        """Create classes (names are stripped; existing names are kept) and return their ids."""
        clean = [validate_class_name(n) for n in names]
        prompts = list(prompts) if prompts is not None else [""] * len(clean)
        with self._write() as con:
            con.executemany("INSERT OR IGNORE INTO classes(name, prompt) VALUES (?, ?)", list(zip(clean, prompts)))
            ids = dict(con.execute("SELECT name, id FROM classes").fetchall())
        return [ids[n] for n in clean]

    def set_prompt(self, class_id: int, prompt: str) -> None:
        with self._write() as con:
            con.execute("UPDATE classes SET prompt=? WHERE id=?", (prompt, int(class_id)))

    def classes(self) -> pd.DataFrame:
        """Classes indexed by id (ascending): name, prompt. Column ``k`` of label matrices is row ``k`` here."""
        return self._frame("SELECT id, name, prompt FROM classes ORDER BY id", index="id")

    def class_names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM classes ORDER BY id")]

    def class_id(self, name: str) -> int:
        row = self._read("SELECT id FROM classes WHERE name=?", (name.strip(),))
        if not row:
            raise StoreError(f"Unknown class {name!r}; known classes: {', '.join(self.class_names()) or 'none'}. "
                             "Add it first (`add_classes`, or the class box in the app).")
        return row[0][0]

    # ------------------------------------------------------------------ labels
    def apply(self, sample_ids: Sequence[int] | np.ndarray, class_ids: Sequence[int] | np.ndarray,
              states: Sequence[int] | np.ndarray | int, *, source: str, actor: str = "user",
              note: str = "", exclusive: bool | None = None, review: Review | None = None) -> int | None:
        """Append one batch of label events and update the projection, in one transaction.

        Parameters
        ----------
        sample_ids, class_ids : (M,) int arrays, the cells to change (M may be 0 with a ``review``).
        states : (M,) int array or one int, each POSITIVE, UNKNOWN or REJECTED.
        source : one of SOURCES.
        exclusive : when true (the default for single-label workspaces), setting a class positive
            turns the sample's other positive classes to UNKNOWN within the same batch.
        review : review rows written in the same transaction, pointing at the batch (or at none when no
            label changed): a decision and its label changes land together or not at all.

        Returns
        -------
        The batch id, or None when nothing changed (no batch is written).
        """
        if source not in SOURCES:
            raise StoreError(f"Unknown event source {source!r}; use one of: {', '.join(SOURCES)}.")
        s = np.asarray(sample_ids, dtype=np.int64).ravel()
        c = np.asarray(class_ids, dtype=np.int64).ravel()
        if c.size == 1 and s.size > 1:
            c = np.full(s.size, c[0], np.int64)
        st = np.asarray(states, dtype=np.int64).ravel()
        if st.size == 1 and s.size > 1:
            st = np.full(s.size, st[0], np.int64)
        if not (s.size == c.size == st.size):
            raise StoreError("sample_ids, class_ids and states must have the same length.")
        if not np.isin(st, STATES).all():
            raise StoreError("Label states must be 1 (positive), 0 (unknown) or -1 (rejected).")
        if exclusive is None:
            exclusive = self.task == "single"
        with self._write() as con:
            known_c = np.array([r[0] for r in con.execute("SELECT id FROM classes")], np.int64)
            if c.size and not np.isin(c, known_c).all():
                raise StoreError(f"Unknown class ids {sorted(set(c[~np.isin(c, known_c)].tolist()))[:5]}.")
            batch = None
            if s.size:
                _cells.load_cells(con, s, c, st)  # set operations in SQLite: O(changed cells), not O(store)
                if exclusive and (st == POSITIVE).any():
                    _cells.add_exclusive_clears(con)  # other positives of those samples go back to unknown
                batch = _cells.append_batch(con, source=source, actor=actor, note=note)
            if review is not None:
                _insert_reviews(con, review, batch, actor)
            return batch

    def set_label(self, sample_ids: Sequence[int] | np.ndarray, class_id: int, *, source: str = "human",
                  actor: str = "user", note: str = "") -> int | None:
        """Make ``class_id`` positive on the samples (replacing the previous label in single-label tasks)."""
        return self.apply(sample_ids, [class_id], POSITIVE, source=source, actor=actor, note=note)

    def add_label(self, sample_ids: Sequence[int] | np.ndarray, class_id: int, *, source: str = "human",
                  actor: str = "user", note: str = "") -> int | None:
        """Make ``class_id`` positive on the samples and keep their other labels ("both valid").

        Only in multi-label workspaces: a single-label workspace holds one positive per sample."""
        if self.task == "single":
            raise StoreError("This workspace is single-label, so an image keeps one label; switch it to "
                             "multi-label (Home page, or `Store.set_task('multi')`) to add a second label.")
        return self.apply(sample_ids, [class_id], POSITIVE, source=source, actor=actor, note=note, exclusive=False)

    def clear_label(self, sample_ids: Sequence[int] | np.ndarray, class_id: int, *, source: str = "human",
                    actor: str = "user", note: str = "") -> int | None:
        """Return (sample, class) to UNKNOWN: nobody says either way."""
        return self.apply(sample_ids, [class_id], UNKNOWN, source=source, actor=actor, note=note)

    def reject_label(self, sample_ids: Sequence[int] | np.ndarray, class_id: int, *, source: str = "human",
                     actor: str = "user", note: str = "") -> int | None:
        """Record that a human says the class does *not* apply to the samples."""
        return self.apply(sample_ids, [class_id], REJECTED, source=source, actor=actor, note=note)

    def undo(self, batch_id: int, *, actor: str = "user") -> int:
        """Append the inverse of a batch: each of its cells goes back to its state before that batch.

        Later edits win: a sample with a cell that a later batch changed keeps its current labels, so
        undoing an old batch never overwrites newer work; in a single-label workspace a change to any
        class of the sample counts (so a sample never ends up with two labels). The undo's note counts
        those samples. A batch that is undone already (by an undo
        still in effect) is refused, so two windows undoing the same batch, or a stale page, cannot
        revert it twice. Undoing an undo batch redoes the original; after that it can be undone again.

        Returns
        -------
        The id of the undo batch.

        Raises
        ------
        StoreError when the batch does not exist, is undone already, or every one of its samples was
        labelled again since (nothing is changed then).
        """
        with self._write() as con:
            row = con.execute("SELECT source FROM batches WHERE id=?", (int(batch_id),)).fetchone()
            if row is None:
                raise StoreError(f"No batch {batch_id} to undo.")
            by = _live_undos(con).get(int(batch_id))
            if by is not None:
                raise StoreError(f"Batch {batch_id} is undone already (by batch {by}, perhaps from another window "
                                 f"or the command line): nothing to undo. To redo it, undo batch {by}.")
            moved = _cells.undo_cells(con, int(batch_id), single=self.task == "single")
            if _cells.cells_count(con) == 0:
                raise StoreError(f"Every sample of batch {batch_id} was labelled again after it, so undoing it would "
                                 "overwrite newer labels: nothing was changed. Undo the newer batches first.")
            note = f"undo of batch {batch_id}"
            if moved:
                note += f"; {moved} samples labelled again since kept their newer labels"
            batch = _cells.append_batch(con, source="undo", actor=actor, note=note, undoes=int(batch_id),
                                        skip_noop=False)
            assert batch is not None
            return batch

    def last_event_id(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    def samples_labelled_since(self, after_event: int, *, cap: int = 100_000) -> int:
        """Distinct samples with a label event after ``after_event``, counted over at most ``cap`` events (a rowid
        range, cheap however long the log); ``cap + 1`` means "more than ``cap``"."""
        n, seen = self._read("SELECT COUNT(DISTINCT sample_id), COUNT(*) FROM (SELECT sample_id FROM events "
                             "WHERE id > ? ORDER BY id LIMIT ?)", (int(after_event), int(cap) + 1))[0]
        return int(cap) + 1 if int(seen) > cap else int(n)

    def label_matrix(self, sample_ids: np.ndarray | None = None, *, upto_event: int | None = None) -> np.ndarray:
        """Current label states as a dense matrix.

        Parameters
        ----------
        sample_ids : (N,) int64, rows to return (default: ``sample_ids()``).
        upto_event : replay the event log up to this event id instead of reading the projection
            (the labels a run was trained on).

        Returns
        -------
        (N, K) int8 with POSITIVE / UNKNOWN / REJECTED; column k is the k-th class by id.
        """
        ids = self.sample_ids() if sample_ids is None else np.asarray(sample_ids, np.int64)
        class_ids = np.array([r[0] for r in self._read("SELECT id FROM classes ORDER BY id")], np.int64)
        if upto_event is None and sample_ids is not None and len(ids) <= FEW_SAMPLES:  # a page's few: by key
            cells = np.array(self._read("SELECT sample_id, class_id, state FROM labels WHERE state != 0 AND "
                                        "sample_id IN (SELECT value FROM json_each(?))",
                                        (json.dumps(ids.tolist()),)), np.int64).reshape(-1, 3)
        elif upto_event is None:
            mat = self._projection_matrix(class_ids)
            if mat is not None:  # the in-memory copy, up to date: a copy of rows, no query
                out = np.zeros((len(ids), len(class_ids)), np.int8)
                ok = (ids >= 0) & (ids < len(mat))
                out[ok] = mat[ids[ok]]
                return out
            cells = _cells.read_cells(self._con())
        else:
            cells = self._replay(upto_event)
        return _dense(cells, ids, class_ids)

    def _projection_matrix(self, class_ids: np.ndarray) -> np.ndarray | None:
        """The process's in-memory label matrix (rows = sample ids), brought up to date in one read transaction."""
        con = self._con()
        if con.in_transaction:
            return self._projection.matrix(con, class_ids)
        con.execute("BEGIN")
        try:
            return self._projection.matrix(con, class_ids)
        finally:
            con.execute("COMMIT")

    def _replay(self, upto_event: int | None = None) -> np.ndarray:
        """(M, 3) int64 [sample, class, state] of non-unknown cells after replaying the log."""
        limit = "WHERE id <= ?" if upto_event is not None else ""
        params = (int(upto_event),) if upto_event is not None else ()
        ev = pd.DataFrame(self._read(f"SELECT id, sample_id, class_id, state FROM events {limit}", params),
                          columns=["id", "s", "c", "state"])
        if ev.empty:
            return np.zeros((0, 3), np.int64)
        last = ev.sort_values("id").drop_duplicates(["s", "c"], keep="last")
        last = last[last["state"] != 0]
        return last[["s", "c", "state"]].to_numpy(np.int64)

    def single_labels(self, sample_ids: np.ndarray | None = None, *, upto_event: int | None = None) -> np.ndarray:
        """(N,) int64 class index (column of ``label_matrix``) of each sample's positive label, -1 when none.

        In a multi-label workspace the lowest-index positive is returned."""
        return single_from_matrix(self.label_matrix(sample_ids, upto_event=upto_event))

    def batches(self, limit: int = 200) -> pd.DataFrame:
        """The newest batches, newest first.

        Column ``undone_by`` is the undo batch currently cancelling a batch, or NaN when the batch is in
        effect (never undone, or its undo was undone in turn).
        """
        df = self._frame("SELECT id, time, actor, source, note, n_events, undoes FROM batches "
                         "ORDER BY id DESC LIMIT ?", (int(limit),), index="id")
        df["undone_by"] = df.index.map(_live_undos(self._con())).astype("float64")
        return df

    def events(self, batch_id: int | None = None, *, after_event: int = 0, upto_event: int | None = None,
               limit: int | None = None) -> pd.DataFrame:
        """Events (one batch, or an id range) with class names and batch source; the first ``limit`` only when
        given (a page showing a million-event batch reads a screenful)."""
        where, params = ["e.id > ?"], [int(after_event)]
        if batch_id is not None:
            where.append("e.batch_id = ?")
            params.append(int(batch_id))
        if upto_event is not None:
            where.append("e.id <= ?")
            params.append(int(upto_event))
        return self._frame("SELECT e.id, e.batch_id, e.sample_id, e.class_id, c.name AS class_name, e.state, "
                           "e.prev_state, b.source, b.actor, b.time FROM events e JOIN classes c ON c.id=e.class_id "
                           "JOIN batches b ON b.id=e.batch_id WHERE " + " AND ".join(where) + " ORDER BY e.id"
                           + ("" if limit is None else f" LIMIT {int(limit)}"), params, index="id")

    def batch_samples(self, batch_id: int) -> np.ndarray:
        """(M,) int64 ascending ids of the samples a batch touched (one indexed query, however big the batch)."""
        row = self._read("SELECT group_concat(sample_id) FROM (SELECT DISTINCT sample_id FROM events WHERE "
                         "batch_id=? ORDER BY sample_id)", (int(batch_id),))
        return np.array(row[0][0].split(","), np.int64) if row and row[0][0] else np.zeros(0, np.int64)

    def label_counts(self) -> pd.DataFrame:
        """Per class (indexed by id): name, positives and rejections among present samples."""
        classes = self._frame("SELECT id, name FROM classes ORDER BY id", index="id")
        mat = self._projection_matrix(classes.index.to_numpy(np.int64))
        if mat is not None:
            gone = np.array([r[0] for r in self._read("SELECT id FROM samples WHERE missing=1")], np.int64)
            gone = gone[gone < len(mat)]
            for col, state in (("positive", POSITIVE), ("rejected", REJECTED)):
                classes[col] = ((mat == state).sum(0) - (mat[gone] == state).sum(0)).astype(np.int64)
            return classes
        return self._frame("SELECT c.id, c.name, COALESCE(SUM(l.state=1), 0) AS positive, "
                           "COALESCE(SUM(l.state=-1), 0) AS rejected FROM classes c LEFT JOIN labels l "
                           "ON l.class_id=c.id LEFT JOIN samples s ON s.id=l.sample_id AND s.missing=0 "
                           "GROUP BY c.id ORDER BY c.id", index="id")

    # ------------------------------------------------------------------ integrity
    def check(self) -> list[str]:
        """Problems found: SQLite integrity, and projection != replay of the event log. Empty when healthy."""
        problems = [r[0] for r in self._read("PRAGMA integrity_check") if r[0] != "ok"]
        proj = np.array(self._read("SELECT sample_id, class_id, state FROM labels WHERE state != 0"),
                        np.int64).reshape(-1, 3)
        replay = self._replay()
        a = {tuple(r) for r in proj.tolist()}
        b = {tuple(r) for r in replay.tolist()}
        if a != b:
            problems.append(f"label projection differs from the event log in {len(a ^ b)} cells")
        n_bad = self._read("SELECT COUNT(*) FROM batches b WHERE n_events != "
                           "(SELECT COUNT(*) FROM events e WHERE e.batch_id=b.id)")[0][0]
        if n_bad:
            problems.append(f"{n_bad} batches have a different number of events than recorded")
        return problems

    def rebuild_projection(self) -> None:
        """Recompute the label projection from the event log (repair)."""
        replay = self._replay()
        with self._write() as con:
            con.execute("DELETE FROM labels")
            last = dict(((s, c), e) for e, s, c in con.execute("SELECT MAX(id), sample_id, class_id FROM events "
                                                                 "GROUP BY sample_id, class_id"))
            con.executemany("INSERT INTO labels VALUES (?,?,?,?)",
                            [(s, c, st, last[(s, c)]) for s, c, st in replay.tolist()])

    def backup(self, dest: Path | str) -> Path:
        """Consistent online copy of the database (SQLite backup API), safe while others write.

        The copy is written next to ``dest`` and renamed into place, so a killed backup never leaves a
        half file under the backup's name. Returns the backup's path.
        """
        dest = Path(dest).expanduser().resolve()
        if dest == self.path.resolve():
            raise StoreError(f"Refusing to back up {self.path} onto itself; give another file name.")
        if dest.is_dir():
            raise StoreError(f"{dest} is a folder; give a file name for the backup (e.g. {dest / 'curation.db'}).")
        dest.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(dest, lambda tmp: copy_database(self._con(), tmp))

    # ------------------------------------------------------------------ runs
    def add_run(self, kind: str, config: dict, *, last_event_id: int, encoder: str = "", device: str = "",
                status: str = "running") -> int:
        """Record a run; the calling process's pid is kept, so a run whose process died can be told apart."""
        with self._write() as con:
            cur = con.execute("INSERT INTO runs(created, kind, status, config, last_event_id, encoder, device, pid) "
                              "VALUES (?,?,?,?,?,?,?,?)", (time.time(), kind, status, json.dumps(config),
                                                           int(last_event_id), encoder, device, os.getpid()))
            return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields: Any) -> None:
        allowed = {"status", "duration", "metrics", "artifact", "device", "encoder"}
        bad = set(fields) - allowed
        if bad:
            raise StoreError(f"Cannot update run fields {bad}.")
        if "metrics" in fields:
            fields["metrics"] = json.dumps(fields["metrics"])
        with self._write() as con:
            con.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                        (*fields.values(), int(run_id)))

    def runs(self) -> pd.DataFrame:
        df = self._frame("SELECT * FROM runs ORDER BY id DESC", index="id")
        for col in ("config", "metrics"):
            df[col] = df[col].map(json.loads) if len(df) else df[col]
        return df

    def newest_run_id(self, *, status: str | None = "done", kinds: Sequence[str] | None = None) -> int | None:
        """Id of the newest run with this status (None = any) and one of these kinds (None = any), or None;
        reads no metrics."""
        where, params = ["1=1"], []
        if status is not None:
            where.append("status=?")
            params.append(status)
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        row = self._read(f"SELECT MAX(id) FROM runs WHERE {' AND '.join(where)}", tuple(params))
        return None if row[0][0] is None else int(row[0][0])

    def run(self, run_id: int) -> dict[str, Any]:
        df = self._frame("SELECT * FROM runs WHERE id=?", (int(run_id),))
        if df.empty:
            raise StoreError(f"No run {run_id}.")
        rec = df.iloc[0].to_dict()
        rec["config"], rec["metrics"] = json.loads(rec["config"]), json.loads(rec["metrics"])
        return rec

    # ------------------------------------------------------------------ jobs
    def submit_job(self, kind: str, params: dict) -> int:
        with self._write() as con:
            cur = con.execute("INSERT INTO jobs(kind, params, status, created) VALUES (?,?,?,?)",
                              (kind, json.dumps(params), "queued", time.time()))
            return int(cur.lastrowid)

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Update a job row. Marking a job ``interrupted`` (its worker died) also marks the runs that worker
        left ``running`` as ``interrupted``, in the same transaction."""
        allowed = {"status", "progress", "message", "pid", "started", "finished", "heartbeat", "error", "result"}
        bad = set(fields) - allowed
        if bad:
            raise StoreError(f"Cannot update job fields {bad}.")
        if "result" in fields and not isinstance(fields["result"], str):
            fields["result"] = json.dumps(fields["result"])
        with self._write() as con:
            con.execute(f"UPDATE jobs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                        (*fields.values(), int(job_id)))
            if fields.get("status") == "interrupted":
                con.execute("UPDATE runs SET status='interrupted' WHERE status='running' AND pid IS NOT NULL "
                            "AND pid=(SELECT pid FROM jobs WHERE id=?)", (int(job_id),))

    def assign_job_pid(self, job_id: int, pid: int) -> bool:
        """Name the worker a queued job waits for, unless a worker has started it already (one statement, so it
        never overwrites the pid the running worker wrote). Returns whether the row was updated."""
        with self._write() as con:
            return con.execute("UPDATE jobs SET pid=? WHERE id=? AND started IS NULL",
                               (int(pid), int(job_id))).rowcount == 1

    def interrupt_runs(self, pids: Sequence[int]) -> list[int]:
        """Mark the ``running`` runs of these (dead) processes ``interrupted``; returns their ids."""
        pids = [int(p) for p in pids]
        if not pids:
            return []
        marks = ",".join("?" * len(pids))
        with self._write() as con:
            ids = [r[0] for r in con.execute(f"SELECT id FROM runs WHERE status='running' AND pid IN ({marks})",
                                             pids)]
            con.execute(f"UPDATE runs SET status='interrupted' WHERE status='running' AND pid IN ({marks})", pids)
        return ids

    def job(self, job_id: int) -> dict[str, Any]:
        df = self._frame("SELECT * FROM jobs WHERE id=?", (int(job_id),))
        if df.empty:
            raise StoreError(f"No job {job_id}.")
        rec = df.iloc[0].to_dict()
        rec["params"], rec["result"] = json.loads(rec["params"]), json.loads(rec["result"] or "{}")
        return rec

    def jobs(self, limit: int = 50) -> pd.DataFrame:
        return self._frame("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (int(limit),), index="id")

    # ------------------------------------------------------------------ reviews
    def add_reviews(self, sample_ids: Sequence[int], *, queue: str, verdict: str, run_id: int | None = None,
                    batch_id: int | None = None, actor: str = "user") -> None:
        """Record review decisions that change no label (a queue and a verdict of :mod:`curation.core.vocab`);
        decisions that change labels go through ``apply(..., review=Review(...))`` in one transaction."""
        review = Review(sample_ids, queue=queue, verdict=verdict, run_id=run_id)
        with self._write() as con:
            _insert_reviews(con, review, batch_id, actor)

    def reviews(self, queue: str | None = None) -> pd.DataFrame:
        if queue is None:
            return self._frame("SELECT * FROM reviews ORDER BY id", index="id")
        return self._frame("SELECT * FROM reviews WHERE queue=? ORDER BY id", (queue,), index="id")


# ---------------------------------------------------------------------- helpers
def _insert_reviews(con: sqlite3.Connection, review: Review, batch_id: int | None, actor: str) -> None:
    now = time.time()
    con.executemany("INSERT INTO reviews(time, sample_id, queue, verdict, run_id, batch_id, actor) VALUES (?,?,?,?,?,?,?)",
                    [(now, int(s), review.queue, review.verdict, review.run_id, batch_id, actor)
                     for s in review.sample_ids.tolist()])


def single_from_matrix(m: np.ndarray) -> np.ndarray:
    """(N,) int64 column of each row's positive label in a (N, K) label matrix, -1 when none (the lowest
    positive column when a row has several)."""
    if m.shape[1] == 0:
        return np.full(m.shape[0], -1, np.int64)
    pos = m == POSITIVE
    return np.where(pos.any(1), pos.argmax(1), -1).astype(np.int64)


def class_name_problem(name: str) -> str | None:
    """Why a non-empty class name cannot be used, in a few words, or None when it is fine.

    Names may hold any visible text (commas, quotes, HTML, emoji); they may not hold control characters
    (newline, tab, NUL: they break CSV, TSV and folder exports), undecodable bytes, or only invisible
    characters (zero-width spaces and the like).
    """
    if all(unicodedata.category(ch)[0] in "CZ" for ch in name):
        return "it has no visible characters"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "it holds control characters (a newline, tab or NUL)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it holds bytes that are not valid text (UTF-8)"
    return None


def validate_class_name(name: Any) -> str:
    """Strip a class name and refuse unusable ones (see :func:`class_name_problem`) with what to do."""
    clean = str(name).strip() if name is not None else ""
    if not clean:
        raise StoreError("A class name is empty or only spaces; give every class a visible name.")
    why = class_name_problem(clean)
    if why:
        raise StoreError(f"Class name {clean!r} cannot be used: {why}; give it one line of visible text.")
    return clean


def copy_database(src: sqlite3.Connection, dest: Path) -> None:
    """Copy an open SQLite database into the file ``dest`` with SQLite's backup API (a consistent copy while
    others write to ``src``; ``dest`` may be a database that others have open)."""
    dst = sqlite3.connect(str(dest))
    try:
        src.backup(dst)
    finally:
        dst.close()


def _migrate(con: sqlite3.Connection, version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer curation (schema {version}, this one reads up to "
                         f"{SCHEMA_VERSION}); upgrade curation (`pip install -U curation`) to open it.")
    if version < 2:  # runs remember the pid of the process running them
        if "pid" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}:
            con.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")
    if version != SCHEMA_VERSION:  # write only when the schema actually changes
        con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))


def _live_undos(con: sqlite3.Connection) -> dict[int, int]:
    """{batch id: the undo batch cancelling it} for the batches currently undone.

    An undo batch is in effect unless an undo of it is in effect; ids grow with time, so walking the undo
    batches newest first decides every undo before the batch it undoes.
    """
    undone: dict[int, int] = {}
    for u, target in con.execute("SELECT id, undoes FROM batches WHERE undoes IS NOT NULL ORDER BY id DESC"):
        if u not in undone and target not in undone:
            undone[int(target)] = int(u)
    return undone


def _append_batch(con: sqlite3.Connection, s: np.ndarray, c: np.ndarray, st: np.ndarray, *, source: str,
                  actor: str, note: str, undoes: int | None = None, skip_noop: bool = True) -> int | None:
    """Write one batch of cells inside the caller's transaction (the last write of a cell wins; no-ops are dropped
    unless ``skip_noop`` is false), as set operations (:mod:`curation.data.cells`); for modules that write a
    batch together with other rows (``curation.data.classes``). Returns the batch id, or None when nothing changed."""
    s, c, st = (np.asarray(a, np.int64).ravel() for a in (s, c, st))
    if s.size == 0:
        return None
    _cells.load_cells(con, s, c, st)
    return _cells.append_batch(con, source=source, actor=actor, note=note, undoes=undoes, skip_noop=skip_noop)


def _dense(cells: np.ndarray, sample_ids: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Scatter (M, 3) [sample, class, state] cells into an (N, K) int8 matrix, vectorised."""
    out = np.zeros((len(sample_ids), len(class_ids)), np.int8)
    if cells.size == 0 or out.size == 0:
        return out
    order = np.argsort(sample_ids)
    sorted_ids = sample_ids[order]
    r = np.searchsorted(sorted_ids, cells[:, 0])
    r = np.clip(r, 0, len(sorted_ids) - 1)
    ok_r = sorted_ids[r] == cells[:, 0]
    k = np.searchsorted(class_ids, cells[:, 1])
    k = np.clip(k, 0, len(class_ids) - 1)
    ok_k = class_ids[k] == cells[:, 1]
    ok = ok_r & ok_k
    out[order[r[ok]], k[ok]] = cells[ok, 2]
    return out
