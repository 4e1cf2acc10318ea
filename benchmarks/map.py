"""Benchmark: UMAP on the faiss graph vs umap-learn defaults, exact vs HNSW kNN, clustering quality.

Run: ``.venv/bin/python benchmarks/map.py [--sizes 20000 70000] [--ann 100000] [--ann-1m]
[--embeddings FILE.npy --labels FILE.npy]``. Prints figures and ratios; not a test.

Data: real Fashion-MNIST (Debian ``dataset-fashion-mnist``) pixels reduced to 64-d by PCA and
L2-normalised, or an (N, D) embeddings ``.npy`` given by flag. Sizes above 70,000 are padded with
jittered copies of real rows (noted in the output).
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FASHION = Path("/usr/share/datasets/fashion-mnist")


def load_fashion() -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for part in ("train", "t10k"):
        with gzip.open(FASHION / f"{part}-images-idx3-ubyte.gz") as f:
            xs.append(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784))
        with gzip.open(FASHION / f"{part}-labels-idx1-ubyte.gz") as f:
            ys.append(np.frombuffer(f.read(), np.uint8, offset=8))
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys).astype(np.int64)


def features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if args.embeddings:
        x = np.load(args.embeddings).astype(np.float32)
        y = np.load(args.labels) if args.labels else np.zeros(len(x), np.int64)
        src = f"embeddings {args.embeddings}"
    else:
        if not FASHION.exists():
            sys.exit("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist (or pass --embeddings).")
        from sklearn.decomposition import PCA

        pix, y = load_fashion()
        x = PCA(64, random_state=0).fit_transform(pix).astype(np.float32)
        src = "Fashion-MNIST pixels -> PCA 64-d"
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, y, src


def take(x: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """n rows: a seeded subset, or all rows plus jittered copies when n exceeds the data."""
    rng = np.random.default_rng(seed)
    if n <= len(x):
        rows = np.sort(rng.choice(len(x), n, replace=False))
        return x[rows], y[rows], False
    extra = rng.choice(len(x), n - len(x))
    xe = x[extra] + rng.normal(scale=0.05, size=(len(extra), x.shape[1])).astype(np.float32)
    xe /= np.linalg.norm(xe, axis=1, keepdims=True)
    return np.concatenate([x, xe]), np.concatenate([y, y[extra]]), True


def trust(x: np.ndarray, coords: np.ndarray, n_sub: int = 5000) -> float:
    from sklearn.manifold import trustworthiness

    rows = np.random.default_rng(1).choice(len(x), min(n_sub, len(x)), replace=False)
    return float(trustworthiness(x[rows], coords[rows], n_neighbors=10))


def bench_umap(x: np.ndarray, y: np.ndarray, sizes: list[int], default_limit: int) -> None:
    import umap

    from curation import project
    from curation.neighbors import knn

    t = time.perf_counter()
    project.warm_umap()
    # >= 4096 rows so umap-learn takes (and compiles) its NNDescent path, seeded and parallel
    umap.UMAP(n_epochs=5, random_state=0).fit(x[:5000])
    umap.UMAP(n_epochs=5).fit(x[:5000])
    print(f"numba warm-up (both paths): {time.perf_counter() - t:.1f} s")
    print("\n## UMAP: faiss graph vs umap-learn defaults (trustworthiness k=10 on a 5k subsample)")
    for n in sizes:
        xs, ys, padded = take(x, y, n)
        note = " (padded with jittered copies)" if padded else ""
        t = time.perf_counter()
        idx, sims = knn(xs, k=14)
        t_knn = time.perf_counter() - t
        ours = project.umap_map(xs, idx=idx, sims=sims, k=15, reproducible=True, sample_limit=10**9)
        t_ours = time.perf_counter() - t
        print(f"n={n:,}{note}: faiss graph + UMAP (seeded, 1 thread): {t_ours:.1f} s "
              f"(kNN {t_knn:.1f} s), trust {trust(xs, ours):.4f}", flush=True)
        t = time.perf_counter()
        par = project.umap_map(xs, idx=idx, sims=sims, k=15, reproducible=False, sample_limit=10**9)
        t_par = time.perf_counter() - t + t_knn
        print(f"    same, parallel (n_jobs=-1): {t_par:.1f} s, trust {trust(xs, par):.4f}", flush=True)
        if n > 50_000:
            t = time.perf_counter()
            samp = project.umap_map(xs, k=15, reproducible=True, sample_limit=50_000)
            t_s = time.perf_counter() - t
            print(f"    fit on 50k sample + place rest: {t_s:.1f} s, trust {trust(xs, samp):.4f}", flush=True)
        if n <= default_limit:
            t = time.perf_counter()
            ref = umap.UMAP(random_state=0).fit_transform(xs)
            t_ref = time.perf_counter() - t
            t = time.perf_counter()
            ref_par = umap.UMAP().fit_transform(xs)
            t_ref_par = time.perf_counter() - t
            print(f"    umap-learn defaults seeded: {t_ref:.1f} s, trust {trust(xs, ref):.4f}; "
                  f"unseeded parallel: {t_ref_par:.1f} s, trust {trust(xs, ref_par):.4f}", flush=True)
            print(f"    speed-up seeded {t_ref / t_ours:.2f}x, best-vs-best {min(t_ref, t_ref_par) / min(t_ours, t_par):.2f}x")
        else:
            print(f"    (umap-learn defaults skipped above {default_limit:,}; raise --default-limit)")


def bench_ann(x: np.ndarray, n: int, *, queries: int = 5000) -> None:
    from curation import neighbors

    xs, _, padded = take(x, np.zeros(len(x), np.int64), n)
    print(f"\n## kNN index at n={n:,} x {xs.shape[1]}{' (padded)' if padded else ''}, k=10")
    q = xs[np.random.default_rng(2).choice(n, min(queries, n), replace=False)]
    t = time.perf_counter()
    flat = neighbors.build_index(xs)
    t_fb = time.perf_counter() - t
    t = time.perf_counter()
    ei, _ = neighbors.search(xs, q, k=10, index=flat)
    t_fs = (time.perf_counter() - t) * n / len(q)
    t = time.perf_counter()
    hnsw = neighbors.build_index(xs, exact_limit=0)
    t_hb = time.perf_counter() - t
    for ef in (32, 64, 128):
        hnsw.hnsw.efSearch = ef
        t = time.perf_counter()
        _, hi = hnsw.search(q, 10)
        t_hs = (time.perf_counter() - t) * n / len(q)
        rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ei, hi)])
        default = " (used by curation for k=10)" if ef == neighbors.ef_search_for(10) else ""
        print(f"efSearch={ef}{default}: recall@10 {rec:.4f}, all-{n:,} search {t_hs:.1f} s (est.)")
    print(f"exact IndexFlatIP: build {t_fb:.2f} s, all-{n:,} search {t_fs:.1f} s (est. from {len(q):,} queries); "
          f"HNSW M=32: build {t_hb:.1f} s")


def hungarian_acc(y: np.ndarray, lab: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    m = np.zeros((lab.max() + 1, y.max() + 1))
    np.add.at(m, (lab, y), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / len(y))


def bench_cluster(x: np.ndarray, y: np.ndarray) -> None:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from curation import cluster

    print(f"\n## Clustering {len(x):,} x {x.shape[1]} (true classes: {len(np.unique(y))})")
    t = time.perf_counter()
    k, scores = cluster.choose_k(x)
    t_k = time.perf_counter() - t
    print(f"automatic k = {k} in {t_k:.1f} s; silhouette at k=10: {scores.get(10, float('nan')):.3f}, "
          f"at k={k}: {scores[k]:.3f}")
    for kk in sorted({k, 10}):
        t = time.perf_counter()
        lab = cluster.cluster(x, k=kk)
        t_c = time.perf_counter() - t
        print(f"k={kk}: NMI {normalized_mutual_info_score(y, lab):.3f}, ARI {adjusted_rand_score(y, lab):.3f}, "
              f"Hungarian acc {hungarian_acc(y, lab):.3f} (k-means {t_c:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000])
    ap.add_argument("--default-limit", type=int, default=70_000, help="largest n for umap-learn defaults")
    ap.add_argument("--ann", type=int, default=100_000, help="n for the exact-vs-HNSW comparison (0 = skip)")
    ap.add_argument("--ann-1m", action="store_true", help="also a 1M synthetic (padded) HNSW run")
    ap.add_argument("--embeddings")
    ap.add_argument("--labels")
    ap.add_argument("--skip-umap", action="store_true")
    args = ap.parse_args()
    x, y, src = features(args)
    print(f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; data: {src}, {len(x):,} x {x.shape[1]}")
    if not args.skip_umap:
        bench_umap(x, y, args.sizes, args.default_limit)
    if args.ann:
        bench_ann(x, args.ann)
    if args.ann_1m:
        bench_ann(x, 1_000_000, queries=2000)
    bench_cluster(x, y)


if __name__ == "__main__":
    main()
