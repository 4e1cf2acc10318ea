"""Workspace health: store integrity, artifacts against their hashes, missing images; repair and restore."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from curation.data import sources
from curation.data.artifacts import ArtifactError
from curation.data.atomic import atomic_write
from curation.data.store import Store, StoreError, copy_database
from curation.data.workspace import DB_NAME, Workspace

log = logging.getLogger(__name__)

STALE_TMP_SECONDS = 3600
"""Temporary files (``*.tmp``) older than this are leftovers of a killed write, never a write in progress."""

FAILURES_LISTED = 20
"""Embedding failures listed one by one in the summary (the rest are counted)."""

RESTORE_HINT = "restore a backup: `python -m curation restore WORKSPACE BACKUP_FILE`"


@dataclass
class DoctorReport:
    """What ``doctor`` found and what it repaired."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    problems_left: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: pd.DataFrame | None = None
    """Images the active encoder could not embed (index sample id; path, reason, time, attempts, changed)."""

    def summary(self) -> str:
        notes = [f"note: {n}" for n in self.notes]
        if not self.problems:
            return "\n".join([*notes, "workspace healthy: store integrity ok, projection == event log, artifacts "
                               "match their hashes, every image embedded"])
        lines = [*notes, f"found {len(self.problems)} problem(s):", *[f"  - {p}" for p in self.problems]]
        if self.failures is not None and len(self.failures):
            lines += ["images that could not be embedded:"]
            for sid, r in self.failures.head(FAILURES_LISTED).iterrows():
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["time"])) if r["time"] == r["time"] else "?"
                lines.append(f"  #{sid} {r['path']}: {r['reason']} ({when}, {r['attempts']} attempt(s)"
                             f"{', file changed: retried on the next embed' if r['changed'] else ''})")
            if len(self.failures) > FAILURES_LISTED:
                lines.append(f"  ... and {len(self.failures) - FAILURES_LISTED} more")
        if self.repaired:
            lines += ["repaired:", *[f"  - {r}" for r in self.repaired]]
        if self.problems_left:
            lines += ["left (needs you):", *[f"  - {p}" for p in self.problems_left]]
        return "\n".join(lines)


def doctor(ws: Workspace, *, repair: bool = False) -> DoctorReport:
    """Check a workspace; with ``repair``, fix what can be fixed.

    Checks: SQLite ``integrity_check``; label projection == replay of the event log; every artifact's
    files against the sha256 recorded under its key; temporary files left by killed writes; image files
    that vanished; jobs whose worker died and runs whose process died (marked ``interrupted``).
    A store SQLite cannot read at all is reported with how to restore a backup.
    """
    rep = DoctorReport()
    try:
        store_problems = ws.store.check()
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:  # malformed pages that integrity_check itself trips on
        msg = f"the label store {ws.store.path} cannot be read ({exc}): {RESTORE_HINT}"
        rep.problems.append(msg)
        rep.problems_left.append(msg)
        return rep
    if ws.read_only:
        rep.notes.append(f"read-only workspace ({ws.read_only_reason}): checked only, nothing was written")
        repair = False
    rep.problems += store_problems
    projection_bad = any("projection" in p for p in store_problems)
    if projection_bad and repair:
        ws.store.rebuild_projection()
        rep.repaired.append("rebuilt the label projection from the event log")
        left = ws.store.check()
        rep.problems_left += [f"{p}: {RESTORE_HINT}" for p in left]
    elif store_problems:
        rep.problems_left += store_problems
    _check_artifacts(ws, rep, repair)
    _check_temp_files(ws, rep, repair)
    _check_images(ws, rep, repair)
    _check_embedding_failures(ws, rep)
    if not ws.read_only:
        _check_processes(ws, rep)
    return rep


def _found(rep: DoctorReport, problem: str, repair: bool, fix: str) -> None:
    """Record a problem and either what ``repair`` did about it (``fix``), or that it is left."""
    rep.problems.append(problem)
    if repair:
        rep.repaired.append(fix)
    else:
        rep.problems_left.append(problem)


def _check_artifacts(ws: Workspace, rep: DoctorReport, repair: bool) -> None:
    """Every ``<kind>/<key>.meta.json`` names its own key and the files of that key match their sha256."""
    for meta_path in sorted(ws.artifacts.root.glob("*/*.meta.json")):
        kind, key = meta_path.parent.name, meta_path.name[: -len(".meta.json")]
        try:
            ws.artifacts.verify(kind, key)
        except ArtifactError as exc:
            if repair:
                ws.artifacts.delete(kind, key)
            _found(rep, str(exc), repair, f"deleted damaged artifact {kind}/{key} (it is recomputed on the next run)")


def _check_temp_files(ws: Workspace, rep: DoctorReport, repair: bool) -> None:
    """Temporary files that a killed write left behind (older than STALE_TMP_SECONDS)."""
    cutoff = time.time() - STALE_TMP_SECONDS
    stale = [p for folder in (ws.artifacts.root, ws.thumbs) if folder.exists() for p in folder.rglob("*.tmp")
             if p.is_file() and p.stat().st_mtime < cutoff]
    if not stale:
        return
    size = sum(p.stat().st_size for p in stale)
    if repair:
        for p in stale:
            p.unlink(missing_ok=True)
    _found(rep, f"{len(stale)} temporary files ({size / 1e6:.1f} MB) left by interrupted writes, e.g. {stale[0]}",
           repair, f"deleted {len(stale)} leftover temporary files")


def _check_images(ws: Workspace, rep: DoctorReport, repair: bool) -> None:
    """Image files that vanished (flagged missing on repair, labels kept) or came back."""
    samples = ws.store.samples(include_missing=True)
    if not len(samples):
        return
    paths = [Path(r) / p for r, p in zip(samples["root"], samples["path"])]
    exists = np.array([sources.exists(p) for p in paths])
    gone = (~exists) & (samples["missing"] == 0).to_numpy()
    vanished = samples.index[gone].to_numpy()
    back = samples.index[exists & (samples["missing"] == 1)].to_numpy()
    if len(vanished):
        if repair:
            ws.store.set_missing(vanished, True)
        _found(rep, f"{len(vanished)} image files are missing (e.g. {paths[int(np.flatnonzero(gone)[0])]})",
               repair, f"flagged {len(vanished)} samples as missing (their labels are kept)")
    if len(back) and repair:
        ws.store.set_missing(back, False)
        rep.repaired.append(f"{len(back)} missing image files are back")


def _check_embedding_failures(ws: Workspace, rep: DoctorReport) -> None:
    """Images the active encoder could not embed: listed with reasons (fixing the files is the user's part)."""
    from curation.features.embed import embedding_failures

    try:
        failed = embedding_failures(ws)
    except Exception as exc:  # noqa: BLE001 - a damaged chunk store must not hide the rest of the report
        log.warning("could not read the embedding failures", exc_info=True)
        rep.problems.append(f"the embedding store could not be read ({exc}): delete "
                            f"{ws.artifacts.root / 'embeddings'} and embed again")
        rep.problems_left.append(rep.problems[-1])
        return
    if not len(failed):
        return
    rep.failures = failed
    first = failed.iloc[0]
    msg = (f"{len(failed)} images could not be embedded (e.g. {first['path']}: {first['reason']}); fix or restore "
           "them and run embed (changed files are retried), or `embed --retry-failed`")
    rep.problems.append(msg)
    rep.problems_left.append(msg)


def _check_processes(ws: Workspace, rep: DoctorReport) -> None:
    """Jobs whose worker died and runs whose process died are marked ``interrupted`` (always: it is the truth)."""
    from curation.runtime.liveness import process_alive, refresh

    before = ws.store.jobs()
    after = refresh(ws)
    n_int = int(((after["status"] == "interrupted") & (before["status"] != "interrupted")).sum()) if len(after) else 0
    if n_int:
        rep.problems.append(f"{n_int} jobs were interrupted (marked; resume them from the app or CLI)")
        rep.repaired.append(f"marked {n_int} dead jobs as interrupted")
    runs = ws.store.runs()
    pids = runs.loc[runs["status"] == "running", "pid"].dropna()
    dead = sorted({int(p) for p in pids if p and not process_alive(p)})
    stuck = ws.store.interrupt_runs(dead)
    if stuck:
        rep.problems.append(f"{len(stuck)} training runs were left running by a process that died: "
                            f"{', '.join(map(str, stuck))} (marked interrupted; train again)")
        rep.repaired.append(f"marked {len(stuck)} dead runs as interrupted")


def restore(backup: Path | str, workspace: Path | str) -> None:
    """Replace a workspace's label store with a backup made by ``Store.backup`` (checked first).

    Raises
    ------
    StoreError when the backup is missing, not a curation store, or fails SQLite's integrity check (the
    workspace is left untouched), or when the restored store fails ``Store.check``.
    """
    backup, workspace = Path(backup), Path(workspace)
    if not backup.is_file():
        raise StoreError(f"No backup file {backup}: give the file written by `python -m curation backup WS FILE`.")
    src = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            ok = src.execute("PRAGMA integrity_check").fetchone()[0]
            version = src.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{backup} is not a curation label store ({exc}); choose the file written by "
                             "`python -m curation backup`.") from None
        if ok != "ok":
            raise StoreError(f"{backup} fails SQLite's integrity check ({ok}); choose another backup.")
        if version is None:
            raise StoreError(f"{backup} is not a curation label store (no schema version); choose another file.")
        workspace.mkdir(parents=True, exist_ok=True)
        for sub in ("artifacts", "thumbs", "images"):
            (workspace / sub).mkdir(exist_ok=True)
        db = workspace / DB_NAME
        try:  # page by page into the live store: safe while the app or a worker has it open
            copy_database(src, db)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:  # the old file is not a database at all: nobody can be using it
            for stale in (f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
                (workspace / stale).unlink(missing_ok=True)
            atomic_write(db, lambda tmp: copy_database(src, tmp))
    finally:
        src.close()
    problems = Store(workspace / DB_NAME).check()
    if problems:
        raise StoreError(f"Restored store has problems: {problems}; run `python -m curation doctor --repair`.")
