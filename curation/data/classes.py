"""Class management on the label store: fixed colours, display order, rename, merge and delete as transactions.

The ``classes`` table keeps its meaning (column ``k`` of a label matrix is the ``k``-th class by id); this
module adds two small tables beside it and never renumbers a class:

* ``class_style`` (class id → colour, position): a colour given once, when the class is first seen, that
  never changes unless a person picks another; and the display order people arrange (number keys 1–9
  follow it). Positions are display only: label matrices stay ordered by id.
* ``class_tombstones``: classes removed by a delete or a merge (id, name, prompt). Two triggers keep the
  event log sound: a label written back to a removed class (undoing a merge) restores the class under
  its old id, name and colour; and a new class never takes a removed class's id (so an old batch can
  never land on a newcomer).

Every change is one transaction; a merge moves the labels as one ``bulk`` label batch (undoable from
History like any other) and removes the merged class in the same transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Sequence

import numpy as np
import pandas as pd

from curation.data.store import POSITIVE, REJECTED, UNKNOWN, Store, StoreError, _append_batch, validate_class_name

log = logging.getLogger(__name__)

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#393b79", "#e6550d", "#31a354", "#843c39", "#7b4173", "#3182bd", "#fd8d3c", "#74c476",
    "#9e9ac8", "#e7969c", "#637939", "#d6616b", "#6baed6", "#fdae6b", "#a1d99b", "#ce6dbd", "#8ca252",
    "#bd9e39", "#ad494a", "#5254a3",
)
"""Class colours in the order they are handed out (no grey: grey means "unlabelled" on the map)."""
NUMBER_KEYS = 9
"""The first this many classes in display order get the number keys 1–9."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS class_style (
    class_id INTEGER PRIMARY KEY,
    colour TEXT NOT NULL,
    position REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS class_tombstones (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    prompt TEXT NOT NULL DEFAULT '',
    time REAL NOT NULL,
    live INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS classes_restore_on_label AFTER INSERT ON labels
WHEN NEW.state != 0 AND NOT EXISTS (SELECT 1 FROM classes WHERE id = NEW.class_id)
     AND EXISTS (SELECT 1 FROM class_tombstones WHERE id = NEW.class_id AND live = 0)
BEGIN
    UPDATE class_tombstones SET live = 1 WHERE id = NEW.class_id;
    INSERT INTO classes(id, name, prompt)
        SELECT t.id, CASE WHEN EXISTS (SELECT 1 FROM classes c WHERE c.name = t.name)
                          THEN t.name || ' (restored ' || t.id || ')' ELSE t.name END, t.prompt
        FROM class_tombstones t WHERE t.id = NEW.class_id;
END;
CREATE TRIGGER IF NOT EXISTS classes_never_reuse_ids AFTER INSERT ON classes
WHEN EXISTS (SELECT 1 FROM class_tombstones WHERE id = NEW.id AND live = 0)
BEGIN
    UPDATE classes SET id = MAX((SELECT MAX(id) FROM class_tombstones), (SELECT MAX(id) FROM classes)) + 1
    WHERE id = NEW.id;
END;
"""


def _ensure(con: sqlite3.Connection) -> None:
    """Create the tables and triggers (idempotent; inside the caller's write transaction)."""
    for stmt in _split(_SCHEMA):
        con.execute(stmt)


def _split(script: str) -> list[str]:
    """Statements of ``script`` (triggers hold ``;`` inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    return out


def ensure_schema(store: Store) -> None:
    """Make sure the class tables and triggers exist (cheap; every function here calls it)."""
    if getattr(store, "_classes_schema", False):
        return
    with store._write() as con:
        _ensure(con)
    store._classes_schema = True


def _fill_styles(con: sqlite3.Connection) -> None:
    """Give every class without a style its colour and position: in id order, the least-used palette colour
    (ties: palette order) and the end of the display order."""
    missing = [r[0] for r in con.execute("SELECT id FROM classes WHERE id NOT IN (SELECT class_id FROM class_style) "
                                         "ORDER BY id")]
    if not missing:
        return
    used = pd.Series([r[0] for r in con.execute("SELECT colour FROM class_style")], dtype=object).value_counts()
    counts = {c: int(used.get(c, 0)) for c in PALETTE}
    top = con.execute("SELECT COALESCE(MAX(position), -1) FROM class_style").fetchone()[0]
    rows = []
    for n, cid in enumerate(missing):
        colour = min(PALETTE, key=lambda c: (counts[c], PALETTE.index(c)))
        counts[colour] += 1
        rows.append((int(cid), colour, float(top) + 1 + n))
    con.executemany("INSERT INTO class_style(class_id, colour, position) VALUES (?,?,?)", rows)


def styles(store: Store) -> pd.DataFrame:
    """Every class with its colour and place in the display order.

    Returns
    -------
    DataFrame indexed by class id (ascending, as the label-matrix columns): ``name``, ``colour`` ("#rrggbb"),
    ``position`` (float, display order), ``rank`` (0-based place in the display order), ``key`` (the number
    key "1".."9" of the first nine classes in display order, else "").
    """
    ensure_schema(store)
    known = store._read("SELECT COUNT(*) FROM classes WHERE id NOT IN (SELECT class_id FROM class_style)")[0][0]
    if known:
        with store._write() as con:
            _fill_styles(con)
    df = store._frame("SELECT c.id, c.name, s.colour, s.position FROM classes c JOIN class_style s "
                      "ON s.class_id = c.id ORDER BY c.id", index="id")
    rank = df["position"].rank(method="first").astype(np.int64) - 1 if len(df) else df["position"]
    df["rank"] = rank
    df["key"] = [str(r + 1) if r < NUMBER_KEYS else "" for r in rank]
    return df


def colour_map(store: Store) -> dict[str, str]:
    """{class name: its fixed colour}."""
    s = styles(store)
    return dict(zip(s["name"], s["colour"]))


def display_order(store: Store) -> list[str]:
    """Class names in the display order people arranged (number keys 1–9 are the first nine)."""
    s = styles(store)
    return s.sort_values("position", kind="stable")["name"].tolist()


def create(store: Store, name: str) -> int:
    """Create one class (an explicit act: pickers never create classes on their own); returns its id.

    Raises
    ------
    StoreError when the name is unusable or a class of that name exists already.
    """
    clean = validate_class_name(name)
    ensure_schema(store)
    with store._write() as con:
        if con.execute("SELECT 1 FROM classes WHERE name=?", (clean,)).fetchone():
            raise StoreError(f"A class named {clean!r} exists already; pick it instead of creating it.")
        con.execute("INSERT INTO classes(name) VALUES (?)", (clean,))
        cid = int(con.execute("SELECT id FROM classes WHERE name=?", (clean,)).fetchone()[0])
        _fill_styles(con)
    log.info("created class %r (id %d)", clean, cid)
    return cid


def _id_of(con: sqlite3.Connection, name: str) -> int:
    row = con.execute("SELECT id FROM classes WHERE name=?", (str(name).strip(),)).fetchone()
    if row is None:
        known = ", ".join(r[0] for r in con.execute("SELECT name FROM classes ORDER BY id")) or "none"
        raise StoreError(f"Unknown class {name!r}; known classes: {known}.")
    return int(row[0])


def rename(store: Store, old: str, new: str) -> None:
    """Rename a class; its id, labels, colour and history stay. Refuses a name another class has
    (merge them instead)."""
    clean = validate_class_name(new)
    ensure_schema(store)
    with store._write() as con:
        cid = _id_of(con, old)
        other = con.execute("SELECT id FROM classes WHERE name=?", (clean,)).fetchone()
        if other is not None and int(other[0]) != cid:
            raise StoreError(f"A class named {clean!r} exists already: merge {old!r} into it instead of renaming.")
        con.execute("UPDATE classes SET name=? WHERE id=?", (clean, cid))


def set_colour(store: Store, name: str, colour: str) -> None:
    """Give a class another colour ("#rrggbb")."""
    colour = str(colour).strip().lower()
    if len(colour) != 7 or colour[0] != "#" or any(ch not in "0123456789abcdef" for ch in colour[1:]):
        raise StoreError(f"Colour {colour!r} is not of the form #rrggbb (e.g. #1f77b4).")
    ensure_schema(store)
    with store._write() as con:
        cid = _id_of(con, name)
        _fill_styles(con)
        con.execute("UPDATE class_style SET colour=? WHERE class_id=?", (colour, cid))


def reorder(store: Store, names: Sequence[str]) -> None:
    """Set the display order: ``names`` first, in this order, then the other classes in their current order."""
    ensure_schema(store)
    with store._write() as con:
        _fill_styles(con)
        wanted = [_id_of(con, n) for n in names]
        if len(set(wanted)) != len(wanted):
            raise StoreError("A class is listed twice in the new order; list each class once.")
        rest = [r[0] for r in con.execute("SELECT s.class_id FROM class_style s JOIN classes c ON c.id=s.class_id "
                                          "ORDER BY s.position, s.class_id") if r[0] not in set(wanted)]
        con.executemany("UPDATE class_style SET position=? WHERE class_id=?",
                        [(float(p), int(c)) for p, c in enumerate([*wanted, *rest])])


def move(store: Store, name: str, step: int) -> None:
    """Move a class ``step`` places up (negative) or down (positive) in the display order."""
    order = display_order(store)
    if name not in order:
        raise StoreError(f"Unknown class {name!r}.")
    i = order.index(name)
    j = int(np.clip(i + int(step), 0, len(order) - 1))
    order.insert(j, order.pop(i))
    reorder(store, order)


def usage(store: Store) -> pd.DataFrame:
    """Per class (display order): id, name, colour, key, positive and rejected label counts, and whether it can
    be deleted (only a class no image carries, positive or rejected, can)."""
    s = styles(store)
    counts = pd.DataFrame(store._read("SELECT class_id, SUM(state=1), SUM(state=-1) FROM labels WHERE state != 0 "
                                      "GROUP BY class_id"), columns=["id", "positive", "rejected"]).set_index("id")
    df = s.join(counts, how="left").fillna({"positive": 0, "rejected": 0})
    df[["positive", "rejected"]] = df[["positive", "rejected"]].astype(np.int64)
    df["deletable"] = (df["positive"] == 0) & (df["rejected"] == 0)
    return df.sort_values("position", kind="stable")


def _tombstone(con: sqlite3.Connection, cid: int) -> None:
    name, prompt = con.execute("SELECT name, prompt FROM classes WHERE id=?", (cid,)).fetchone()
    con.execute("INSERT OR REPLACE INTO class_tombstones(id, name, prompt, time, live) VALUES (?,?,?,?,0)",
                (cid, name, prompt, time.time()))
    con.execute("DELETE FROM labels WHERE class_id=? AND state=0", (cid,))
    con.execute("DELETE FROM classes WHERE id=?", (cid,))


def delete(store: Store, name: str) -> None:
    """Delete a class that no image carries (positive or rejected); its history stays in the event log.

    Raises
    ------
    StoreError when images carry it: merge it into another class instead (one undoable batch).
    """
    ensure_schema(store)
    with store._write() as con:
        cid = _id_of(con, name)
        n = con.execute("SELECT COUNT(*) FROM labels WHERE class_id=? AND state != 0", (cid,)).fetchone()[0]
        if n:
            raise StoreError(f"{n:,} labels use class {name!r}: merge it into another class (one undoable batch) "
                             "or relabel those images first; only an unused class can be deleted.")
        _tombstone(con, cid)
    log.info("deleted class %r (id %d)", name, cid)


def merge(store: Store, source: str, target: str, *, actor: str = "user") -> int | None:
    """Merge class ``source`` into ``target`` as ONE label batch, and remove ``source``.

    Every image positive for ``source`` becomes positive for ``target``; an image where a person rejected
    ``source`` gets ``target`` rejected (unless ``target`` is positive there); ``source`` cells return to
    unknown. In a single-label workspace an image carries one class, so the move never leaves two labels.
    Undoing the batch (History) restores ``source`` with its id, name and colour and its labels.

    Returns
    -------
    The label batch id, or None when ``source`` carried no labels (then it is only removed).
    """
    ensure_schema(store)
    with store._write() as con:
        a, b = _id_of(con, source), _id_of(con, target)
        if a == b:
            raise StoreError("Pick two different classes to merge.")
        cells = np.array(con.execute("SELECT l.sample_id, l.state, COALESCE(t.state, 0) FROM labels l LEFT JOIN "
                                     "labels t ON t.sample_id=l.sample_id AND t.class_id=? WHERE l.class_id=? AND "
                                     "l.state != 0", (b, a)).fetchall(), np.int64).reshape(-1, 3)
        s, st_a, st_b = cells[:, 0], cells[:, 1], cells[:, 2]
        to_pos = s[(st_a == POSITIVE) & (st_b != POSITIVE)]
        to_rej = s[(st_a == REJECTED) & (st_b == UNKNOWN)]
        ss = np.concatenate([s, to_pos, to_rej])
        cc = np.concatenate([np.full(len(s), a), np.full(len(to_pos), b), np.full(len(to_rej), b)]).astype(np.int64)
        st = np.concatenate([np.full(len(s), UNKNOWN), np.full(len(to_pos), POSITIVE),
                             np.full(len(to_rej), REJECTED)]).astype(np.int64)
        batch = _append_batch(con, ss, cc, st, source="bulk", actor=actor,
                              note=f"merge class {source!r} into {target!r} ({len(to_pos)} images moved)")
        _tombstone(con, a)
    log.info("merged class %r into %r (batch %s)", source, target, batch)
    return batch


def tombstones(store: Store) -> pd.DataFrame:
    """Removed classes (id, name, time) that are still removed."""
    ensure_schema(store)
    return store._frame("SELECT id, name, time FROM class_tombstones WHERE live=0 ORDER BY id", index="id")


def name_problem(store: Store, name: str) -> str | None:
    """Why ``name`` cannot be created as a new class (in words), or None when it can."""
    try:
        clean = validate_class_name(name)
    except StoreError as exc:
        return str(exc)
    if clean in set(store.class_names()):
        return f"A class named {clean!r} exists already."
    return None
