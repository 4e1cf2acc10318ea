"""Clusters: spherical and hierarchical k-means (faiss) with automatic k, HDBSCAN, summaries, medoids, splits.

One cohesive module: fitting (k-means with automatic k, hierarchical k-means, HDBSCAN), the per-cluster
summaries and the stored clustering share one key and one dataclass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress
from curation.core.validate import check_choice
from curation.structure.naming import PROFILE_KIND, compute_names, load_names, unique_names

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

METHODS = ("auto", "kmeans", "hkmeans", "hdbscan")
"""``auto`` = flat k-means, or hierarchical k-means for big inputs (:data:`HKMEANS_MIN_N`, :data:`HKMEANS_MIN_K`)."""
HKMEANS_MIN_N = 200_000
"""``method="auto"`` uses hierarchical k-means above this many vectors: flat k-means trains on every row."""
HKMEANS_MIN_K = 256
"""... or for this many clusters or more: flat k-means costs N x k x D per iteration, two levels ~N x 2 sqrt(k) x D."""
K_GRID = tuple(range(5, 41))
SPLIT_K_GRID = tuple(range(2, 9))
SILHOUETTE_SAMPLE = 3000
K_REPEATS = 8
"""Automatic k averages the silhouette curve over this many seeded samples (see :func:`choose_k`)."""
K_SCAN_DIMS = 64
"""The automatic-k scan runs on this many principal components (the final clustering on the full vectors)."""
TRAIN_PER_CENTROID = 512
"""Hierarchical k-means trains each level on at most this many rows per centroid (then assigns every row)."""
HDBSCAN_DIMS = 32
"""HDBSCAN runs on a PCA to this many dimensions: 70x faster and purer than on raw 1280-d vectors
(docs/performance.md), since its density estimates degrade in high dimensions."""
PAM_LIMIT = 2000
"""Clusters up to this size get exact k-medoids (FasterPAM); bigger ones use the points nearest the centroid."""
N_MEDOIDS = 4
KINDS = {"labels": "clusters", "profile": PROFILE_KIND, "current": "clusters_current"}
"""Artifact kinds: cluster per sample id; centroids + medoids (label-free); the clustering in use."""


# ---------------------------------------------------------------------- algorithms
def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, niter: int = 25, n_init: int = 3,
           max_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) with faiss, k-means++ seeding, best of ``n_init`` restarts.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    k : number of clusters (capped at N).
    max_train : train on a seeded sample of at most this many rows, then assign every row to its
        nearest centroid (None: train on all rows).

    Returns
    -------
    labels : (N,) int64 in 0..k-1.
    centroids : (k, D) float32, L2-normalised.
    """
    from curation.features.neighbors import _faiss

    x = np.ascontiguousarray(vectors, np.float32)
    faiss = _faiss(1 if len(x) * x.shape[1] < 2_000_000 else None)  # threads cost more than they save on small sets
    k = int(max(1, min(k, len(x))))
    train = x
    if max_train is not None and len(x) > max_train:
        train = x[np.sort(np.random.default_rng(seed).choice(len(x), max(max_train, k), replace=False))]
    best: tuple[float, Any] | None = None
    for r in range(max(1, n_init)):
        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=int(seed) * 1000 + r + 1, spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(256, -(-len(train) // k)))
        km.train(train, init_centroids=_kmeanspp(train, k, seed=int(seed) * 1000 + r))
        score = float(km.index.search(train, 1)[0].sum())
        if best is None or score > best[0]:
            best = (score, km)
    assert best is not None
    km = best[1]
    labels = km.index.search(x, 1)[1][:, 0].astype(np.int64)
    return labels, np.asarray(km.centroids, np.float32)


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


def _allocate(k: int, sizes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Split ``k`` clusters over groups proportionally to ``weights`` (default their sizes; largest
    remainder), each non-empty group getting at least 1 and at most its size."""
    sizes = np.asarray(sizes, np.int64)
    w = np.asarray(sizes if weights is None else weights, np.float64) * (sizes > 0)
    quota = k * w / max(float(w.sum()), 1e-12)
    alloc = np.minimum(np.maximum(np.floor(quota).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    while alloc.sum() > k:  # the minimum of 1 overshot: take back where it exceeds its quota most
        alloc[int(np.argmax(np.where(alloc > 1, alloc - quota, -np.inf)))] -= 1
    while alloc.sum() < k:  # hand out the rest by largest remainder, where a group has room
        room = alloc < sizes
        if not room.any():
            break
        alloc[int(np.argmax(np.where(room, quota - alloc, -np.inf)))] += 1
    return alloc


def hkmeans(vectors: np.ndarray, k: int, *, k1: int | None = None, seed: int = 0,
            niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Two-level spherical k-means for big inputs: ``k1`` coarse clusters, each split into its share of ``k``.

    The coarse level (k1 = round(sqrt(k)), at least 2) trains on a seeded sample of
    :data:`TRAIN_PER_CENTROID` rows per centroid and assigns every row; each coarse cluster then
    gets a number of fine clusters proportional to its spread (sum of cosine distances to its
    centroid; largest remainder, at least 1) and is clustered on its own, so one iteration costs
    about N x (k1 + k / k1) x D instead of N x k x D. The price: a coarse cluster may get one fine
    cluster too many or too few for the structure inside it, which matters at small k (measured ARI
    0.86-1.0 on 9 blobs, within 0.01 of flat k-means on 30-100 blobs), hence ``method="auto"`` uses
    it only for big inputs.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    k : total number of clusters (capped at N).
    k1 : number of coarse clusters (default round(sqrt(k)), within 2..k).

    Returns
    -------
    labels : (N,) int64 in 0..k-1 (grouped by coarse cluster, not sorted by size).
    centroids : (k, D) float32, L2-normalised.
    """
    x = np.ascontiguousarray(vectors, np.float32)
    k = int(max(1, min(k, len(x))))
    k1 = int(min(k, max(2, k1 or round(np.sqrt(k)))))
    if k < 4 or k1 >= k:  # a second level has nothing to refine
        return kmeans(x, k, seed=seed, niter=niter, max_train=k * TRAIN_PER_CENTROID)
    coarse, coarse_cents = kmeans(x, k1, seed=seed, niter=niter, n_init=1, max_train=k1 * TRAIN_PER_CENTROID)
    sizes = np.bincount(coarse, minlength=k1)
    sse = np.bincount(coarse, weights=1.0 - np.einsum("ij,ij->i", x, coarse_cents[coarse]), minlength=k1)
    alloc = _allocate(k, sizes, sse)
    order = np.argsort(coarse, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    labels = np.empty(len(x), np.int64)
    cents = []
    offset = 0
    for c in range(k1):  # a loop over coarse clusters (about sqrt(k) of them)
        rows = order[bounds[c]:bounds[c + 1]]
        if alloc[c] == 0:
            continue
        sub, cent = kmeans(x[rows], int(alloc[c]), seed=seed + c + 1, niter=niter, n_init=1,
                           max_train=int(alloc[c]) * TRAIN_PER_CENTROID)
        labels[rows] = offset + sub
        cents.append(cent[: int(alloc[c])])
        offset += int(alloc[c])
    return labels, np.concatenate(cents).astype(np.float32)


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


def silhouette_curve(vectors: np.ndarray, *, k_grid: Sequence[int] = K_GRID, sample: int = SILHOUETTE_SAMPLE,
                     repeats: int = K_REPEATS, seed: int = 0) -> pd.DataFrame:
    """Mean cosine silhouette of spherical k-means by k, over seeded samples, with its standard error.

    ``repeats`` seeded samples of at most ``sample`` points are drawn and projected on their top
    :data:`K_SCAN_DIMS` principal components (k-means solutions live in the span of the top k - 1
    components, Ding & He 2004; this makes the scan 20-40x faster on 1280-d vectors). For each k of
    ``k_grid`` (capped at N/5) spherical k-means is fitted on each sample and scored by the mean
    silhouette ``(b - a) / max(a, b)`` (a: mean cosine distance to its own cluster, b: to the nearest
    other cluster).

    Returns
    -------
    DataFrame indexed by ``k`` with ``silhouette`` (mean over samples) and ``se`` (its standard error;
    0 with one repeat); empty when N < 4.
    """
    x = np.ascontiguousarray(vectors, np.float32)
    n = len(x)
    grid = sorted({int(k) for k in k_grid if 2 <= k <= max(2, n // 5)})
    if not grid or n < 4:
        return pd.DataFrame({"silhouette": [], "se": []}, index=pd.Index([], name="k"))
    rng = np.random.default_rng(seed)
    rows = [np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
            for _ in range(max(1, repeats))]
    union = np.unique(np.concatenate(rows))
    z = _reduce(x[union], K_SCAN_DIMS, seed=seed)
    runs = np.empty((len(rows), len(grid)))
    for r, rr in enumerate(rows):  # a loop over samples, each scanning the grid
        xs = z[np.searchsorted(union, rr)]
        runs[r] = _silhouettes(xs, [kmeans(xs, k, seed=int(seed) * 1000 + r, n_init=1)[0] for k in grid])
    se = runs.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros(len(grid))
    return pd.DataFrame({"silhouette": runs.mean(0), "se": se}, index=pd.Index(grid, name="k"))


def pick_k(curve: pd.DataFrame, *, n: int) -> int:
    """The largest k whose mean silhouette is within one standard error of the best (see :func:`choose_k`);
    ``min(2, n)`` for an empty curve (fewer than 10 points)."""
    if curve.empty:
        return max(1, min(2, n))
    sil, se = curve["silhouette"].to_numpy(), curve["se"].to_numpy()
    top = int(np.argmax(sil))
    k = int(curve.index[sil >= sil[top] - se[top]].max())
    log.info("automatic k = %d (mean silhouette %.3f; best %.3f ± %.3f at k = %d; k in %d..%d)", k,
             curve.loc[k, "silhouette"], sil[top], se[top], int(curve.index[top]), curve.index[0], curve.index[-1])
    return k


def choose_k(vectors: np.ndarray, *, k_grid: Sequence[int] = K_GRID, sample: int = SILHOUETTE_SAMPLE,
             repeats: int = K_REPEATS, seed: int = 0) -> tuple[int, pd.Series]:
    """Pick the number of clusters by mean silhouette over seeded samples, with a one-standard-error rule.

    Criterion (:func:`silhouette_curve`, :func:`pick_k`): the mean silhouette of spherical k-means over
    ``repeats`` seeded samples, for each k of ``k_grid``; the chosen k is the largest one whose mean is
    within one standard error of the best. Closer than that the scan cannot tell the k apart, and for
    curation a few extra clusters are cheap to browse while merging two real classes hides one. For the
    same reason the grid starts at 5: silhouettes on image embeddings often favour 2-3 coarse
    super-classes. One sample's curve is noisy (on real Fashion-MNIST embeddings, single samples picked
    7-9 for 10 classes; see docs/performance.md), hence the repeats.

    Returns
    -------
    k : the chosen number of clusters.
    scores : pd.Series of mean silhouette by k (index name ``k``); :func:`silhouette_curve` adds the errors.
    """
    curve = silhouette_curve(vectors, k_grid=k_grid, sample=sample, repeats=repeats, seed=seed)
    return pick_k(curve, n=len(vectors)), curve["silhouette"]


def resolve_method(method: str, n: int, k: int | None = None) -> str:
    """The concrete method behind ``method`` for ``n`` vectors: ``auto`` → ``kmeans`` or ``hkmeans``."""
    check_choice("clustering method", method, METHODS)
    if method != "auto":
        return method
    return "hkmeans" if n > HKMEANS_MIN_N or (k or 0) >= HKMEANS_MIN_K else "kmeans"


@dataclass
class ClusterFit:
    """A clustering of one set of vectors.

    Attributes
    ----------
    labels : (N,) int64 cluster per row, 0..C-1 largest first (-1 = HDBSCAN noise).
    method : the concrete method (``kmeans``, ``hkmeans`` or ``hdbscan``).
    k : the number of clusters asked for or chosen (None for HDBSCAN).
    silhouette : :func:`silhouette_curve` (``silhouette``, ``se`` by k) when k was chosen automatically,
        else empty.
    """

    labels: np.ndarray
    method: str
    k: int | None
    silhouette: pd.DataFrame


def fit_clusters(vectors: np.ndarray, *, k: int | None = None, method: str = "auto", seed: int = 0,
                 min_cluster_size: int | None = None, k_grid: Sequence[int] = K_GRID) -> ClusterFit:
    """Cluster vectors, keeping how k was chosen.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    k : number of k-means clusters; None chooses it over ``k_grid`` as :func:`choose_k` does. Ignored by HDBSCAN.
    method : one of :data:`METHODS`; ``"hdbscan"`` (scikit-learn) marks noise with -1.
    min_cluster_size : HDBSCAN's minimum cluster size (default max(10, N // 200)); HDBSCAN runs on a
        PCA to :data:`HDBSCAN_DIMS` dimensions.
    """
    x = np.ascontiguousarray(vectors, np.float32)
    method = resolve_method(method, len(x), k)
    silhouette = pd.DataFrame({"silhouette": [], "se": []}, index=pd.Index([], name="k"))
    if len(x) == 0:
        return ClusterFit(np.zeros(0, np.int64), method, k, silhouette)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        if len(x) > 50_000:
            log.warning("HDBSCAN on %d samples may take minutes; k-means is much faster", len(x))
        mcs = min_cluster_size or max(10, len(x) // 200)
        labels = HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(_reduce(x, HDBSCAN_DIMS, seed=seed))
        labels = labels.astype(np.int64)
        return ClusterFit(_relabel_by_size(labels), method, None, silhouette)
    if k is None:
        silhouette = silhouette_curve(x, k_grid=k_grid, seed=seed)
        k = pick_k(silhouette, n=len(x))
    labels = (hkmeans if method == "hkmeans" else kmeans)(x, int(k), seed=seed)[0]
    return ClusterFit(_relabel_by_size(labels), method, int(k), silhouette)


def _reduce(x: np.ndarray, dims: int, *, seed: int = 0, fit_rows: int = 20_000) -> np.ndarray:
    """(N, min(D, dims)) float32: PCA (fitted on a seeded sample of ``fit_rows``) then L2-normalised."""
    if x.shape[1] <= dims:
        return x
    from sklearn.decomposition import PCA

    fit = x if len(x) <= fit_rows else x[np.random.default_rng(seed).choice(len(x), fit_rows, replace=False)]
    z = PCA(min(dims, len(fit)), random_state=seed).fit(fit).transform(x).astype(np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def cluster(vectors: np.ndarray, *, k: int | None = None, method: str = "auto", seed: int = 0,
            min_cluster_size: int | None = None) -> np.ndarray:
    """Cluster labels of vectors: (N,) int64, 0..C-1 largest first, -1 = HDBSCAN noise (see :func:`fit_clusters`)."""
    return fit_clusters(vectors, k=k, method=method, seed=seed, min_cluster_size=min_cluster_size).labels


def split_cluster(vectors: np.ndarray, *, k: int | None = None, seed: int = 0,
                  k_grid: Sequence[int] = SPLIT_K_GRID) -> ClusterFit:
    """Re-cluster the members of one cluster into sub-clusters (k ≥ 2, automatic by silhouette when None).

    Parameters
    ----------
    vectors : (M, D) float32 L2-normalised, the members.
    k : number of sub-clusters; None chooses it over ``k_grid`` (capped at M / 5).

    Returns
    -------
    ClusterFit whose ``labels`` are (M,) sub-cluster ids 0..k-1, largest first.
    """
    m = len(vectors)
    if m < 4 or (k is not None and k > m):
        raise ValueError(f"A cluster of {m} images is too small to split into {k or 2}+ parts; open a bigger one.")
    if k is not None and k < 2:
        raise ValueError("Splitting needs k ≥ 2 (or None for automatic).")
    return fit_clusters(vectors, k=k, method="kmeans", seed=seed, k_grid=[g for g in k_grid if g >= 2] or [2])


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


def noise_ids(clusters: pd.Series | pd.DataFrame) -> np.ndarray:
    """Sample ids that HDBSCAN left as noise (cluster -1): the outliers of the density clustering.

    Parameters
    ----------
    clusters : cluster per sample id (``compute_clusters(..., method="hdbscan")`` or its ``cluster`` column).

    Returns
    -------
    (M,) int64 sample ids, ascending.
    """
    s = clusters["cluster"] if isinstance(clusters, pd.DataFrame) else clusters
    return np.sort(s.index[s.to_numpy() == -1].to_numpy(np.int64))


# ---------------------------------------------------------------------- summaries
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


def cluster_medoids(labels: np.ndarray, vectors: np.ndarray, *, n: int = N_MEDOIDS, seed: int = 0) -> np.ndarray:
    """The :func:`medoids` of every cluster (a loop over clusters).

    Returns
    -------
    (C, n) int64 row positions, -1 padded; row i belongs to cluster ``np.unique(labels)[i]``.
    """
    lab = np.asarray(labels, np.int64)
    uniq, inv = np.unique(lab, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inv, minlength=len(uniq)))]
    out = np.full((len(uniq), n), -1, np.int64)
    for i in range(len(uniq)):
        members = order[bounds[i]:bounds[i + 1]]
        med = members[medoids(vectors[members], n=n, seed=seed)]
        out[i, :len(med)] = med
    return out


def cluster_summary(labels_cluster: np.ndarray, vectors: np.ndarray | None, label_matrix: np.ndarray,
                    class_names: Sequence[str], *, suggested: np.ndarray | None = None,
                    issues: np.ndarray | None = None, n_medoids: int = 3,
                    medoids: np.ndarray | None = None) -> pd.DataFrame:
    """One row per cluster: size, medoids, label distribution, purity, unlabelled, suggestions, issue rate.

    Everything but the medoids is vectorised over samples (``bincount`` over cluster x class cells),
    so with precomputed ``medoids`` it is fast enough to run on every label change.

    Parameters
    ----------
    labels_cluster : (N,) int cluster of each sample (-1 = noise, summarised as cluster -1).
    vectors : (N, D) float32 L2-normalised; only read to compute medoids (may be None with ``medoids``).
    label_matrix : (N, K) int8 label states (1 positive, 0 unknown, -1 rejected).
    class_names : K names (columns of ``label_matrix``).
    suggested : optional (N,) int suggested class index (-1 = none).
    issues : optional (N,) bool or float in [0, 1] per sample, e.g. ``is_label_issue`` of
        ``curation.labels.issues.compute_issues``; its mean per cluster becomes ``issue_rate``.
    medoids : optional precomputed (C, M) array (:func:`cluster_medoids`, row positions or sample
        ids, -1 padded), copied into the medoid columns instead of computing them.

    Returns
    -------
    DataFrame indexed by ``cluster`` (ascending) with columns ``size`` (int), ``medoid`` (first medoid,
    -1 none), ``medoids`` (list), ``label_counts`` (dict name -> positives), ``majority`` (name, ""
    when nothing labelled), ``majority_idx`` (-1 when none), ``purity`` (share of labelled members
    carrying the majority label; NaN when none labelled), ``unlabelled`` (share with no positive
    label); with ``suggested``: ``with_suggestion`` (share of members with a suggestion),
    ``suggested`` (majority suggestion among unlabelled members, "" when none) and
    ``suggested_share`` (its share among the unlabelled members with a suggestion); with
    ``issues``: ``issue_rate``.
    """
    lab = np.asarray(labels_cluster, np.int64)
    pos = np.asarray(label_matrix) == 1
    n, k = pos.shape
    uniq, inv = np.unique(lab, return_inverse=True)
    c = len(uniq)
    size = np.bincount(inv, minlength=c)
    rows, cols = np.nonzero(pos)
    counts = np.bincount(inv[rows] * k + cols, minlength=c * k).reshape(c, k)
    labelled = pos.any(1)
    n_lab = np.bincount(inv, weights=labelled, minlength=c)
    maj = np.where(counts.max(1, initial=0) > 0, counts.argmax(1) if k else -1, -1)
    carries = pos[np.arange(n), np.maximum(maj[inv], 0)] & (maj[inv] >= 0) if k else np.zeros(n, bool)
    purity = np.bincount(inv, weights=carries, minlength=c) / np.where(n_lab > 0, n_lab, np.nan)
    names = np.array([*map(str, class_names), ""], dtype=object)
    if medoids is None:
        medoids = cluster_medoids(lab, np.asarray(vectors, np.float32), n=n_medoids)
    med = [[int(m) for m in row if m >= 0] for row in np.asarray(medoids, np.int64)]
    df = pd.DataFrame({
        "size": size.astype(np.int64), "medoid": [m[0] if m else -1 for m in med], "medoids": med,
        "label_counts": [{names[j]: int(r[j]) for j in np.flatnonzero(r)} for r in counts],
        "majority": names[maj], "majority_idx": maj.astype(np.int64), "purity": purity,
        "unlabelled": 1.0 - n_lab / size,
    }, index=pd.Index(uniq, name="cluster"))
    if suggested is not None:
        s = np.asarray(suggested, np.int64)
        df["with_suggestion"] = np.bincount(inv, weights=s >= 0, minlength=c) / size
        open_ = (s >= 0) & ~labelled
        sc = np.bincount(inv[open_] * k + s[open_], minlength=c * k).reshape(c, k)
        total = sc.sum(1)
        top = np.where(total > 0, sc.argmax(1) if k else -1, -1)
        df["suggested"] = names[top]
        df["suggested_share"] = sc.max(1, initial=0) / np.where(total > 0, total, np.nan)
    if issues is not None:
        df["issue_rate"] = np.bincount(inv, weights=np.asarray(issues, np.float64), minlength=c) / size
    return df


# ---------------------------------------------------------------------- workspace
@dataclass
class Clustering:
    """A workspace clustering as :func:`compute_clusters` stored it (everything label-free).

    Attributes
    ----------
    ids : (N,) int64 sample ids (those of the embeddings).
    labels : (N,) int64 cluster per sample, 0..C-1 largest first (-1 = HDBSCAN noise).
    method : ``kmeans``, ``hkmeans`` or ``hdbscan``.
    k : the k asked for (None: automatic, or HDBSCAN).
    k_used : the k k-means ran with (asked or chosen; None for HDBSCAN).
    silhouette : :func:`silhouette_curve` (``silhouette``, ``se`` by k) behind an automatic k, else empty.
    centroids : (C, D) float32 L2-normalised centroids of clusters 0..C-1.
    medoids : (len(clusters), M) int64 medoid sample ids, -1 padded, rows in ``clusters`` order.
    clusters : cluster ids in ascending order (-1 first when there is noise).
    names : a name per entry of ``clusters`` from the text tower (vocabulary + class names), or None
        when the encoder has no text tower (then :meth:`summary` names clusters by majority label).
    key : the artifact key.
    """

    ids: np.ndarray
    labels: np.ndarray
    method: str
    k: int | None
    k_used: int | None
    silhouette: pd.DataFrame
    centroids: np.ndarray
    medoids: np.ndarray
    clusters: np.ndarray
    names: list[str] | None
    key: str

    def members(self, cluster: int) -> np.ndarray:
        """(M,) int64 sample ids of one cluster, ascending."""
        return self.ids[self.labels == int(cluster)]

    def summary(self, label_matrix: np.ndarray, class_names: Sequence[str], *, suggested: np.ndarray | None = None,
                issues: np.ndarray | None = None) -> pd.DataFrame:
        """:func:`cluster_summary` for the current labels (medoids as sample ids) plus a ``name`` column.

        Parameters
        ----------
        label_matrix : (N, K) int8 label states of ``ids``.
        suggested, issues : optional (N,) per sample of ``ids`` (see :func:`cluster_summary`).
        """
        df = cluster_summary(self.labels, None, label_matrix, class_names, suggested=suggested, issues=issues,
                             medoids=self.medoids)
        base = self.names if self.names is not None else df["majority"].tolist()
        df["name"] = unique_names(base, ids=df.index.tolist())
        return df


def _clusters_config(emb: Any, *, k: int | None, method: str, seed: int) -> dict:
    from curation.features.neighbors import ids_fingerprint

    return {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "method": method,
            "k": None if method == "hdbscan" else k, "seed": int(seed)}


def _current_key(emb: Any) -> str:
    from curation.data.artifacts import make_key
    from curation.features.neighbors import ids_fingerprint

    return make_key({"current": str(emb.key), "ids": ids_fingerprint(emb.ids)})


def _key(ws: Workspace, emb: Any, *, k: int | None, method: str | None, seed: int) -> str:
    """The artifact key of a clustering; ``method=None`` = the one in use (else automatic k-means)."""
    from curation.data.artifacts import make_key

    if method is None:
        current = ws.artifacts.load_json(KINDS["current"], _current_key(emb))
        if current is not None:
            return str(current["key"])
        method, k = "auto", None
    return make_key(_clusters_config(emb, k=k, method=resolve_method(method, len(emb.ids), k), seed=seed))


def load_clusters(ws: Workspace, emb: Any, *, k: int | None = None, method: str | None = None,
                  seed: int = 0) -> pd.DataFrame | None:
    """The cached clustering of these embeddings (as :func:`compute_clusters` made it), or None.

    ``method=None`` loads the clustering in use: the last one computed with ``current=True``.
    """
    return _load_frame(ws, emb, _key(ws, emb, k=k, method=method, seed=seed))


def _load_frame(ws: Workspace, emb: Any, key: str) -> pd.DataFrame | None:
    """The stored cluster-per-sample frame under ``key`` when it covers ``emb.ids``, else None."""
    df = ws.artifacts.load_frame(KINDS["labels"], key)
    return df if df is not None and len(df) == len(emb.ids) else None


def load_clustering(ws: Workspace, emb: Any, *, k: int | None = None, method: str | None = None,
                    seed: int = 0) -> Clustering | None:
    """A stored clustering with its label-free profile (centroids, medoids, names), or None when absent."""
    key = _key(ws, emb, k=k, method=method, seed=seed)
    df = _load_frame(ws, emb, key)
    if df is None or not ws.artifacts.exists(KINDS["profile"], key):
        return None
    meta = ws.artifacts.meta(KINDS["labels"], key) or {}
    curve = pd.DataFrame(meta.get("silhouette") or {"silhouette": {}, "se": {}}, dtype=float)
    curve.index = pd.Index(curve.index.astype(int), name="k")
    return Clustering(
        ids=df.index.to_numpy(np.int64), labels=df["cluster"].to_numpy(np.int64), method=meta.get("method", ""),
        k=meta["config"].get("k"), k_used=meta.get("k_used"),
        silhouette=curve.sort_index(),
        centroids=np.asarray(ws.artifacts.load_array(KINDS["profile"], key, name="centroids", mmap=False)),
        medoids=np.asarray(ws.artifacts.load_array(KINDS["profile"], key, name="medoids", mmap=False)),
        clusters=np.asarray(ws.artifacts.load_array(KINDS["profile"], key, name="clusters", mmap=False)),
        names=load_names(ws, emb, key), key=key)


def compute_clusters(ws: Workspace, emb: Any, *, k: int | None = None, method: str = "auto", seed: int = 0,
                     current: bool = True, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Cluster a workspace's embeddings, cached under a key of (embeddings, ids, method, k, seed).

    Stores artifact kinds ``clusters`` (cluster per sample id; the meta keeps the method and the
    silhouette curve of an automatic k), ``cluster_profiles`` (centroids, medoid ids: label-free)
    and, with a text tower, ``cluster_names`` (:func:`curation.structure.naming.compute_names`). Whatever a key
    already holds is loaded, not recomputed. Labels change often, so label-dependent columns are
    computed on the fly by :meth:`Clustering.summary`.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key``,
        ``has_text``, ``encoder_name``.
    k : number of k-means clusters; None = automatic (:func:`choose_k`).
    method : one of :data:`METHODS` (``auto``: hierarchical above :data:`HKMEANS_MIN_N` vectors or
        :data:`HKMEANS_MIN_K` clusters).
    current : make this the clustering in use (what ``load_clusters(ws, emb)`` and the Map show).

    Returns
    -------
    DataFrame indexed by sample id (``id``) with an int64 ``cluster`` column (-1 = HDBSCAN noise).
    """
    from curation.data.artifacts import make_key

    progress = progress or null_progress
    method = resolve_method(method, len(emb.ids), k)
    config = _clusters_config(emb, k=k, method=method, seed=seed)
    key = make_key(config)
    df = _load_frame(ws, emb, key)
    if df is None:
        progress(0.05, f"clustering ({method})")
        fit = fit_clusters(emb.vectors, k=k, method=method, seed=seed)
        df = pd.DataFrame({"cluster": fit.labels}, index=pd.Index(np.asarray(emb.ids, np.int64), name="id"))
        ws.artifacts.save_frame(KINDS["labels"], key, df, config=config, extra={
            "method": method, "k_used": fit.k,
            "silhouette": {c: {str(a): float(b) for a, b in fit.silhouette[c].items()} for c in fit.silhouette}})
    labels = df["cluster"].to_numpy(np.int64)
    if not ws.artifacts.exists(KINDS["profile"], key):
        progress(0.7, "medoids")
        vectors = np.asarray(emb.vectors, np.float32)
        rows = cluster_medoids(labels, vectors)
        ids = np.asarray(emb.ids, np.int64)
        ws.artifacts.save_arrays(KINDS["profile"], key, {
            "centroids": centroids(labels, vectors), "clusters": np.unique(labels),
            "medoids": np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)}, config=config)
    if emb.has_text:
        progress(0.85, "naming clusters")
        compute_names(ws, emb, key)
    if current:
        ws.artifacts.save_json(KINDS["current"], _current_key(emb), {"key": key, "config": config},
                               config={"emb": str(emb.key)})
    progress(1.0, f"{int(labels.max()) + 1 if len(labels) else 0} clusters")
    return df
