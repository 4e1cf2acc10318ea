"""Image folders and manifests (CSV, JSONL, Parquet, HF metadata.jsonl) in; samples and imported labels out.

One cohesive module: every input layout goes through one validation and one transaction.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import unquote

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.data.images import IMAGE_EXTENSIONS, ImageError, ImageInfo, check_image
from curation.data.store import StoreError, class_name_problem

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "file_name", "file", "filename", "image")
LABEL_COLUMNS = ("label", "labels", "class", "category", "tags")
SPLIT_COLUMNS = ("split", "subset")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
HF_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "all": "", "": ""}
"""Split names recognised in manifests and as top-level folders (lower-cased), mapped to the store's splits."""


class IngestError(StoreError):
    """A source that cannot be ingested as a whole; the message names the file and says what to do."""


@dataclass
class IngestReport:
    """What an ingest did.

    Attributes
    ----------
    source : the folder or manifest ingested.
    root : the image root that sample paths are relative to.
    added : samples created.
    existing : listed files that were already samples.
    vanished : samples of this root whose files are gone or unreadable now (flagged missing).
    restored : samples flagged missing whose files came back (un-flagged).
    skipped : DataFrame[path, reason], files or rows not ingested and why.
    classes_added : names of classes created by this ingest.
    labels_imported : positive labels imported (only new samples get imported labels).
    task : the workspace task after the ingest ("single" or "multi").
    task_changed : whether this ingest switched the task to "multi".
    notes : other things worth telling the user (dropped empty labels, merged rows, duplicates...).
    sample_ids : (added + existing,) int64 ids of the samples listed by this source.
    """

    source: str
    root: str = ""
    added: int = 0
    existing: int = 0
    vanished: int = 0
    restored: int = 0
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    classes_added: list[str] = field(default_factory=list)
    labels_imported: int = 0
    task: str = "single"
    task_changed: bool = False
    notes: list[str] = field(default_factory=list)
    sample_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"Ingested {self.source}: {self.added} new images, {self.existing} already known."]
        if len(self.skipped):
            reasons = self.skipped["reason"].map(lambda r: str(r).split(":")[0]).value_counts()
            parts = ", ".join(f"{n} {r}" for r, n in reasons.items())
            lines.append(f"Skipped {len(self.skipped)} ({parts}); each file and its reason are listed below. Fix or "
                         "replace them and ingest again: only new or fixed files are added, labels are kept.")
        if self.labels_imported or self.classes_added:
            cls = f", {len(self.classes_added)} new classes ({', '.join(self.classes_added[:8])}" \
                  f"{', ...' if len(self.classes_added) > 8 else ''})" if self.classes_added else ""
            lines.append(f"Imported {self.labels_imported} labels{cls}.")
        if self.vanished:
            lines.append(f"{self.vanished} images are gone or unreadable now: flagged missing (labels kept).")
        if self.restored:
            lines.append(f"{self.restored} missing images came back.")
        task = "multi-label" if self.task == "multi" else "single-label"
        if self.task_changed:
            lines.append(f"Switched the workspace to {task}: some images carry several labels.")
        else:
            lines.append(f"Task: {task}.")
        lines.extend(self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------- public entry points
def ingest(ws: Workspace, source: Path | str, *, labels: str = "auto", image_root: Path | str | None = None,
           split: str | None = None, progress: ProgressFn | None = None) -> IngestReport:
    """Add the images of a folder or a manifest to the workspace, with their labels.

    Parameters
    ----------
    ws : the workspace.
    source : a folder (ImageFolder ``<class>/<file>``, optionally under ``train/``, ``val/``, ``test/``;
        or flat = unlabelled; a folder holding an HF ``metadata.jsonl`` is read through it), or a manifest
        file (.csv, .tsv, .jsonl, .parquet).
    labels : "auto" (folder names / the label column), "folders" (folder names, also for the paths of a
        manifest: the first folder of each path), "none" (ignore labels), or the name of the manifest column
        holding labels.
    image_root : folder that relative manifest paths start from (default: the manifest's folder).
    split : force this split ("train", "val", "test" or "") on every image listed.
    progress : ``progress(fraction, message)``; may raise ``Cancelled``.

    Returns
    -------
    IngestReport. Re-ingesting adds new files, flags vanished ones missing and un-flags files that came
    back; it never changes labels of known samples.

    Raises
    ------
    IngestError when the source as a whole cannot be used (the message says what to do).
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise IngestError(f"{src} does not exist: give the path of an image folder or a manifest file "
                          "(.csv, .jsonl, .parquet).")
    if split is not None and _split_name(split) is None:
        raise IngestError(f"Unknown split {split!r}: use one of train, val, test or ''.")
    if src.is_dir():
        meta = next((src / m for m in HF_METADATA if (src / m).is_file()), None)
        if meta is not None:
            log.info("%s holds %s: reading it as a Hugging Face imagefolder manifest", src, meta.name)
            return ingest_manifest(ws, meta, labels=labels, image_root=image_root, split=split, progress=progress)
        return ingest_folder(ws, src, labels=labels, split=split, progress=progress)
    return ingest_manifest(ws, src, labels=labels, image_root=image_root, split=split, progress=progress)


def ingest_folder(ws: Workspace, folder: Path | str, *, labels: str = "auto", split: str | None = None,
                  progress: ProgressFn | None = None) -> IngestReport:
    """Ingest an image folder: class sub-folders give labels, top-level split folders give splits.

    Layouts: ``<class>/<file>``, ``<split>/<class>/<file>``, flat ``<file>`` (unlabelled). Files directly
    under the folder (or a split folder) are unlabelled. Deeper folders belong to their top class folder.
    Percent escapes in folder names are decoded (``a%2Fb`` is class ``a/b``, as export writes it).
    """
    if labels not in ("auto", "none", "folder", "folders"):
        raise IngestError(f"labels={labels!r} is not valid for a folder: use 'auto' (folder names) or 'none'.")
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise IngestError(f"{root} is not a folder: give an image folder or a manifest file.")
    rel_files: list[str] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dpath = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if (dpath / d).is_symlink():
                skipped.append((_shown(_rel(dpath / d, root)), "symlinked folder not followed"))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = _rel(dpath / name, root)
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((_shown(rel), f"not an image file type ({Path(name).suffix or 'no extension'})"))
                continue
            why = _text_problem(rel) or (_link_problem(dpath / name, root) if (dpath / name).is_symlink() else None)
            if why:
                skipped.append((_shown(rel), why))
                continue
            rel_files.append(rel)
    if not rel_files:
        what = f" ({len(skipped)} other files)" if skipped else ""
        raise IngestError(f"{root} holds no image files{what}: put images (.jpg, .png, ...) in it, in one "
                          "sub-folder per class to import labels, or give a manifest file instead.")
    parts = [PurePosixPath(r).parts for r in rel_files]
    top_dirs = {p[0] for p in parts if len(p) > 1}
    split_layout = bool(top_dirs) and all(d.lower() in SPLIT_ALIASES for d in top_dirs)
    rows = []
    for rel, p in zip(rel_files, parts):
        dirs = list(p[:-1])
        row_split = ""
        if split_layout and dirs:
            row_split = SPLIT_ALIASES[dirs.pop(0).lower()]
        names = [_folder_class(dirs[0])] if (dirs and labels != "none") else []
        why = class_name_problem(names[0]) if names else None
        if why:
            skipped.append((rel, f"folder name {names[0]!r} cannot be a class name: {why}; rename the folder"))
            continue
        rows.append({"path": rel, "labels": names, "split": row_split})
    frame = pd.DataFrame(rows, columns=["path", "labels", "split"])
    notes = []
    if split_layout:
        notes.append(f"Split folders recognised: {', '.join(sorted(top_dirs))}.")
    return _ingest_rows(ws, root, frame, source=str(root), skipped=skipped, notes=notes, split=split,
                        progress=progress)


def ingest_manifest(ws: Workspace, manifest: Path | str, *, labels: str = "auto",
                    image_root: Path | str | None = None, split: str | None = None,
                    progress: ProgressFn | None = None) -> IngestReport:
    """Ingest the images listed in a manifest (.csv, .tsv, .jsonl, .parquet, HF ``metadata.jsonl``).

    The path column is found among ``path, file_name, file, filename, image``, the label column among
    ``label, labels, class, category, tags`` (or named by ``labels``), the split column ``split``.
    A label cell holds one name, several names separated by ``|``, a list (JSONL / Parquet), or a JSON
    list string (CSV). Paths are relative to ``image_root`` (default: the manifest's folder); paths
    escaping it (``..``, absolute elsewhere, symlinks out) are skipped with a reason.
    """
    path = Path(manifest).expanduser().resolve()
    root = Path(image_root).expanduser().resolve() if image_root is not None else path.parent
    if not root.is_dir():
        raise IngestError(f"Image root {root} is not a folder: pass image_root= the folder the manifest's "
                          "paths start from.")
    df = read_manifest(path)
    cols = {str(c).strip().lower(): c for c in df.columns}
    path_col = next((cols[c] for c in PATH_COLUMNS if c in cols), None)
    if path_col is None:
        raise IngestError(f"{path.name} has no path column (columns: {', '.join(map(str, df.columns)) or 'none'}): "
                          f"name the column holding image paths one of {', '.join(PATH_COLUMNS)}.")
    from_folders = labels in ("folder", "folders")
    if labels == "none" or from_folders:
        label_col = None
    elif labels in ("auto", "column"):
        label_col = next((cols[c] for c in LABEL_COLUMNS if c in cols), None)
    else:
        if labels not in df.columns and labels.lower() not in cols:
            raise IngestError(f"{path.name} has no column {labels!r} (columns: {', '.join(map(str, df.columns))}): "
                              "pass labels= one of them, 'auto' or 'none'.")
        label_col = labels if labels in df.columns else cols[labels.lower()]
    split_col = next((cols[c] for c in SPLIT_COLUMNS if c in cols), None)
    _check_column_types(df, path, path_col, label_col)
    hf = path.name.lower() in HF_METADATA

    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    if labels == "auto" and label_col is None:
        notes.append(f"{path.name} has no label column ({', '.join(LABEL_COLUMNS)}): its images were added "
                     "unlabelled; name the column holding class names one of those to import labels.")
    n_empty_labels = 0
    unknown_splits: set[str] = set()
    out_path, out_labels, out_split, out_line = [], [], [], []
    first_line = 2 if path.suffix.lower() in (".csv", ".tsv") else 1
    path_vals = df[path_col].tolist()
    label_vals = df[label_col].tolist() if label_col is not None else [None] * len(df)
    split_vals = df[split_col].tolist() if split_col is not None else [None] * len(df)
    for i, (pv, lv, sv) in enumerate(zip(path_vals, label_vals, split_vals)):
        line = i + first_line
        where = f"{path.name} row {line}"
        if not isinstance(pv, str) or not pv.strip():
            skipped.append((f"<{where}>", "no path in this row"))
            continue
        rel, why = _safe_relative(pv.strip(), root)
        if why:
            skipped.append((pv, why))
            continue
        try:
            names, n_empty = parse_labels(lv)
            if from_folders:
                dirs = PurePosixPath(rel).parts[:-1]
                names = parse_labels([_folder_class(dirs[0])])[0] if dirs else []
        except ValueError as exc:
            skipped.append((pv, f"{where}: {exc}"))
            continue
        n_empty_labels += n_empty
        s = ""
        if sv is not None and not _is_nan(sv) and str(sv).strip():
            mapped = _split_name(str(sv))
            if mapped is None:
                unknown_splits.add(str(sv))
                mapped = ""
            s = mapped
        elif hf:
            first = PurePosixPath(rel).parts[0].lower() if len(PurePosixPath(rel).parts) > 1 else ""
            s = SPLIT_ALIASES.get(first, "") if first in SPLIT_ALIASES else ""
        out_path.append(rel)
        out_labels.append(names)
        out_split.append(s)
        out_line.append(line)
    if n_empty_labels:
        notes.append(f"Dropped {n_empty_labels} empty or blank label names in {path.name}.")
    if unknown_splits:
        notes.append(f"Unknown split values {sorted(unknown_splits)[:5]} in {path.name} were left blank; "
                     "use train, val or test.")
    frame = pd.DataFrame({"path": out_path, "labels": out_labels, "split": out_split, "line": out_line})
    frame = _merge_duplicate_rows(frame, path.name, notes)
    if frame.empty:
        reasons = pd.Series([r for _, r in skipped]).map(lambda r: str(r).split(":")[0]).value_counts()
        detail = "; ".join(f"{n} {r}" for r, n in reasons.head(3).items()) if len(reasons) else "it has no rows"
        raise IngestError(f"No usable rows in {path} ({detail}). Paths must be relative to {root} (or absolute "
                          "inside it): pass image_root= the folder the paths start from.")
    return _ingest_rows(ws, root, frame.drop(columns="line"), source=str(path), skipped=skipped, notes=notes,
                        split=split, progress=progress, manifest=path)


# ---------------------------------------------------------------------- reading manifests
def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest file into a DataFrame (CSV cells as strings); errors name the file and the fix."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise IngestError(f"{path} is not a file: give a manifest (.csv, .jsonl, .parquet) or an image folder.")
    if path.stat().st_size == 0:
        raise IngestError(f"{path} is empty: write a header line (path,label) and one row per image.")
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                               sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path} is not UTF-8 text (byte {exc.start}): re-save it as UTF-8, e.g. "
                          f"`iconv -f latin1 -t utf-8 {path.name} > fixed{suffix}`.") from None
    except IngestError:
        raise
    except pd.errors.EmptyDataError:
        raise IngestError(f"{path} has no columns: write a header line (path,label) and one row per image.") from None
    except pd.errors.ParserError as exc:
        raise IngestError(f"{path} is not valid CSV ({str(exc).strip()}): quote cells that contain commas, "
                          "and give every row the same number of cells.") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow and friends raise many types
        raise IngestError(f"{path} could not be read as {suffix[1:]} ({exc}): check the file is complete and "
                          "really in that format.") from None
    raise IngestError(f"{path.name}: unknown manifest type {suffix or '(no extension)'}; use .csv, .tsv, .jsonl "
                      "or .parquet, or give an image folder.")


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestError(f"{path.name} line {n} is not valid JSON ({exc.msg}): each line must be one "
                                  'JSON object like {"file_name": "a.jpg", "label": "cat"}.') from None
            if not isinstance(obj, dict):
                raise IngestError(f"{path.name} line {n} is a JSON {type(obj).__name__}, not an object: each line "
                                  'must look like {"file_name": "a.jpg", "label": "cat"}.')
            if "\\u" in line and _text_problem(json.dumps(obj, ensure_ascii=False)):
                raise IngestError(f"{path.name} line {n} holds an escaped lone surrogate (like \\udcff), which is "
                                  "not text: fix or remove that line.")
            records.append(obj)
    if not records:
        raise IngestError(f"{path} has no records: write one JSON object per line.")
    return pd.DataFrame.from_records(records)


def _check_column_types(df: pd.DataFrame, path: Path, path_col: Any, label_col: Any) -> None:
    col = df[path_col]
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise IngestError(f"Column {path_col!r} of {path.name} holds {col.dtype} values, not file paths: "
                          "put the image paths (relative to the manifest's folder) in it.")
    if label_col is not None and pd.api.types.is_float_dtype(df[label_col]):
        vals = df[label_col].dropna()
        if len(vals) and not np.all(np.mod(vals, 1) == 0):
            raise IngestError(f"Column {label_col!r} of {path.name} holds fractional numbers, not class names: "
                              "write class names (or integer class ids).")


def parse_labels(value: Any) -> tuple[list[str], int]:
    """Class names in one manifest cell.

    Parameters
    ----------
    value : None/NaN (unlabelled), a string ("cat", "cat|dog", '["cat", "dog"]'), a number (class id),
        or a list/array of those.

    Returns
    -------
    (names, n_dropped): stripped, de-duplicated names in order, and how many empty names were dropped.

    Raises
    ------
    ValueError for values that are not names (dicts, nested lists).
    """
    if value is None or _is_nan(value):
        return [], 0
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        items = list(value)
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            return [], 1 if value else 0
        if s.startswith("[") and s.endswith("]"):
            try:
                items = json.loads(s)
            except json.JSONDecodeError:
                items = s.split("|")
            if not isinstance(items, list):
                items = [s]
        else:
            items = s.split("|")
    elif isinstance(value, (bool, np.bool_)):
        raise ValueError(f"label {value!r} is a boolean, not a class name")
    elif isinstance(value, (int, np.integer, float, np.floating)):
        items = [value]
    else:
        raise ValueError(f"label of type {type(value).__name__} is not a class name or list of names")
    names: list[str] = []
    dropped = 0
    for it in items:
        if it is None or _is_nan(it):
            dropped += 1
            continue
        if isinstance(it, (list, tuple, dict, np.ndarray)):
            raise ValueError(f"label {it!r} is nested; give a flat list of class names")
        if isinstance(it, (bool, np.bool_)):
            raise ValueError(f"label {it!r} is a boolean, not a class name")
        if isinstance(it, (float, np.floating)) and float(it).is_integer():
            it = int(it)
        name = str(it).strip()
        if not name:
            dropped += 1
            continue
        why = class_name_problem(name)
        if why:
            raise ValueError(f"label {name!r} cannot be a class name: {why}")
        if name not in names:
            names.append(name)
    return names, dropped


def _merge_duplicate_rows(frame: pd.DataFrame, name: str, notes: list[str]) -> pd.DataFrame:
    """Rows listing one path several times: identical ones are dropped, differing labels are merged (long format)."""
    if frame.empty or not frame["path"].duplicated().any():
        return frame
    key = frame["labels"].map(lambda x: "\x00".join(sorted(x)))
    exact = frame.assign(_k=key).duplicated(["path", "_k"])
    n_exact = int(exact.sum())
    frame = frame[~exact]
    dup = frame["path"].duplicated(keep=False)
    if dup.any():
        merged = frame[dup].groupby("path", sort=False).agg(
            labels=("labels", lambda s: list(dict.fromkeys(n for names in s for n in names))),
            split=("split", "first"), line=("line", "first")).reset_index()
        notes.append(f"{merged.shape[0]} paths are listed on several rows of {name} with different labels: "
                     "their labels were merged (one row per label, the 'long' format).")
        frame = pd.concat([frame[~dup], merged], ignore_index=True).sort_values("line", kind="stable")
    if n_exact:
        notes.append(f"Dropped {n_exact} duplicated rows of {name}.")
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------------- the common path
def _ingest_rows(ws: Workspace, root: Path, frame: pd.DataFrame, *, source: str,
                 skipped: list[tuple[str, str]], notes: list[str], split: str | None,
                 progress: ProgressFn | None, manifest: Path | None = None) -> IngestReport:
    """Check listed files in parallel, then write samples + labels in one transaction and flag missing."""
    progress = progress or null_progress
    store = ws.store
    if split is not None:
        frame = frame.assign(split=_split_name(split) or "")
    infos, errors = check_images([root / p for p in frame["path"]], progress=sub_progress(progress, 0.0, 0.9))
    ok = np.array([i is not None for i in infos], bool)
    for p, err in zip(frame["path"][~ok], [e for e in errors if e is not None]):
        skipped.append((p, err))
    good = frame[ok].reset_index(drop=True)
    good_infos = [i for i in infos if i is not None]
    records = pd.DataFrame({"path": good["path"].tolist(),
                            "sha1": [i.sha1 for i in good_infos],
                            "bytes": [i.bytes for i in good_infos],
                            "width": [i.width for i in good_infos],
                            "height": [i.height for i in good_infos],
                            "split": good["split"].tolist()})
    progress(0.9, "writing samples")
    root_id = store.root_id(root)
    allsamp = store.samples(include_missing=True)
    mine = allsamp[allsamp["root_id"] == root_id]
    known = dict(zip(mine["path"], mine.index))
    new_mask = ~good["path"].isin(known.keys()).to_numpy()
    labels_list = good["labels"].tolist()
    n_multi = sum(1 for names, new in zip(labels_list, new_mask) if new and len(names) > 1)
    classes_before = set(store.class_names())
    task_changed = False
    if n_multi and store.task == "single":
        if store.last_event_id() == 0:
            store.set_task("multi")
            task_changed = True
        else:
            notes.append(f"{n_multi} new images carry several labels but this workspace is single-label and "
                         "already has labels: all labels were kept; switch the task to multi-label or resolve them.")
    note = f"ingest of {Path(source).name}"
    try:
        ids, is_new = store.add_samples(root_id, records, labels=labels_list if len(records) else None, note=note)
    except StoreError as exc:
        raise IngestError(f"Could not write the images of {source}: {exc}") from None

    # vanished / restored, batched
    present = set(records["path"])
    bad_listed = set(frame["path"][~ok])
    gone_ids, back_ids = [], []
    for p, sid, missing in zip(mine["path"], mine.index, mine["missing"]):
        if p in present:
            if missing:
                back_ids.append(int(sid))
        elif not missing and (p in bad_listed or not (root / p).exists()):
            gone_ids.append(int(sid))
    if gone_ids:
        store.set_missing(gone_ids, True)
    if back_ids:
        store.set_missing(back_ids, False)

    n_dups = int(records["sha1"].duplicated().sum()) if len(records) else 0
    if n_dups:
        notes.append(f"{n_dups} listed images have the same content as another one (exact duplicates).")
    classes_added = [c for c in store.class_names() if c not in classes_before]
    labels_imported = sum(len(n) for n, new in zip(labels_list, is_new) if new)
    report = IngestReport(source=source, root=str(root), added=int(is_new.sum()), existing=int((~is_new).sum()),
                          vanished=len(gone_ids), restored=len(back_ids),
                          skipped=pd.DataFrame(skipped, columns=["path", "reason"]),
                          classes_added=classes_added, labels_imported=labels_imported, task=store.task,
                          task_changed=task_changed, notes=notes, sample_ids=np.asarray(ids, np.int64))
    progress(1.0, f"ingested {report.added} new images")
    log.info("%s", report.summary().replace("\n", " "))
    return report


def check_images(paths: Sequence[Path], *, progress: ProgressFn | None = None,
                 workers: int | None = None) -> tuple[list[ImageInfo | None], list[str | None]]:
    """Check many image files in parallel threads (decoding releases the GIL); never stops at a bad file.

    Returns
    -------
    (infos, errors), both of length N: ``infos[i]`` is an ImageInfo or None, ``errors[i]`` the reason or None.
    """
    progress = progress or null_progress
    n = len(paths)
    infos: list[ImageInfo | None] = [None] * n
    errors: list[str | None] = [None] * n
    if n == 0:
        progress(1.0, "no images to check")
        return infos, errors
    workers = workers or min(32, (os.cpu_count() or 2) * 4)
    step = max(1, n // 200)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(check_image, p): i for i, p in enumerate(paths)}
        try:
            for done, fut in enumerate(as_completed(futures), 1):
                i = futures[fut]
                try:
                    infos[i] = fut.result()
                except ImageError as exc:
                    errors[i] = exc.reason
                except Exception as exc:  # noqa: BLE001 - an unexpected failure is one bad file, not a crash
                    errors[i] = f"unreadable: {exc}"
                if done % step == 0 or done == n:
                    progress(done / n, f"checked {done}/{n} images")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return infos, errors


# ---------------------------------------------------------------------- helpers
def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _text_problem(path: str) -> str | None:
    """A reason when a file name cannot be stored as text (bytes that are not UTF-8), else None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 text: rename the file (e.g. `convmv -f latin1 -t utf-8 -r --notest .`)"
    return None


def _shown(path: str) -> str:
    """A path made printable: characters that are not valid text are shown as ``\\udcNN`` escapes."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _link_problem(link: Path, root: Path) -> str | None:
    """A reason when a symlink in an image folder must not be followed (it leaves the root, or loops), else None."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # Python raises RuntimeError for a symlink loop
        return "symlink loop"
    return None if target.is_relative_to(root) else "symlink resolves outside the image root"


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _split_name(value: str) -> str | None:
    return SPLIT_ALIASES.get(str(value).strip().lower()) if str(value).strip().lower() in SPLIT_ALIASES else None


def _folder_class(name: str) -> str:
    """The class a folder name stands for: percent escapes (``a%2Fb``, ``%F0%9F%90%B1``), as export writes
    names a folder cannot hold, are decoded when every ``%`` starts one and the bytes are valid UTF-8."""
    if not re.fullmatch(r"(?:[^%]|%[0-9A-Fa-f]{2})*", name) or "%" not in name:
        return name
    try:
        return unquote(name, errors="strict")
    except UnicodeDecodeError:
        return name


def _safe_relative(raw: str, root: Path) -> tuple[str, str | None]:
    """(path relative to root in posix form, None) or ("", reason) for paths that escape the root."""
    s = raw.replace("\\", "/") if os.sep == "/" and "\\" in raw and not (root / raw).exists() else raw
    p = Path(s)
    if p.is_absolute():
        norm = Path(os.path.normpath(p))
        if not norm.is_relative_to(root):
            # the root itself may be reached through a symlink: compare resolved forms too
            resolved = norm.resolve()
            if not resolved.is_relative_to(root):
                return "", f"absolute path outside the image root {root}: pass image_root= a folder containing it"
            norm = resolved
        rel = norm.relative_to(root).as_posix()
    else:
        rel = os.path.normpath(s).replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            return "", "path escapes the image root with '..'"
    if rel in ("", "."):
        return "", "path names the image root itself, not a file"
    full = root / rel
    try:
        real = full.resolve()
    except (OSError, RuntimeError):
        return "", "path cannot be resolved (symlink loop?)"
    if not real.is_relative_to(root):
        return "", "symlink resolves outside the image root"
    if not full.exists():
        return "", "file not found"
    return rel, None
