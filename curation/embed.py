"""Embedding pipeline: batched, pipelined, resumable chunked cache; imported vectors; text embeddings; search."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.artifacts import make_key
from curation.encoders import (  # noqa: F401 - re-exported: curation.embed is the public face
    DEFAULT_ENCODER, OFFLINE_ENCODER, TINY_TEST, Encoder, EncoderError, EncoderUnavailable, NoTextTower,
    PrecomputedEncoder, default_encoder, get_encoder, list_encoders, offline, pick_device, register_encoder,
    register_tiny_openclip,
)
from curation.progress import ProgressFn, null_progress

log = logging.getLogger(__name__)

KIND = "embeddings"
TEXT_KIND = "text_embeddings"
FORMAT_VERSION = 1
_CHUNK_RE = re.compile(r"^chunk-(\d{6})\.ids\.npy$")

CLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a cropped photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a good photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "itap of a {}.",
    "art of the {}.",
)
"""CLIP's zero-shot prompt ensemble (a subset of the 80 ImageNet templates, incl. the 7 "best")."""


class EmbeddingError(RuntimeError):
    """Embeddings that cannot be computed, imported or loaded; the message says what to do."""


@dataclass
class Embeddings:
    """Vectors of the embedded present samples.

    Attributes
    ----------
    ids : (N,) int64 sample ids, ascending.
    vectors : (N, D) float32, L2-normalised, read-only (usually a memory map).
    key : str, content key (encoder, weights, preprocessing and the id set): key derived artifacts by it.
    encoder_id, encoder_name : the encoder's stable id and registry name.
    device : str, the device(s) that computed the vectors (``cpu``, ``cuda``, ``precomputed``; ``+``-joined).
    has_text : bool, whether the encoder has a text tower (zero-shot, text search).
    store_key : str, key of the chunk store under ``artifacts/embeddings/<store_key>/``.
    skipped : DataFrame indexed by sample id with columns path, reason: images that could not be embedded.
    """

    ids: np.ndarray
    vectors: np.ndarray
    key: str
    encoder_id: str
    encoder_name: str
    device: str
    has_text: bool
    store_key: str = ""
    skipped: pd.DataFrame = field(default_factory=lambda: _skipped_frame([], [], []))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(len(self.ids))

    def rows(self, sample_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row positions of ``sample_ids`` in :attr:`vectors`; -1 for ids without a vector."""
        q = np.asarray(sample_ids, np.int64)
        pos = np.searchsorted(self.ids, q)
        pos = np.clip(pos, 0, max(len(self.ids) - 1, 0))
        ok = (len(self.ids) > 0) & (self.ids[pos] == q) if len(self.ids) else np.zeros(len(q), bool)
        return np.where(ok, pos, -1).astype(np.int64)


def _skipped_frame(ids: Sequence[int], paths: Sequence[str], reasons: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame({"path": list(paths), "reason": list(reasons)},
                      index=pd.Index(np.asarray(ids, np.int64), name="id"))
    return df.sort_index()


# ---------------------------------------------------------------------- chunk store on disk
def store_key_of(encoder: Encoder) -> str:
    """Key of an encoder's chunk store: encoder id, weights fingerprint, preprocessing."""
    return make_key({"encoder": encoder.id, "fingerprint": encoder.fingerprint,
                     "preprocessing": encoder.preprocessing(), "version": FORMAT_VERSION})


def _store_dir(ws: Any, key: str) -> Path:
    d = Path(ws.artifacts.root) / KIND / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_store_info(d: Path) -> dict[str, Any]:
    try:
        return json.loads((d / "store.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_store_info(d: Path, info: dict[str, Any]) -> None:
    _atomic_text(d / "store.json", json.dumps(info, indent=1, sort_keys=True, default=str))


def _load_plan(d: Path) -> np.ndarray:
    """(M, 3) int64 rows [sample id, chunk number, batch size]."""
    p = d / "plan.npy"
    if not p.exists():
        return np.zeros((0, 3), np.int64)
    plan = np.load(p, allow_pickle=False)
    if plan.ndim != 2 or plan.shape[1] != 3:
        raise EmbeddingError(f"Embedding plan {p} is damaged; delete the folder {d} and embed again.")
    return plan.astype(np.int64, copy=False)


def _done_chunks(d: Path) -> np.ndarray:
    """Numbers of completed chunks (their ids file, written last, exists), ascending."""
    nums = [int(m.group(1)) for m in (_CHUNK_RE.match(n) for n in os.listdir(d)) if m]
    return np.array(sorted(nums), np.int64)


def _chunk_path(d: Path, c: int, what: str) -> Path:
    return d / f"chunk-{int(c):06d}.{what}"


def _write_chunk(d: Path, c: int, ids: np.ndarray, vecs: np.ndarray, failed: list[tuple[int, str, str]]) -> None:
    """Write one chunk: vectors, failures (if any), then ids last (the completion marker), each atomically."""
    _atomic_npy(_chunk_path(d, c, "vec.npy"), vecs.astype(np.float32, copy=False))
    if failed:
        _atomic_text(_chunk_path(d, c, "failed.json"),
                     json.dumps([{"id": int(i), "path": p, "reason": r} for i, p, r in failed], indent=0))
    _atomic_npy(_chunk_path(d, c, "ids.npy"), ids.astype(np.int64, copy=False))


def _read_failures(d: Path, chunks: np.ndarray) -> pd.DataFrame:
    ids, paths, reasons = [], [], []
    for c in chunks.tolist():
        p = _chunk_path(d, c, "failed.json")
        if p.exists():
            for r in json.loads(p.read_text()):
                ids.append(r["id"]), paths.append(r["path"]), reasons.append(r["reason"])
    return _skipped_frame(ids, paths, reasons)


def _find_store(ws: Any, name: str) -> str | None:
    """Most recently used chunk store of the encoder called ``name``."""
    root = Path(ws.artifacts.root) / KIND
    best, best_t = None, -1.0
    if not root.exists():
        return None
    for d in root.iterdir():
        if d.is_dir() and (d / "store.json").exists():
            info = _read_store_info(d)
            t = float(info.get("used", 0) or 0)
            if info.get("name") == name and t > best_t:
                best, best_t = d.name, t
    return best


# ---------------------------------------------------------------------- image loading (workers)
def _load_pil(path: str) -> Any:
    try:
        from curation.images import load_image
    except ImportError:  # images.py not present: same contract, minimal version
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    return load_image(path)


class _ImageDataset:
    """Map-style dataset over (path) rows: decode + uint8 preprocessing, errors returned as reasons."""

    def __init__(self, paths: np.ndarray, transform: Any, size: int, allowed: list[str]) -> None:
        self.paths, self.transform, self.size, self.allowed = paths, transform, int(size), allowed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        import torch

        path = str(self.paths[i])
        try:
            real = os.path.realpath(path)
            if not any(real == a or real.startswith(a.rstrip(os.sep) + os.sep) for a in self.allowed):
                raise PermissionError("outside the workspace and its image folders")
            if not os.path.exists(real):
                raise FileNotFoundError("file not found")
            x = self.transform(_load_pil(real))
            return x, ""
        except Exception as exc:  # noqa: BLE001 - any decode problem is a per-sample report, never fatal
            reason = getattr(exc, "reason", None)
            if not reason:
                msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                reason = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), str(reason)


def _collate(items: list[tuple[Any, str]]) -> tuple[Any, list[str]]:
    import torch

    xs, reasons = zip(*items)
    return torch.stack(xs), list(reasons)


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def auto_workers(device: str) -> int:
    """DataLoader workers: on a GPU decoding is the bottleneck (use most cores); on a CPU the model is,
    and one worker (measured on 2 cores: see docs/performance.md) overlaps decoding with the forward pass."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.startswith("cuda") or device == "mps":
        return max(1, min(n - 1, 16))
    return 1 if n >= 2 else 0


def auto_batch_size(encoder: Encoder) -> int:
    """Batch size: 32 on CPU; on CUDA the largest power of two whose activations fit in ~60% of free memory."""
    dev = getattr(encoder, "device", "cpu")
    if not dev.startswith("cuda"):
        return int(getattr(encoder, "default_batch_size", 32))
    try:
        import torch

        size = encoder.transform.size
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        probe = 16
        encoder.encode_images(torch.zeros((probe, 3, size, size), dtype=torch.uint8))
        per = max((torch.cuda.max_memory_allocated() - base) / probe, 1.0)
        free, _ = torch.cuda.mem_get_info()
        bs = int(2 ** np.floor(np.log2(max(0.6 * free / per, 16))))
        return int(min(max(bs, 16), 1024))
    except Exception as exc:  # noqa: BLE001
        log.info("batch-size probe failed (%s); using %d", exc, encoder.default_batch_size)
        return int(encoder.default_batch_size)


def _encode_safe(encoder: Encoder, x: Any) -> np.ndarray:
    """encode_images, halving the batch on CUDA out-of-memory."""
    try:
        return encoder.encode_images(x)
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower() or len(x) <= 1:
            raise
        import torch

        torch.cuda.empty_cache()
        h = len(x) // 2
        log.warning("CUDA out of memory at batch %d; splitting", len(x))
        return np.concatenate([_encode_safe(encoder, x[:h]), _encode_safe(encoder, x[h:])])


def _fmt_eta(s: float) -> str:
    if not np.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---------------------------------------------------------------------- pipeline
def _resolve_encoder(ws: Any, encoder: None | str | Encoder, device: str | None) -> Encoder:
    if isinstance(encoder, Encoder):
        return encoder
    if encoder is None:
        active = ws.store.meta("encoder")
        if active:
            encoder = active
        else:
            enc, notice = default_encoder(device=device)
            if notice:
                log.warning(notice)
                ws.store.set_meta("encoder_notice", notice)
            return enc
    return get_encoder(str(encoder), device=device, workspace=ws)  # ws: names like finetuned:run-<id>


def embed_workspace(ws: Any, encoder: None | str | Encoder = None, *, batch_size: int | None = None,
                    num_workers: int | None = None, chunk_size: int = 1024, device: str | None = None,
                    progress: ProgressFn | None = None) -> Embeddings:
    """Embed every present sample not yet embedded by ``encoder``; resumable; returns all its vectors.

    Work is planned once as fixed chunks of ``chunk_size`` sorted sample ids (the plan is saved), each
    chunk written atomically when done, so a killed or cancelled run resumes where it stopped and ends
    byte-identical to an uninterrupted one. Later runs embed only samples added since.

    Parameters
    ----------
    ws : Workspace
    encoder : None (the workspace's active encoder, else :func:`default_encoder`), a registry name or an
        :class:`Encoder`.
    batch_size : images per forward pass (auto when None: 32 on CPU, memory-probed on CUDA). Fixed in the
        plan for the chunks it plans.
    num_workers : DataLoader decode workers (auto when None, see :func:`auto_workers`).
    chunk_size : samples per on-disk chunk (the unit of resume).
    device : ``cpu``/``cuda``/``mps``; best available when None.
    progress : ``progress(fraction, message)``; may raise :class:`~curation.progress.Cancelled`
        (completed chunks are kept).

    Returns
    -------
    Embeddings of the present samples; ``skipped`` lists images that could not be read, with reasons.
    """
    progress = progress or null_progress
    if chunk_size < 1:
        raise EmbeddingError("chunk_size must be at least 1.")
    progress(0.0, "loading the encoder")
    enc = _resolve_encoder(ws, encoder, device)
    if isinstance(enc, PrecomputedEncoder):
        emb = load_embeddings(ws, enc.name)
        if emb is None:
            raise EmbeddingError(f"No imported vectors for {enc.name}: run `python -m curation import-embeddings` "
                                 "or embed with a model encoder (`--encoder efficientnet-lite0`).")
        missing = np.setdiff1d(ws.store.sample_ids(), emb.ids)
        if len(missing):
            log.warning("%d samples have no imported vector under %s; re-import to cover them", len(missing), enc.name)
        progress(1.0, f"{len(emb.ids):,} imported vectors ({enc.name})")
        return emb

    key = store_key_of(enc)
    d = _store_dir(ws, key)
    info = _read_store_info(d) or {"name": enc.name, "id": enc.id, "fingerprint": enc.fingerprint,
                                   "preprocessing": enc.preprocessing(), "dim": enc.dim, "has_text": enc.has_text,
                                   "version": FORMAT_VERSION, "devices": []}
    info["name"] = enc.name
    info["used"] = time.time()
    _write_store_info(d, info)

    frame = ws.store.samples(include_missing=True)
    present = frame.index.to_numpy(np.int64)[frame["missing"].to_numpy() == 0]
    plan = _load_plan(d)
    new = np.setdiff1d(present, plan[:, 0])  # sorted
    if len(new):
        bs = int(batch_size or auto_batch_size(enc))
        first = int(plan[:, 1].max()) + 1 if len(plan) else 0
        rows = np.stack([new, first + np.arange(len(new)) // chunk_size, np.full(len(new), bs)], 1)
        plan = np.concatenate([plan, rows.astype(np.int64)])
        _atomic_npy(d / "plan.npy", plan)
        log.info("planned %d new samples in %d chunks of %d (batch %d)", len(new),
                 int(rows[-1, 1]) - first + 1, chunk_size, bs)
    elif batch_size is not None:
        log.debug("batch_size ignored: every sample is already planned")

    done = _done_chunks(d)
    todo = plan[~np.isin(plan[:, 1], done)]
    if len(todo):
        _run_chunks(ws, enc, d, frame, todo, num_workers=num_workers, progress=progress)
        if enc.device not in info["devices"]:
            info["devices"] = sorted([*info["devices"], enc.device])
            _write_store_info(d, info)
    else:
        progress(1.0, f"all {len(present):,} samples already embedded ({enc.name})")

    ws.store.set_meta("encoder", enc.name)
    ws.store.set_meta("embeddings_store", key)
    emb = load_embeddings(ws, enc)
    assert emb is not None
    return emb


def _run_chunks(ws: Any, enc: Encoder, d: Path, frame: pd.DataFrame, todo: np.ndarray, *,
                num_workers: int | None, progress: ProgressFn) -> None:
    """Embed the planned rows ``todo`` (M, 3) [id, chunk, batch], chunk by chunk, writing each when done."""
    import torch
    from torch.utils.data import DataLoader

    ids = todo[:, 0]
    paths = (frame["root"].astype(str) + os.sep + frame["path"].astype(str)).reindex(ids).to_numpy()
    # batches: consecutive slices of each chunk's (sorted) rows, of that chunk's planned batch size
    chunk_of = todo[:, 1]
    starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
    ends = np.r_[starts[1:], len(todo)]
    batches: list[list[int]] = []
    batch_chunk: list[int] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        bs = int(todo[s, 2])
        for b in range(s, e, bs):
            batches.append(list(range(b, min(b + bs, e))))
            batch_chunk.append(int(chunk_of[s]))
    last_batch_of_chunk = {c: i for i, c in enumerate(batch_chunk)}

    workers = auto_workers(enc.device) if num_workers is None else int(num_workers)
    allowed = [os.path.realpath(p) for p in map(str, ws.allowed_roots())]
    ds = _ImageDataset(paths, enc.transform, enc.transform.size, allowed)
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                        pin_memory=enc.device.startswith("cuda"), worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=4 if workers else None)
    total = len(todo)
    n_chunks = len(starts)
    log.info("embedding %d images in %d chunks with %s on %s (%d workers)", total, n_chunks, enc.name,
             enc.device, workers)
    progress(0.0, f"embedding {total:,} images with {enc.name} on {enc.device}")
    t0 = time.perf_counter()
    n_done = 0
    cur_vecs: list[np.ndarray] = []
    cur_ids: list[np.ndarray] = []
    cur_failed: list[tuple[int, str, str]] = []
    chunks_written = 0
    it = iter(loader)
    try:
        for bi, rows in enumerate(batches):
            x, reasons = next(it)
            rows_a = np.asarray(rows, np.int64)
            ok = np.array([not r for r in reasons], bool)
            if not ok.all():
                for r in np.flatnonzero(~ok).tolist():
                    sid = int(ids[rows_a[r]])
                    log.warning("skipping sample %d (%s): %s", sid, paths[rows_a[r]], reasons[r])
                    cur_failed.append((sid, str(paths[rows_a[r]]), reasons[r]))
                x = x[torch.from_numpy(ok)]
            if len(x):
                cur_vecs.append(_encode_safe(enc, x))
                cur_ids.append(ids[rows_a[ok]])
            n_done += len(rows)
            c = batch_chunk[bi]
            if last_batch_of_chunk[c] == bi:
                vecs = np.concatenate(cur_vecs) if cur_vecs else np.zeros((0, enc.dim), np.float32)
                cids = np.concatenate(cur_ids) if cur_ids else np.zeros(0, np.int64)
                _write_chunk(d, c, cids, vecs, cur_failed)
                cur_vecs, cur_ids, cur_failed = [], [], []
                chunks_written += 1
            dt = time.perf_counter() - t0
            rate = n_done / dt if dt > 0 else 0.0
            eta = (total - n_done) / rate if rate > 0 else float("inf")
            progress(n_done / total, f"embedded {n_done:,}/{total:,} images · {rate:.1f} img/s · "
                                     f"ETA {_fmt_eta(eta)} · chunk {chunks_written}/{n_chunks}")
    finally:
        del it  # shuts the workers down, also on Cancelled / errors
    dt = time.perf_counter() - t0
    log.info("embedded %d images in %.1fs (%.1f img/s)", total, dt, total / max(dt, 1e-9))


# ---------------------------------------------------------------------- loading / consolidation
def _ids_hash(ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(ids, np.int64).tobytes()).hexdigest()[:16]


def load_embeddings(ws: Any, encoder: None | str | Encoder = None) -> Embeddings | None:
    """The vectors of the present samples computed by ``encoder`` (default: the workspace's active one).

    The chunks are consolidated once into a single ``.npy`` pair (artifact kind ``embeddings``, keyed by
    the store and the id set), so repeated loads are memory maps, not concatenations.

    Returns
    -------
    Embeddings, or None when nothing was embedded with that encoder.
    """
    if isinstance(encoder, Encoder) and not isinstance(encoder, PrecomputedEncoder):
        key: str | None = store_key_of(encoder)
    elif encoder is not None:
        key = _find_store(ws, encoder if isinstance(encoder, str) else encoder.name)
    else:
        key = ws.store.meta("embeddings_store") or None
        if key is None and ws.store.meta("encoder"):
            key = _find_store(ws, ws.store.meta("encoder"))
    if key is None:
        return None
    d = Path(ws.artifacts.root) / KIND / key
    if not (d / "store.json").exists():
        return None
    info = _read_store_info(d)
    done = _done_chunks(d)
    if len(done) == 0:
        return None
    chunk_ids = [np.load(_chunk_path(d, c, "ids.npy"), allow_pickle=False) for c in done.tolist()]
    all_ids = np.concatenate(chunk_ids)
    present = ws.store.sample_ids()
    keep_ids = np.intersect1d(all_ids, present)  # sorted, unique
    ckey = make_key({"store": key, "ids": _ids_hash(keep_ids)})
    ids = ws.artifacts.load_array(KIND, ckey, name="ids")
    vecs = ws.artifacts.load_array(KIND, ckey, name="vectors")
    if ids is None or vecs is None:
        vec_parts = [np.load(_chunk_path(d, c, "vec.npy"), mmap_mode="r", allow_pickle=False)
                     for c in done.tolist()]
        dim = int(info.get("dim") or (vec_parts[0].shape[1] if vec_parts else 0))
        all_vecs = np.concatenate([v.reshape(-1, dim) for v in vec_parts]) if vec_parts else np.zeros((0, dim))
        order = np.argsort(all_ids, kind="stable")
        sorted_ids = all_ids[order]
        first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]  # an id embedded twice: keep one
        order, sorted_ids = order[first], sorted_ids[first]
        sel = np.isin(sorted_ids, present)
        out_ids, out_vecs = sorted_ids[sel], np.asarray(all_vecs[order[sel]], np.float32)
        config = {"store": key, "ids": _ids_hash(keep_ids), "encoder": info.get("name"),
                  "encoder_id": info.get("id"), "fingerprint": info.get("fingerprint"), "n": int(len(out_ids))}
        ws.artifacts.save_arrays(KIND, ckey, {"ids": out_ids, "vectors": out_vecs}, config=config)
        _prune_consolidated(ws, key, keep=ckey)
        ids = ws.artifacts.load_array(KIND, ckey, name="ids")
        vecs = ws.artifacts.load_array(KIND, ckey, name="vectors")
    devices = info.get("devices") or (["precomputed"] if str(info.get("name", "")).startswith("precomputed:") else [])
    return Embeddings(ids=ids, vectors=vecs, key=ckey, encoder_id=str(info.get("id", "")),
                      encoder_name=str(info.get("name", "")), device="+".join(devices) or "unknown",
                      has_text=bool(info.get("has_text", False)), store_key=key, skipped=_read_failures(d, done))


def _prune_consolidated(ws: Any, store_key: str, *, keep: str) -> None:
    """Delete older consolidated copies of one store (their chunks stay)."""
    try:
        arts = ws.artifacts.list()
    except Exception:  # noqa: BLE001
        return
    for _, row in arts[arts["kind"] == KIND].iterrows():
        cfg = row["config"] or {}
        if isinstance(cfg, dict) and cfg.get("store") == store_key and row["key"] != keep:
            ws.artifacts.delete(KIND, row["key"])


# ---------------------------------------------------------------------- user-supplied vectors
_PATH_COLUMNS = ("path", "file_name", "filename", "filepath", "file", "image", "image_path")
_ID_COLUMNS = ("id", "sample_id")


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
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr).all(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise EmbeddingError(f"{src} has NaN or infinite values in {len(rows)} rows (first: {rows[:5].tolist()}); "
                             "recompute or drop those rows (and their manifest entries) before importing.")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if len(zero):
        raise EmbeddingError(f"{src} has {len(zero)} all-zero rows (first: {zero[:5].tolist()}); they have no "
                             "direction to compare: recompute or drop them.")
    return arr / norms


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


def _match_ids(ws: Any, keys: Sequence[Any], src: str) -> np.ndarray:
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


def import_embeddings(ws: Any, path: str | Path, *, ids_or_paths: None | str | Path | Sequence[Any] = None,
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
            raw = np.load(path, allow_pickle=False)
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
    order = np.argsort(ids)
    ids, vecs = ids[order], vecs[order]
    enc_name = f"precomputed:{name}"
    fp = hashlib.sha1(ids.tobytes() + vecs.tobytes()).hexdigest()[:16]
    key = make_key({"encoder": enc_name, "fingerprint": fp, "version": FORMAT_VERSION})
    d = _store_dir(ws, key)
    for p in d.glob("chunk-*"):
        p.unlink()
    chunk = np.arange(len(ids)) // max(1, chunk_size)
    _atomic_npy(d / "plan.npy", np.stack([ids, chunk, np.zeros(len(ids), np.int64)], 1))
    for c in np.unique(chunk).tolist():
        m = chunk == c
        _write_chunk(d, c, ids[m], vecs[m], [])
    _write_store_info(d, {"name": enc_name, "id": enc_name, "fingerprint": fp, "preprocessing": {},
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


# ---------------------------------------------------------------------- text
def _encoder_for(encoder: str | Encoder, device: str | None = None) -> Encoder:
    enc = encoder if isinstance(encoder, Encoder) else get_encoder(str(encoder), device=device)
    if not enc.has_text:
        enc.encode_text([])  # raises NoTextTower with the how-to
    return enc


def class_prompts(class_names: Sequence[str], *, templates: Sequence[str] | None = None,
                  prompts: Sequence[str | None] | None = None) -> list[list[str]]:
    """The texts of each class: its own prompt (one per line; ``{}`` → class name) when given, else every
    template filled with the class name."""
    templates = list(templates or CLIP_TEMPLATES)
    out = []
    for k, name in enumerate(class_names):
        own = (prompts[k] if prompts is not None and k < len(prompts) else None) or ""
        lines = [ln.strip() for ln in str(own).splitlines() if ln.strip()]
        if lines:
            out.append([ln.replace("{}", name) for ln in lines])
        else:
            out.append([t.replace("{}", name) for t in templates])
    return out


def text_embeddings(encoder: str | Encoder, class_names: Sequence[str], *, templates: Sequence[str] | None = None,
                    prompts: Sequence[str | None] | None = None, ws: Any = None) -> np.ndarray:
    """CLIP zero-shot class embeddings: per class, the mean of its L2-normalised prompt embeddings,
    renormalised.

    Parameters
    ----------
    encoder : an encoder with a text tower (or its name).
    class_names : K names.
    templates : prompt templates with ``{}`` for the name (default :data:`CLIP_TEMPLATES`).
    prompts : optional per-class override (e.g. ``Store.classes()["prompt"]``; empty = use templates).
    ws : when given, results are cached as artifact kind ``text_embeddings`` keyed by encoder and texts.

    Returns
    -------
    (K, D) float32, L2-normalised.
    """
    enc = _encoder_for(encoder)
    texts = class_prompts(class_names, templates=templates, prompts=prompts)
    key = make_key({"encoder": enc.id, "fingerprint": enc.fingerprint, "texts": texts})
    if ws is not None:
        hit = ws.artifacts.load_array(TEXT_KIND, key, mmap=False)
        if hit is not None:
            return np.asarray(hit, np.float32)
    if not texts:
        return np.zeros((0, enc.dim), np.float32)
    flat = [t for ts in texts for t in ts]
    starts = np.r_[0, np.cumsum([len(ts) for ts in texts])[:-1]]
    e = enc.encode_text(flat)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    m = np.add.reduceat(e, starts, axis=0) / np.array([len(ts) for ts in texts], np.float32)[:, None]
    out = (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    if ws is not None:
        ws.artifacts.save_array(TEXT_KIND, key, out, config={"encoder": enc.id, "n_classes": len(texts),
                                                             "n_texts": len(flat)})
    return out


def class_text_embeddings(ws: Any, encoder: str | Encoder | None = None, *,
                          templates: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Text embeddings of the workspace's classes (their prompts override the templates).

    Returns
    -------
    class_ids : (K,) int64, the classes by id (row k = column k of label matrices).
    vectors : (K, D) float32 L2-normalised.
    """
    classes = ws.store.classes()
    enc = encoder if encoder is not None else (ws.store.meta("encoder") or DEFAULT_ENCODER)
    vecs = text_embeddings(enc, classes["name"].tolist(), templates=templates,
                           prompts=classes["prompt"].tolist(), ws=ws)
    return classes.index.to_numpy(np.int64), vecs


# ---------------------------------------------------------------------- search
def _top_k(emb: Embeddings, q: np.ndarray, k: int, ws: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) queries → (Q, k) row positions and cosine similarities, best first, on the embeddings' one
    faiss index (built once per process, see ``curation.neighbors.embedding_index``)."""
    from curation.neighbors import embedding_index, search

    return search(emb.vectors, q.astype(np.float32), k=k, index=embedding_index(ws, emb))


def search_text(ws: Any, emb: Embeddings, query: str, *, k: int = 48,
                encoder: Encoder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images best matching a text query.

    Returns
    -------
    ids : (k,) int64 sample ids, best first.
    scores : (k,) float32 cosine similarities.
    """
    if not emb.has_text:
        raise NoTextTower(f"Text search needs an encoder with a text tower; these embeddings come from "
                          f"{emb.encoder_name}. Embed with OpenCLIP (`--encoder {DEFAULT_ENCODER}` or "
                          "`openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin`).")
    enc = encoder or get_encoder(emb.encoder_name)
    if len(emb.ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    q = enc.encode_text([query])
    idx, sims = _top_k(emb, q, k, ws)
    return emb.ids[idx[0]], sims[0]


def similar_images(emb: Embeddings, sample_id: int | Sequence[int], *, k: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Images most similar to one sample (or to the mean of several), the query samples excluded.

    Returns
    -------
    ids : (≤k,) int64 sample ids, best first.
    scores : (≤k,) float32 cosine similarities.
    """
    qids = np.atleast_1d(np.asarray(sample_id, np.int64))
    rows = emb.rows(qids)
    if (rows < 0).any():
        raise EmbeddingError(f"Samples {qids[rows < 0][:5].tolist()} have no embedding (unreadable image or not "
                             "embedded yet): run the embedding step first.")
    q = np.asarray(emb.vectors[rows], np.float32).mean(0, keepdims=True)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    idx, sims = _top_k(emb, q, min(k + len(qids), len(emb.ids)))
    ids, sims = emb.ids[idx[0]], sims[0]
    keep = ~np.isin(ids, qids)
    return ids[keep][:k], sims[keep][:k]
