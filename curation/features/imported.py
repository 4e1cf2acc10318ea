"""Bring-your-own vectors: a matrix file matched to the samples by id or path, stored as a precomputed encoder."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from curation.data.artifacts import make_key
from curation.features.embed import (
    FORMAT_VERSION,
    EmbeddingError,
    Embeddings,
    load_embeddings,
    save_npy,
    store_dir,
    write_chunk,
    write_store_info,
)
from curation.features.encoders import PrecomputedEncoder, register_encoder

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- user-supplied vectors
_PATH_COLUMNS = ("path", "file_name", "filename", "filepath", "file", "image", "image_path")
_ID_COLUMNS = ("id", "sample_id")


_CHUNK = 65536
"""Rows validated and normalised at a time."""


def _validate_matrix(arr: Any, src: str) -> np.ndarray:
    """Check a user matrix: 2-D, numeric, finite, non-zero rows → float32 L2-normalised."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiub":
        raise EmbeddingError(f"{src} holds {arr.dtype} values, not numbers: save the vectors as a float array "
                             "(e.g. `np.save(path, vectors.astype('float32'))`).")
    if arr.ndim != 2:
        raise EmbeddingError(f"{src} holds an array of shape {arr.shape}; expected (N, D): one row of D numbers "
                             "per image. Reshape it (e.g. `vectors.reshape(len(vectors), -1)`) and save again.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EmbeddingError(f"{src} is empty (shape {arr.shape}); it needs one vector per image.")
    # chunk by chunk into one float32 result: a memory-mapped million-row file never sits in memory twice
    out = np.empty(arr.shape, np.float32)
    bad_rows, zero_rows = [], []
    for a in range(0, arr.shape[0], _CHUNK):
        block = np.asarray(arr[a:a + _CHUNK], np.float32)
        bad = ~np.isfinite(block).all(1)
        if bad.any():
            bad_rows.append(a + np.flatnonzero(bad))
            continue
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        if (norms[:, 0] == 0).any():
            zero_rows.append(a + np.flatnonzero(norms[:, 0] == 0))
            continue
        out[a:a + len(block)] = block / norms
    if bad_rows:
        rows = np.concatenate(bad_rows)
        raise EmbeddingError(f"{src} has NaN or infinite values in {len(rows)} rows (first: {rows[:5].tolist()}); "
                             "recompute or drop those rows (and their manifest entries) before importing.")
    if zero_rows:
        zero = np.concatenate(zero_rows)
        raise EmbeddingError(f"{src} has {len(zero)} all-zero rows (first: {zero[:5].tolist()}); they have no "
                             "direction to compare: recompute or drop them.")
    return out


def _read_table(path: Path) -> pd.DataFrame:
    suf = path.suffix.lower()
    if suf == ".parquet":
        return pd.read_parquet(path)
    if suf == ".csv":
        return pd.read_csv(path)
    if suf in (".jsonl", ".json"):
        return pd.read_json(path, lines=suf == ".jsonl")
    if suf == ".txt":
        return pd.DataFrame({"path": [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]})
    raise EmbeddingError(f"Cannot read manifest {path}: use .csv, .jsonl, .parquet or .txt (one path a line).")


def _keys_from_table(df: pd.DataFrame, src: str) -> list[Any]:
    for c in _ID_COLUMNS:
        if c in df.columns and pd.api.types.is_integer_dtype(df[c]):
            return df[c].astype(np.int64).tolist()
    for c in _PATH_COLUMNS:
        if c in df.columns:
            return df[c].astype(str).tolist()
    raise EmbeddingError(f"{src} has no path column ({', '.join(_PATH_COLUMNS)}) or id column "
                         f"({', '.join(_ID_COLUMNS)}) telling which image each row belongs to; columns are "
                         f"{list(df.columns)}.")


def _match_ids(ws: "Workspace", keys: Sequence[Any], src: str) -> np.ndarray:
    """Sample ids (or image paths, relative to their root or absolute) → (N,) int64 sample ids."""
    frame = ws.store.samples(include_missing=True)
    keys = list(keys)
    if len(keys) and all(isinstance(k, (int, np.integer)) for k in keys):
        ids = np.asarray(keys, np.int64)
        unknown = ids[~np.isin(ids, frame.index.to_numpy(np.int64))]
        if len(unknown):
            raise EmbeddingError(f"{src}: {len(unknown)} sample ids are not in the workspace "
                                 f"(first: {unknown[:5].tolist()}).")
    else:
        rel = frame["path"].astype(str).map(os.path.normpath)
        absol = (frame["root"].astype(str) + os.sep + frame["path"].astype(str)).map(os.path.normpath)
        lookup = pd.concat([pd.Series(frame.index.to_numpy(), index=rel.to_numpy()),
                            pd.Series(frame.index.to_numpy(), index=absol.to_numpy())])
        lookup = lookup[~lookup.index.duplicated(keep="first")]
        got = pd.Series([os.path.normpath(str(k)) for k in keys]).map(lookup)
        if got.isna().any():
            miss = [keys[i] for i in np.flatnonzero(got.isna().to_numpy())[:5]]
            raise EmbeddingError(f"{src}: {int(got.isna().sum())} image paths are not samples of this workspace "
                                 f"(first: {miss}); ingest those images first or fix the paths (relative to the "
                                 "image folder, or absolute).")
        ids = got.to_numpy(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise EmbeddingError(f"{src} lists {int((counts > 1).sum())} images more than once "
                             f"(first sample ids: {uniq[counts > 1][:5].tolist()}); keep one row per image.")
    return ids


def import_embeddings(ws: "Workspace", path: str | Path, *, ids_or_paths: None | str | Path | Sequence[Any] = None,
                      column: str | None = None, name: str = "user", chunk_size: int = 65536) -> Embeddings:
    """Bring your own vectors: ``.npy`` (rows aligned with ``ids_or_paths``) or a Parquet file.

    Parameters
    ----------
    path : ``.npy`` (N, D) numeric array, or ``.parquet`` with a vector column (list/array per row, or all
        numeric columns when ``column`` is None and no list column exists) and a path or id column.
    ids_or_paths : what each ``.npy`` row is: a sequence of sample ids or image paths, or a manifest file
        (.csv/.jsonl/.parquet with a path or id column, or .txt one path a line). None: the rows follow the
        present samples in ascending id order (the row count must match).
    column : Parquet column holding the vectors.
    name : the vectors are registered as encoder ``precomputed:<name>`` (no text tower) and made active.

    Returns
    -------
    Embeddings of the present samples that received a vector.
    """
    path = Path(path).expanduser()
    src = str(path)
    if not path.is_file():
        raise EmbeddingError(f"No file {path}: give the path of a .npy or .parquet file of vectors.")
    suf = path.suffix.lower()
    if suf == ".npy":
        try:
            raw = np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError as exc:
            raise EmbeddingError(f"{src} holds Python objects, not a numeric array ({exc}); save the vectors as "
                                 "a float array: `np.save(path, np.asarray(vectors, 'float32'))`.") from exc
        vecs = _validate_matrix(raw, src)
        if ids_or_paths is None:
            keys: list[Any] = ws.store.sample_ids().tolist()
            if len(keys) != len(vecs):
                raise EmbeddingError(f"{src} has {len(vecs)} rows but the workspace has {len(keys)} samples; pass "
                                     "ids_or_paths (the image path or sample id of each row, or a manifest file "
                                     "listing them) so rows can be matched to images.")
        elif isinstance(ids_or_paths, (str, Path)):
            keys = _keys_from_table(_read_table(Path(ids_or_paths)), str(ids_or_paths))
        else:
            keys = list(ids_or_paths)
        if len(keys) != len(vecs):
            raise EmbeddingError(f"{src} has {len(vecs)} rows but {len(keys)} ids/paths were given to align "
                                 "them; they must match one to one, in order.")
    elif suf == ".parquet":
        df = pd.read_parquet(path)
        if ids_or_paths is not None:
            keys = (_keys_from_table(_read_table(Path(ids_or_paths)), str(ids_or_paths))
                    if isinstance(ids_or_paths, (str, Path)) else list(ids_or_paths))
        else:
            keys = _keys_from_table(df, src)
        if column is None:
            listy = [c for c in df.columns if df[c].dtype == object and len(df) and
                     isinstance(df[c].iloc[0], (list, tuple, np.ndarray))]
            if len(listy) == 1:
                column = listy[0]
        if column is not None:
            if column not in df.columns:
                raise EmbeddingError(f"{src} has no column {column!r}; columns are {list(df.columns)}.")
            cells = df[column].to_numpy()
            lens = pd.Series(cells).map(lambda v: len(v) if hasattr(v, "__len__") else -1).to_numpy()
            if len(set(lens.tolist())) != 1 or lens[0] < 1:
                raise EmbeddingError(f"{src}: column {column!r} must hold one equal-length vector per row "
                                     f"(lengths seen: {sorted(set(lens.tolist()))[:5]}).")
            try:
                mat = np.stack([np.asarray(v) for v in cells])
            except Exception as exc:  # noqa: BLE001
                raise EmbeddingError(f"{src}: column {column!r} does not hold numeric vectors ({exc}).") from exc
        else:
            skip = set(_PATH_COLUMNS) | set(_ID_COLUMNS)
            num = [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]
            if not num:
                raise EmbeddingError(f"{src} has no vector column: name it with column=... (columns: "
                                     f"{list(df.columns)}).")
            mat = df[num].to_numpy()
        vecs = _validate_matrix(mat, f"{src}[{column or 'numeric columns'}]")
        if len(keys) != len(vecs):
            raise EmbeddingError(f"{src} has {len(vecs)} vectors but {len(keys)} ids/paths.")
    else:
        raise EmbeddingError(f"Cannot import {src}: use a .npy array (with a manifest) or a .parquet table.")

    ids = _match_ids(ws, keys, src)
    if len(ids) > 1 and not (np.diff(ids) > 0).all():  # already in id order: no copy of the vectors
        order = np.argsort(ids)
        ids, vecs = ids[order], vecs[order]
    enc_name = f"precomputed:{name}"
    h = hashlib.sha1(ids.tobytes())  # the same digest as of ids.tobytes() + vecs.tobytes(), chunk by chunk
    for a in range(0, len(vecs), _CHUNK):
        h.update(np.ascontiguousarray(vecs[a:a + _CHUNK]).tobytes())
    fp = h.hexdigest()[:16]
    key = make_key({"encoder": enc_name, "fingerprint": fp, "version": FORMAT_VERSION})
    d = store_dir(ws, key)
    for p in d.glob("chunk-*"):
        p.unlink()
    chunk = np.arange(len(ids)) // max(1, chunk_size)
    save_npy(d / "plan.npy", np.stack([ids, chunk, np.zeros(len(ids), np.int64)], 1))
    for c in np.unique(chunk).tolist():
        m = chunk == c
        write_chunk(d, c, ids[m], vecs[m], [])
    write_store_info(d, {"name": enc_name, "id": enc_name, "fingerprint": fp, "preprocessing": {},
                          "dim": int(vecs.shape[1]), "has_text": False, "version": FORMAT_VERSION,
                          "devices": ["precomputed"], "source": src, "used": time.time()})
    register_encoder(enc_name, lambda n, device=None, _d=int(vecs.shape[1]), _f=fp:
                     PrecomputedEncoder(n, dim=_d, fingerprint=_f))
    ws.store.set_meta("encoder", enc_name)
    ws.store.set_meta("embeddings_store", key)
    log.info("imported %d vectors (%d-d) from %s as %s", len(ids), vecs.shape[1], src, enc_name)
    emb = load_embeddings(ws, enc_name)
    assert emb is not None
    return emb
