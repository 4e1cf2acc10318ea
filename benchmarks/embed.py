"""Embedding throughput and resume benchmark (prints figures; not a test).

Measures, per encoder, on real Fashion-MNIST PNGs written to a temporary workspace:

* forward-only images/s on pre-decoded tensors (the ceiling),
* end-to-end images/s of ``embed_workspace`` from files (decode + preprocess in DataLoader workers,
  overlapped with the forward pass, chunks written to disk) and its ratio to forward-only (goal >= 0.9),
* a naive loop: PIL open -> preprocess -> model, batch 1 and batch 32 (decode not overlapped),
* resume: a subprocess embedding is SIGKILLed at a random point, resumed, and its bytes compared
  with an uninterrupted run.

Example::

    .venv/bin/python benchmarks/embed.py --n 512 --models efficientnet-lite0,openclip:ViT-B-32:random
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATION_OFFLINE", "1")

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def write_pngs(folder: Path, n: int) -> list[Path]:
    """n real Fashion-MNIST test images as PNG files (synthetic noise when the Debian data is missing)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if FASHION.exists():
        with gzip.open(FASHION, "rb") as f:
            raw = f.read(16 + n * 784)
        imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        if len(imgs) < n:
            imgs = np.concatenate([imgs] * (n // len(imgs) + 1))[:n]
    else:
        print("! /usr/share/datasets/fashion-mnist missing (apt-get install dataset-fashion-mnist): using noise")
        imgs = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    paths = []
    for i, im in enumerate(imgs[:n]):
        p = folder / f"{i:06d}.png"
        Image.fromarray(im).save(p)
        paths.append(p)
    return paths


def make_ws(root: Path, folder: Path, paths: list[Path]):
    import pandas as pd

    from curation.data.workspace import Workspace

    ws = Workspace.create(root)
    rows = [{"path": p.name, "sha1": hashlib.sha1(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size,
             "width": 28, "height": 28} for p in paths]
    ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(rows))
    return ws


def clear_embeddings(ws) -> None:
    shutil.rmtree(ws.artifacts.root / "embeddings", ignore_errors=True)
    ws.store.set_meta("embeddings_store", "")


def bench_model(name: str, ws, paths: list[Path], *, batch: int, workers: list[int], naive_n: int,
                device: str | None) -> dict:
    import torch

    from curation.data.images import load_image
    from curation.features.embed import embed_workspace
    from curation.features.encoders import get_encoder
    enc = get_encoder(name, device=device)
    n = len(paths)
    print(f"\n== {name} on {enc.device} ({enc.dim}-d, {enc.transform.size}px, batch {batch}, "
          f"torch threads {torch.get_num_threads()})")
    # forward only, on pre-decoded uint8 tensors
    pre = torch.stack([enc.transform(load_image(p)) for p in paths])
    enc.encode_images(pre[:batch])  # warm-up
    t = time.perf_counter()
    for s in range(0, n, batch):
        enc.encode_images(pre[s:s + batch])
    fwd = n / (time.perf_counter() - t)
    print(f"forward only (pre-decoded)       {fwd:8.1f} img/s")
    out = {"model": name, "device": enc.device, "forward": fwd}
    # end to end from files through the pipeline
    for w in workers:
        clear_embeddings(ws)
        t = time.perf_counter()
        emb = embed_workspace(ws, enc, batch_size=batch, num_workers=w, chunk_size=256)
        e2e = n / (time.perf_counter() - t)
        assert len(emb.ids) == n
        out[f"e2e_w{w}"] = e2e
        print(f"end to end, {w} worker(s)          {e2e:8.1f} img/s   ratio {e2e / fwd:.2f}")
    # naive loops on a subset
    m = min(naive_n, n)
    t = time.perf_counter()
    for p in paths[:m]:
        enc.encode_images(enc.preprocess(load_image(p))[None])
    b1 = m / (time.perf_counter() - t)
    t = time.perf_counter()
    for s in range(0, m, 32):
        enc.encode_images(torch.stack([enc.preprocess(load_image(p)) for p in paths[s:s + 32]]))
    b32 = m / (time.perf_counter() - t)
    best = max(v for k, v in out.items() if k.startswith("e2e"))
    print(f"naive loop, batch 1 ({m} imgs)      {b1:8.1f} img/s   pipeline is {best / b1:.1f}x faster")
    print(f"naive loop, batch 32 ({m} imgs)     {b32:8.1f} img/s   pipeline is {best / b32:.2f}x faster")
    out.update(naive_b1=b1, naive_b32=b32)
    return out


def child(ws_root: str, model: str, chunk: int, batch: int) -> None:
    from curation.data.workspace import Workspace
    from curation.features.embed import embed_workspace
    embed_workspace(Workspace.open(ws_root), model, chunk_size=chunk, batch_size=batch)


def store_bytes(ws) -> dict[str, str]:
    d = ws.artifacts.root / "embeddings"
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and (p.name.startswith("chunk-") or p.name.endswith(".npy"))
            and p.name != "plan.npy" and not p.name.endswith(".tmp")}


def bench_resume(tmp: Path, folder: Path, paths: list[Path], *, model: str, chunk: int, batch: int,
                 seed: int) -> bool:
    from curation.features.embed import embed_workspace
    print(f"\n== resume after SIGKILL ({model}, {len(paths)} images, chunks of {chunk})")
    clean = make_ws(tmp / "resume-clean", folder, paths)
    t = time.perf_counter()
    ref = embed_workspace(clean, model, chunk_size=chunk, batch_size=batch)
    full = time.perf_counter() - t
    ws = make_ws(tmp / "resume-killed", folder, paths)
    n_all = -(-len(paths) // chunk)
    # kill at a random point after the first chunk lands and before the last one would
    delay = random.Random(seed).uniform(0.1, 0.7) * full * (n_all - 1) / n_all
    cmd = [sys.executable, __file__, "--child", str(ws.root), model, str(chunk), str(batch)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    store = ws.artifacts.root / "embeddings"
    t = time.perf_counter()
    while time.perf_counter() - t < 120 and not list(store.rglob("chunk-*.ids.npy")):  # wait for model load
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list(store.rglob("chunk-*.ids.npy")))
    print(f"killed after {delay:.1f}s (uninterrupted run takes {full:.1f}s): {n_done}/{n_all} chunks on disk")
    t = time.perf_counter()
    res = embed_workspace(ws, model, chunk_size=chunk, batch_size=batch)
    print(f"resumed in {time.perf_counter() - t:.1f}s")
    same = (res.vectors.tobytes() == ref.vectors.tobytes() and np.array_equal(res.ids, ref.ids)
            and store_bytes(ws) == store_bytes(clean))
    print(f"byte-identical to the uninterrupted run (chunks + consolidated): {same}"
          + ("" if n_done < n_all else "  (the kill came after the last chunk: rerun with another --seed)"))
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="images to embed")
    ap.add_argument("--models", default="efficientnet-lite0,openclip:ViT-B-32:random",
                    help="comma-separated encoder names (ViT-B-32 random weights = real compute)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0,1", help="DataLoader worker counts to compare")
    ap.add_argument("--naive-n", type=int, default=64, help="images for the naive loops")
    ap.add_argument("--resume-n", type=int, default=256, help="images for the resume test (0 = skip)")
    ap.add_argument("--resume-model", default="efficientnet-lite0")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]))
        return

    import torch

    from curation.features.encoders import pick_device

    dev = pick_device(a.device)
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"device: {dev} ({name}); torch {torch.__version__}; n={a.n}")
    tmp = Path(tempfile.mkdtemp(prefix="curation-bench-embed-"))
    try:
        folder = tmp / "images"
        paths = write_pngs(folder, max(a.n, a.resume_n))
        ws = make_ws(tmp / "ws", folder, paths[:a.n])
        rows = [bench_model(m, ws, paths[:a.n], batch=a.batch_size, workers=[int(w) for w in a.workers.split(",")],
                            naive_n=a.naive_n, device=a.device) for m in a.models.split(",") if m]
        ok = True
        if a.resume_n:
            ok = bench_resume(tmp, folder, paths[:a.resume_n], model=a.resume_model, chunk=max(8, a.resume_n // 8), batch=a.batch_size,
                              seed=a.seed)
        print("\nsummary (img/s):")
        for r in rows:
            e2e = {k: round(v, 1) for k, v in r.items() if k.startswith("e2e")}
            best = max(e2e.values())
            print(f"  {r['model']:<32} forward {r['forward']:.1f}  e2e {e2e}  ratio {best / r['forward']:.2f}  "
                  f"naive b1 {r['naive_b1']:.1f}  naive b32 {r['naive_b32']:.1f}")
        print(f"  resume byte-identical: {ok}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
