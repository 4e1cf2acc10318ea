"""Benchmark: curation's UMAP vs umap-learn defaults, exact vs approximate kNN, clustering quality.

Run: ``.venv/bin/python benchmarks/map.py [--sizes 20000 70000 100000] [--full-fit] [--ann 100000 1000000]
[--skip-umap] [--skip-cluster] [--embeddings FILE.npy --labels FILE.npy]``. Prints figures, ratios and the
load average with each; not a test.

Data: real Fashion-MNIST (Debian ``dataset-fashion-mnist``) pixels reduced to 64-d by PCA and
L2-normalised, or an (N, D) embeddings ``.npy`` given by flag. Sizes above 70,000 are padded with
jittered copies of real rows (noted in the output). Both UMAPs run in this one process with numba
warmed for both first.
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


def load() -> str:
    """The 1-minute load average, printed with every figure (the machine is shared)."""
    return f"load {os.getloadavg()[0]:.2f}"


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def ours(xs: np.ndarray, *, reproducible: bool, sample_limit: int) -> np.ndarray:
    """What ``compute_map`` does without a workspace: exact faiss graph + UMAP, or sample + place + refine."""
    from curation.features import project
    from curation.features.neighbors import knn

    if len(xs) <= sample_limit:
        idx, sims = knn(xs, k=14)
        return project.umap_map(xs, idx=idx, sims=sims, reproducible=reproducible, sample_limit=sample_limit)
    return project.umap_map(xs, reproducible=reproducible, sample_limit=sample_limit)


def bench_umap(x: np.ndarray, y: np.ndarray, sizes: list[int], default_limit: int, *, full_fit: bool) -> None:
    import umap

    from curation.features import project

    t = time.perf_counter()
    project.warm_umap()
    # >= 4096 rows so umap-learn takes (and compiles) its NNDescent path, seeded and parallel
    umap.UMAP(n_epochs=5, random_state=0).fit(x[:5000])
    umap.UMAP(n_epochs=5).fit(x[:5000])
    print(f"numba warm-up (both paths, both modes): {time.perf_counter() - t:.1f} s, {load()}")
    print(f"\n## UMAP: curation (faiss graph; above {project.SAMPLE_LIMIT:,} fit on a sample, place, refine) vs "
          "umap-learn defaults; trustworthiness k=10 on a 5k subsample")
    for n in sizes:
        xs, _, padded = take(x, y, n)
        print(f"n={n:,}{' (padded with jittered copies)' if padded else ''}", flush=True)
        rows = {}
        for name, fn in [("curation reproducible (seeded, 1 thread)", lambda: ours(xs, reproducible=True,
                                                                                  sample_limit=project.SAMPLE_LIMIT)),
                         ("curation fast (parallel)", lambda: ours(xs, reproducible=False,
                                                                   sample_limit=project.SAMPLE_LIMIT)),
                         ("umap-learn defaults, random_state=0", lambda: umap.UMAP(random_state=0).fit_transform(xs)),
                         ("umap-learn defaults (parallel)", lambda: umap.UMAP().fit_transform(xs))]:
            if name.startswith("umap-learn") and n > default_limit:
                continue
            dt, coords = timed(fn)
            rows[name] = (dt, trust(xs, coords))
            print(f"    {name}: {dt:.1f} s, trust {rows[name][1]:.4f}, {load()}", flush=True)
        if full_fit and n > project.SAMPLE_LIMIT:
            dt, coords = timed(ours, xs, reproducible=True, sample_limit=10**9)
            tf = trust(xs, coords)
            print(f"    curation full fit (no sampling, seeded): {dt:.1f} s, trust {tf:.4f}, {load()}; "
                  f"sampled path loses {tf - rows['curation reproducible (seeded, 1 thread)'][1]:.4f}", flush=True)
        if len(rows) == 4:
            (rs, ts), (rp, tp), (ds, dts), (dp, dtp) = rows.values()
            print(f"    speed-up seeded {ds / rs:.2f}x, parallel {dp / rp:.2f}x, best-vs-best "
                  f"{min(ds, dp) / min(rs, rp):.2f}x; trust difference seeded {ts - dts:+.4f}, parallel {tp - dtp:+.4f}")


def bench_ann(x: np.ndarray, n: int, *, queries: int = 5000) -> None:
    """Exact vs HNSW vs IVF at n: build time, all-n kNN search time (extrapolated from a query sample), recall@10."""
    from curation.features import neighbors

    xs, _, padded = take(x, np.zeros(len(x), np.int64), n)
    print(f"\n## kNN index at n={n:,} x {xs.shape[1]}{' (padded)' if padded else ''}, k=10, "
          f"{min(queries, n):,} sampled queries; all-{n:,} search times are extrapolated", flush=True)
    q = xs[np.random.default_rng(2).choice(n, min(queries, n), replace=False)]
    scale = n / len(q)
    t_fb, flat = timed(neighbors.build_index, xs, kind="flat")
    t_fs, (ei, _) = timed(neighbors.search, xs, q, k=10, index=flat)
    print(f"exact IndexFlatIP: build {t_fb:.2f} s, all-{n:,} search {t_fs * scale:.1f} s, {load()}", flush=True)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ei, found)]))

    for kind, knob, values in (("hnsw", "efSearch", (32, 64, 128)), ("ivf", "nprobe", (8, 16, 32, 64))):
        t_b, index = timed(neighbors.build_index, xs, kind=kind)
        if kind == "ivf":
            print(f"ivf: {index.nlist} lists", flush=True)
        ours = neighbors.ef_search_for(10) if kind == "hnsw" else neighbors.nprobe_for(index.nlist)
        for v in sorted({*values, ours}):
            if kind == "hnsw":
                index.hnsw.efSearch = v
            else:
                index.nprobe = v
            t_s, (_, found) = timed(index.search, q, 10)
            used = " (curation's setting)" if v == ours else ""
            print(f"{kind} {knob}={v}{used}: build {t_b:.1f} s, all-{n:,} search {t_s * scale:.1f} s, "
                  f"recall@10 {recall(found):.4f}, {load()}", flush=True)


def hungarian_acc(y: np.ndarray, lab: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    m = np.zeros((lab.max() + 1, y.max() + 1))
    np.add.at(m, (lab, y), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / len(y))


def bench_cluster(x: np.ndarray, y: np.ndarray) -> None:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from curation.structure import cluster

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
    ap.add_argument("--default-limit", type=int, default=100_000, help="largest n for umap-learn defaults")
    ap.add_argument("--full-fit", action="store_true", help="also fit UMAP on every point above the sample limit")
    ap.add_argument("--ann", type=int, nargs="*", default=[100_000],
                    help="sizes for the exact vs HNSW vs IVF comparison (none = skip); above 70,000 padded")
    ap.add_argument("--embeddings")
    ap.add_argument("--labels")
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true")
    args = ap.parse_args()
    x, y, src = features(args)
    print(f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; data: {src}, {len(x):,} x {x.shape[1]}")
    if not args.skip_umap:
        bench_umap(x, y, args.sizes, args.default_limit, full_fit=args.full_fit)
    for n in args.ann:
        bench_ann(x, n, queries=5000 if n <= 200_000 else 2000)
    if not args.skip_cluster:
        bench_cluster(x, y)


if __name__ == "__main__":
    main()
