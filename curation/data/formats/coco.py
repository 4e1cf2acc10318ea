"""COCO JSON in (image-level categories as labels, boxes kept as metadata) and out (``data/`` + ``labels.json``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from curation.data.formats.common import IngestError, Listing, frame_of, split_of_file
from curation.data.store import class_name_problem

log = logging.getLogger(__name__)

ANNOTATIONS_KIND = "annotations"
"""Artifact kind under which per-image metadata of an ingest (COCO boxes) is kept, one row per sample."""
IMAGE_DIRS = ("", "data", "images", "imgs", "JPEGImages")


def looks_like_coco(obj: Any) -> bool:
    """Whether a parsed JSON document is a COCO annotation file (``images`` and ``categories`` lists)."""
    return isinstance(obj, dict) and isinstance(obj.get("images"), list) and isinstance(obj.get("categories"), list)


def is_coco_file(path: Path) -> bool:
    """Whether a file holds a COCO annotation document (False for unreadable or other JSON)."""
    try:
        return looks_like_coco(load_json(path))
    except IngestError:
        return False


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IngestError(f"{path} is not readable JSON ({exc}): give a COCO annotation file or a FiftyOne "
                          "labels.json.") from None


def read_coco(path: Path, doc: dict, *, image_root: Path | None = None, labels: str = "auto") -> Listing:
    """Rows of a COCO annotation file.

    Parameters
    ----------
    path : the JSON file; ``doc`` its parsed content.
    image_root : the folder ``file_name`` starts from; default: the first of the JSON's folder, its ``data/``,
        ``images/``, a folder named like a part of the file name (``train2017/`` for ``instances_train2017.json``),
        or the same next to its parent (for ``annotations/*.json``) where the listed files exist.
    labels : "auto" (the categories of each image's annotations, several = multi-label) or "none".

    Returns
    -------
    Listing with ``extra`` = DataFrame[annotations] (JSON text of the image's annotations, category names
    included), kept as the artifact ``annotations/coco``.
    """
    cats: dict[Any, str] = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise IngestError(f"{path.name}: a category lacks 'id' or 'name': each must be "
                              '{"id": 1, "name": "cat"}.')
        name = str(c["name"]).strip()
        why = class_name_problem(name)
        if why:
            raise IngestError(f"{path.name}: category {name!r} cannot be a class name ({why}): rename it.")
        cats[c["id"]] = name
    images = [im for im in doc["images"] if isinstance(im, dict) and im.get("file_name")]
    if not images:
        raise IngestError(f"{path.name} lists no images (each needs 'id' and 'file_name').")
    root = image_root.resolve() if image_root is not None else _image_root(path, [im["file_name"] for im in images])
    by_image: dict[Any, list[dict]] = {}
    unknown = 0
    for a in doc.get("annotations") or []:
        if not isinstance(a, dict) or "image_id" not in a:
            continue
        if a.get("category_id") not in cats:
            unknown += 1
            continue
        by_image.setdefault(a["image_id"], []).append({**a, "category": cats[a["category_id"]]})
    split = split_of_file(path.stem) or ""
    paths, names, rejected, splits, extra = [], [], [], [], []
    n_boxes = 0
    for im in images:
        anns = by_image.get(im.get("id"), [])
        found = list(dict.fromkeys(a["category"] for a in anns)) if labels != "none" else []
        n_boxes += sum(1 for a in anns if a.get("bbox"))
        paths.append(str(im["file_name"]))
        names.append(found)
        rejected.append([str(r) for r in im.get("rejected") or []])
        splits.append(str(im.get("split") or split) if str(im.get("split") or split) in ("train", "val", "test")
                      else "")
        extra.append(json.dumps({"coco_image_id": im.get("id"), "annotations": anns}, ensure_ascii=False))
    notes = [f"COCO file {path.name}: {len(images)} images, {len(cats)} categories; the categories of each "
             "image's annotations are its labels (several = multi-label)."]
    if n_boxes:
        notes.append(f"{n_boxes} boxes kept as metadata (artifact {ANNOTATIONS_KIND}/coco) and written back by "
                     "`export ... coco`; this studio labels whole images.")
    if unknown:
        notes.append(f"{unknown} annotations name a category_id missing from 'categories': ignored.")
    return Listing(root=root, frame=frame_of(paths, names, splits, rejected), notes=notes,
                   extra=pd.DataFrame({"annotations": extra}), extra_key="coco")


def read_coco_files(paths: list[Path], *, image_root: Path | None = None, labels: str = "auto") -> Listing:
    """Several COCO files (``instances_train2017.json``, ``instances_val2017.json``...) as one Listing under the
    folder that holds all their images; each file's split comes from its name."""
    parts = [read_coco(p, load_json(p), image_root=image_root, labels=labels) for p in paths]
    if len(parts) == 1:
        return parts[0]
    import os

    root = Path(os.path.commonpath([str(x.root) for x in parts]))
    frames = [x.frame.assign(path=[(x.root / f).relative_to(root).as_posix() for f in x.frame["path"]])
              for x in parts]
    return Listing(root=root, frame=pd.concat(frames, ignore_index=True),
                   notes=[n for x in parts for n in x.notes], skipped=[s for x in parts for s in x.skipped],
                   extra=pd.concat([x.extra for x in parts], ignore_index=True), extra_key="coco")


def _image_root(path: Path, files: list[str]) -> Path:
    import re

    probe = files[:20]
    tried = []
    named = [t for t in re.split(r"[-_. ]+", path.stem) if t]  # instances_train2017.json -> train2017/
    for base in (path.parent, path.parent.parent):
        for sub in (*IMAGE_DIRS, *named):
            cand = (base / sub).resolve()
            tried.append(cand)
            if sum((cand / f).is_file() for f in probe) * 2 >= len(probe):
                return cand
    raise IngestError(f"The images listed in {path.name} (e.g. {probe[0]}) are not in {', '.join(map(str, tried[:4]))}"
                      f"...: pass --image-root (image_root=) the folder their file_name starts from.")


def write_coco(table: pd.DataFrame, class_names: list[str], dest: Path, *, put: Callable[[int, Any, Path], str],
               boxes: dict[int, list[dict]] | None = None) -> int:
    """Write ``dest/data/<images>`` and ``dest/labels.json`` (COCO: images, categories, annotations).

    Every positive label is one image-level annotation (``category_id``, no ``bbox``); boxes kept from a COCO
    ingest are written back for the categories the image still has. Images carry ``split`` and ``rejected``.
    Returns the number of images written.
    """
    from curation.data.atomic import atomic_write

    cid = {n: i + 1 for i, n in enumerate(class_names)}
    images, anns = [], []
    boxes = boxes or {}
    for sid, row in table.iterrows():
        name = put(int(sid), row["file"], dest / "data")
        images.append({"id": int(sid), "file_name": name, "width": int(row["width"]), "height": int(row["height"]),
                       "split": row["split"], "rejected": list(row["rejected"])})
        kept = [a for a in boxes.get(int(sid), []) if a.get("category") in row["labels"] and a.get("bbox")]
        with_box = {a["category"] for a in kept}
        for a in kept:
            anns.append({k: v for k, v in a.items() if k not in ("id", "image_id", "category_id", "category")}
                        | {"id": len(anns) + 1, "image_id": int(sid), "category_id": cid[a["category"]]})
        for n in row["labels"]:
            if n not in with_box:
                anns.append({"id": len(anns) + 1, "image_id": int(sid), "category_id": cid[n], "iscrowd": 0})
    doc = {"info": {"description": "exported by curation"}, "images": images,
           "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in cid.items()], "annotations": anns}
    atomic_write(dest / "labels.json", json.dumps(doc, ensure_ascii=False))
    return len(images)
