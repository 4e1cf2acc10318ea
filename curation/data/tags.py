"""Tags: free-form marks on images ("blurry", "check later", "from vendor B") that are not classes, logged and
undoable like labels.

Tags never enter label matrices, training or export labels. Each change is one *tag batch* in its own log
(``tag_batches``, ``tag_events``) with a projection (``sample_tags``), written in one transaction; undoing a
batch appends its inverse (later changes of the same cell win, as for labels).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Sequence

import numpy as np
import pandas as pd

from curation.data.store import Store, StoreError

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS tag_batches (id INTEGER PRIMARY KEY, time REAL NOT NULL, actor TEXT NOT NULL, "
    "note TEXT NOT NULL DEFAULT '', undoes INTEGER, n_events INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tag_events (id INTEGER PRIMARY KEY, batch_id INTEGER NOT NULL, "
    "sample_id INTEGER NOT NULL, tag_id INTEGER NOT NULL, state INTEGER NOT NULL, prev_state INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS tag_events_batch ON tag_events(batch_id)",
    "CREATE TABLE IF NOT EXISTS sample_tags (sample_id INTEGER NOT NULL, tag_id INTEGER NOT NULL, "
    "PRIMARY KEY (sample_id, tag_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS sample_tags_tag ON sample_tags(tag_id)",
)


def ensure_schema(store: Store) -> None:
    """Create the tag tables when missing (idempotent, cheap after the first call on a store object)."""
    if getattr(store, "_tags_schema", False):
        return
    with store._write() as con:
        for stmt in _SCHEMA:
            con.execute(stmt)
    store._tags_schema = True


def _tag_name(name: str) -> str:
    clean = str(name).strip() if name is not None else ""
    if not clean or any(ord(ch) < 32 for ch in clean):
        raise StoreError(f"Tag {name!r} cannot be used: give it one line of visible text.")
    return clean


def names(store: Store) -> list[str]:
    """Tag names in use or ever created, alphabetical."""
    ensure_schema(store)
    return [r[0] for r in store._read("SELECT name FROM tags ORDER BY name")]


def _write_batch(con: sqlite3.Connection, s: np.ndarray, t: np.ndarray, st: np.ndarray, *, actor: str, note: str,
                 undoes: int | None = None) -> int | None:
    df = pd.DataFrame({"s": s, "t": t, "st": st}).drop_duplicates(["s", "t"], keep="last")
    if df.empty:
        return None
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _tag_ids (id INTEGER PRIMARY KEY)")
    con.execute("DELETE FROM _tag_ids")
    con.executemany("INSERT OR IGNORE INTO _tag_ids VALUES (?)", [(int(i),) for i in df["s"].unique()])
    now = pd.DataFrame(con.execute("SELECT sample_id, tag_id FROM sample_tags WHERE sample_id IN "
                                   "(SELECT id FROM _tag_ids)").fetchall(), columns=["s", "t"]).assign(prev=1)
    df = df.merge(now, on=["s", "t"], how="left").fillna({"prev": 0}).astype(np.int64)
    if undoes is None:
        df = df[df["st"] != df["prev"]]
    if df.empty:
        return None
    b = con.execute("INSERT INTO tag_batches(time, actor, note, undoes, n_events) VALUES (?,?,?,?,?)",
                    (time.time(), actor, note, undoes, len(df)))
    batch = int(b.lastrowid)
    con.executemany("INSERT INTO tag_events(batch_id, sample_id, tag_id, state, prev_state) VALUES (?,?,?,?,?)",
                    [(batch, int(a), int(c), int(d), int(e)) for a, c, d, e in
                     df[["s", "t", "st", "prev"]].itertuples(index=False)])
    on, off = df[df["st"] == 1], df[df["st"] == 0]
    con.executemany("INSERT OR IGNORE INTO sample_tags VALUES (?, ?)",
                    list(zip(on["s"].tolist(), on["t"].tolist())))
    con.executemany("DELETE FROM sample_tags WHERE sample_id=? AND tag_id=?",
                    list(zip(off["s"].tolist(), off["t"].tolist())))
    return batch


def tag(store: Store, sample_ids: Sequence[int] | np.ndarray, name: str, *, on: bool = True,
        actor: str = "user") -> int | None:
    """Put tag ``name`` on the samples (``on``) or take it off, as one undoable tag batch.

    Putting a tag on creates it when new (tags are free-form; removing an unknown tag is refused).

    Returns
    -------
    The tag batch id, or None when no sample changed.
    """
    clean = _tag_name(name)
    ensure_schema(store)
    ids = np.unique(np.asarray(sample_ids, np.int64).ravel())
    with store._write() as con:
        if on:
            con.execute("INSERT OR IGNORE INTO tags(name) VALUES (?)", (clean,))
        row = con.execute("SELECT id FROM tags WHERE name=?", (clean,)).fetchone()
        if row is None:
            raise StoreError(f"No tag named {clean!r}; known tags: {', '.join(names(store)) or 'none'}.")
        verb = "tag" if on else "untag"
        return _write_batch(con, ids, np.full(len(ids), int(row[0])), np.full(len(ids), int(on)), actor=actor,
                            note=f"{verb} {clean!r} on {len(ids)} samples")


def undo(store: Store, batch_id: int, *, actor: str = "user") -> int:
    """Append the inverse of a tag batch; cells changed again by a later batch keep their newer state.

    Returns
    -------
    The id of the undo batch.

    Raises
    ------
    StoreError when the batch does not exist, is undone already, or every cell of it changed since.
    """
    ensure_schema(store)
    with store._write() as con:
        if con.execute("SELECT 1 FROM tag_batches WHERE id=?", (int(batch_id),)).fetchone() is None:
            raise StoreError(f"No tag batch {batch_id} to undo.")
        by = _live_undos(con).get(int(batch_id))
        if by is not None:
            raise StoreError(f"Tag batch {batch_id} is undone already (by tag batch {by}); undo that one to redo it.")
        ev = pd.DataFrame(con.execute("SELECT id, sample_id, tag_id, prev_state FROM tag_events WHERE batch_id=?",
                                      (int(batch_id),)).fetchall(), columns=["id", "s", "t", "prev"])
        later = pd.DataFrame(con.execute("SELECT DISTINCT sample_id, tag_id FROM tag_events WHERE id > ?",
                                         (int(ev["id"].max()) if len(ev) else 0,)).fetchall(), columns=["s", "t"])
        keep = ev.merge(later.assign(moved=1), on=["s", "t"], how="left")
        keep = keep[keep["moved"].isna()]
        if keep.empty:
            raise StoreError(f"Every image of tag batch {batch_id} was tagged again since; nothing was changed.")
        out = _write_batch(con, keep["s"].to_numpy(np.int64), keep["t"].to_numpy(np.int64),
                           keep["prev"].to_numpy(np.int64), actor=actor, note=f"undo of tag batch {batch_id}",
                           undoes=int(batch_id))
        return int(out)


def _live_undos(con: sqlite3.Connection) -> dict[int, int]:
    undone: dict[int, int] = {}
    for u, target in con.execute("SELECT id, undoes FROM tag_batches WHERE undoes IS NOT NULL ORDER BY id DESC"):
        if u not in undone and target not in undone:
            undone[int(target)] = int(u)
    return undone


def tagged(store: Store, name_or_names: str | Sequence[str]) -> np.ndarray:
    """(M,) int64 ids, ascending, of the samples carrying any of these tags."""
    ensure_schema(store)
    wanted = [name_or_names] if isinstance(name_or_names, str) else list(name_or_names)
    if not wanted:
        return np.zeros(0, np.int64)
    marks = ",".join("?" * len(wanted))
    rows = store._read(f"SELECT DISTINCT st.sample_id FROM sample_tags st JOIN tags t ON t.id=st.tag_id "
                       f"WHERE t.name IN ({marks}) ORDER BY st.sample_id", tuple(wanted))
    return np.array([r[0] for r in rows], np.int64)


def tags_of(store: Store, sample_ids: Sequence[int] | np.ndarray) -> pd.Series:
    """Tag text per sample ("blurry, check later"; "" without tags), indexed by the given ids."""
    ensure_schema(store)
    ids = np.asarray(sample_ids, np.int64)
    rows = store._read("SELECT st.sample_id, t.name FROM sample_tags st JOIN tags t ON t.id=st.tag_id "
                       "WHERE st.sample_id IN (SELECT value FROM json_each(?)) ORDER BY t.name",
                       (pd.Series(ids).to_json(orient="values"),))
    df = pd.DataFrame(rows, columns=["s", "name"])
    text = df.groupby("s")["name"].agg(", ".join) if len(df) else pd.Series(dtype=object)
    return text.reindex(ids).fillna("").astype(str)


def counts(store: Store) -> pd.Series:
    """Images per tag, indexed by tag name (tags on no image included, with 0)."""
    ensure_schema(store)
    rows = store._read("SELECT t.name, COUNT(st.sample_id) FROM tags t LEFT JOIN sample_tags st ON st.tag_id=t.id "
                       "GROUP BY t.id ORDER BY t.name")
    return pd.Series({r[0]: int(r[1]) for r in rows}, dtype=np.int64)


def batches(store: Store, limit: int = 200) -> pd.DataFrame:
    """The newest tag batches, newest first (time, actor, note, n_events, undoes)."""
    ensure_schema(store)
    return store._frame("SELECT id, time, actor, note, n_events, undoes FROM tag_batches ORDER BY id DESC LIMIT ?",
                        (int(limit),), index="id")


def batch_samples(store: Store, batch_id: int) -> np.ndarray:
    """(M,) int64 sample ids a tag batch touched."""
    ensure_schema(store)
    return np.array([r[0] for r in store._read("SELECT DISTINCT sample_id FROM tag_events WHERE batch_id=? "
                                               "ORDER BY sample_id", (int(batch_id),))], np.int64)
