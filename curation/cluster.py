"""Clusters: spherical k-means (faiss) with automatic k, HDBSCAN, per-cluster summaries, medoids and names."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.progress import ProgressFn, null_progress

log = logging.getLogger(__name__)

METHODS = ("kmeans", "hdbscan")
K_GRID = tuple(range(5, 41))
SILHOUETTE_SAMPLE = 3000
PAM_LIMIT = 2000
"""Clusters up to this size get exact k-medoids (FasterPAM); bigger ones use the points nearest the centroid."""


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, niter: int = 25,
           n_init: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) with faiss, k-means++ seeding, best of ``n_init`` restarts.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    k : number of clusters (capped at N).

    Returns
    -------
    labels : (N,) int64 in 0..k-1.
    centroids : (k, D) float32, L2-normalised.
    """
    from curation.neighbors import _faiss

    x = np.ascontiguousarray(vectors, np.float32)
    faiss = _faiss(1 if len(x) * x.shape[1] < 2_000_000 else None)  # threads cost more than they save on small sets
    k = int(max(1, min(k, len(x))))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for r in range(max(1, n_init)):
        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=int(seed) * 1000 + r + 1, spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(256, -(-len(x) // k)))
        km.train(x, init_centroids=_kmeanspp(x, k, seed=int(seed) * 1000 + r))
        sim, lab = km.index.search(x, 1)
        score = float(sim.sum())
        if best is None or score > best[0]:
            best = (score, lab[:, 0].astype(np.int64), np.asarray(km.centroids, np.float32))
    assert best is not None
    return best[1], best[2]


def _kmeanspp(x: np.ndarray, k: int, *, seed: int = 0, sample: int = 20_000) -> np.ndarray:
    """k-means++ seeding (cosine distance) on at most ``sample`` rows: far fewer bad local optima than random."""
    rng = np.random.default_rng(seed)
    pts = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    chosen = [int(rng.integers(len(pts)))]
    d = np.maximum(1.0 - pts @ pts[chosen[0]], 0.0) ** 2
    for _ in range(1, k):
        total = float(d.sum())
        nxt = int(rng.choice(len(pts), p=d / total)) if total > 0 else int(rng.integers(len(pts)))
        chosen.append(nxt)
        d = np.minimum(d, np.maximum(1.0 - pts @ pts[nxt], 0.0) ** 2)
    return np.ascontiguousarray(pts[chosen], np.float32)


def _silhouettes(x: np.ndarray, labels_per_k: list[np.ndarray]) -> np.ndarray:
    """Mean cosine silhouette for several labelings of the same points, sharing one distance matrix."""
    d = 1.0 - x @ x.T
    np.maximum(d, 0.0, out=d)
    n = len(x)
    out = np.empty(len(labels_per_k))
    for j, lab in enumerate(labels_per_k):
        c = int(lab.max()) + 1
        onehot = np.zeros((n, c), np.float32)
        onehot[np.arange(n), lab] = 1.0
        sizes = onehot.sum(0)
        sums = d @ onehot                                   # (n, c) summed distance to each cluster
        own = sizes[lab]
        a = sums[np.arange(n), lab] / np.maximum(own - 1, 1)
        mean = sums / np.maximum(sizes, 1)
        mean[np.arange(n), lab] = np.inf
        mean[:, sizes == 0] = np.inf
        b = mean.min(1)
        s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
        out[j] = float(s.mean())
    return out


def choose_k(vectors: np.ndarray, *, k_grid: Sequence[int] = K_GRID, sample: int = SILHOUETTE_SAMPLE,
             seed: int = 0) -> tuple[int, pd.Series]:
    """Pick the number of clusters by the best mean silhouette on a seeded sample.

    Criterion: for each k of ``k_grid`` (capped at N/5), spherical k-means is fitted on a sample of
    at most ``sample`` points and scored by the mean cosine silhouette ``(b - a) / max(a, b)`` (a: mean
    distance to its own cluster, b: to the nearest other cluster); the k with the highest score wins.
    The grid starts at 5 on purpose: for curation, a few extra clusters are cheap to browse while
    merging two real classes hides them, and silhouettes on image embeddings often favour 2-3
    coarse super-classes.

    Returns
    -------
    k : the chosen number of clusters.
    scores : pd.Series of silhouette by k.
    """
    x = np.ascontiguousarray(vectors, np.float32)
    n = len(x)
    grid = sorted({int(k) for k in k_grid if 2 <= k <= max(2, n // 5)})
    if not grid:
        return max(1, min(2, n)), pd.Series(dtype=float)
    if n > sample:
        x = x[np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))]
    labelings = [kmeans(x, k, seed=seed)[0] for k in grid]
    scores = pd.Series(_silhouettes(x, labelings), index=pd.Index(grid, name="k"), name="silhouette")
    best = int(scores.idxmax())
    log.info("automatic k = %d (silhouette %.3f over k in %d..%d)", best, scores.max(), grid[0], grid[-1])
    return best, scores


def cluster(vectors: np.ndarray, *, k: int | None = None, method: str = "kmeans", seed: int = 0,
            min_cluster_size: int | None = None) -> np.ndarray:
    """Cluster labels of vectors.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    k : number of k-means clusters; None chooses it with :func:`choose_k`. Ignored by HDBSCAN.
    method : ``"kmeans"`` (spherical, faiss) or ``"hdbscan"`` (scikit-learn; -1 marks noise).
    min_cluster_size : HDBSCAN's minimum cluster size (default max(10, N // 200)).

    Returns
    -------
    (N,) int64 cluster labels, 0..C-1 (and -1 = noise for HDBSCAN), largest cluster first.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown clustering method {method!r}; choose one of {METHODS}.")
    x = np.ascontiguousarray(vectors, np.float32)
    if len(x) == 0:
        return np.zeros(0, np.int64)
    if method == "kmeans":
        if k is None:
            k, _ = choose_k(x, seed=seed)
        labels, _ = kmeans(x, k, seed=seed)
    else:
        from sklearn.cluster import HDBSCAN

        if len(x) > 50_000:
            log.warning("HDBSCAN on %d samples may take minutes; k-means is much faster", len(x))
        mcs = min_cluster_size or max(10, len(x) // 200)
        labels = HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(x).astype(np.int64)
    return _relabel_by_size(labels)


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..C-1 by decreasing size, keeping -1 (noise)."""
    valid = labels >= 0
    if not valid.any():
        return labels
    uniq, counts = np.unique(labels[valid], return_counts=True)
    order = uniq[np.lexsort((uniq, -counts))]
    lut = np.full(int(uniq.max()) + 1, -1, np.int64)
    lut[order] = np.arange(len(order))
    out = labels.copy()
    out[valid] = lut[labels[valid]]
    return out


def centroids(labels: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(C, D) float32 L2-normalised mean vector of each cluster 0..C-1 (noise ignored)."""
    c = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    valid = labels >= 0
    sums = np.zeros((c, vectors.shape[1]), np.float64)
    np.add.at(sums, labels[valid], vectors[valid])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def medoids(vectors: np.ndarray, *, n: int = 3, seed: int = 0) -> np.ndarray:
    """Representative rows of one cluster: the 1-medoid first, then further k-medoids.

    Up to ``PAM_LIMIT`` rows the medoids are exact (1-medoid = least summed cosine distance; the
    others from kmedoids' FasterPAM with ``n`` medoids); above it the rows nearest the centroid.

    Returns
    -------
    (min(n, M),) int64 row positions into ``vectors``.
    """
    m = len(vectors)
    if m == 0:
        return np.zeros(0, np.int64)
    n = min(n, m)
    if m > PAM_LIMIT:
        centre = vectors.mean(0)
        return np.argsort(-(vectors @ centre), kind="stable")[:n].astype(np.int64)
    d = np.maximum(1.0 - vectors @ vectors.T, 0.0).astype(np.float64)
    first = int(d.sum(1).argmin())
    if n == 1:
        return np.array([first], np.int64)
    import kmedoids

    res = kmedoids.fasterpam(d, n, random_state=seed)
    sizes = np.bincount(np.asarray(res.labels), minlength=n)
    others = [int(res.medoids[i]) for i in np.argsort(-sizes, kind="stable") if int(res.medoids[i]) != first]
    return np.array([first, *others][:n], np.int64)


def cluster_summary(labels_cluster: np.ndarray, vectors: np.ndarray, label_matrix: np.ndarray,
                    class_names: Sequence[str], *, suggested: np.ndarray | None = None,
                    n_medoids: int = 3) -> pd.DataFrame:
    """One row per cluster: size, medoids, label distribution, majority label, purity, share unlabelled.

    Parameters
    ----------
    labels_cluster : (N,) int cluster of each sample (-1 = noise, summarised as cluster -1).
    vectors : (N, D) float32 L2-normalised.
    label_matrix : (N, K) int8 label states (1 positive, 0 unknown, -1 rejected).
    class_names : K names (columns of ``label_matrix``).
    suggested : optional (N,) int suggested class index (-1 = none); adds the unlabelled members'
        majority suggestion.

    Returns
    -------
    DataFrame indexed by ``cluster`` with columns ``size`` (int), ``medoid`` (row position),
    ``medoids`` (list of row positions), ``label_counts`` (dict name -> positives), ``majority``
    (name, "" when nothing labelled), ``majority_idx`` (-1 when none), ``purity`` (share of labelled
    members carrying the majority label; NaN when none labelled), ``unlabelled`` (share with no
    positive label) and, with ``suggested``, ``suggested`` (majority suggestion among unlabelled
    members, "" when none) and ``suggested_share``.
    """
    lab = np.asarray(labels_cluster, np.int64)
    lm = np.asarray(label_matrix)
    k = lm.shape[1]
    pos = lm == 1
    labelled = pos.any(1)
    rows = []
    for c in np.unique(lab):
        members = np.flatnonzero(lab == c)
        counts = pos[members].sum(0) if k else np.zeros(0, int)
        n_lab = int(labelled[members].sum())
        maj = int(counts.argmax()) if k and counts.max() > 0 else -1
        med = members[medoids(vectors[members], n=n_medoids)]
        row: dict[str, Any] = {
            "cluster": int(c), "size": len(members), "medoid": int(med[0]) if len(med) else -1,
            "medoids": [int(i) for i in med],
            "label_counts": {class_names[j]: int(counts[j]) for j in np.flatnonzero(counts)},
            "majority": class_names[maj] if maj >= 0 else "", "majority_idx": maj,
            "purity": float(pos[members, maj][labelled[members]].mean()) if maj >= 0 and n_lab else float("nan"),
            "unlabelled": 1.0 - n_lab / len(members),
        }
        if suggested is not None:
            s = np.asarray(suggested)[members][~labelled[members]]
            s = s[s >= 0]
            if len(s):
                top = int(np.bincount(s, minlength=k).argmax())
                row["suggested"], row["suggested_share"] = class_names[top], float((s == top).mean())
            else:
                row["suggested"], row["suggested_share"] = "", float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("cluster")


def name_clusters(centroids: np.ndarray, text_emb: np.ndarray | None, names: Sequence[str], *,
                  fallback: Sequence[str] | None = None) -> list[str]:
    """A readable name per cluster.

    With a text tower (``text_emb`` not None) each centroid takes the class name whose text embedding
    is most similar (cosine); otherwise ``fallback`` (typically ``cluster_summary(...)["majority"]``)
    is used, and clusters with no name become ``"cluster <i>"``. Repeated names get `` (2)``, `` (3)``.

    Parameters
    ----------
    centroids : (C, D) float32 cluster centroids.
    text_emb : (K, D) float32 L2-normalised text embeddings of ``names``, or None.
    names : K candidate names.
    fallback : C names to use without text embeddings.

    Returns
    -------
    list of C strings.
    """
    cents = np.asarray(centroids, np.float32)
    c = len(cents)
    if text_emb is not None and len(names):
        t = np.asarray(text_emb, np.float32)
        t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        cn = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
        base = [str(names[j]) for j in (cn @ t.T).argmax(1)]
    elif fallback is not None:
        base = [str(f) if isinstance(f, str) and f else "" for f in fallback]
    else:
        base = [""] * c
    out, seen = [], {}
    for i, name in enumerate(base):
        name = name or f"cluster {i}"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _clusters_config(emb: Any, *, k: int | None, method: str, seed: int) -> dict:
    from curation.neighbors import ids_fingerprint

    return {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "method": method,
            "k": None if method == "hdbscan" else k, "seed": int(seed)}


def load_clusters(ws: Any, emb: Any, *, k: int | None = None, method: str = "kmeans",
                  seed: int = 0) -> pd.DataFrame | None:
    """The cached clustering of these embeddings (as :func:`compute_clusters` made it), or None."""
    from curation.artifacts import make_key

    df = ws.artifacts.load_frame("clusters", make_key(_clusters_config(emb, k=k, method=method, seed=seed)))
    return df if df is not None and len(df) == len(emb.ids) else None


def compute_clusters(ws: Any, emb: Any, *, k: int | None = None, method: str = "kmeans", seed: int = 0,
                     progress: ProgressFn | None = None) -> pd.DataFrame:
    """Cluster a workspace's embeddings, cached as artifact kind ``clusters``.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key``.
    k : number of k-means clusters; None = automatic (:func:`choose_k`).
    method : ``"kmeans"`` or ``"hdbscan"``.

    Returns
    -------
    DataFrame indexed by sample id (``id``) with an int64 ``cluster`` column (-1 = HDBSCAN noise).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown clustering method {method!r}; choose one of {METHODS}.")
    progress = progress or null_progress
    df = load_clusters(ws, emb, k=k, method=method, seed=seed)
    if df is not None:
        return df
    from curation.artifacts import make_key

    config = _clusters_config(emb, k=k, method=method, seed=seed)
    key = make_key(config)
    progress(0.05, "clustering")
    labels = cluster(emb.vectors, k=k, method=method, seed=seed)
    df = pd.DataFrame({"cluster": labels}, index=pd.Index(np.asarray(emb.ids, np.int64), name="id"))
    ws.artifacts.save_frame("clusters", key, df, config=config)
    progress(1.0, f"{int(labels.max()) + 1 if len(labels) else 0} clusters")
    return df
