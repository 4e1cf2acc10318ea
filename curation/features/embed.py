"""Embedding pipeline: batched, pipelined, resumable chunked cache of image vectors, and loading it."""

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

from curation.core.progress import ProgressFn, null_progress
from curation.data.artifacts import make_key
from curation.data.atomic import atomic_write
from curation.features.encoders import Encoder, PrecomputedEncoder, default_encoder, get_encoder
from curation.features.imageset import ImageDataset, auto_batch_size, auto_workers, collate_images, worker_init

log = logging.getLogger(__name__)

KIND = "embeddings"
TEXT_KIND = "text_embeddings"
FORMAT_VERSION = 1
_CHUNK_RE = re.compile(r"^chunk-(\d{6})\.ids\.npy$")



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


def store_dir(ws: Any, key: str) -> Path:
    d = Path(ws.artifacts.root) / KIND / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Write one array as ``.npy`` (no pickle), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)

    atomic_write(path, write)


def _read_store_info(d: Path) -> dict[str, Any]:
    try:
        return json.loads((d / "store.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_store_info(d: Path, info: dict[str, Any]) -> None:
    atomic_write(d / "store.json", json.dumps(info, indent=1, sort_keys=True, default=str))


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


def write_chunk(d: Path, c: int, ids: np.ndarray, vecs: np.ndarray, failed: list[tuple[int, str, str]]) -> None:
    """Write one chunk: vectors, failures (if any), then ids last (the completion marker), each atomically."""
    save_npy(_chunk_path(d, c, "vec.npy"), vecs.astype(np.float32, copy=False))
    if failed:
        atomic_write(_chunk_path(d, c, "failed.json"),
                     json.dumps([{"id": int(i), "path": p, "reason": r} for i, p, r in failed], indent=0))
    save_npy(_chunk_path(d, c, "ids.npy"), ids.astype(np.int64, copy=False))


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
    progress : ``progress(fraction, message)``; may raise :class:`~curation.core.progress.Cancelled`
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
    d = store_dir(ws, key)
    info = _read_store_info(d) or {"name": enc.name, "id": enc.id, "fingerprint": enc.fingerprint,
                                   "preprocessing": enc.preprocessing(), "dim": enc.dim, "has_text": enc.has_text,
                                   "version": FORMAT_VERSION, "devices": []}
    info["name"] = enc.name
    info["used"] = time.time()
    write_store_info(d, info)

    frame = ws.store.samples(include_missing=True)
    present = frame.index.to_numpy(np.int64)[frame["missing"].to_numpy() == 0]
    plan = _load_plan(d)
    new = np.setdiff1d(present, plan[:, 0])  # sorted
    if len(new):
        bs = int(batch_size or auto_batch_size(enc))
        first = int(plan[:, 1].max()) + 1 if len(plan) else 0
        rows = np.stack([new, first + np.arange(len(new)) // chunk_size, np.full(len(new), bs)], 1)
        plan = np.concatenate([plan, rows.astype(np.int64)])
        save_npy(d / "plan.npy", plan)
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
            write_store_info(d, info)
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
    ds = ImageDataset(paths, enc.transform, enc.transform.size, allowed)
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=collate_images,
                        pin_memory=enc.device.startswith("cuda"), worker_init_fn=worker_init if workers else None,
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
                write_chunk(d, c, cids, vecs, cur_failed)
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


