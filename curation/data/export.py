"""Curated labels out: manifests, HF imagefolder / Parquet, ImageFolder, FiftyOne, COCO, cleanlab arrays."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curation.core.vocab import POSITIVE, REJECTED
from curation.data import sources
from curation.data.atomic import atomic_write
from curation.data.csvsafe import guard_frame
from curation.data.formats.common import SPLIT_DIRS, ExportError, folder_name, prepare_file, prepare_folder  # noqa: F401 - ExportError re-exported

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet", "hf", "hf-parquet", "imagefolder", "fiftyone", "coco", "cleanlab")
LINKS = ("copy", "symlink", "hardlink")
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "cleanlab": ".npz"}
"""File suffix of each file format's default destination (the others write a folder)."""
DUPLICATES_QUEUE = "duplicates"
SAME_IMAGE = "duplicate"
"""The review verdict that marks an image as the same picture as its near-duplicate partner."""
HF_SPLIT_DIRS = {**SPLIT_DIRS, "": "train"}
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
          (b"MM\x00*", ".tif"))


def default_destination(ws: Workspace, fmt: str) -> Path:
    """A new, dated place under the workspace's ``exports/`` folder: a file, or a folder for hf / imagefolder."""
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    stem = ws.root / "exports" / f"{fmt}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = SUFFIX.get(fmt, "")
    path, n = stem.with_name(stem.name + suffix), 1
    while path.exists():  # two exports within one second
        n += 1
        path = stem.with_name(f"{stem.name}-{n}{suffix}")
    return path


def export(ws: Workspace, fmt: str, dest: Path | str | None = None, *, include_unlabelled: bool = True,
           link: str = "copy", overwrite: bool = False, drop_same_images: bool = False,
           pred_probs: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write the workspace's current labels in a format training code and other tools read.

    Parameters
    ----------
    ws : the workspace (samples flagged missing are left out).
    fmt : one of FORMATS:

        * "csv", "jsonl", "parquet": manifest files with columns path, labels, rejected, split, sample_id, sha1;
          ``path`` relative to the manifest's folder (``..`` where the images lie elsewhere; ingest accepts
          those rows because their sha1 matches); CSV joins names with ``|``, or writes JSON lists when a
          class name contains ``|``. Embedded images are ``<file>.parquet#<row>``.
        * "hf": a Hugging Face imagefolder: ``train/``, ``validation/``, ``test/`` each with its images and a
          ``metadata.jsonl`` (``file_name``, ``label`` or ``labels`` lists in multi-label workspaces,
          ``rejected`` text, ``split``), so ``datasets.load_dataset("imagefolder", data_dir=dest)`` gets labels
          and splits (see :func:`_export_hf` for the typing rules). Unsplit images go to ``train/`` (their
          ``split`` column stays empty).
        * "hf-parquet": ``dest/data/<split>-00000-of-00001.parquet`` with the images embedded and ``ClassLabel``
          features (``label``, -1 = unlabelled; ``labels`` = ``List(ClassLabel)`` when multi-label), read by
          ``datasets.load_dataset(dest)``.
        * "imagefolder": torchvision's tree ``dest/<split>/<class>/<id>_<file>`` (``dest/<class>/...`` when no
          image has a split; unsplit images in ``all/`` otherwise), single-label, labelled images only. Class
          folders are the class names (``/`` written ``%2F``); every split holds every class folder (empty ones
          too: ``ImageFolder(..., allow_empty=True)``), so ``class_to_idx`` is the same in every split, and
          ``classes.txt`` lists the classes in that index order.
        * "fiftyone": FiftyOne image-classification datasets (``data/`` + ``labels.json``), one per split folder
          when there are splits; rejections in ``curation_rejected.json``.
        * "coco": ``data/`` + ``labels.json`` with ``images`` (``split``, ``rejected``), ``categories`` and one
          image-level annotation per label (boxes kept from a COCO ingest are written back).
        * "cleanlab": ``.npz`` with ``labels`` (N,) int64, ``pred_probs`` (N, K) float32 OUT-OF-FOLD
          probabilities (``pred_probs`` argument; :func:`curation.labels.heldout.export_cleanlab` computes
          them), ``sample_ids`` (N,) int64, ``class_names`` (K,) str; multi-label workspaces also get
          ``label_matrix`` (N, K) int8 (``labels`` then holds the first positive class).
    dest : the file (csv, jsonl, parquet, cleanlab) or folder (others) to write; None:
        ``default_destination(ws, fmt)``.
    include_unlabelled : also list images with no positive label (all but imagefolder / cleanlab).
    link : how folder formats place image files: "copy", "symlink" (absolute links; not re-ingestable,
        since ingest refuses links that leave the folder) or "hardlink" (falls back to copy across devices).
        Embedded images are always written out as files.
    overwrite : replace an existing ``dest`` (folders must otherwise be empty or absent).
    drop_same_images : leave out images a reviewer marked "Same image" as their near-duplicate partner (the
        partner stays), so a duplicate cannot sit in both the training and the test split.
    pred_probs : for "cleanlab", (ids (M,) int64, probs (M, K) float) out-of-fold probabilities.

    Returns
    -------
    The path written (``dest``).
    """
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if link not in LINKS:
        raise ExportError(f"Unknown link mode {link!r}: use one of {', '.join(LINKS)}.")
    dest = Path(default_destination(ws, fmt) if dest is None else dest).expanduser().resolve()
    if fmt not in SUFFIX and any(r.resolve().is_relative_to(dest) for r in ws.allowed_roots()):
        raise ExportError(f"Refusing to export into {dest}: it holds the workspace or its image folders; choose "
                          "a new folder.")
    if fmt == "cleanlab":
        return _export_cleanlab(ws, dest, pred_probs=pred_probs, overwrite=overwrite)
    table = label_table(ws, include_unlabelled=include_unlabelled, drop_same_images=drop_same_images)
    if fmt in ("csv", "jsonl", "parquet"):
        return _export_manifest(ws, table, fmt, dest, overwrite=overwrite)
    if fmt == "imagefolder":
        return _export_imagefolder(ws, table, dest, link=link, overwrite=overwrite)
    prepare_folder(dest, overwrite)
    names = ws.store.class_names()
    multi = _is_multi(ws, table)

    put = _Placer(ws, link)
    try:
        if fmt == "hf":
            _export_hf(ws, table, dest, multi=multi, put=put)
        elif fmt == "hf-parquet":
            from curation.data.formats.hf import write_parquet

            write_parquet(table, names, dest, multi=multi, read=lambda f: _read(ws, f, put.roots),
                          file_name=lambda sid, f, d: _file_name(sid, f, d))
        elif fmt == "fiftyone":
            from curation.data.formats.fiftyone import write_fiftyone

            write_fiftyone(table, names, dest, multi=multi, put=put)
        else:
            from curation.data.formats.coco import ANNOTATIONS_KIND, write_coco

            kept = ws.artifacts.load_frame(ANNOTATIONS_KIND, "coco")
            boxes = {} if kept is None else {int(s): json.loads(a).get("annotations", [])
                                             for s, a in zip(kept["sample_id"], kept["annotations"])}
            write_coco(table, names, dest, put=put, boxes=boxes)
        put.finish()
    finally:
        put.close()
    log.info("exported %d samples as %s in %s", len(table), fmt, dest)
    return dest


def label_table(ws: Workspace, *, include_unlabelled: bool = True, drop_same_images: bool = False
                ) -> pd.DataFrame:
    """Present samples with their current labels (without the ones marked "Same image" if ``drop_same_images``).

    Returns
    -------
    DataFrame indexed by sample id with columns ``file`` (absolute Path; ``<file>#<row>`` for embedded images),
    ``labels`` (list of positive class names), ``rejected`` (list of rejected names), ``split``, ``sha1``,
    ``width``, ``height``.
    """
    samples = ws.store.samples()
    ids = samples.index.to_numpy(np.int64)
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(ids)
    pos = [list(names[row == POSITIVE]) for row in m] if m.shape[1] else [[] for _ in ids]
    rej = [list(names[row == REJECTED]) for row in m] if m.shape[1] else [[] for _ in ids]
    files = [Path(r) / p for r, p in zip(samples["root"], samples["path"])]
    table = pd.DataFrame({"file": files, "labels": pos, "rejected": rej, "split": samples["split"].tolist(),
                          "sha1": samples["sha1"].tolist(), "width": samples["width"].to_numpy(np.int64),
                          "height": samples["height"].to_numpy(np.int64)}, index=pd.Index(ids, name="sample_id"))
    if not include_unlabelled:
        table = table[table["labels"].map(len) > 0]
    if drop_same_images:
        table = table[~table.index.isin(same_images(ws))]
    return table


def same_images(ws: Workspace) -> np.ndarray:
    """(M,) int64 ids of samples whose latest verdict in the near-duplicates queue is "Same image" (an undo of
    that verdict, recorded as a later review, takes it back)."""
    reviews = ws.store.reviews(DUPLICATES_QUEUE)
    if reviews.empty:
        return np.zeros(0, np.int64)
    latest = reviews[~reviews.duplicated("sample_id", keep="last")]
    return np.sort(latest.loc[latest["verdict"] == SAME_IMAGE, "sample_id"].to_numpy(np.int64))


# ---------------------------------------------------------------------- manifests
def _manifest_path(file: Path, base: Path) -> str:
    """``file`` relative to ``base`` (with ``..`` when it lies elsewhere), posix separators."""
    ref = sources.split_ref(file)
    target = ref[0] if ref is not None else Path(os.path.normpath(file))
    rel = Path(os.path.relpath(target, base)).as_posix()
    return sources.embedded_ref(rel, ref[1]) if ref is not None else rel


def _export_manifest(ws: Workspace, table: pd.DataFrame, fmt: str, dest: Path, *, overwrite: bool) -> Path:
    prepare_file(dest, overwrite)
    base = dest.parent
    out = pd.DataFrame({"path": [_manifest_path(f, base) for f in table["file"]],
                        "labels": table["labels"].tolist(), "rejected": table["rejected"].tolist(),
                        "split": table["split"].tolist(), "sample_id": table.index.to_numpy(np.int64),
                        "sha1": table["sha1"].tolist()})
    if fmt == "csv":
        as_json = _needs_lists(ws.store.class_names())
        join = (lambda xs: json.dumps(xs, ensure_ascii=False) if xs else "") if as_json else "|".join
        csv_out = out.assign(labels=out["labels"].map(join), rejected=out["rejected"].map(join))
        atomic_write(dest, lambda tmp: guard_frame(csv_out).to_csv(tmp, index=False, encoding="utf-8"))  # no formulas
    elif fmt == "jsonl":
        lines = []
        for rec in out.to_dict("records"):
            rec["sample_id"] = int(rec["sample_id"])
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        atomic_write(dest, "".join(lines))
    else:
        atomic_write(dest, lambda tmp: out.to_parquet(tmp, index=False))
    log.info("exported %d samples to %s", len(out), dest)
    return dest


def _needs_lists(class_names: list[str]) -> bool:
    """Whether a plain text label cell could be misread on ingest (``a|b`` splits, ``[...]`` parses as a
    JSON list), so labels must be written as JSON lists to round-trip."""
    return any("|" in n or (n.strip().startswith("[") and n.strip().endswith("]")) for n in class_names)


def _is_multi(ws: Workspace, table: pd.DataFrame) -> bool:
    return (ws.store.task == "multi" or bool((table["labels"].map(len) > 1).any())
            or _needs_lists(ws.store.class_names()))


# ---------------------------------------------------------------------- folders
def _read(ws: Workspace, file: Path, roots: list[Path] | None = None) -> bytes:
    """The encoded bytes of a sample's image (a file, or an embedded row), inside the allowed (resolved) roots."""
    ref = sources.split_ref(file)
    real = (ref[0] if ref is not None else file).resolve()
    if not any(real.is_relative_to(r) for r in roots or [r.resolve() for r in ws.allowed_roots()]):
        raise ExportError(f"Refusing to export {real}: it lies outside the workspace and its image folders.")
    if not real.exists():
        raise ExportError(f"{file} is gone: run ingest again to flag vanished images, then export.")
    return sources.read_bytes(file) if ref is not None else real.read_bytes()


def _suffix(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".img")


def _file_name(sample_id: int, file: Path, data: bytes | None = None) -> str:
    """``<id>_<file name>``; for an embedded image ``<id>_<container stem>_<row>.<ext from its bytes>``."""
    ref = sources.split_ref(file)
    if ref is None:
        return f"{int(sample_id)}_{file.name}"
    return f"{int(sample_id)}_{ref[0].stem}_{ref[1]}{_suffix(data or b'')}"


class _Placer:
    """Puts sample images into export folders: names are decided at once, the copies (or links) run in a few
    threads (file copies wait on the disk, not the CPU); :meth:`finish` waits and raises the first failure."""

    def __init__(self, ws: Workspace, link: str, workers: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.ws, self.link = ws, link
        self.roots = [r.resolve() for r in ws.allowed_roots()]
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures: list[Any] = []
        self.made: set[Path] = set()

    def __call__(self, sid: int, src: Path, folder: Path) -> str:
        if folder not in self.made:
            folder.mkdir(parents=True, exist_ok=True)
            self.made.add(folder)
        if sources.split_ref(src) is not None:
            data = _read(self.ws, src, self.roots)
            name = _file_name(sid, src, data)
            self.futures.append(self.pool.submit(atomic_write, folder / name, data))
            return name
        real = src.resolve()
        if not any(real.is_relative_to(r) for r in self.roots):
            raise ExportError(f"Refusing to export {real}: it lies outside the workspace and its image folders.")
        name = _file_name(sid, src)
        self.futures.append(self.pool.submit(self._put_file, src, real, folder / name))
        return name

    def _put_file(self, src: Path, real: Path, target: Path) -> None:
        if not real.exists():
            raise ExportError(f"{src} is gone: run ingest again to flag vanished images, then export.")
        if self.link == "symlink":
            os.symlink(real, target)
            return
        if self.link == "hardlink":
            try:
                os.link(real, target)
                return
            except OSError as exc:
                log.warning("hard link %s failed (%s); copying instead", target, exc)
        shutil.copy2(real, target)

    def finish(self) -> None:
        for f in self.futures:
            f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _export_hf(ws: Workspace, table: pd.DataFrame, dest: Path, *, multi: bool, put: Any) -> None:
    """One ``metadata.jsonl`` per split folder, as ``datasets``' imagefolder builder reads it.

    ``datasets`` infers each file's column types and refuses files that differ, and a column holding only
    nulls or empty lists infers as null: so ``rejected`` is text (names joined by ``|``, a JSON list when a
    name holds ``|``), an unlabelled image in a split without any label gets ``""`` instead of null, and in
    multi-label workspaces ``labels`` is written as such text when some split has no label at all.
    """
    folders = table["split"].map(lambda s: HF_SPLIT_DIRS.get(s, "train"))
    as_json = _needs_lists(ws.store.class_names())

    def text(xs: list[str]) -> str:
        return (json.dumps(xs, ensure_ascii=False) if xs else "") if as_json else "|".join(xs)

    labelled = table["labels"].map(len) > 0
    empty_split = {f for f in folders.unique() if not labelled[folders == f].any()}
    for folder in sorted(folders.unique()):
        lines = []
        for sid, row in table[folders == folder].iterrows():
            rec: dict[str, Any] = {"file_name": put(int(sid), row["file"], dest / folder)}
            if multi:
                rec["labels"] = text(row["labels"]) if empty_split else list(row["labels"])
            else:
                rec["label"] = row["labels"][0] if row["labels"] else ("" if folder in empty_split else None)
            rec["rejected"] = text(row["rejected"])
            rec["split"] = row["split"]
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        atomic_write(dest / folder / "metadata.jsonl", "".join(lines))


def _export_imagefolder(ws: Workspace, table: pd.DataFrame, dest: Path, *, link: str, overwrite: bool) -> Path:
    n_multi = int((table["labels"].map(len) > 1).sum())
    if n_multi:
        raise ExportError(f"{n_multi} images carry several labels, which an ImageFolder tree cannot hold: export "
                          "as csv, jsonl, parquet, hf, hf-parquet, fiftyone or coco instead, or resolve them to one "
                          "label each.")
    labelled = table[table["labels"].map(len) == 1]
    if len(labelled) < len(table):
        log.info("imagefolder export leaves out %d unlabelled images", len(table) - len(labelled))
    if labelled.empty:
        raise ExportError("No labelled images to export: label some images first.")
    prepare_folder(dest, overwrite)
    by_split = bool((labelled["split"] != "").any())
    splits = sorted({s or "all" for s in labelled["split"]}) if by_split else [""]
    classes = sorted(ws.store.class_names(), key=folder_name)  # torchvision's class index order
    for split in splits:
        for c in classes:
            (dest / split / folder_name(c)).mkdir(parents=True, exist_ok=True)
    put = _Placer(ws, link)
    try:
        for sid, row in labelled.iterrows():
            parts = [row["split"] or "all"] if by_split else []
            put(int(sid), row["file"], dest.joinpath(*parts, folder_name(row["labels"][0])))
        put.finish()
    finally:
        put.close()
    atomic_write(dest / "classes.txt", "".join(c + "\n" for c in classes))
    log.info("exported %d samples as an ImageFolder tree in %s", len(labelled), dest)
    return dest


# ---------------------------------------------------------------------- cleanlab
def _export_cleanlab(ws: Workspace, dest: Path, *, pred_probs: tuple[np.ndarray, np.ndarray] | None,
                     overwrite: bool) -> Path:
    if pred_probs is None:
        raise ExportError("The cleanlab export needs out-of-fold probabilities (a model's probabilities on its own "
                          "training images are in-sample, and cleanlab then finds almost nothing): use "
                          "`python -m curation export WS cleanlab`, curation.open(WS).export('cleanlab') or "
                          "curation.labels.heldout.export_cleanlab(ws), which compute them.")
    if dest.suffix != ".npz":
        dest = dest.with_suffix(".npz") if not dest.is_dir() else dest / "cleanlab.npz"
    prepare_file(dest, overwrite)
    pid, probs = np.asarray(pred_probs[0], np.int64), np.asarray(pred_probs[1], np.float32)
    names = ws.store.class_names()
    k = len(names)
    if probs.ndim != 2 or len(probs) != len(pid) or probs.shape[1] != k:
        raise ExportError(f"pred_probs {probs.shape} do not match {len(pid)} ids and {k} classes: recompute them "
                          "for the current classes.")
    keep = np.isin(pid, ws.store.sample_ids())
    pid, probs = pid[keep], probs[keep]
    m = ws.store.label_matrix(pid)
    n_pos = (m == POSITIVE).sum(1)
    arrays: dict[str, np.ndarray] = {"class_names": np.array(names, dtype=str)}
    if ws.store.task == "multi" or (n_pos > 1).any():
        # multi-label: cleanlab wants a list of label lists; an (N, K) 0/1 matrix carries the same
        rows = n_pos > 0
        arrays["label_matrix"] = (m[rows] == POSITIVE).astype(np.int8)
    else:
        rows = n_pos == 1
    arrays["labels"] = (m[rows] == POSITIVE).argmax(1).astype(np.int64)
    arrays["pred_probs"] = probs[rows]
    arrays["sample_ids"] = pid[rows]
    arrays["rejected"] = (m[rows] == REJECTED).astype(np.int8)
    if not rows.any():
        raise ExportError("None of the images with probabilities is labelled: label some images first.")
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **arrays)

    atomic_write(dest, write)
    log.info("exported %d labelled samples with out-of-fold probabilities to %s", int(rows.sum()), dest)
    return dest
