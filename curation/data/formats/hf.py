"""Hugging Face ``datasets`` files: Parquet / Arrow with embedded images and ClassLabel names in; Parquet out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from curation.data import sources
from curation.data.formats.common import (
    SPLIT_DIRS,
    IngestError,
    Listing,
    frame_of,
    parse_labels,
    split_name,
    split_of_file,
)

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("label", "labels", "class", "category", "tags", "fine_label", "coarse_label")
CHUNK_ROWS = 2048
"""Embedded images are checked this many rows at a time (memory stays bounded on large shards)."""
ROW_GROUP = 256
"""Rows per Parquet row group written: small groups keep reading one image by row cheap."""
_SEQUENCES = ("Sequence", "List", "LargeList")


# ---------------------------------------------------------------------- detection
def is_table_file(path: Path) -> bool:
    """Whether a file is a Parquet / Arrow table holding an image column (not a manifest of paths)."""
    if path.suffix.lower() not in sources.TABLE_SUFFIXES or not path.is_file():
        return False
    try:
        return sources.image_column(sources.table_schema(path)) is not None
    except Exception:  # noqa: BLE001 - unreadable: let the manifest reader say why
        return False


def hf_folder_files(folder: Path) -> list[tuple[Path, str | None]] | None:
    """The table files of an HF dataset folder with their split, or None when the folder is not one.

    Recognises ``save_to_disk`` folders (``dataset_dict.json`` + split folders, or ``state.json``) and folders
    of Parquet shards holding images (the hub layout ``data/train-00000-of-00001.parquet``).
    """
    if (folder / "dataset_dict.json").is_file():
        try:
            splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        except (ValueError, AttributeError):
            raise IngestError(f"{folder / 'dataset_dict.json'} is not valid JSON: re-save the dataset with "
                              "`DatasetDict.save_to_disk`.") from None
        out: list[tuple[Path, str | None]] = []
        for s in splits:
            out += [(f, split_name(s) if split_name(s) is not None else split_of_file(s))
                    for f in _state_files(folder / s)]
        return out
    if (folder / "state.json").is_file():
        return [(f, None) for f in _state_files(folder)]
    shards = sorted(p for p in folder.rglob("*") if p.suffix.lower() in sources.TABLE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    shards = [p for p in shards if is_table_file(p)]
    if not shards:
        return None
    return [(p, _split_from_parts(p.relative_to(folder))) for p in shards]


def _state_files(folder: Path) -> list[Path]:
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / d["filename"] for d in state.get("_data_files", [])]
    except (OSError, ValueError, KeyError, TypeError):
        files = sorted(folder.glob("*.arrow"))
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise IngestError(f"{folder} lists {', '.join(missing[:3])} in state.json but they are missing: copy the "
                          "whole folder written by `save_to_disk`.")
    return files


def _split_from_parts(rel: Path) -> str | None:
    for part in reversed(rel.parts):
        s = split_of_file(part)
        if s is not None:
            return s
    return None


# ---------------------------------------------------------------------- reading
def read_tables(root: Path, files: list[tuple[Path, str | None]], *, labels: str = "auto") -> Listing:
    """Rows of HF table files (images embedded), as a Listing whose paths are ``<file>#<row>`` under ``root``.

    Parameters
    ----------
    root : the folder the file paths are made relative to.
    files : (file, split or None) pairs.
    labels : "auto" (a ClassLabel column, else a column named label / labels / ...), "none", or a column name.
    """
    paths: list[str] = []
    lab: list[list[str]] = []
    rej: list[list[str]] = []
    spl: list[str] = []
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    readers: list[tuple[Path, str, int]] = []
    for file, file_split in files:
        schema = sources.table_schema(file)
        feats = _features(file, schema)
        col = sources.image_column(schema, feats)
        table = sources.read_table(file, columns=[c for c in schema.names if c != col])
        rel = file.relative_to(root).as_posix()
        if col is None:
            raise IngestError(f"{rel} has no image column (HF Image feature, binary, or {{bytes, path}}): give a "
                              "manifest of paths instead, or a table with the images embedded.")
        label_col = _label_column(table.schema.names, feats, labels, rel)
        names = _names_of(feats.get(label_col)) if label_col else None
        n = _num_rows(file, table)
        if label_col is None:
            lab += [[] for _ in range(n)]
        else:
            for i, v in enumerate(table.column(label_col).to_pylist()):
                try:
                    lab.append(_decode(v, names))
                except ValueError as exc:
                    skipped.append((sources.embedded_ref(rel, i), f"{rel} row {i}: {exc}"))
                    lab.append([])
        if "rejected" in table.schema.names:
            rej += [_decode(v, _names_of(feats.get("rejected"))) for v in table.column("rejected").to_pylist()]
        else:
            rej += [[] for _ in range(n)]
        col_split = [split_name(v) if v is not None else None for v in table.column("split").to_pylist()] \
            if "split" in table.schema.names else [None] * n
        spl += [s if s is not None else (file_split or "") for s in col_split]
        paths += [sources.embedded_ref(rel, i) for i in range(n)]
        readers.append((file, col, n))
        notes.append(f"{rel}: {n} images embedded in column {col!r}"
                     + (f", labels from {label_col!r}" if label_col else ", no label column") + ".")
    return Listing(root=root, frame=frame_of(paths, lab, spl, rej), chunks=lambda: _iter_bytes(readers),
                   notes=notes[:6], skipped=skipped)


def _iter_bytes(readers: list[tuple[Path, str, int]]) -> Iterator[list[bytes | None]]:
    """The image bytes of every row, in order, CHUNK_ROWS at a time."""
    for file, col, _ in readers:
        if file.suffix.lower() == ".arrow":
            batches: Any = sources.read_table(file).select([col]).to_batches(max_chunksize=CHUNK_ROWS)
        else:
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(file).iter_batches(batch_size=CHUNK_ROWS, columns=[col])
        for b in batches:
            yield [sources.cell_bytes(v, file.parent) for v in b.column(0).to_pylist()]


def _num_rows(file: Path, table: Any) -> int:
    if table.num_columns:
        return int(table.num_rows)
    return int(sources.read_table(file).num_rows)  # only an image column: count its rows


def _features(file: Path, schema: Any) -> dict:
    feats = sources.hf_features(schema)
    info = file.parent / "dataset_info.json"
    if not feats and info.is_file():
        try:
            feats = json.loads(info.read_text()).get("features") or {}
        except ValueError:
            feats = {}
    return feats if isinstance(feats, dict) else {}


def _names_of(feat: Any) -> list[str] | None:
    """ClassLabel names of a feature (or of the items of a sequence feature), else None."""
    if isinstance(feat, list) and feat:
        feat = feat[0]
    if not isinstance(feat, dict):
        return None
    if feat.get("_type") == "ClassLabel":
        return [str(n) for n in feat.get("names") or []]
    if feat.get("_type") in _SEQUENCES:
        return _names_of(feat.get("feature"))
    return None


def _label_column(columns: list[str], feats: dict, labels: str, rel: str) -> str | None:
    if labels == "none":
        return None
    if labels not in ("auto", "folders", "folder", "column"):
        if labels not in columns:
            raise IngestError(f"{rel} has no column {labels!r} (columns: {', '.join(columns)}): pass labels= one "
                              "of them, 'auto' or 'none'.")
        return labels
    class_cols = [c for c in columns if _names_of(feats.get(c)) is not None and c != "rejected"]
    lower = {c.lower(): c for c in columns}
    for name in LABEL_COLUMNS:
        if name in lower and (not class_cols or lower[name] in class_cols):
            return lower[name]
    return class_cols[0] if class_cols else None


def _decode(value: Any, names: list[str] | None) -> list[str]:
    """Class names of one label cell: ClassLabel ints (-1 = none), strings, or lists of those."""
    if names is None:
        return parse_labels(value)[0]
    items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    out: list[str] = []
    for v in items:
        if v is None or (isinstance(v, (int, np.integer)) and int(v) == -1):
            continue
        if isinstance(v, (int, np.integer)):
            if not 0 <= int(v) < len(names):
                raise ValueError(f"class index {int(v)} is outside the {len(names)} ClassLabel names")
            v = names[int(v)]
        out += [n for n in parse_labels(v)[0] if n not in out]
    return out


# ---------------------------------------------------------------------- writing
def write_parquet(table: pd.DataFrame, class_names: list[str], dest: Path, *, multi: bool,
                  read: Callable[[Any], bytes], file_name: Callable[[int, Any, bytes], str]) -> dict[str, int]:
    """Write ``dest/data/<split>-00000-of-00001.parquet`` with embedded images and ClassLabel features.

    Parameters
    ----------
    table : ``export.label_table`` rows (index sample id; file, labels, rejected, split).
    class_names : the K classes, in ClassLabel order.
    multi : write ``labels`` as ``List(ClassLabel)`` instead of one ``label`` ClassLabel (-1 = unlabelled).
    read : the encoded bytes of a row's ``file``.
    file_name : the image's file name kept in the ``{bytes, path}`` struct.

    Returns
    -------
    {split folder name: rows written}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.data.atomic import atomic_write

    index = {n: i for i, n in enumerate(class_names)}
    class_label = {"names": list(class_names), "_type": "ClassLabel"}
    label_feat = {"labels": {"feature": class_label, "_type": "List"}} if multi else {"label": class_label}
    feats = {"image": {"_type": "Image"}, **label_feat, "rejected": {"feature": {"dtype": "string", "_type": "Value"},
                                                                       "_type": "List"},
             "split": {"dtype": "string", "_type": "Value"}, "sample_id": {"dtype": "int64", "_type": "Value"}}
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    label_t = pa.list_(pa.int64()) if multi else pa.int64()
    schema = pa.schema([("image", image_t), ("labels" if multi else "label", label_t),
                        ("rejected", pa.list_(pa.string())), ("split", pa.string()), ("sample_id", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": feats}})})
    split_dirs = table["split"].map(lambda s: SPLIT_DIRS.get(s, "train"))
    written: dict[str, int] = {}
    for folder in sorted(split_dirs.unique()):
        part = table[split_dirs == folder]

        def write(tmp: Path, part: pd.DataFrame = part) -> None:
            with pq.ParquetWriter(tmp, schema) as w:
                for start in range(0, len(part), ROW_GROUP):
                    rows = part.iloc[start:start + ROW_GROUP]
                    data = [read(f) for f in rows["file"]]
                    images = [{"bytes": d, "path": file_name(sid, f, d)}
                              for sid, f, d in zip(rows.index, rows["file"], data)]
                    if multi:
                        lab: list[Any] = [[index[n] for n in names] for names in rows["labels"]]
                    else:
                        lab = [index[names[0]] if names else -1 for names in rows["labels"]]
                    w.write_table(pa.table({"image": pa.array(images, image_t), schema.field(1).name:
                                            pa.array(lab, label_t),
                                            "rejected": pa.array(rows["rejected"].tolist(), pa.list_(pa.string())),
                                            "split": pa.array(rows["split"].tolist(), pa.string()),
                                            "sample_id": pa.array(rows.index.to_numpy(np.int64), pa.int64())},
                                           schema=schema))

        atomic_write(dest / "data" / f"{folder}-00000-of-00001.parquet", write)
        written[folder] = len(part)
    return written
