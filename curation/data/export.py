"""Curated labels out: CSV/JSONL/Parquet manifests, HF imagefolder, ImageFolder tree, cleanlab arrays."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from curation.core.vocab import POSITIVE, REJECTED
from curation.data.store import StoreError

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet", "hf", "imagefolder", "cleanlab")
LINKS = ("copy", "symlink", "hardlink")
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "cleanlab": ".npz", "hf": "", "imagefolder": ""}
"""File suffix of each format's default destination ("" = a folder)."""
DUPLICATES_QUEUE = "duplicates"
SAME_IMAGE = "duplicate"
"""The review verdict that marks an image as the same picture as its near-duplicate partner."""
HF_SPLIT_DIRS = {"train": "train", "val": "validation", "test": "test", "": "train"}


class ExportError(StoreError):
    """An export that cannot be written; the message says what to do."""


def default_destination(ws: Workspace, fmt: str) -> Path:
    """A new, dated place under the workspace's ``exports/`` folder: a file, or a folder for hf / imagefolder."""
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    stem = ws.root / "exports" / f"{fmt}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = stem.with_name(stem.name + SUFFIX[fmt]), 1
    while path.exists():  # two exports within one second
        n += 1
        path = stem.with_name(f"{stem.name}-{n}{SUFFIX[fmt]}")
    return path


def export(ws: Workspace, fmt: str, dest: Path | str | None = None, *, include_unlabelled: bool = True,
           link: str = "copy", run_id: int | None = None, overwrite: bool = False,
           drop_same_images: bool = False) -> Path:
    """Write the workspace's current labels in a format training code reads.

    Parameters
    ----------
    ws : the workspace (samples flagged missing are left out).
    fmt : "csv", "jsonl", "parquet" (manifest files with columns path, labels, rejected, split, sample_id,
        sha1; ``path`` relative to the manifest's folder when the image lies under it, else absolute;
        CSV joins names with ``|``, or writes JSON lists when a class name contains ``|``);
        "hf" (a folder of images + ``metadata.jsonl`` with ``file_name`` and ``label``, or ``labels`` lists in
        multi-label workspaces; images under ``train/``, ``validation/``, ``test/``, unsplit ones in
        ``train/``); "imagefolder" (``dest/<split or 'all'>/<class>/<id>_<file>``, or ``dest/<class>/...``
        when no image has a split; single-label only; unlabelled images are left out; a ``/`` in a class
        name is written ``%2F``); "cleanlab" (``.npz`` with ``labels`` (N,) int64, ``pred_probs`` (N, K)
        float32 of a training run, ``sample_ids`` (N,) int64, ``class_names`` (K,) str; for multi-label
        workspaces also ``label_matrix`` (N, K) int8 and ``labels`` holds the first positive class).
    dest : the file (csv, jsonl, parquet, cleanlab) or folder (hf, imagefolder) to write; None:
        ``default_destination(ws, fmt)``.
    include_unlabelled : also list images with no positive label (manifests and hf).
    link : how hf / imagefolder place images: "copy", "symlink" (absolute links; not re-ingestable,
        since ingest refuses links that leave the folder) or "hardlink" (falls back to copy across devices).
    run_id : the training run whose predictions feed "cleanlab" (default: the newest run that has them).
    overwrite : replace an existing ``dest`` (folders must otherwise be empty or absent).
    drop_same_images : leave out images a reviewer marked "Same image" as their near-duplicate partner (the
        partner stays), so a duplicate cannot sit in both the training and the test split.

    Returns
    -------
    The path written (``dest``).
    """
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if link not in LINKS:
        raise ExportError(f"Unknown link mode {link!r}: use one of {', '.join(LINKS)}.")
    dest = Path(default_destination(ws, fmt) if dest is None else dest).expanduser().resolve()
    if fmt in ("hf", "imagefolder") and any(r.resolve().is_relative_to(dest) for r in ws.allowed_roots()):
        raise ExportError(f"Refusing to export into {dest}: it holds the workspace or its image folders; choose "
                          "a new folder.")
    if fmt == "cleanlab":
        return _export_cleanlab(ws, dest, run_id=run_id, overwrite=overwrite)
    table = label_table(ws, include_unlabelled=include_unlabelled, drop_same_images=drop_same_images)
    if fmt in ("csv", "jsonl", "parquet"):
        return _export_manifest(ws, table, fmt, dest, overwrite=overwrite)
    if fmt == "hf":
        return _export_hf(ws, table, dest, link=link, overwrite=overwrite)
    return _export_imagefolder(ws, table, dest, link=link, overwrite=overwrite)


def label_table(ws: Workspace, *, include_unlabelled: bool = True, drop_same_images: bool = False
                ) -> pd.DataFrame:
    """Present samples with their current labels (without the ones marked "Same image" if ``drop_same_images``).

    Returns
    -------
    DataFrame indexed by sample id with columns ``file`` (absolute Path), ``labels`` (list of positive class
    names), ``rejected`` (list of rejected names), ``split``, ``sha1``.
    """
    samples = ws.store.samples()
    ids = samples.index.to_numpy(np.int64)
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(ids)
    pos = [list(names[row == POSITIVE]) for row in m] if m.shape[1] else [[] for _ in ids]
    rej = [list(names[row == REJECTED]) for row in m] if m.shape[1] else [[] for _ in ids]
    files = [Path(r) / p for r, p in zip(samples["root"], samples["path"])]
    table = pd.DataFrame({"file": files, "labels": pos, "rejected": rej, "split": samples["split"].tolist(),
                          "sha1": samples["sha1"].tolist()}, index=pd.Index(ids, name="sample_id"))
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
def _prepare_file(dest: Path, overwrite: bool) -> None:
    if dest.is_dir():
        raise ExportError(f"{dest} is a folder: give a file name for the manifest (e.g. {dest / 'labels.csv'}).")
    if dest.exists() and not overwrite:
        raise ExportError(f"{dest} exists: choose another name or pass overwrite=True.")
    dest.parent.mkdir(parents=True, exist_ok=True)


def _manifest_path(file: Path, base: Path) -> str:
    f = Path(os.path.normpath(file))
    return f.relative_to(base).as_posix() if f.is_relative_to(base) else str(f)


def _export_manifest(ws: Workspace, table: pd.DataFrame, fmt: str, dest: Path, *, overwrite: bool) -> Path:
    _prepare_file(dest, overwrite)
    base = dest.parent
    out = pd.DataFrame({"path": [_manifest_path(f, base) for f in table["file"]],
                        "labels": table["labels"].tolist(), "rejected": table["rejected"].tolist(),
                        "split": table["split"].tolist(), "sample_id": table.index.to_numpy(np.int64),
                        "sha1": table["sha1"].tolist()})
    tmp = dest.with_name(f".{dest.name}.tmp")
    if fmt == "csv":
        as_json = _needs_lists(ws.store.class_names())
        join = (lambda xs: json.dumps(xs, ensure_ascii=False) if xs else "") if as_json else "|".join
        csv_out = out.assign(labels=out["labels"].map(join), rejected=out["rejected"].map(join))
        csv_out.to_csv(tmp, index=False, encoding="utf-8")
    elif fmt == "jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in out.to_dict("records"):
                rec["sample_id"] = int(rec["sample_id"])
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        out.to_parquet(tmp, index=False)
    os.replace(tmp, dest)
    log.info("exported %d samples to %s", len(out), dest)
    return dest


def _needs_lists(class_names: list[str]) -> bool:
    """Whether a plain text label cell could be misread on ingest (``a|b`` splits, ``[...]`` parses as a
    JSON list), so labels must be written as JSON lists to round-trip."""
    return any("|" in n or (n.strip().startswith("[") and n.strip().endswith("]")) for n in class_names)


# ---------------------------------------------------------------------- folders
def _prepare_folder(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} is a file: give a folder for this format.")
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise ExportError(f"{dest} is not empty: choose an empty or new folder, or pass overwrite=True.")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)


def _place(ws: Workspace, src: Path, target: Path, link: str) -> None:
    real = src.resolve()
    if not any(real.is_relative_to(r.resolve()) for r in ws.allowed_roots()):
        raise ExportError(f"Refusing to export {real}: it lies outside the workspace and its image folders.")
    if not real.exists():
        raise ExportError(f"{src} is gone: run ingest again to flag vanished images, then export.")
    target.parent.mkdir(parents=True, exist_ok=True)
    if link == "symlink":
        os.symlink(real, target)
        return
    if link == "hardlink":
        try:
            os.link(real, target)
            return
        except OSError as exc:
            log.warning("hard link %s failed (%s); copying instead", target, exc)
    shutil.copy2(real, target)


def _file_name(sample_id: int, file: Path) -> str:
    return f"{int(sample_id)}_{file.name}"


def _folder_name(class_name: str) -> str:
    return quote(class_name, safe=" !#$&'()+,;=@[]^`{}~-_.")


def _export_hf(ws: Workspace, table: pd.DataFrame, dest: Path, *, link: str, overwrite: bool) -> Path:
    _prepare_folder(dest, overwrite)
    multi = (ws.store.task == "multi" or bool((table["labels"].map(len) > 1).any())
             or _needs_lists(ws.store.class_names()))
    with open(dest / "metadata.jsonl", "w", encoding="utf-8") as f:
        for sid, row in table.iterrows():
            rel = f"{HF_SPLIT_DIRS.get(row['split'], 'train')}/{_file_name(sid, row['file'])}"
            _place(ws, row["file"], dest / rel, link)
            rec: dict[str, Any] = {"file_name": rel}
            if multi:
                rec["labels"] = list(row["labels"])
            else:
                rec["label"] = row["labels"][0] if row["labels"] else None
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    log.info("exported %d samples as a Hugging Face imagefolder in %s", len(table), dest)
    return dest


def _export_imagefolder(ws: Workspace, table: pd.DataFrame, dest: Path, *, link: str, overwrite: bool) -> Path:
    n_multi = int((table["labels"].map(len) > 1).sum())
    if n_multi:
        raise ExportError(f"{n_multi} images carry several labels, which an ImageFolder tree cannot hold: export "
                          "as csv, jsonl, parquet or hf instead, or resolve them to one label each.")
    labelled = table[table["labels"].map(len) == 1]
    if len(labelled) < len(table):
        log.info("imagefolder export leaves out %d unlabelled images", len(table) - len(labelled))
    if labelled.empty:
        raise ExportError("No labelled images to export: label some images first.")
    _prepare_folder(dest, overwrite)
    by_split = bool((labelled["split"] != "").any())
    for sid, row in labelled.iterrows():
        parts = [row["split"] or "all"] if by_split else []
        target = dest.joinpath(*parts, _folder_name(row["labels"][0]), _file_name(sid, row["file"]))
        _place(ws, row["file"], target, link)
    log.info("exported %d samples as an ImageFolder tree in %s", len(labelled), dest)
    return dest


# ---------------------------------------------------------------------- cleanlab
def _export_cleanlab(ws: Workspace, dest: Path, *, run_id: int | None, overwrite: bool) -> Path:
    if dest.suffix != ".npz":
        dest = dest.with_suffix(".npz") if not dest.is_dir() else dest / "cleanlab.npz"
    _prepare_file(dest, overwrite)
    arts = ws.artifacts
    if run_id is None:
        runs = ws.store.runs()
        run_id = next((int(r) for r in runs.index if arts.exists("predictions", f"run-{int(r)}")), None)
        if run_id is None:
            raise ExportError("No training run with predictions: train a model first (Train page or "
                              "`python -m curation train`), then export for cleanlab.")
    key = f"run-{int(run_id)}"
    pid = arts.load_array("predictions", key, name="ids", mmap=False)
    probs = arts.load_array("predictions", key, name="probs", mmap=False)
    if pid is None or probs is None:
        raise ExportError(f"Run {run_id} has no saved predictions: train again, or pick another run.")
    names = ws.store.class_names()
    k = len(names)
    probs = np.asarray(probs, np.float32)
    if probs.shape[1] > k:
        raise ExportError(f"Run {run_id} predicts {probs.shape[1]} classes but the workspace has {k}: pick a newer run.")
    if probs.shape[1] < k:
        log.warning("run %s predates %d classes; their probabilities are written as 0", run_id, k - probs.shape[1])
        probs = np.pad(probs, ((0, 0), (0, k - probs.shape[1])))
    present = ws.store.sample_ids()
    keep = np.isin(pid, present)
    pid, probs = np.asarray(pid, np.int64)[keep], probs[keep]
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
    if not rows.any():
        raise ExportError(f"None of the images predicted by run {run_id} is labelled: label some images first.")
    tmp = dest.with_name(f".{dest.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, dest)
    log.info("exported %d labelled samples with run %s predictions to %s", int(rows.sum()), run_id, dest)
    return dest
