"""A studio workspace in seconds for the UX browser tests and timings: the real demo images (Fashion-MNIST), pixel-PCA
embeddings imported as the user's own, a PCA map, k-means clusters (no encoder, no UMAP: 2-core friendly).

    python benchmarks/ux_workspace.py WS --n 3000
    python benchmarks/ux_workspace.py WS100K --n 100000 --synthetic   # no image files: server-side timings only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(dest: Path, n: int, *, dims: int = 48, k: int = 10) -> Path:
    """Build (or finish) the workspace at ``dest``; returns it."""
    from PIL import Image

    from curation.data.demo import build_demo
    from curation.features.imported import import_embeddings

    ws = build_demo(dest, n=n)
    samples = ws.store.samples()
    pixels = np.stack([np.asarray(Image.open(Path(r) / p).convert("L").resize((28, 28)), np.float32).ravel()
                       for r, p in zip(samples["root"], samples["path"])]) / 255.0
    pixels -= pixels.mean(0)
    _, _, vt = np.linalg.svd(pixels[:: max(1, len(pixels) // 2000)], full_matrices=False)
    vec = pixels @ vt[:dims].T
    vec /= np.linalg.norm(vec, axis=1, keepdims=True) + 1e-12
    file = dest / "pixels.parquet"
    pd.DataFrame({"id": samples.index.to_numpy(np.int64), "embedding": list(vec.astype(np.float32))}).to_parquet(file)
    import_embeddings(ws, file, column="embedding", name="pixels")
    for cmd in (["map", str(dest), "--method", "pca"], ["cluster", str(dest), "--k", str(k)]):
        subprocess.run([sys.executable, "-m", "curation", *cmd], cwd=ROOT, check=True)
    return dest


def build_synthetic(dest: Path, n: int, *, dims: int = 32, k: int = 10, seed: int = 0) -> Path:
    """A workspace of ``n`` samples without image files (thumbnails show as unreadable): 10 classes, 30 %
    unlabelled, clustered random embeddings, a PCA map and k-means clusters. For server-side page timings at a
    scale whose images would take an hour to write here."""
    from curation.data.workspace import Workspace
    from curation.features.imported import import_embeddings

    ws = Workspace.create(dest)
    rng = np.random.default_rng(seed)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    y = rng.integers(0, len(names), n)
    recs = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 10, "width": 28, "height": 28})
    labels = [[] if u < 0.3 else [names[c]] for u, c in zip(rng.random(n), y)]
    ws.store.add_samples(ws.store.root_id(ws.root), recs, labels=labels)
    vec = (rng.normal(size=(len(names), dims))[y] * 3 + rng.normal(size=(n, dims))).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    file = dest / "vectors.parquet"
    pd.DataFrame({"id": ws.store.sample_ids(), "embedding": list(vec)}).to_parquet(file)
    import_embeddings(ws, file, column="embedding", name="synthetic")
    for cmd in (["map", str(dest), "--method", "pca"], ["cluster", str(dest), "--k", str(k)]):
        subprocess.run([sys.executable, "-m", "curation", *cmd], cwd=ROOT, check=True)
    return dest


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--synthetic", action="store_true", help="no image files (server-side timings at large n)")
    args = ap.parse_args()
    (build_synthetic if args.synthetic else build)(args.workspace, args.n)
    print(f"built {args.workspace}")
