"""Image folders, manifests, HF / COCO / FiftyOne datasets in; samples and imported labels (one batch) out."""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.data import sources
from curation.data.formats.common import (  # noqa: F401 - IngestError, parse_labels, SPLIT_ALIASES re-exported
    NOT_CLASSES,
    SPLIT_ALIASES,
    IngestError,
    Listing,
    _folder_class,
    _link_problem,
    _rel,
    _safe_relative,
    _shown,
    _text_problem,
    parse_labels,
    split_name,
)
from curation.data.formats.manifest import (  # noqa: F401 - re-exported
    HF_METADATA,
    LABEL_COLUMNS,
    MANIFEST_SUFFIXES,
    PATH_COLUMNS,
    SPLIT_COLUMNS,
    _manifest_rows,
    read_manifest,
)
from curation.data.images import IMAGE_EXTENSIONS, ImageError, ImageInfo, check_image, check_image_data
from curation.data.store import StoreError, class_name_problem

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

SIDECARS = ("classes.txt",)
"""Files at the top of an image folder that belong to its layout (the class list an ImageFolder export writes)."""


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
    source : a folder or a file, recognised in this order:

        * a FiftyOne image-classification export (``data/`` + ``labels.json``, or one per split folder);
        * a COCO annotation file (``.json`` with ``images`` and ``categories``; in a folder ``annotations.json``,
          ``labels.json`` or ``annotations/*.json``): each image's categories are its labels (several =
          multi-label), boxes are kept as artifact ``annotations/coco``;
        * an HF imagefolder manifest (``metadata.jsonl`` / ``.csv`` / ``.parquet`` at the root, or one per split
          folder);
        * HF tables with embedded images: a ``save_to_disk`` folder, Parquet / Arrow shards or one such file,
          ``ClassLabel`` and ``Sequence(ClassLabel)`` names decoded; images stay where they are (sample paths
          ``<file>#<row>``, read by row through :mod:`curation.data.sources`);
        * an image folder (torchvision ImageFolder ``<class>/<file>``, optionally under ``train/``, ``val/``,
          ``test/``; flat = unlabelled). A tree whose class folders would be ``images``, ``data`` or a split
          name is refused with the reason (``labels="none"`` adds its images unlabelled);
        * a manifest file (.csv, .tsv, .jsonl, .parquet) with paths, labels, ``split`` and ``rejected``.
    labels : "auto" (folder names / the label column / categories), "folders" (folder names, also for the paths
        of a manifest: the first folder of each path), "none" (ignore labels), or the name of the manifest or
        table column holding labels.
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
    if split is not None and split_name(split) is None:
        raise IngestError(f"Unknown split {split!r}: use one of train, val, test or ''.")
    kw: dict[str, Any] = {"labels": labels, "split": split, "progress": progress}
    if src.is_dir():
        return _ingest_dir(ws, src.resolve(), image_root=image_root, **kw)
    if src.suffix.lower() == ".json":
        return ingest_json(ws, src, image_root=image_root, **kw)
    from curation.data.formats import hf

    if hf.is_table_file(src):
        src = src.resolve()
        listing = hf.read_tables(src.parent, [(src, hf.split_of_file(src.name))], labels=labels)
        return ingest_listing(ws, listing, source=str(src), split=split, progress=progress)
    return ingest_manifest(ws, src, image_root=image_root, **kw)


def _ingest_dir(ws: Workspace, src: Path, *, image_root: Path | str | None, **kw: Any) -> IngestReport:
    """A folder: FiftyOne, COCO, HF (save_to_disk, Parquet shards, imagefolder metadata) or an image tree."""
    from curation.data.formats import coco, fiftyone, hf

    fo = fiftyone.fiftyone_dirs(src)
    if fo is not None:
        listing = fiftyone.read_fiftyone(src, fo, labels=kw["labels"])
        return ingest_listing(ws, listing, source=str(src), split=kw["split"], progress=kw["progress"])
    jsons = [src / "annotations.json", src / "labels.json", *sorted(src.glob("*coco*.json")),
             *sorted(src.glob("instances*.json")), *sorted((src / "annotations").glob("*.json"))]
    cocos = list(dict.fromkeys(j for j in jsons if j.is_file() and coco.is_coco_file(j)))
    if cocos:
        root = Path(image_root).expanduser() if image_root is not None else None
        listing = coco.read_coco_files(cocos, image_root=root, labels=kw["labels"])
        return ingest_listing(ws, listing, source=str(src), split=kw["split"], progress=kw["progress"])
    meta = next((src / m for m in HF_METADATA if (src / m).is_file()), None)
    if meta is not None:
        log.info("%s holds %s: reading it as a Hugging Face imagefolder manifest", src, meta.name)
        return ingest_manifest(ws, meta, image_root=image_root, **kw)
    per_split = [(d, m) for d in sorted(src.iterdir()) if d.is_dir() and split_name(d.name) is not None
                 for m in [next((d / n for n in HF_METADATA if (d / n).is_file()), None)] if m is not None]
    if per_split:
        return _ingest_split_metadata(ws, src, per_split, **kw)
    tables = hf.hf_folder_files(src)
    if tables:
        listing = hf.read_tables(src, tables, labels=kw["labels"])
        return ingest_listing(ws, listing, source=str(src), split=kw["split"], progress=kw["progress"])
    return ingest_folder(ws, src, **kw)


def ingest_json(ws: Workspace, path: Path | str, *, labels: str = "auto", image_root: Path | str | None = None,
                split: str | None = None, progress: ProgressFn | None = None) -> IngestReport:
    """Ingest a COCO annotation file, or a FiftyOne ``labels.json`` (its folder is read)."""
    from curation.data.formats import coco, fiftyone

    path = Path(path).expanduser().resolve()
    doc = coco.load_json(path)
    if coco.looks_like_coco(doc):
        root = Path(image_root).expanduser() if image_root is not None else None
        listing = coco.read_coco(path, doc, image_root=root, labels=labels)
        return ingest_listing(ws, listing, source=str(path), split=split, progress=progress)
    if fiftyone.looks_like_fiftyone(doc) and (path.parent / "data").is_dir():
        listing = fiftyone.read_fiftyone(path.parent, [(path.parent, "")], labels=labels)
        return ingest_listing(ws, listing, source=str(path), split=split, progress=progress)
    raise IngestError(f"{path.name} is neither a COCO annotation file (with 'images' and 'categories') nor a "
                      "FiftyOne labels.json (with 'labels', beside a data/ folder): give one of those, or a "
                      "manifest (.csv, .jsonl, .parquet).")


def _ingest_split_metadata(ws: Workspace, root: Path, per_split: list[tuple[Path, Path]], *, labels: str,
                           split: str | None, progress: ProgressFn | None) -> IngestReport:
    """HF imagefolder with one ``metadata.jsonl`` per split folder (``train/metadata.jsonl``...)."""
    frames, skipped, notes = [], [], []
    for d, meta in per_split:
        frame, sk, nt = _manifest_rows(meta, d, labels=labels, split_default=split_name(d.name) or "")
        frames.append(frame.assign(path=d.name + "/" + frame["path"]))
        skipped += [(f"{d.name}/{p}", r) for p, r in sk]
        notes += nt
    frame = pd.concat(frames, ignore_index=True)
    notes.insert(0, f"Hugging Face imagefolder with per-split metadata: {', '.join(d.name for d, _ in per_split)}.")
    if frame.empty:
        raise IngestError(f"No usable rows in the metadata files of {root}: check their file_name columns.")
    listing = Listing(root=root, frame=frame.drop(columns="line"), notes=notes, skipped=skipped)
    return ingest_listing(ws, listing, source=str(root), split=split, progress=progress, checked_paths=True)


def ingest_listing(ws: Workspace, listing: Listing, *, source: str, split: str | None = None,
                   progress: ProgressFn | None = None, checked_paths: bool = False) -> IngestReport:
    """Ingest the rows a format reader listed (``curation.data.formats``): paths are checked to stay inside
    ``listing.root`` (plain files), images are checked, then samples and labels are written in one batch."""
    root = listing.root.resolve()
    frame = listing.frame.reset_index(drop=True)
    skipped = list(listing.skipped)
    if not checked_paths and listing.chunks is None:
        ok = np.ones(len(frame), bool)
        rels = []
        for i, raw in enumerate(frame["path"]):
            rel, why = _safe_relative(raw, root)
            if why:
                skipped.append((raw, why))
                ok[i] = False
            rels.append(rel)
        frame = frame.assign(path=rels)[ok].reset_index(drop=True)
        if listing.extra is not None:
            listing.extra = listing.extra[ok].reset_index(drop=True)
    if frame.empty:
        raise IngestError(f"No usable images in {source} ({len(skipped)} rows skipped, e.g. "
                          f"{skipped[0] if skipped else 'none listed'}): check the paths and the image folder.")
    return _ingest_rows(ws, root, frame, source=source, skipped=skipped, notes=list(listing.notes), split=split,
                        progress=progress, chunks=listing.chunks, extra=listing.extra, extra_key=listing.extra_key)


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
            if name.startswith(".") or (dpath == root and name in SIDECARS):
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
    if labels != "none":
        _check_layout(root, parts, split_layout)
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


def _check_layout(root: Path, parts: list[tuple[str, ...]], split_layout: bool) -> None:
    """Refuse a folder tree whose class folders would be a split name, ``images`` or ``data`` (with the reason)."""
    depth = 1 if split_layout else 0
    class_dirs = {p[depth] for p in parts if len(p) > depth + 1}
    bad = sorted(d for d in class_dirs if d.lower() in NOT_CLASSES)
    if bad:
        raise IngestError(
            f"{root}: folder {bad[0]!r} would become a class, but {bad[0]!r} holds the images of a COCO, FiftyOne "
            "or VOC layout, not a class. Give the annotation file instead (COCO .json, FiftyOne labels.json, a "
            "manifest), or ingest with labels='none' (`--labels none`) to add the images unlabelled.")
    if not split_layout:
        splits = sorted(d for d in class_dirs if split_name(d) not in (None, ""))
        if splits:
            others = sorted(class_dirs - set(splits))[:3]
            raise IngestError(
                f"{root}: {', '.join(repr(d) for d in splits)} would become a class, but it names a split"
                + (f" while {', '.join(others)} look like classes" if others else "")
                + ". Put every class folder under train/, val/ or test/ (or none of them), or ingest each "
                "split folder on its own with split=.")
    deeper = sorted({p[depth + 1] for p in parts if len(p) > depth + 2 and split_name(p[depth + 1]) not in (None, "")})
    if deeper:
        raise IngestError(f"{root}: split folders ({', '.join(deeper)}) sit inside class folders one level down: "
                          "give the folder that holds train/, val/ and test/ directly.")


def ingest_manifest(ws: Workspace, manifest: Path | str, *, labels: str = "auto",
                    image_root: Path | str | None = None, split: str | None = None,
                    progress: ProgressFn | None = None) -> IngestReport:
    """Ingest the images listed in a manifest (.csv, .tsv, .jsonl, .parquet, HF ``metadata.jsonl``).

    The path column is found among ``path, file_name, file, filename, image``, the label column among
    ``label, labels, class, category, tags`` (or named by ``labels``), the split column ``split``, rejected
    labels in ``rejected`` (as export writes them). A label cell holds one name, several names separated by
    ``|``, a list (JSONL / Parquet), or a JSON list string (CSV). Paths are relative to ``image_root``
    (default: the manifest's folder); paths escaping it (``..``, absolute elsewhere, symlinks out) are skipped
    with a reason, except in a manifest this studio exported: rows whose ``sha1`` matches the file they name
    are kept, and the image root becomes the folder holding them all (at least two levels deep).
    """
    path = Path(manifest).expanduser().resolve()
    root = Path(image_root).expanduser().resolve() if image_root is not None else path.parent
    if not root.is_dir():
        raise IngestError(f"Image root {root} is not a folder: pass image_root= the folder the manifest's "
                          "paths start from.")
    frame, skipped, notes = _manifest_rows(path, root, labels=labels, widen=image_root is None)
    if frame.attrs.get("root"):
        root = frame.attrs["root"]
    if frame.empty:
        row_prefix = re.compile(rf"^{re.escape(path.name)} row \d+: ")
        reasons = pd.Series([row_prefix.sub("", str(r)) for _, r in skipped], dtype=object).value_counts()
        detail = "; ".join(f"{n} {r}" if n > 1 else r for r, n in reasons.head(3).items()) if len(reasons) \
            else "it has no rows"
        if len(skipped) == 1:  # one row: its path and the whole reason
            detail = f"{skipped[0][0]}: {reasons.index[0]}"
        path_trouble = any(not row_prefix.match(str(r)) and r != "no path in this row" for _, r in skipped)
        hint = (f" Paths must be relative to {root} (or absolute inside it): pass image_root= the folder the paths "
                "start from." if path_trouble else "")
        raise IngestError(f"No usable rows in {path} ({detail}).{hint}")
    return _ingest_rows(ws, root, frame.drop(columns="line"), source=str(path), skipped=skipped, notes=notes,
                        split=split, progress=progress)


# ---------------------------------------------------------------------- the common path
def _ingest_rows(ws: Workspace, root: Path, frame: pd.DataFrame, *, source: str,
                 skipped: list[tuple[str, str]], notes: list[str], split: str | None,
                 progress: ProgressFn | None, chunks: Any = None, extra: pd.DataFrame | None = None,
                 extra_key: str = "") -> IngestReport:
    """Check listed images in parallel, then write samples + labels in one transaction and flag missing.

    ``frame`` holds path, labels, split and optionally rejected; ``chunks`` (embedded images) yields the encoded
    bytes of the rows in order; ``extra`` (aligned with ``frame``) is kept as artifact ``annotations/<extra_key>``.
    """
    progress = progress or null_progress
    store = ws.store
    if "rejected" not in frame:
        frame = frame.assign(rejected=[[] for _ in range(len(frame))])
    if split is not None:
        frame = frame.assign(split=split_name(split) or "")
    if chunks is None:
        infos, errors = check_images([root / p for p in frame["path"]], progress=sub_progress(progress, 0.0, 0.9))
    else:
        infos, errors = check_embedded(chunks(), len(frame), progress=sub_progress(progress, 0.0, 0.9))
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
    rejected_list = good["rejected"].tolist()
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
    has_rej = any(rejected_list)
    try:
        ids, is_new = store.add_samples(root_id, records, labels=labels_list if len(records) else None, note=note,
                                        rejected=rejected_list if has_rej and len(records) else None)
    except StoreError as exc:
        raise IngestError(f"Could not write the images of {source}: {exc}") from None
    if extra is not None and len(records):
        _keep_extra(ws, extra[ok].reset_index(drop=True), ids, extra_key)

    # vanished / restored, batched
    present = set(records["path"])
    bad_listed = set(frame["path"][~ok])
    gone_ids, back_ids = [], []
    for p, sid, missing in zip(mine["path"], mine.index, mine["missing"]):
        if p in present:
            if missing:
                back_ids.append(int(sid))
        elif not missing and (p in bad_listed or not sources.exists(root / p)):
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
    if has_rej:
        n_rej = sum(len(r) for r, new in zip(rejected_list, is_new) if new)
        notes.append(f"Imported {n_rej} rejected labels (classes a person ruled out).")
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


def check_embedded(chunks: Any, n: int, *, progress: ProgressFn | None = None,
                   workers: int | None = None) -> tuple[list[ImageInfo | None], list[str | None]]:
    """:func:`check_images` for images embedded in table rows: ``chunks`` yields lists of encoded bytes
    (None = no image in the row), in row order, ``n`` rows in all."""
    progress = progress or null_progress
    infos: list[ImageInfo | None] = []
    errors: list[str | None] = []

    def one(data: bytes | None) -> tuple[ImageInfo | None, str | None]:
        if data is None:
            return None, "no image bytes in this row"
        try:
            return check_image_data(data), None
        except ImageError as exc:
            return None, exc.reason
        except Exception as exc:  # noqa: BLE001 - one bad row, not a crash
            return None, f"unreadable: {exc}"

    workers = workers or min(32, (os.cpu_count() or 2) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk in chunks:
            for info, err in pool.map(one, chunk):
                infos.append(info)
                errors.append(err)
            progress(min(1.0, len(infos) / max(n, 1)), f"checked {len(infos)}/{n} images")
    if len(infos) != n:
        raise IngestError(f"The table changed while it was read ({len(infos)} rows, {n} expected): ingest again.")
    return infos, errors


def _keep_extra(ws: Workspace, extra: pd.DataFrame, ids: np.ndarray, key: str) -> None:
    """Per-image metadata of a format (COCO boxes) as artifact ``annotations/<key>``, merged by sample id."""
    from curation.data.formats.coco import ANNOTATIONS_KIND

    new = extra.assign(sample_id=np.asarray(ids, np.int64))
    old = ws.artifacts.load_frame(ANNOTATIONS_KIND, key)
    if old is not None:
        new = pd.concat([old[~old["sample_id"].isin(new["sample_id"])], new], ignore_index=True)
    ws.artifacts.save_frame(ANNOTATIONS_KIND, key, new.sort_values("sample_id").reset_index(drop=True),
                            config={"key": key})
