"""Manifests (CSV, TSV, JSONL, Parquet, HF ``metadata.jsonl``) read into rows of paths, labels, rejections, splits."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from curation.data import sources
from curation.data.csvsafe import sniff_encoding, unguard_frame
from curation.data.formats.common import (
    SPLIT_ALIASES,
    IngestError,
    _folder_class,
    _safe_relative,
    _text_problem,
    is_nan,
    parse_labels,
    split_name,
)
from curation.data.images import IMAGE_EXTENSIONS

PATH_COLUMNS = ("path", "file_name", "file", "filename", "image")
LABEL_COLUMNS = ("label", "labels", "class", "category", "tags")
SPLIT_COLUMNS = ("split", "subset")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
HF_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def _manifest_rows(path: Path, root: Path, *, labels: str, split_default: str = "", widen: bool = False
                   ) -> tuple[pd.DataFrame, list[tuple[str, str]], list[str]]:
    """Rows of a manifest: (DataFrame[path, labels, rejected, split, line], skipped, notes).

    With ``widen``, escaping rows verified by their ``sha1`` move the root up (``frame.attrs["root"]``)."""
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
    rej_col = cols.get("rejected") if label_col is not None else None
    sha_col = cols.get("sha1") if widen else None
    _check_column_types(df, path, path_col, label_col)
    hf = path.name.lower() in HF_METADATA

    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    if labels == "auto" and label_col is None:
        notes.append(f"{path.name} has no label column ({', '.join(LABEL_COLUMNS)}): its images were added "
                     "unlabelled; name the column holding class names one of those to import labels.")
    n_empty_labels = 0
    unknown_splits: set[str] = set()
    out_path, out_labels, out_rej, out_split, out_line, escaped = [], [], [], [], [], []
    first_line = 2 if path.suffix.lower() in (".csv", ".tsv") else 1
    n = len(df)
    path_vals = df[path_col].tolist()
    label_vals = df[label_col].tolist() if label_col is not None else [None] * n
    rej_vals = df[rej_col].tolist() if rej_col is not None else [None] * n
    split_vals = df[split_col].tolist() if split_col is not None else [None] * n
    sha_vals = df[sha_col].tolist() if sha_col is not None else [None] * n
    for i, (pv, lv, rv, sv, sha) in enumerate(zip(path_vals, label_vals, rej_vals, split_vals, sha_vals)):
        line = i + first_line
        where = f"{path.name} row {line}"
        if not isinstance(pv, str) or not pv.strip():
            skipped.append((f"<{where}>", "no path in this row"))
            continue
        rel, why = _safe_relative(pv.strip(), root)
        if why and root != path.parent and not os.path.isabs(pv.strip()):
            # relative to the manifest's folder (as export writes them) and inside the given image root
            near = os.path.normpath(path.parent / pv.strip())
            if Path(near).is_relative_to(root):
                rel, why = _safe_relative(os.path.relpath(near, root), root)
        if why:
            target = _verified_outside(pv.strip(), root, sha) if sha else None
            if target is None:
                skipped.append((pv, why))
                continue
            rel = str(target)
            escaped.append(len(out_path))
        try:
            names, n_empty = parse_labels(lv)
            rejected, _ = parse_labels(rv)
            if from_folders:
                dirs = PurePosixPath(rel).parts[:-1]
                names = parse_labels([_folder_class(dirs[0])])[0] if dirs else []
        except ValueError as exc:
            skipped.append((pv, f"{where}: {exc}"))
            continue
        n_empty_labels += n_empty
        s = split_default
        if isinstance(sv, str) and not sv.strip() and split_col is not None and hf:
            s = ""  # an explicit empty split in HF metadata (export writes it for unsplit images in train/)
        elif sv is not None and not is_nan(sv) and str(sv).strip():
            mapped = split_name(str(sv))
            if mapped is None:
                unknown_splits.add(str(sv))
                mapped = ""
            s = mapped
        elif hf and not split_default and split_col is None:
            first = PurePosixPath(rel).parts[0].lower() if len(PurePosixPath(rel).parts) > 1 else ""
            s = SPLIT_ALIASES.get(first, "")
        out_path.append(rel)
        out_labels.append(names)
        out_rej.append(rejected)
        out_split.append(s)
        out_line.append(line)
    if n_empty_labels:
        notes.append(f"Dropped {n_empty_labels} empty or blank label names in {path.name}.")
    if unknown_splits:
        notes.append(f"Unknown split values {sorted(unknown_splits)[:5]} in {path.name} were left blank; "
                     "use train, val or test.")
    new_root = None
    if escaped:
        files = [Path(p) if i in set(escaped) else root / p for i, p in enumerate(out_path)]
        new_root = Path(os.path.commonpath([str(f.parent) for f in files] + [str(root)]))
        if len(new_root.parts) < 3 or new_root == Path.home():
            for i in sorted(escaped, reverse=True):
                skipped.append((out_path[i], f"lies outside {root}, and the folder holding all images ({new_root}) "
                                "is too broad to serve: pass image_root= a folder containing them"))
                for lst in (out_path, out_labels, out_rej, out_split, out_line):
                    del lst[i]
            new_root = None
        else:
            out_path = [f.relative_to(new_root).as_posix() for f in files]
            notes.append(f"{len(escaped)} images of this exported manifest lie outside its folder (verified by "
                         f"their sha1): the image root is {new_root}.")
    frame = pd.DataFrame({"path": out_path, "labels": out_labels, "rejected": out_rej, "split": out_split,
                          "line": out_line})
    frame = _merge_duplicate_rows(frame, path.name, notes)
    if new_root is not None:
        frame.attrs["root"] = new_root
    return frame, skipped, notes


def _verified_outside(raw: str, root: Path, sha1: Any) -> Path | None:
    """The file a manifest path escaping ``root`` names, when it is a regular image file whose SHA-1 is
    ``sha1`` (a row of a manifest this studio exported), else None."""
    import hashlib

    if not isinstance(sha1, str) or len(sha1) != 40:
        return None
    f = Path(raw) if Path(raw).is_absolute() else root / raw
    try:
        ref = sources.split_ref(f)
        if ref is not None:  # an image embedded in a table row
            data = sources.read_bytes(f)
            f = Path(sources.embedded_ref(ref[0].resolve(strict=True), ref[1]))
        else:
            f = f.resolve(strict=True)
            if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
                return None
            data = f.read_bytes()
        return f if hashlib.sha1(data).hexdigest() == sha1.lower() else None
    except (OSError, RuntimeError):
        return None


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest file into a DataFrame (CSV cells as strings); errors name the file and the fix."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise IngestError(f"{path} is not a file: give a manifest (.csv, .jsonl, .parquet) or an image folder.")
    if path.stat().st_size == 0:
        raise IngestError(f"{path} is empty: write a header line (path,label) and one row per image.")
    try:
        if suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=sniff_encoding(path),
                             sep="\t" if suffix == ".tsv" else ",")
            return unguard_frame(df)  # cells our CSV export guarded against formulas
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if exc.encoding.lower().startswith("utf-8") else exc.encoding.upper()
        raise IngestError(f"{path} is not {name} text (byte {exc.start}): re-save it as UTF-8 (in a spreadsheet: "
                          "Save as, CSV UTF-8), or convert it from its real encoding, e.g. "
                          f"`iconv -f cp1252 -t utf-8 {path.name} > fixed{suffix}`.") from None
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
    with open(path, encoding=sniff_encoding(path)) as f:
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
            rejected=("rejected", lambda s: list(dict.fromkeys(n for names in s for n in names))),
            split=("split", "first"), line=("line", "first")).reset_index()
        notes.append(f"{merged.shape[0]} paths are listed on several rows of {name} with different labels: "
                     "their labels were merged (one row per label, the 'long' format).")
        frame = pd.concat([frame[~dup], merged], ignore_index=True).sort_values("line", kind="stable")
    if n_exact:
        notes.append(f"Dropped {n_exact} duplicated rows of {name}.")
    return frame.reset_index(drop=True)
