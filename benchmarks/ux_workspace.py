"""A studio workspace in seconds for the UX browser tests and timings: the real demo images (Fashion-MNIST), pixel-PCA
embeddings imported as the user's own, a PCA map, k-means clusters (no encoder, no UMAP: 2-core friendly).

    python benchmarks/ux_workspace.py WS --n 3000
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    build(args.workspace, args.n)
    print(f"built {args.workspace}")
