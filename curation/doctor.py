"""Workspace health: store integrity, artifacts against their hashes, missing images; repair and restore."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curation.artifacts import ArtifactError
from curation.store import Store, StoreError
from curation.workspace import DB_NAME, Workspace

log = logging.getLogger(__name__)


@dataclass
class DoctorReport:
    """What ``doctor`` found and what it repaired."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    problems_left: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.problems:
            return "workspace healthy: store integrity ok, projection == event log, artifacts match their hashes"
        lines = [f"found {len(self.problems)} problem(s):", *[f"  - {p}" for p in self.problems]]
        if self.repaired:
            lines += ["repaired:", *[f"  - {r}" for r in self.repaired]]
        if self.problems_left:
            lines += ["left (needs you):", *[f"  - {p}" for p in self.problems_left]]
        return "\n".join(lines)


def doctor(ws: Workspace, *, repair: bool = False) -> DoctorReport:
    """Check a workspace; with ``repair``, fix what can be fixed.

    Checks: SQLite ``integrity_check``; label projection == replay of the event log; every
    artifact's files against their recorded sha256; image files that vanished; jobs whose worker died.
    """
    from curation.jobs import refresh

    rep = DoctorReport()
    store_problems = ws.store.check()
    rep.problems += store_problems
    projection_bad = any("projection" in p for p in store_problems)
    if projection_bad and repair:
        ws.store.rebuild_projection()
        rep.repaired.append("rebuilt the label projection from the event log")
    elif store_problems:
        rep.problems_left += store_problems

    arts = ws.artifacts.list()
    for kind, key in zip(arts["kind"], arts["key"]):
        try:
            ws.artifacts.verify(kind, key)
        except ArtifactError as exc:
            rep.problems.append(str(exc))
            if repair:
                ws.artifacts.delete(kind, key)
                rep.repaired.append(f"deleted damaged artifact {kind}/{key} (it is recomputed on the next run)")
            else:
                rep.problems_left.append(str(exc))

    samples = ws.store.samples(include_missing=True)
    if len(samples):
        paths = [Path(r) / p for r, p in zip(samples["root"], samples["path"])]
        exists = np.array([p.exists() for p in paths])
        vanished = samples.index[(~exists) & (samples["missing"] == 0)].to_numpy()
        back = samples.index[exists & (samples["missing"] == 1)].to_numpy()
        if len(vanished):
            msg = f"{len(vanished)} image files are missing (e.g. {paths[int(np.flatnonzero(~exists)[0])]})"
            rep.problems.append(msg)
            if repair:
                ws.store.set_missing(vanished, True)
                rep.repaired.append(f"flagged {len(vanished)} samples as missing (their labels are kept)")
            else:
                rep.problems_left.append(msg)
        if len(back) and repair:
            ws.store.set_missing(back, False)
            rep.repaired.append(f"{len(back)} missing image files are back")

    before = ws.store.jobs()
    after = refresh(ws)
    n_int = int(((after["status"] == "interrupted") & (before["status"] != "interrupted")).sum()) if len(after) else 0
    if n_int:
        rep.problems.append(f"{n_int} jobs were interrupted (marked; resume them from the app or CLI)")
        rep.repaired.append(f"marked {n_int} dead jobs as interrupted")
    return rep


def restore(backup: Path | str, workspace: Path | str) -> None:
    """Replace a workspace's label store with a backup made by ``Store.backup`` (checked first)."""
    backup, workspace = Path(backup), Path(workspace)
    if not backup.exists():
        raise StoreError(f"No backup file {backup}.")
    src = sqlite3.connect(str(backup))
    try:
        ok = src.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise StoreError(f"{backup} fails SQLite's integrity check ({ok}); choose another backup.")
        workspace.mkdir(parents=True, exist_ok=True)
        for sub in ("artifacts", "thumbs", "images"):
            (workspace / sub).mkdir(exist_ok=True)
        dst = sqlite3.connect(str(workspace / DB_NAME))
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    problems = Store(workspace / DB_NAME).check()
    if problems:
        raise StoreError(f"Restored store has problems: {problems}; run `python -m curation doctor --repair`.")
