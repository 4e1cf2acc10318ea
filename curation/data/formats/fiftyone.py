"""FiftyOne image-classification datasets (``data/`` + ``labels.json``, optionally one per split folder) in and out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from curation.data.formats.common import SPLIT_DIRS, Listing, frame_of, parse_labels, split_name
from curation.data.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

REJECTED_FILE = "curation_rejected.json"
"""Sidecar ``{uuid: [class names]}`` of rejected labels, beside ``labels.json`` (FiftyOne ignores it)."""


def looks_like_fiftyone(obj: Any) -> bool:
    """Whether a parsed ``labels.json`` is FiftyOne's image-classification schema (``labels`` is an object)."""
    return isinstance(obj, dict) and isinstance(obj.get("labels"), dict) and not isinstance(obj.get("images"), list)


def fiftyone_dirs(folder: Path) -> list[tuple[Path, str]] | None:
    """(dataset folder, split) of a FiftyOne classification export: the folder itself, or its split folders."""
    def is_one(d: Path) -> bool:
        if not ((d / "labels.json").is_file() and (d / "data").is_dir()):
            return False
        try:
            return looks_like_fiftyone(json.loads((d / "labels.json").read_text(encoding="utf-8-sig")))
        except (OSError, ValueError):
            return False

    if is_one(folder):
        return [(folder, "")]
    subs = [(d, split_name(d.name)) for d in sorted(folder.iterdir()) if d.is_dir() and is_one(d)]
    return [(d, s or "") for d, s in subs] or None


def read_fiftyone(folder: Path, dirs: list[tuple[Path, str]], *, labels: str = "auto") -> Listing:
    """Rows of FiftyOne image-classification datasets under ``folder``.

    ``labels.json`` is ``{"classes": [...] | null, "labels": {uuid: target}}`` where a target is a class index
    (into ``classes``), a name, ``null``, a ``{"label": ...}`` object, or a list of those (multi-label); the
    image of ``uuid`` is ``data/<uuid>.<ext>``.
    """
    paths, names, rejected, splits = [], [], [], []
    skipped: list[tuple[str, str]] = []
    n_boxes = 0
    for d, split in dirs:
        doc = json.loads((d / "labels.json").read_text(encoding="utf-8-sig"))
        classes = doc.get("classes")
        rej_doc = {}
        if (d / REJECTED_FILE).is_file():
            rej_doc = json.loads((d / REJECTED_FILE).read_text(encoding="utf-8"))
        files = {p.stem: p for p in sorted((d / "data").iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        rel_dir = d.relative_to(folder)
        for uuid, target in doc["labels"].items():
            f = files.get(str(uuid))
            if f is None:
                skipped.append((f"{(rel_dir / 'data' / str(uuid)).as_posix()}.*", "file not found"))
                continue
            items = target if isinstance(target, list) else [target]
            n_boxes += sum(1 for t in items if isinstance(t, dict) and "bounding_box" in t)
            try:
                found = _targets(target, classes) if labels != "none" else []
            except ValueError as exc:
                skipped.append((f.relative_to(folder).as_posix(), f"labels.json {uuid}: {exc}"))
                continue
            paths.append(f.relative_to(folder).as_posix())
            names.append(found)
            rejected.append(parse_labels(rej_doc.get(str(uuid)))[0])
            splits.append(split)
        listed = {str(u) for u in doc["labels"]}
        for stem, f in files.items():
            if stem not in listed:  # in data/ but not in labels.json: unlabelled
                paths.append(f.relative_to(folder).as_posix())
                names.append([])
                rejected.append([])
                splits.append(split)
    notes = [f"FiftyOne image-classification dataset: {len(paths)} images in "
             f"{', '.join(d.relative_to(folder).as_posix() or '.' for d, _ in dirs)}."]
    if n_boxes:
        notes.append(f"{n_boxes} detections: their labels became image labels; their boxes were not kept (this "
                     "studio labels whole images).")
    return Listing(root=folder, frame=frame_of(paths, names, splits, rejected), notes=notes, skipped=skipped)


def _targets(target: Any, classes: list | None) -> list[str]:
    items = target if isinstance(target, list) else [target]
    out: list[str] = []
    for t in items:
        if isinstance(t, dict):
            t = t.get("label")
        if t is None:
            continue
        if isinstance(t, int) and not isinstance(t, bool) and classes is not None:
            if not 0 <= t < len(classes):
                raise ValueError(f"class index {t} is outside the {len(classes)} classes")
            t = classes[t]
        out += [n for n in parse_labels(str(t))[0] if n not in out]
    return out


def write_fiftyone(table: pd.DataFrame, class_names: list[str], dest: Path, *, multi: bool,
                   put: Callable[[int, Any, Path], str]) -> dict[str, int]:
    """Write FiftyOne image-classification datasets: ``dest/`` (no splits) or ``dest/<train|validation|test|all>/``
    (``all``: the unsplit images),
    each ``data/<uuid>.<ext>`` + ``labels.json`` with class indices (lists of them when ``multi``).

    Returns {folder: images written}.
    """
    from curation.data.atomic import atomic_write

    index = {n: i for i, n in enumerate(class_names)}
    by_split = bool((table["split"] != "").any())
    folders = table["split"].map(lambda s: SPLIT_DIRS.get(s, "all")) if by_split else pd.Series(
        "", index=table.index)
    written: dict[str, int] = {}
    for folder in sorted(folders.unique()):
        part = table[folders == folder]
        base = dest / folder if folder else dest
        labels: dict[str, Any] = {}
        rejected: dict[str, list[str]] = {}
        for sid, row in part.iterrows():
            name = put(int(sid), row["file"], base / "data")
            uuid = Path(name).stem
            idx = [index[n] for n in row["labels"]]
            labels[uuid] = idx if multi else (idx[0] if idx else None)
            if row["rejected"]:
                rejected[uuid] = list(row["rejected"])
        atomic_write(base / "labels.json", json.dumps({"classes": list(class_names), "labels": labels},
                                                      ensure_ascii=False))
        if rejected:
            atomic_write(base / REJECTED_FILE, json.dumps(rejected, ensure_ascii=False))
        written[folder or "."] = len(part)
    return written
