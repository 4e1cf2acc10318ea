"""Clustering quality on real Fashion-MNIST images embedded with the real offline encoder (EfficientNet-Lite0).

Prints NMI, ARI, Hungarian-matched accuracy and purity against the 10 true classes for automatic k,
k = 10, hierarchical k-means (k = 10 and the automatic k) and HDBSCAN (ours on PCA-32, and on the raw
vectors), the automatic k against the true k with its silhouette curve and its spread over seeds, and
timings; optionally a subsample-stability curve, a planted-rare-class pocket check and flat vs
hierarchical k-means speed. Not a test.

    apt-get install -y dataset-fashion-mnist                 # the images
    .venv/bin/python -m benchmarks.clusters                  # --n 4000 --cache test-artifacts/bench
    .venv/bin/python -m benchmarks.clusters --stability --pockets --speed 50000 100

Embedding costs ~10-40 images/s on a 2-core CPU, so the vectors are cached in ``--cache`` (the same
file name as ``benchmarks.label_quality``: one embedding run serves both).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.label_quality import embed, load_fashion  # noqa: E402

TRUE_K = 10


def scores(y: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """NMI, ARI, Hungarian-matched accuracy (one class per cluster, unmatched clusters count as wrong)
    and purity (each cluster votes its majority class), noise (-1) counted as wrong where it matters."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    uniq, inv = np.unique(labels, return_inverse=True)
    table = np.zeros((len(uniq), TRUE_K), np.int64)
    np.add.at(table, (inv, y), 1)
    table[uniq == -1] = 0  # noise is never a match
    rows, cols = linear_sum_assignment(-table)
    return {"NMI": normalized_mutual_info_score(y, labels), "ARI": adjusted_rand_score(y, labels),
            "Hungarian acc": table[rows, cols].sum() / len(y), "purity": table.max(1).sum() / len(y)}


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def stability(x: np.ndarray, grid: list[int], *, repeats: int = 3, sample: int = 3000) -> np.ndarray:
    """Mean ARI between k-means clusterings of two seeded overlapping samples, on their overlap, per k."""
    from sklearn.metrics import adjusted_rand_score

    from curation.structure.cluster import kmeans

    out = np.zeros((repeats, len(grid)))
    for r in range(repeats):
        rng = np.random.default_rng(100 + r)
        a, b = (np.sort(rng.choice(len(x), sample, replace=False)) for _ in range(2))
        _, ia, ib = np.intersect1d(a, b, return_indices=True)
        for j, k in enumerate(grid):
            la, lb = kmeans(x[a], k, seed=r, n_init=1)[0], kmeans(x[b], k, seed=r + 50, n_init=1)[0]
            out[r, j] = adjusted_rand_score(la[ia], lb[ib])
    return out.mean(0)


def pocket_check(x: np.ndarray, y: np.ndarray, *, rare_n: int = 25) -> None:
    """Plant each class as a rare one (``rare_n`` images kept), cluster with k = 9, and see whether pockets find it."""
    from curation.structure import cluster as C
    from curation.structure.pockets import find_pockets

    print(f"\npockets: each class in turn kept at {rare_n} images, k = 9 "
          "(rare members of the pockets found / pocket sizes; pockets without rare members are false alarms)")
    hits = false = 0
    for rare in range(TRUE_K):
        keep = np.flatnonzero(y != rare)
        rows = np.sort(np.r_[keep, np.random.default_rng(rare).choice(np.flatnonzero(y == rare), rare_n,
                                                                      replace=False)])
        xs, ys = x[rows], y[rows]
        found = find_pockets(xs, C.cluster(xs, k=TRUE_K - 1))
        got = [(int((ys[ids] == rare).sum()), len(ids)) for ids in found["ids"]]
        hits += any(r > 0 for r, _ in got)
        false += sum(r == 0 for r, _ in got)
        print(f"  class {rare}: " + (", ".join(f"{r}/{m}" for r, m in got) or "none"), flush=True)
    print(f"  rare class found in {hits} of {TRUE_K} runs; {false} false pockets")


def speed(x: np.ndarray, n: int, k: int) -> None:
    """Flat vs hierarchical k-means time on ``n`` rows (real rows plus jittered copies) and ``k`` clusters."""
    from curation.structure import cluster as C

    rng = np.random.default_rng(0)
    extra = rng.choice(len(x), max(0, n - len(x)))
    xs = np.concatenate([x, x[extra] + rng.normal(scale=0.02, size=(len(extra), x.shape[1])).astype(np.float32)])
    xs /= np.linalg.norm(xs, axis=1, keepdims=True)
    print(f"\nspeed: {len(xs):,} x {xs.shape[1]} ({len(extra):,} jittered copies), k = {k}")
    inertia = {}
    for method in ("kmeans", "hkmeans"):
        labels, t = timed(lambda: C.cluster(xs, k=k, method=method))
        cents = C.centroids(labels, xs)
        inertia[method] = float((1.0 - np.einsum("ij,ij->i", xs, cents[labels])).mean())
        print(f"  {method:8s} {t:7.1f} s, mean cosine distance to centroid {inertia[method]:.4f}", flush=True)
    print(f"  hierarchical / flat distance: {inertia['hkmeans'] / inertia['kmeans']:.3f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="images (default 4000, a seeded sample of the train set)")
    ap.add_argument("--cache", type=Path, default=ROOT / "test-artifacts" / "bench", help="embedding cache folder")
    ap.add_argument("--seeds", type=int, default=3, help="seeds for the automatic-k variance table (default 3)")
    ap.add_argument("--stability", action="store_true", help="also print a subsample-stability curve (slow)")
    ap.add_argument("--pockets", action="store_true", help="also plant each class as a rare one and look for it")
    ap.add_argument("--speed", type=int, nargs=2, metavar=("N", "K"), default=None,
                    help="also time flat vs hierarchical k-means on N rows (padded with jittered copies), K clusters")
    args = ap.parse_args(argv)
    from sklearn.cluster import HDBSCAN

    from curation.structure import cluster as C

    images, y = load_fashion(args.n, seed=0)
    x, source = embed(images, args.cache / f"fmnist-effnet-lite0-{args.n}-seed0.npy")
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    print(f"Fashion-MNIST: {len(y)} train images (sample seed 0), {TRUE_K} classes; embeddings: {source}, "
          f"{x.shape[1]}-d; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    curve, t_k = timed(lambda: C.silhouette_curve(x))
    k_auto = C.pick_k(curve, n=len(x))
    print(f"\nautomatic k = {k_auto} (true {TRUE_K}), chosen in {t_k:.1f} s; mean silhouette ± se by k:")
    print("  " + "  ".join(f"{k}:{r.silhouette:.3f}±{r.se:.3f}" for k, r in curve.iterrows()))
    print(f"\nautomatic k by seed ({args.seeds} seeds): one sample (repeats=1) vs mean of {C.K_REPEATS} (the default)")
    for seed in range(args.seeds):
        one, _ = C.choose_k(x, repeats=1, seed=seed)
        avg, _ = C.choose_k(x, seed=seed)
        print(f"  seed {seed}: {one:3d} vs {avg:3d}", flush=True)
    if args.stability:
        grid = list(range(5, 21))
        print("\nsubsample stability (mean ARI of two overlapping 3,000-samples) by k:")
        print("  " + "  ".join(f"{k}:{s:.3f}" for k, s in zip(grid, stability(x, grid))))

    runs = {
        f"k-means, automatic k = {k_auto}": lambda: C.cluster(x, k=k_auto, method="kmeans"),
        "k-means, k = 10 (true)": lambda: C.cluster(x, k=TRUE_K, method="kmeans"),
        "hierarchical k-means, k = 10": lambda: C.cluster(x, k=TRUE_K, method="hkmeans"),
        f"hierarchical k-means, automatic k = {k_auto}": lambda: C.cluster(x, k=k_auto, method="hkmeans"),
        f"HDBSCAN, PCA-{C.HDBSCAN_DIMS} (ours)": lambda: C.cluster(x, method="hdbscan"),
        f"HDBSCAN, raw {x.shape[1]}-d": lambda: HDBSCAN(min_cluster_size=max(10, len(x) // 200),
                                                        copy=True).fit_predict(x),
    }
    print(f"\n{'method':42s} {'clusters':>8s} {'noise':>6s} {'NMI':>6s} {'ARI':>6s} {'Hung.acc':>8s} "
          f"{'purity':>6s} {'seconds':>7s}")
    for name, fn in runs.items():
        labels, t = timed(fn)
        m = scores(y, labels)
        print(f"{name:42s} {int(labels.max()) + 1:8d} {(labels < 0).mean():6.1%} {m['NMI']:6.3f} {m['ARI']:6.3f} "
              f"{m['Hungarian acc']:8.3f} {m['purity']:6.3f} {t:7.2f}", flush=True)
    if args.pockets:
        pocket_check(x, y)
    if args.speed:
        speed(x, *args.speed)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    main()
