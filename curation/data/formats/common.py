"""What every format reader and writer shares: errors, split names, label cells, the listing an ingest consumes."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote

import numpy as np
import pandas as pd

from curation.data import sources
from curation.data.store import StoreError, class_name_problem

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "all": "", "": ""}
"""Split names recognised in manifests and as top-level folders (lower-cased), mapped to the store's splits."""
SPLIT_DIRS = {"train": "train", "val": "validation", "test": "test"}
"""The store's splits as Hugging Face (and FiftyOne) name their split folders."""
NOT_CLASSES = ("images", "image", "imgs", "data", "jpegimages", "media")
"""Folder names that hold a dataset's images in COCO / FiftyOne / VOC layouts: never a class."""


class IngestError(StoreError):
    """A source that cannot be ingested as a whole; the message names the file and says what to do."""


class ExportError(StoreError):
    """An export that cannot be written; the message says what to do."""


@dataclass
class Listing:
    """Rows a format reader found, before the images are checked and written.

    Attributes
    ----------
    root : the folder sample paths are relative to (registered as an image root).
    frame : DataFrame[path, labels, rejected, split]: ``path`` relative to ``root`` (``file.parquet#row`` for
        embedded images), ``labels`` / ``rejected`` lists of class names, ``split`` a store split.
    chunks : for embedded images, a function yielding the encoded bytes of the rows in order, a list per chunk
        (checked in memory, never copied to disk).
    notes : things worth telling the user.
    skipped : (path, reason) of rows left out.
    extra : optional DataFrame aligned with ``frame`` of per-image metadata to keep (COCO boxes...),
        saved as artifact ``annotations/<extra_key>`` keyed by sample id.
    extra_key : the artifact key of ``extra``.
    """

    root: Path
    frame: pd.DataFrame
    chunks: Callable[[], Iterator[list[bytes | None]]] | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extra: pd.DataFrame | None = None
    extra_key: str = ""


def frame_of(paths: list[str], labels: list[list[str]], splits: list[str],
             rejected: list[list[str]] | None = None) -> pd.DataFrame:
    """The ``Listing.frame`` of aligned lists."""
    return pd.DataFrame({"path": paths, "labels": labels,
                         "rejected": rejected if rejected is not None else [[] for _ in paths], "split": splits})


def split_name(value: Any) -> str | None:
    """The store split of a split name or alias (``validation`` -> ``val``), None when unknown."""
    return SPLIT_ALIASES.get(str(value).strip().lower())


def split_of_file(name: str) -> str | None:
    """The split a shard file or folder name announces (``train-00000-of-00002.parquet``, ``test.arrow``,
    ``instances_val2017.json``), None when it names none."""
    import re

    for token in re.split(r"[-_. ]+", name.lower()):
        token = token.rstrip("0123456789")
        if token in SPLIT_ALIASES and token not in ("", "all"):
            return SPLIT_ALIASES[token]
    return None


def is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)


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
    if value is None or is_nan(value):
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
        if it is None or is_nan(it):
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


def folder_name(class_name: str) -> str:
    """A class name as a folder name: readable, only ``/`` (and the names ``.``/``..``) escaped as ``%2F``/``%2E``.

    Ingest decodes these escapes back (``curation.data.ingest``)."""
    name = class_name.replace("%2F", "%252F").replace("%2f", "%252f").replace("/", "%2F")
    return {".": "%2E", "..": "%2E%2E"}.get(name, name)


def prepare_folder(dest: Path, overwrite: bool) -> None:
    """An empty folder at ``dest`` (an existing non-empty one only with ``overwrite``)."""
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} is a file: give a folder for this format.")
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise ExportError(f"{dest} is not empty: choose an empty or new folder, or pass overwrite=True "
                              "(`--overwrite` on the command line).")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)


def prepare_file(dest: Path, overwrite: bool) -> None:
    """A writable file path at ``dest`` (an existing file only with ``overwrite``)."""
    if dest.is_dir():
        raise ExportError(f"{dest} is a folder: give a file name for the manifest (e.g. {dest / 'labels.csv'}).")
    if dest.exists() and not overwrite:
        raise ExportError(f"{dest} exists: choose another name or pass overwrite=True (`--overwrite` on the "
                          "command line).")
    dest.parent.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------- paths
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
    if not sources.exists(full):
        return "", "file not found"
    return rel, None
