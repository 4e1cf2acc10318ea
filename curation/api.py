"""Notebook and script API: ``curation.open(path)`` -> a workspace object; ``curation.show(data)`` starts the app."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.data.store import POSITIVE, REJECTED, UNKNOWN, StoreError
from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

ACTIONS = ("set", "add", "remove", "reject", "clear")
"""Label actions, in the app's words (:data:`curation.labels.review.BULK_ACTIONS`): ``set`` (the class becomes the
image's label; its other positives are cleared), ``add`` (one more positive, multi-label only), ``remove`` (an image
that carries the class loses it, recorded as a rejection so it is never proposed again), ``reject`` (a person rules
the class out, whatever the image carries), ``clear`` (the class, or without a class every label of the image,
goes back to unknown: forgotten, not rejected)."""
APP = Path(__file__).resolve().parent.parent / "app.py"
DEFAULT_PORT = 8501


class LabelError(StoreError):
    """A label change that cannot be made as asked; the message says what to do."""


# ---------------------------------------------------------------------- selecting and labelling
def sample_frame(ws: Workspace) -> pd.DataFrame:
    """Present samples with their labels, for queries and notebooks.

    Returns
    -------
    DataFrame indexed by ``sample_id`` with columns ``path`` (relative to its root), ``file`` (absolute, str),
    ``split``, ``label`` (first positive class name or None), ``labels`` (list), ``rejected`` (list),
    ``sha1``, ``width``, ``height``.
    """
    from curation.data.export import label_table

    table = label_table(ws)  # the export's own view of the labels: one definition of "current labels"
    paths = ws.store.samples()["path"].reindex(table.index)
    return pd.DataFrame({"path": paths.to_numpy(), "file": table["file"].map(str).to_numpy(),
                         "split": table["split"].to_numpy(),
                         "label": [p[0] if p else None for p in table["labels"]], "labels": table["labels"],
                         "rejected": table["rejected"], "sha1": table["sha1"].to_numpy(),
                         "width": table["width"].to_numpy(), "height": table["height"].to_numpy()},
                        index=table.index)


def select(ws: Workspace, *, ids: Sequence[int] | None = None, query: str | None = None) -> np.ndarray:
    """(M,) int64 ids of present samples: ``ids`` (checked), and/or those matching a pandas ``query`` over
    :func:`sample_frame` (e.g. ``label == "cat" and split == "val"``, ``path.str.contains("2024")``)."""
    if ids is None and not query:
        raise LabelError("Say which images: give ids, a query, or a corrections CSV.")
    present = ws.store.sample_ids()
    out = present
    if ids is not None:
        want = np.unique(np.asarray(list(ids), np.int64))
        unknown = want[~np.isin(want, present)]
        if len(unknown):
            raise LabelError(f"No present samples with ids {unknown[:5].tolist()}: list ids with "
                             "`python -m curation samples WS` or curation.open(WS).labels().")
        out = want
    if query:
        frame = sample_frame(ws)
        frame = frame.assign(sample_id=frame.index)
        try:
            hit = frame.query(query, engine="python").index.to_numpy(np.int64)
        except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad expression
            raise LabelError(f"The query {query!r} failed ({exc}): use the columns {', '.join(frame.columns)}, "
                             "e.g. label == 'cat' and split == 'val'.") from None
        out = np.intersect1d(out, hit)
    return out


def _class_ids(ws: Workspace, names: Sequence[str], create: bool) -> dict[str, int]:
    known = set(ws.store.class_names())
    missing = sorted({n for n in names if n not in known})
    if missing and not create:
        raise LabelError(f"Unknown classes {missing[:5]}; known: {', '.join(sorted(known)[:20]) or 'none'}. "
                         "Pass create=True (`--create`) to add them.")
    if missing:
        ws.store.add_classes(missing)
    return {n: ws.store.class_id(n) for n in set(names)}


def _cells(ws: Workspace, rows: list[tuple[int, str, str | None]], cid: dict[str, int]) -> tuple[np.ndarray, ...]:
    """(sample, class, state) cells of (sample id, action, class name) rows, in order (later rows win)."""
    ids = np.array(sorted({r[0] for r in rows}), np.int64)
    cur = ws.store.label_matrix(ids)
    row_of = {int(s): i for i, s in enumerate(ids)}
    all_classes = ws.store.classes().index.to_numpy(np.int64)
    s, c, st = [], [], []
    for sid, action, name in rows:
        r = cur[row_of[sid]]
        if action == "set" or (action == "clear" and name is None):
            live = all_classes[r == POSITIVE] if action == "set" else all_classes[r != UNKNOWN]
            s += [sid] * len(live)
            c += live.tolist()
            st += [UNKNOWN] * len(live)
        if action == "remove" and r[np.searchsorted(all_classes, cid[name])] != POSITIVE:
            continue  # remove acts on images that carry the class
        if name is not None:
            s.append(sid)
            c.append(cid[name])
            st.append({"set": POSITIVE, "add": POSITIVE, "remove": REJECTED, "reject": REJECTED,
                       "clear": UNKNOWN}[action])
    return np.array(s, np.int64), np.array(c, np.int64), np.array(st, np.int64)


def apply_labels(ws: Workspace, action: str, class_name: str | None, sample_ids: Sequence[int] | np.ndarray, *,
                 create: bool = False, actor: str = "api", note: str = "") -> int | None:
    """One undoable batch applying ``action`` (see :data:`ACTIONS`) with ``class_name`` to the samples.

    Returns the batch id, or None when nothing changed.
    """
    if action not in ACTIONS:
        raise LabelError(f"Unknown label action {action!r}: use one of {', '.join(ACTIONS)}.")
    if action != "clear" and not class_name:
        raise LabelError(f"The {action!r} action needs a class name (only 'clear' works without one).")
    if action == "add" and ws.store.task == "single":
        raise LabelError("This workspace is single-label, so an image keeps one label: use 'set', or switch the "
                         "workspace to multi-label (Home page) to add a second label.")
    ids = np.asarray(sample_ids, np.int64)
    if not len(ids):
        return None
    cid = _class_ids(ws, [class_name] if class_name else [], create and action in ("set", "add"))
    s, c, st = _cells(ws, [(int(i), action, class_name or None) for i in ids], cid)
    return ws.store.apply(s, c, st, source="human", actor=actor, exclusive=False,
                          note=note or f"{action} {class_name or 'all labels'} on {len(ids)} images")


def apply_corrections(ws: Workspace, table: pd.DataFrame | Path | str, *, create: bool = False, actor: str = "api",
                      note: str = "") -> tuple[int | None, int, pd.DataFrame]:
    """Apply a corrections table (CSV path or DataFrame) as one undoable batch.

    Columns: ``sample_id`` or ``path`` (relative to its image root, or absolute), ``label`` (also ``class``;
    empty with action ``set`` or ``clear`` clears every label of the image), optional ``action`` (default
    ``set``; one of :data:`ACTIONS`).

    Returns
    -------
    (batch id or None, rows applied, DataFrame[row, reason] of rows skipped).
    """
    if not isinstance(table, pd.DataFrame):
        path = Path(table).expanduser()
        if not path.is_file():
            raise LabelError(f"No corrections file {path}: give a CSV with columns sample_id (or path) and label.")
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    cols = {str(c).strip().lower(): c for c in table.columns}
    key = cols.get("sample_id") or cols.get("id") or cols.get("path")
    lab = cols.get("label") or cols.get("class")
    if key is None or lab is None:
        raise LabelError(f"The corrections need a sample_id (or path) column and a label column; found "
                         f"{', '.join(map(str, table.columns))}.")
    frame = sample_frame(ws)
    by_path: dict[str, list[int]] = {}
    for sid, p, f in zip(frame.index, frame["path"], frame["file"]):
        by_path.setdefault(p, []).append(int(sid))
        by_path.setdefault(f, []).append(int(sid))
    rows: list[tuple[int, str, str | None]] = []
    skipped: list[tuple[int, str]] = []
    for i, rec in enumerate(table.to_dict("records"), start=2):
        action = str(rec.get(cols["action"], "") if "action" in cols else "").strip().lower() or "set"
        name = str(rec[lab] if rec[lab] is not None else "").strip() or None
        raw = str(rec[key]).strip()
        if action not in ACTIONS:
            skipped.append((i, f"unknown action {action!r}: use one of {', '.join(ACTIONS)}"))
            continue
        if name is None and action == "set":
            action = "clear"
        if name is None and action != "clear":
            skipped.append((i, f"no class name for {action!r}"))
            continue
        if action == "add" and ws.store.task == "single":
            skipped.append((i, "'add' needs a multi-label workspace; use 'set'"))
            continue
        if key == cols.get("path"):
            hits = by_path.get(raw, [])
            if len(hits) != 1:
                skipped.append((i, "no present sample has this path" if not hits else
                                "several image roots hold this path: use sample_id"))
                continue
            sid = hits[0]
        else:
            try:
                sid = int(float(raw))
            except ValueError:
                skipped.append((i, f"sample id {raw!r} is not a number"))
                continue
            if sid not in frame.index:
                skipped.append((i, f"no present sample {sid}"))
                continue
        rows.append((sid, action, name))
    if not rows:
        return None, 0, pd.DataFrame(skipped, columns=["row", "reason"])
    cid = _class_ids(ws, [n for _, a, n in rows if n is not None], create)
    s, c, st = _cells(ws, rows, cid)
    batch = ws.store.apply(s, c, st, source="human", actor=actor, exclusive=False,
                           note=note or f"corrections: {len(rows)} rows")
    return batch, len(rows), pd.DataFrame(skipped, columns=["row", "reason"])


# ---------------------------------------------------------------------- the workspace object
class Project:
    """An opened workspace for notebooks and scripts (``curation.open(path)``).

    Attributes
    ----------
    ws : the underlying :class:`curation.data.workspace.Workspace` (``ws.store`` is the label store).
    root : the workspace folder.
    url : the app's address once :meth:`show` started it.
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.root = ws.root
        self.app: subprocess.Popen | None = None
        self.url: str | None = None

    def __repr__(self) -> str:
        n, _ = self.ws.store.sample_count()
        return (f"<curation workspace {self.root}: {n} images, {len(self.ws.store.class_names())} classes, "
                f"{self.ws.store.task}-label>")

    def labels(self, *, include_unlabelled: bool = True) -> pd.DataFrame:
        """Current labels: :func:`sample_frame` (unlabelled images left out unless ``include_unlabelled``)."""
        df = sample_frame(self.ws)
        return df if include_unlabelled else df[df["labels"].map(len) > 0]

    def classes(self) -> list[str]:
        return self.ws.store.class_names()

    def ingest(self, source: Path | str, **kwargs: Any) -> Any:
        """Add images (any format :func:`curation.data.ingest.ingest` reads); returns its IngestReport."""
        from curation.data.ingest import ingest

        return ingest(self.ws, source, **kwargs)

    def issues(self, *, refit: bool = False) -> pd.DataFrame:
        """Likely label errors, outliers, ambiguity and duplicates per sample (needs embeddings), with class
        names: ``given_name`` and ``suggested_name`` beside the class indices, worst label score first."""
        from curation.runtime.tasks import run_issues

        df, _ = run_issues(self.ws, force=refit)
        names = np.array([*self.ws.store.class_names(), ""], object)
        df = df.assign(given_name=names[df["given"].to_numpy()], suggested_name=names[df["suggested"].to_numpy()])
        paths = self.ws.store.samples()["path"]
        return df.assign(path=paths.reindex(df.index).to_numpy()).sort_values("label_score", kind="stable")

    def set_label(self, ids: int | Sequence[int] | None = None, label: str | None = None, *, action: str = "set",
                  query: str | None = None, create: bool = False, note: str = "") -> int | None:
        """Change labels in one undoable batch: ``action`` (:data:`ACTIONS`) with class ``label`` on ``ids``
        and/or the samples matching ``query``. Returns the batch id (None: nothing changed)."""
        if isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        chosen = select(self.ws, ids=ids, query=query)
        return apply_labels(self.ws, action, label, chosen, create=create, note=note)

    def correct(self, table: pd.DataFrame | Path | str, *, create: bool = False) -> tuple[int | None, int, pd.DataFrame]:
        """Apply a corrections table (:func:`apply_corrections`) as one undoable batch."""
        return apply_corrections(self.ws, table, create=create)

    def undo(self, batch_id: int) -> int:
        """Undo a label batch (its inverse is a new batch); returns the new batch id."""
        return self.ws.store.undo(int(batch_id), actor="api")

    def export(self, fmt: str, dest: Path | str | None = None, **kwargs: Any) -> Path:
        """Write the labels (:func:`curation.data.export.export`; "cleanlab" computes out-of-fold probabilities)."""
        if fmt == "cleanlab":
            from curation.labels.heldout import export_cleanlab

            return export_cleanlab(self.ws, dest, overwrite=bool(kwargs.get("overwrite", False)))
        from curation.data.export import export

        return export(self.ws, fmt, dest, **kwargs)

    def show(self, *, port: int = DEFAULT_PORT, wait: float = 0.0) -> "Project":
        """Start the app on http://127.0.0.1:<port> for this workspace (a background process; :meth:`close`
        stops it). ``wait``: seconds to wait for the server to answer."""
        self.close()
        cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
               "--server.port", str(int(port)), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--", "--workspace", str(self.root)]
        self.app = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "CURATION_WORKSPACE": str(self.root)})
        self.url = f"http://127.0.0.1:{int(port)}"
        if wait > 0:
            _wait_for(port, wait)
        log.info("the app serves %s at %s", self.root, self.url)
        return self

    def close(self) -> None:
        """Stop the app started by :meth:`show`."""
        if self.app is not None and self.app.poll() is None:
            self.app.terminate()
            try:
                self.app.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.app.kill()
        self.app = None


def _wait_for(port: int, seconds: float) -> None:
    import socket

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(port))) == 0:
                return
        time.sleep(0.2)


def open(path: Path | str, *, create: bool = False, task: str | None = None) -> Project:  # noqa: A001 - curation.open
    """Open a workspace folder (``create``: make it when missing) and return its :class:`Project`."""
    ws = Workspace.create(path, task=task or "single") if create else Workspace.open(path)
    return Project(ws)


def show(data: Any, *, workspace: Path | str | None = None, port: int = DEFAULT_PORT, label_column: str | None = None,
         launch: bool = True) -> Project:
    """Build (or update) a workspace from ``data`` and start the app on 127.0.0.1.

    Parameters
    ----------
    data : a workspace path; a DataFrame with a path column (``path``, ``file_name``, ``file``, ``filename``,
        ``image``) and optional ``label`` / ``labels`` / ``split`` / ``rejected`` columns; an HF ``Dataset`` or
        ``DatasetDict`` (written once as Parquet under ``<workspace>/imports/``, images embedded and read from
        there by row, ``ClassLabel`` names kept, one file per split).
    workspace : the folder to build in (default ``./curation-workspace``; an existing one is updated: new images
        are added, labels people edited are kept).
    port : the app's port.
    label_column : the label column when it is not one of the usual names.
    launch : start the app (False: only build).
    """
    if isinstance(data, (str, Path)) and (Path(data).expanduser() / "curation.db").exists():
        proj = open(data)
        return proj.show(port=port) if launch else proj
    target = Path(workspace or "curation-workspace").expanduser()
    proj = open(target, create=True)
    report = _ingest_data(proj.ws, data, label_column=label_column)
    log.info("%s", report.summary())
    return proj.show(port=port) if launch else proj


def _ingest_data(ws: Workspace, data: Any, *, label_column: str | None) -> Any:
    from curation.data.atomic import atomic_write
    from curation.data.ingest import ingest

    stamp = time.strftime("%Y%m%d-%H%M%S")
    labels = label_column or "auto"
    if isinstance(data, pd.DataFrame):
        from curation.data.formats.manifest import PATH_COLUMNS

        cols = {str(c).lower(): c for c in data.columns}
        pcol = next((cols[c] for c in PATH_COLUMNS if c in cols), None)
        if pcol is None:
            raise LabelError(f"The DataFrame needs a path column ({', '.join(PATH_COLUMNS)}); it has "
                             f"{', '.join(map(str, data.columns))}.")
        files = [os.path.abspath(os.path.expanduser(str(p))) for p in data[pcol]]
        root = Path(os.path.commonpath([os.path.dirname(f) for f in files])) if files else Path.cwd()
        if len(root.parts) < 3:
            raise LabelError(f"The images share no folder narrower than {root}: the app would serve files from all "
                             "of it. Ingest them per folder (curation.open(WS).ingest(...)).")
        df = data.assign(**{pcol: files})
        manifest = ws.root / "imports" / f"show-{stamp}.parquet"
        atomic_write(manifest, lambda tmp: df.to_parquet(tmp, index=False))
        return ingest(ws, manifest, image_root=root, labels=labels)
    if hasattr(data, "to_parquet") or (hasattr(data, "items") and hasattr(data, "column_names")):
        parts = {"": data} if hasattr(data, "to_parquet") else dict(data.items())
        folder = ws.root / "imports" / f"hf-{stamp}"
        for split, ds in parts.items():
            name = f"{split or 'train'}-00000-of-00001.parquet"
            atomic_write(folder / name, lambda tmp, ds=ds: ds.to_parquet(str(tmp)))
        return ingest(ws, folder, labels=labels)
    raise LabelError(f"curation.show cannot read a {type(data).__name__}: give a workspace path, a DataFrame of "
                     "paths and labels, or a Hugging Face Dataset.")
