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
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress
from curation.data.artifacts import make_key
from curation.data.atomic import atomic_write
from curation.features.embedder import Embedder
from curation.features.encoders import Encoder, PrecomputedEncoder, default_encoder, get_encoder
from curation.features.imageset import ImageDataset, auto_batch_size, auto_workers, collate_images, worker_init

log = logging.getLogger(__name__)

KIND = "embeddings"
TEXT_KIND = "text_embeddings"
FORMAT_VERSION = 1
_CHUNK_RE = re.compile(r"^chunk-(\d{6})\.ids\.npy$")



ChunkRunner = Callable[..., None]
"""``runner(ws, encoder, store_dir, frame, todo, *, num_workers, progress)``: embed the planned rows ``todo``
(M, 3) int64 [sample id, chunk, batch size] and write each chunk with :func:`write_chunk` when complete."""


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
    skipped : DataFrame indexed by sample id with columns path, reason, time, attempts: images that could not
        be embedded (see :func:`embedding_failures`).
    """

    ids: np.ndarray
    vectors: np.ndarray
    key: str
    encoder_id: str
    encoder_name: str
    device: str
    has_text: bool
    store_key: str = ""
    skipped: pd.DataFrame = field(default_factory=lambda: _skipped_frame([]))

    def summary(self) -> str:
        """What was embedded, and the images that could not be (how many, one example, what to do)."""
        text = f"{len(self.ids)} embeddings ({self.encoder_name}, {self.dim}-d) on {self.device}"
        if len(self.skipped):
            text += (f"\n{len(self.skipped)} images could not be embedded (e.g. {self.skipped['path'].iloc[0]}: "
                     f"{self.skipped['reason'].iloc[0]}); `doctor` lists them; changed files are retried by the next "
                     "embed, all of them with `embed --retry-failed`")
        return text

    def record(self) -> dict[str, Any]:
        """The summary as data (``--json``): n, encoder, dim, device, failed."""
        return {"n": len(self), "encoder": self.encoder_name, "dim": self.dim, "device": self.device,
                "failed": int(len(self.skipped))}

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


FAILURE_COLUMNS = ("path", "reason", "time", "attempts")


def _skipped_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Failure records (dicts with id, path, reason, time, attempts) as a frame indexed by sample id."""
    df = pd.DataFrame({c: [r.get(c) for r in records] for c in FAILURE_COLUMNS},
                      index=pd.Index(np.asarray([r["id"] for r in records], np.int64), name="id"))
    df["time"] = pd.to_numeric(df["time"], errors="coerce").astype(float)
    df["attempts"] = pd.to_numeric(df["attempts"], errors="coerce").fillna(1).astype(np.int64)
    return df.sort_index()


def file_signature(path: str | os.PathLike[str]) -> list[int]:
    """What a file looks like now, to tell whether it changed since an image failed: [file type, size,
    mtime in ns, inode], or [] when it does not exist. A file restored, replaced or rewritten differs."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [int(st.st_mode) >> 12, int(st.st_size), int(st.st_mtime_ns), int(st.st_ino)]


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
    """Write one chunk: vectors, failures (if any), then ids last (the completion marker), each atomically.

    Each failure is recorded with its reason, the time and the file's :func:`file_signature`, so a later
    embed retries it once the file changed."""
    save_npy(_chunk_path(d, c, "vec.npy"), vecs.astype(np.float32, copy=False))
    if failed:
        now = time.time()
        atomic_write(_chunk_path(d, c, "failed.json"),
                     json.dumps([{"id": int(i), "path": p, "reason": r, "time": now, "sig": file_signature(p)}
                                 for i, p, r in failed], indent=0))
    save_npy(_chunk_path(d, c, "ids.npy"), ids.astype(np.int64, copy=False))


def _failure_records(d: Path, chunks: np.ndarray) -> dict[int, dict[str, Any]]:
    """{sample id: its newest failure record} over the chunks (ascending), ``attempts`` counting all of them."""
    out: dict[int, dict[str, Any]] = {}
    for c in chunks.tolist():
        p = _chunk_path(d, c, "failed.json")
        if not p.exists():
            continue
        try:
            records = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("unreadable failure record %s; its images are retried", p)
            continue
        for r in records:
            sid = int(r["id"])
            attempts = out[sid]["attempts"] + 1 if sid in out else 1
            out[sid] = {"id": sid, "path": str(r.get("path", "")), "reason": str(r.get("reason", "")),
                        "time": r.get("time"), "sig": r.get("sig"), "attempts": attempts}
    return out


def _current_failures(d: Path, chunks: np.ndarray, embedded: np.ndarray) -> dict[int, dict[str, Any]]:
    """Failure records of the samples that still have no vector (``embedded``: ids with one, any order)."""
    recs = _failure_records(d, chunks)
    if not recs:
        return {}
    failed = np.fromiter(recs, np.int64, len(recs))
    still = failed[~np.isin(failed, embedded)]
    return {int(i): recs[int(i)] for i in still.tolist()}


def _embedded_ids(d: Path, chunks: np.ndarray) -> np.ndarray:
    parts = [np.load(_chunk_path(d, c, "ids.npy"), allow_pickle=False) for c in chunks.tolist()]
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)


def _read_failures(d: Path, chunks: np.ndarray, embedded: np.ndarray | None = None) -> pd.DataFrame:
    if embedded is None:
        embedded = _embedded_ids(d, chunks)
    return _skipped_frame(list(_current_failures(d, chunks, embedded).values()))


def _retry_candidates(failures: dict[int, dict[str, Any]], present: np.ndarray, *, retry_all: bool
                      ) -> np.ndarray:
    """Sorted ids of present failed samples to embed again: all of them, or those whose file changed."""
    ids = np.array(sorted(failures), np.int64)
    ids = ids[np.isin(ids, present)]
    if retry_all or not len(ids):
        return ids
    changed = [sid for sid in ids.tolist()
               if failures[sid]["sig"] is None or file_signature(failures[sid]["path"]) != failures[sid]["sig"]]
    return np.array(changed, np.int64)


def embedding_failures(ws: Any, encoder: None | str | Encoder = None) -> pd.DataFrame:
    """Present samples the encoder's store could not embed, with why and when.

    Parameters
    ----------
    ws : Workspace
    encoder : as in :func:`load_embeddings` (default: the workspace's active encoder).

    Returns
    -------
    DataFrame indexed by sample id with columns path, reason, time (epoch seconds of the last attempt),
    attempts, changed (the file differs from when it failed: the next embed retries it); empty when none.
    """
    key = _store_key_for(ws, encoder)
    empty = _skipped_frame([]).assign(changed=pd.Series(dtype=bool))
    if key is None:
        return empty
    d = Path(ws.artifacts.root) / KIND / key
    if not d.is_dir():
        return empty
    done = _done_chunks(d)
    recs = _current_failures(d, done, _embedded_ids(d, done))
    present = ws.store.sample_ids()
    keep = set(present.tolist())
    recs = {k: v for k, v in recs.items() if k in keep}
    df = _skipped_frame(list(recs.values()))
    changed = set(_retry_candidates(recs, present, retry_all=False).tolist())
    df["changed"] = [int(i) in changed for i in df.index]
    return df


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
                    retry_failed: bool = False, progress: ProgressFn | None = None,
                    runner: ChunkRunner | None = None) -> Embeddings:
    """Embed every present sample not yet embedded by ``encoder``; resumable; returns all its vectors.

    Work is planned once as fixed chunks of ``chunk_size`` sorted sample ids (the plan is saved), each
    chunk written atomically when done, so a killed or cancelled run resumes where it stopped and ends
    byte-identical to an uninterrupted one. Later runs embed only samples added since, plus images that
    failed before and whose file changed since (restored, replaced, fixed), or every failed one when
    ``retry_failed``. Images that cannot be read never stop the run: they are recorded per sample (reason,
    time) and listed by :func:`embedding_failures`, ``doctor`` and the Home page.

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
    retry_failed : embed again every image that failed before, changed or not.
    progress : ``progress(fraction, message)``; may raise :class:`~curation.core.progress.Cancelled`
        (completed chunks are kept).
    runner : computes the planned chunks not yet done (default: this process's DataLoader loop); e.g. the
        Ray engine's (:mod:`curation.runtime.ray_jobs`), which writes the same chunks with :func:`write_chunk`.

    Returns
    -------
    Embeddings of the present samples; ``skipped`` lists images that could not be read, with reasons.

    Raises
    ------
    EmbeddingError when not one present image could be embedded (the failures are kept: the next embed
    retries the files that changed).
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
    pending = ~np.isin(plan[:, 1], done)
    retry = _retry_candidates(_current_failures(d, done, _embedded_ids(d, done)), present, retry_all=retry_failed)
    retry = np.setdiff1d(retry, plan[pending, 0])  # already planned again (a killed retry resumes)
    if len(retry):
        bs = int(batch_size or auto_batch_size(enc))
        first = int(plan[:, 1].max()) + 1
        rows = np.stack([retry, first + np.arange(len(retry)) // chunk_size, np.full(len(retry), bs)], 1)
        plan = np.concatenate([plan, rows.astype(np.int64)])
        save_npy(d / "plan.npy", plan)
        pending = ~np.isin(plan[:, 1], done)
        log.info("retrying %d images that failed before%s", len(retry), "" if retry_failed else " (their file changed)")
    todo = plan[pending]
    if len(todo):
        (runner or _run_chunks)(ws, enc, d, frame, todo, num_workers=num_workers, progress=progress)
        device = str(getattr(runner, "device", None) or enc.device)  # a runner may compute elsewhere ("ray:cpu")
        if device not in info["devices"]:
            info["devices"] = sorted([*info["devices"], device])
            write_store_info(d, info)

    done = _done_chunks(d)
    embedded = np.intersect1d(_embedded_ids(d, done), present)
    failed = _read_failures(d, done, embedded)
    failed = failed[failed.index.isin(present)]
    ws.store.set_meta("encoder", enc.name)
    ws.store.set_meta("embeddings_store", key)
    if len(present) and not len(embedded):
        ex = failed.iloc[0] if len(failed) else None
        example = f" (e.g. {ex['path']}: {ex['reason']})" if ex is not None else ""
        raise EmbeddingError(
            f"None of the {len(present):,} images could be embedded{example}. Bring the files back or fix them "
            "and run embed again: images whose file changed are retried (`embed --retry-failed` retries all); "
            "`python -m curation doctor WS` lists them.")
    note = f"; {len(failed):,} could not be read (see `doctor`; retried when their file changes)" if len(failed) else ""
    if len(todo):
        progress(1.0, f"embedded {len(embedded):,} of {len(present):,} images ({enc.name}){note}")
    else:
        progress(1.0, f"all {len(present):,} samples already planned; {len(embedded):,} embedded ({enc.name}){note}"
                 if note else f"all {len(present):,} samples already embedded ({enc.name})")
    emb = load_embeddings(ws, enc)
    if emb is None:
        raise EmbeddingError(f"No vectors could be loaded for {enc.name}; run embed again.")
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

    embedder = Embedder.wrap(enc)
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
    n_failed = 0
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
                n_failed += int((~ok).sum())
                x = x[torch.from_numpy(ok)]
            if len(x):
                cur_vecs.append(embedder.encode(x))
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
            bad = f" · {n_failed:,} unreadable" if n_failed else ""
            progress(n_done / total, f"embedded {n_done - n_failed:,}/{total:,} images{bad} · {rate:.1f} img/s"
                                     f" · ETA {_fmt_eta(eta)} · chunk {chunks_written}/{n_chunks}")
    finally:
        del it  # shuts the workers down, also on Cancelled / errors
    dt = time.perf_counter() - t0
    log.info("embedded %d of %d images in %.1fs (%.1f img/s); %d could not be read", total - n_failed, total, dt,
             total / max(dt, 1e-9), n_failed)


# ---------------------------------------------------------------------- loading / consolidation
def _ids_hash(ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(ids, np.int64).tobytes()).hexdigest()[:16]


def _store_key_for(ws: Any, encoder: None | str | Encoder) -> str | None:
    """The chunk-store key of ``encoder`` (default: the workspace's active one), or None."""
    if isinstance(encoder, Encoder) and not isinstance(encoder, PrecomputedEncoder):
        return store_key_of(encoder)
    if encoder is not None:
        return _find_store(ws, encoder if isinstance(encoder, str) else encoder.name)
    key = ws.store.meta("embeddings_store") or None
    if key is None and ws.store.meta("encoder"):
        key = _find_store(ws, ws.store.meta("encoder"))
    return key


def load_embeddings(ws: Any, encoder: None | str | Encoder = None) -> Embeddings | None:
    """The vectors of the present samples computed by ``encoder`` (default: the workspace's active one).

    The chunks are consolidated once into a single ``.npy`` pair (artifact kind ``embeddings``, keyed by
    the store and the id set), so repeated loads are memory maps, not concatenations.

    Returns
    -------
    Embeddings, or None when nothing was embedded with that encoder.
    """
    key = _store_key_for(ws, encoder)
    if key is None:
        return None
    d = Path(ws.artifacts.root) / KIND / key
    if not (d / "store.json").exists():
        return None
    info = _read_store_info(d)
    done = _done_chunks(d)
    if len(done) == 0:
        return None
    all_ids = _embedded_ids(d, done)
    present = ws.store.sample_ids()
    keep_ids = np.intersect1d(all_ids, present)  # sorted, unique
    if len(keep_ids) == 0:  # every image failed (or was removed): nothing to load, the failures are kept
        return None
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
        first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]][: len(sorted_ids)]  # embedded twice: keep one
        order, sorted_ids = order[first], sorted_ids[first]
        sel = np.isin(sorted_ids, present)
        out_ids, out_vecs = sorted_ids[sel], np.asarray(all_vecs[order[sel]], np.float32)
        config = {"store": key, "ids": _ids_hash(keep_ids), "encoder": info.get("name"),
                  "encoder_id": info.get("id"), "fingerprint": info.get("fingerprint"), "n": int(len(out_ids))}
        try:
            ws.artifacts.save_arrays(KIND, ckey, {"ids": out_ids, "vectors": out_vecs}, config=config)
        except OSError as exc:  # a read-only or full workspace: serve the vectors from memory
            log.warning("could not cache the consolidated embeddings (%s); using them from memory", exc)
            out_vecs.setflags(write=False)
            ids, vecs = out_ids, out_vecs
        else:
            _prune_consolidated(ws, key, keep=ckey)
            ids = ws.artifacts.load_array(KIND, ckey, name="ids")
            vecs = ws.artifacts.load_array(KIND, ckey, name="vectors")
    devices = info.get("devices") or (["precomputed"] if str(info.get("name", "")).startswith("precomputed:") else [])
    return Embeddings(ids=ids, vectors=vecs, key=ckey, encoder_id=str(info.get("id", "")),
                      encoder_name=str(info.get("name", "")), device="+".join(devices) or "unknown",
                      has_text=bool(info.get("has_text", False)), store_key=key,
                      skipped=_read_failures(d, done, all_ids).pipe(lambda f: f[f.index.isin(present)]))


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


