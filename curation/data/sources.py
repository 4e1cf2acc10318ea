"""Image sources: a plain file, or an image embedded in a row of a Parquet / Arrow table (``file.parquet#12``)."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".pq", ".arrow")
"""Container files whose rows can hold images (HF Parquet shards, ``save_to_disk`` Arrow files)."""
IMAGE_COLUMN_NAMES = ("image", "img", "picture", "photo", "pixel_values")
_REF = re.compile(r"^(?P<file>.+\.(?:parquet|pq|arrow))#(?P<row>\d+)$", re.IGNORECASE)
_CACHE_ENTRIES = 4
GROUP_CACHE_BYTES = 32 * 1024 * 1024
"""Decoded Parquet row groups kept per container file and process (the most recent first; at least one)."""
_lock = threading.Lock()
_tables: "OrderedDict[tuple[str, float], _Table]" = OrderedDict()


class SourceError(OSError):
    """An embedded image that cannot be read; the message says why."""


def embedded_ref(file: str | os.PathLike[str], row: int) -> str:
    """The sample path of row ``row`` of a Parquet / Arrow file: ``<file>#<row>``."""
    return f"{os.fspath(file)}#{int(row)}"


def split_ref(path: str | os.PathLike[str]) -> tuple[Path, int] | None:
    """(container file, row) for an embedded-image path, None for a plain file path.

    A path that exists as a file is always a plain file, so an image really named ``x.parquet#3`` still works.
    """
    s = os.fspath(path)
    m = _REF.match(s)
    if m is None or os.path.isfile(s):
        return None
    return Path(m["file"]), int(m["row"])


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether the image exists: the file, or for an embedded image its container file."""
    ref = split_ref(path)
    return os.path.exists(path) if ref is None else ref[0].is_file()


def mtime(path: str | os.PathLike[str]) -> float:
    """Modification time of the file holding the image (raises OSError when it is gone)."""
    ref = split_ref(path)
    return os.stat(path if ref is None else ref[0]).st_mtime


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The encoded bytes of an embedded image.

    Raises
    ------
    SourceError when the container is gone, the row is out of range or holds no image bytes.
    FileNotFoundError when the container file is gone.
    """
    ref = split_ref(path)
    if ref is None:
        raise SourceError(f"{path} is not an embedded image reference (<file>.parquet#<row>)")
    file, row = ref
    return _table(file).row_bytes(row)


def image_column(schema: Any, features: dict | None = None) -> str | None:
    """The column of a pyarrow schema holding encoded images.

    HF ``Image`` features first, then a column named like an image (``image``, ``img``...) holding binary or
    ``{bytes, path}`` structs, then the first such column. None when there is none.
    """
    import pyarrow as pa

    def holds_bytes(t: pa.DataType) -> bool:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        return pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields))

    feats = features if features is not None else hf_features(schema)
    for name, feat in feats.items():
        if isinstance(feat, dict) and feat.get("_type") == "Image" and name in schema.names:
            return name
    candidates = [f.name for f in schema if holds_bytes(f.type)]
    named = [c for c in candidates if c.lower() in IMAGE_COLUMN_NAMES]
    return (named or candidates or [None])[0]


def hf_features(schema: Any) -> dict:
    """The ``datasets`` feature dict stored in a pyarrow schema's metadata ({} when absent)."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        info = json.loads(meta)
    except ValueError:
        return {}
    feats = (info.get("info") or {}).get("features") or {}
    return feats if isinstance(feats, dict) else {}


def read_table(file: Path, columns: list[str] | None = None) -> Any:
    """A Parquet or Arrow (IPC stream or file, memory-mapped) table, or only some of its ``columns``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file.suffix.lower() != ".arrow":
        return pq.read_table(file, columns=columns)
    source = pa.memory_map(str(file), "r")
    try:
        table = pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(source).read_all()
    return table.select(columns) if columns is not None else table


def table_schema(file: Path) -> Any:
    """The schema of a Parquet or Arrow file, without reading its data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file.suffix.lower() != ".arrow":
        return pq.read_schema(file)
    source = pa.memory_map(str(file), "r")
    try:
        return pa.ipc.open_stream(source).schema
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source).schema


def cell_bytes(value: Any, base: Path | None = None) -> bytes | None:
    """Encoded image bytes of one image cell (``bytes`` or ``{"bytes": ..., "path": ...}``), else None.

    A ``{"bytes": None, "path": "img/1.jpg"}`` cell (an HF image stored by reference) is read from ``base / path``
    when that file lies inside ``base`` (the table's folder)."""
    ref = None
    if isinstance(value, dict):
        value, ref = value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value):
        return bytes(value)
    if base is not None and isinstance(ref, str) and ref and not os.path.isabs(ref):
        f = (base / ref).resolve()
        if f.is_relative_to(base.resolve()) and f.is_file():
            return f.read_bytes()
    return None


class _Table:
    """Row access to the image column of one container file: Parquet row groups read on demand (the most
    recent kept up to GROUP_CACHE_BYTES), Arrow files memory-mapped."""

    def __init__(self, file: Path) -> None:
        import pyarrow.parquet as pq

        self.file = file
        self.groups: "OrderedDict[int, Any]" = OrderedDict()
        if file.suffix.lower() == ".arrow":
            self.pf = None
            self.table = read_table(file)
            self.column = image_column(self.table.schema)
            self.n = self.table.num_rows
        else:
            self.pf = pq.ParquetFile(file)
            self.table = None
            self.column = image_column(self.pf.schema_arrow)
            sizes = [self.pf.metadata.row_group(i).num_rows for i in range(self.pf.metadata.num_row_groups)]
            self.starts = [0]
            for s in sizes:
                self.starts.append(self.starts[-1] + s)
            self.n = self.starts[-1]
        if self.column is None:
            raise SourceError(f"{file.name} has no image column (binary or {{bytes, path}})")
        self.lock = threading.Lock()

    def row_bytes(self, row: int) -> bytes:
        if not 0 <= row < self.n:
            raise SourceError(f"row {row} is out of range: {self.file.name} has {self.n} rows")
        if self.table is not None:
            value = self.table.column(self.column)[row].as_py()
        else:
            import bisect

            g = bisect.bisect_right(self.starts, row) - 1
            with self.lock:
                col = self.groups.get(g)
                if col is None:
                    col = self.pf.read_row_group(g, columns=[self.column]).column(0)
                    self.groups[g] = col
                    while len(self.groups) > 1 and sum(c.nbytes for c in self.groups.values()) > GROUP_CACHE_BYTES:
                        self.groups.popitem(last=False)
                else:
                    self.groups.move_to_end(g)
            value = col[row - self.starts[g]].as_py()
        data = cell_bytes(value, self.file.parent)
        if data is None:
            raise SourceError(f"row {row} of {self.file.name} holds no image bytes")
        return data


def _table(file: Path) -> _Table:
    st = file.stat()  # FileNotFoundError when the container is gone
    key = (str(file), st.st_mtime)
    with _lock:
        t = _tables.get(key)
        if t is not None:
            _tables.move_to_end(key)
            return t
    t = _Table(file)
    with _lock:
        _tables[key] = t
        while len(_tables) > _CACHE_ENTRIES:
            _tables.popitem(last=False)
    return t
