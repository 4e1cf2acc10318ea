"""The 2-D map: UMAP fitted on the cached faiss kNN graph (PCA as the instant fallback), cached by key."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.core.validate import check_choice

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

METHODS = ("umap", "pca")
SAMPLE_LIMIT = 20_000
"""Above this many samples UMAP is fitted on a seeded sample of this size; the others are placed from
their fitted neighbours and refined (docs/performance.md: same trustworthiness as a full fit)."""
FIT_EPOCHS = 100
"""Layout epochs of a fit above ``SMALL`` samples (umap-learn uses 200; trustworthiness was the same)."""
SMALL = 10_000
"""Up to this many samples a fit keeps umap-learn's own choices (500 epochs, spectral start): cheap there.
Above, it starts from PCA: the spectral start took 14 of 23 s of a 25k fit, for the same trustworthiness."""
REFINE_EPOCHS = 30
"""Epochs that refine placed points against the fixed fitted ones (umap-learn's ``transform`` uses 30)."""
PLACE_EXACT_LIMIT = 5_000
"""Placement searches the fitted points exactly up to this many, with an approximate (IVF) index above."""
SCALE = 10.0
"""Normalised maps span about [-SCALE, SCALE] on their longer axis (0.5-99.5 percentile box)."""
DEFAULTS: dict[str, Any] = {"reproducible": True, "k": 15, "min_dist": 0.1, "seed": 0,
                            "sample_limit": SAMPLE_LIMIT}
ALGORITHM = 2
"""Part of every map key: bump it when the layout recipe changes, so old cached maps are recomputed."""

_warm_lock = threading.Lock()
_warmed: set[str] = set()


# ---------------------------------------------------------------------- helpers
def normalise_coords(coords: np.ndarray) -> np.ndarray:
    """Centre a 2-D layout and scale it so its 0.5-99.5 percentile box spans [-SCALE, SCALE] on the long axis.

    Parameters
    ----------
    coords : (N, 2) float.

    Returns
    -------
    (N, 2) float32; aspect ratio kept, outliers not clipped.
    """
    c = np.asarray(coords, np.float64)
    if len(c) == 0:
        return np.zeros((0, 2), np.float32)
    lo, hi = np.percentile(c, [0.5, 99.5], axis=0)
    centre = (lo + hi) / 2
    half = float(np.max(hi - lo)) / 2
    if not np.isfinite(half) or half <= 0:
        half = 1.0
    return ((c - centre) * (SCALE / half)).astype(np.float32)


def pca_map(vectors: np.ndarray, *, fit_limit: int = 100_000, seed: int = 0) -> np.ndarray:
    """The top two principal components, normalised; instant even for millions of rows.

    Parameters
    ----------
    vectors : (N, D) float32.
    fit_limit : the components are fitted on at most this many (seeded) rows.

    Returns
    -------
    (N, 2) float32 coordinates, signs fixed so the result is deterministic.
    """
    x = np.asarray(vectors, np.float32)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    fit = x if n <= fit_limit else x[np.sort(np.random.default_rng(seed).choice(n, fit_limit, replace=False))]
    mean = fit.mean(0, dtype=np.float64)
    centred = fit.astype(np.float64) - mean
    cov = centred.T @ centred / max(len(fit) - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    comps = evecs[:, ::-1][:, :2]
    if comps.shape[1] < 2:  # 1-d input
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(2)])
    comps = comps * np.where(signs == 0, 1, signs)
    return normalise_coords((x - mean.astype(np.float32)) @ comps.astype(np.float32))


def warm_umap(*, parallel: bool | None = None) -> None:
    """Run a tiny UMAP once to pay numba's compilation (25-30 s a process) up front; idempotent.

    It runs the very code paths of :func:`umap_map` (a full fit, and a sampled fit with placement and
    refinement), so no map job compiles anything afterwards.

    Parameters
    ----------
    parallel : warm the single-threaded (False), the parallel (True) or both (None) optimisers.
    """
    modes = ["serial", "parallel"] if parallel is None else ["parallel" if parallel else "serial"]
    with _warm_lock:
        todo = [m for m in modes if m not in _warmed]
        if not todo:
            return
        rng = np.random.default_rng(0)
        x = rng.normal(size=(240, 8)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        for mode in todo:
            _umap(x, k=10, min_dist=0.1, reproducible=mode == "serial", seed=0, sample_limit=120, n_epochs=5,
                  refine_epochs=5, progress=null_progress)
            _warmed.add(mode)
        log.info("UMAP warmed (%s)", ", ".join(todo))


def _umap_fit(vectors: np.ndarray, idx: np.ndarray, sims: np.ndarray, *, k: int, min_dist: float,
              reproducible: bool, seed: int, n_epochs: int | None = None) -> np.ndarray:
    """UMAP on a precomputed kNN graph: the (N, 2) float32 layout.

    ``idx``/``sims`` exclude self; umap-learn expects each row to start with the point itself at
    distance 0 and to hold exactly ``n_neighbors`` columns, so self is prepended and the graph is
    cut to ``k - 1`` others. Distances are cosine distances ``1 - sim`` (clipped at 0).
    Up to ``SMALL`` samples umap-learn's epoch count (``n_epochs`` None) and spectral start, above it
    ``FIT_EPOCHS`` and a PCA start.
    """
    try:
        import umap
    except ImportError as exc:  # pragma: no cover
        raise ImportError("umap-learn is needed for the UMAP map: `pip install umap-learn` (or use method='pca').") from exc
    n = len(vectors)
    k = int(min(k, idx.shape[1] + 1))
    rows = np.arange(n, dtype=np.int64)[:, None]
    knn_idx = np.ascontiguousarray(np.concatenate([rows, np.asarray(idx[:, : k - 1], np.int64)], 1))
    knn_d = np.concatenate([np.zeros((n, 1), np.float32), np.maximum(1.0 - np.asarray(sims[:, : k - 1]), 0.0)], 1)
    if n_epochs is None and n > SMALL:
        n_epochs = FIT_EPOCHS
    reducer = umap.UMAP(n_neighbors=k, n_components=2, metric="cosine", min_dist=min_dist,
                        precomputed_knn=(knn_idx, np.ascontiguousarray(knn_d, np.float32)),
                        random_state=seed if reproducible else None, n_jobs=1 if reproducible else -1,
                        n_epochs=n_epochs, init="spectral" if n <= SMALL else "pca", low_memory=True,
                        verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        return np.asarray(reducer.fit_transform(vectors), np.float32)


def place_out_of_sample(fit_vectors: np.ndarray, fit_coords: np.ndarray, vectors: np.ndarray, *,
                        k: int = 15, min_dist: float = 0.1, refine_epochs: int = REFINE_EPOCHS,
                        reproducible: bool = True, seed: int = 0,
                        progress: ProgressFn | None = None) -> np.ndarray:
    """Place new points in a fitted UMAP layout: weighted mean of their fitted neighbours, then refined.

    This is umap-learn's own ``transform`` (which a precomputed-graph fit cannot call): the start is
    the fuzzy-membership-weighted mean of the k nearest fitted points, then ``refine_epochs`` epochs
    of UMAP's optimiser move the new points only, attracted along their k edges and repelled by
    random fitted points. The neighbour search uses an approximate (IVF) index above
    ``PLACE_EXACT_LIMIT`` fitted points.

    Parameters
    ----------
    fit_vectors : (S, D) float32 L2-normalised vectors UMAP was fitted on.
    fit_coords : (S, 2) their coordinates.
    vectors : (M, D) float32 L2-normalised vectors to place.
    refine_epochs : 0 keeps the weighted means.
    reproducible : seeded single-threaded refinement (else parallel, not reproducible).

    Returns
    -------
    (M, 2) float32 coordinates in the frame of ``fit_coords``.
    """
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import compute_membership_strengths, find_ab_params, make_epochs_per_sample, smooth_knn_dist

    from curation.features.neighbors import build_index, search

    progress = progress or null_progress
    fit_coords = np.ascontiguousarray(fit_coords, np.float32)
    index = build_index(fit_vectors, kind="flat" if len(fit_vectors) <= PLACE_EXACT_LIMIT else "ivf", seed=seed)
    idx, sims = search(fit_vectors, vectors, k=k, index=index, progress=sub_progress(progress, 0.0, 0.6))
    idx = np.where(idx < 0, idx[:, :1], idx)  # an approximate search may come back short: repeat the nearest
    d = np.maximum(1.0 - sims, 0.0).astype(np.float32)
    sigmas, rhos = smooth_knn_dist(d, float(idx.shape[1]), local_connectivity=1.0)
    w = np.exp(-np.maximum(d - rhos[:, None], 0.0) / np.maximum(sigmas[:, None], 1e-12))
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    placed = np.einsum("mk,mkc->mc", w, fit_coords[idx]).astype(np.float32)
    if refine_epochs <= 0 or len(vectors) == 0:
        return placed
    progress(0.7, f"refining {len(vectors):,} placed samples")
    sigmas, rhos = smooth_knn_dist(d, float(idx.shape[1]), local_connectivity=0.0)  # as umap-learn's transform
    head, tail, weight, _ = compute_membership_strengths(idx.astype(np.int32), d, sigmas, rhos, bipartite=True)
    keep = weight >= weight.max() / refine_epochs
    head, tail, weight = head[keep], tail[keep], weight[keep]
    a, b = find_ab_params(1.0, min_dist)
    rng_state = np.random.RandomState(seed).randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1,
                                                    3).astype(np.int64)
    out = optimize_layout_euclidean(placed, fit_coords.copy(), head, tail, refine_epochs, len(fit_coords),
                                    make_epochs_per_sample(weight, refine_epochs), a, b, rng_state, 1.0, 0.25, 5.0,
                                    parallel=not reproducible)
    return np.asarray(out, np.float32)


def _umap(x: np.ndarray, *, idx: np.ndarray | None = None, sims: np.ndarray | None = None, k: int,
          min_dist: float, reproducible: bool, seed: int, sample_limit: int, n_epochs: int | None,
          refine_epochs: int, progress: ProgressFn) -> np.ndarray:
    """The UMAP layout of ``x`` (not normalised): a full fit up to ``sample_limit`` rows, else sample + place."""
    from curation.features.neighbors import knn

    n = len(x)
    if n <= sample_limit:
        if idx is None or sims is None or idx.shape[1] < k - 1:
            progress(0.05, "neighbours")
            idx, sims = knn(x, k=k - 1)
        progress(0.3, f"UMAP on {n:,} samples")
        return _umap_fit(x, idx, sims, k=k, min_dist=min_dist, reproducible=reproducible, seed=seed,
                         n_epochs=n_epochs)
    fit_rows = np.sort(np.random.default_rng(seed).choice(n, sample_limit, replace=False))
    rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
    progress(0.05, f"neighbours of a {sample_limit:,}-sample fit set")
    f_idx, f_sims = knn(x[fit_rows], k=k - 1)
    progress(0.2, f"UMAP on {sample_limit:,} of {n:,} samples")
    fit_coords = _umap_fit(x[fit_rows], f_idx, f_sims, k=k, min_dist=min_dist, reproducible=reproducible,
                           seed=seed, n_epochs=n_epochs)
    progress(0.6, f"placing the other {len(rest):,} samples")
    out = np.empty((n, 2), np.float32)
    out[fit_rows] = fit_coords
    out[rest] = place_out_of_sample(x[fit_rows], fit_coords, x[rest], k=k, min_dist=min_dist,
                                    refine_epochs=refine_epochs, reproducible=reproducible, seed=seed,
                                    progress=sub_progress(progress, 0.6, 0.99))
    return out


def umap_map(vectors: np.ndarray, *, idx: np.ndarray | None = None, sims: np.ndarray | None = None,
             k: int = 15, min_dist: float = 0.1, reproducible: bool = True, seed: int = 0,
             sample_limit: int = SAMPLE_LIMIT, n_epochs: int | None = None, refine_epochs: int = REFINE_EPOCHS,
             progress: ProgressFn | None = None) -> np.ndarray:
    """UMAP coordinates of vectors, fitted on a faiss kNN graph (no workspace, no cache).

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised.
    idx, sims : optional precomputed (N, >= k-1) kNN graph without self (from ``neighbors.knn``);
        used only when the whole set is fitted.
    k : UMAP ``n_neighbors`` (self included, as umap-learn counts).
    reproducible : seeded and single-threaded (the same map every time); otherwise parallel on every
        core (faster, varies from run to run).
    sample_limit : above this N, fit on a seeded sample of ``sample_limit`` rows and place the rest
        with :func:`place_out_of_sample`.
    n_epochs : layout epochs of the fit (None: umap-learn's up to ``SMALL`` rows, ``FIT_EPOCHS`` above).
    refine_epochs : epochs refining the placed rows (sampled fits only).

    Returns
    -------
    (N, 2) float32, normalised with :func:`normalise_coords`.
    """
    progress = progress or null_progress
    x = np.ascontiguousarray(vectors, np.float32)
    if len(x) < max(2 * k, 32):
        log.info("only %d samples: using PCA instead of UMAP", len(x))
        return pca_map(x)
    warm_umap(parallel=not reproducible)
    out = _umap(x, idx=idx, sims=sims, k=k, min_dist=min_dist, reproducible=reproducible, seed=seed,
                sample_limit=sample_limit, n_epochs=n_epochs, refine_epochs=refine_epochs, progress=progress)
    progress(1.0, "map ready")
    return normalise_coords(out)


# ---------------------------------------------------------------------- workspace API
def _params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    check_choice("map method", method, METHODS)
    bad = set(params) - set(DEFAULTS)
    if bad:
        raise TypeError(f"Unknown map parameters {sorted(bad)}; known: {sorted(DEFAULTS)}.")
    if method == "pca":
        return {}
    return {**DEFAULTS, **params}


def map_key(emb: Any, *, method: str = "umap", **params: Any) -> tuple[str, dict[str, Any]]:
    """Artifact key and config of a map (embeddings key + ids fingerprint + method + parameters + recipe)."""
    from curation.data.artifacts import make_key
    from curation.features.neighbors import ids_fingerprint

    p = _params(method, params)
    if p:
        if len(emb.ids) <= p["sample_limit"]:
            p["sample_limit"] = None  # irrelevant below the limit: keep the key stable
        p["algorithm"] = ALGORITHM
    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "method": method, **p}
    return make_key(config), config


def load_map(ws: Workspace, emb: Any, *, method: str = "umap", **params: Any) -> np.ndarray | None:
    """The cached map of ``emb`` for these parameters, or None when it was not computed yet.

    Returns
    -------
    (N, 2) float32 aligned with ``emb.ids``, read-only; or None.
    """
    key, _ = map_key(emb, method=method, **params)
    arr = ws.artifacts.load_array("map", key, mmap=False)
    if arr is not None and arr.shape != (len(emb.ids), 2):
        log.warning("cached map %s has shape %s, expected %s: recompute it", key, arr.shape, (len(emb.ids), 2))
        return None
    return arr


def latest_map(ws: Workspace, emb: Any, *, method: str = "umap") -> tuple[np.ndarray, dict[str, Any]] | None:
    """The newest cached map of ``emb`` by ``method``, reproducible or fast, with the config that made it.

    Returns
    -------
    ((N, 2) float32 aligned with ``emb.ids``, config dict with ``reproducible`` etc.), or None.
    """
    found = []
    for params in ([{}] if method == "pca" else [{"reproducible": True}, {"reproducible": False}]):
        key, config = map_key(emb, method=method, **params)
        meta = ws.artifacts.meta("map", key)
        if meta is not None:
            found.append((meta.get("created") or 0, params, config))
    for _, params, config in sorted(found, key=lambda f: f[0], reverse=True):
        coords = load_map(ws, emb, method=method, **params)
        if coords is not None:
            return coords, config
    return None


def compute_map(ws: Workspace, emb: Any, *, method: str = "umap", reproducible: bool = True, k: int = 15,
                min_dist: float = 0.1, seed: int = 0, sample_limit: int = SAMPLE_LIMIT,
                progress: ProgressFn | None = None) -> np.ndarray:
    """The 2-D map of a workspace's embeddings, cached as artifact kind ``map``.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key``.
    method : ``"umap"`` (on the cached faiss kNN graph, see :func:`umap_map`) or ``"pca"`` (instant).
    reproducible : seeded single-threaded UMAP (same map every time) or parallel (faster, varies).
    k : UMAP ``n_neighbors``; the graph is the shared ``knn_graph(ws, emb, k=k)``.
    sample_limit : above this N, UMAP is fitted on a sample and the rest are placed from neighbours.

    Returns
    -------
    (N, 2) float32 aligned with ``emb.ids``, normalised to about [-10, 10].
    """
    params = {} if method == "pca" else {"reproducible": reproducible, "k": k, "min_dist": min_dist, "seed": seed,
                                         "sample_limit": sample_limit}
    cached = load_map(ws, emb, method=method, **params)
    if cached is not None:
        log.debug("map (%s) loaded from cache", method)
        return cached
    key, config = map_key(emb, method=method, **params)
    progress = progress or null_progress
    if method == "pca":
        coords = pca_map(emb.vectors)
    else:
        idx = sims = None
        n = len(emb.ids)
        if max(2 * k, 32) <= n <= sample_limit:
            from curation.features.neighbors import knn_graph

            idx, sims = knn_graph(ws, emb, k=k, progress=sub_progress(progress, 0.0, 0.3))
        coords = umap_map(emb.vectors, idx=idx, sims=sims, k=k, min_dist=min_dist, reproducible=reproducible,
                          seed=seed, sample_limit=sample_limit, progress=sub_progress(progress, 0.3, 1.0))
    ws.artifacts.save_array("map", key, coords, config=config)
    coords.setflags(write=False)
    log.info("map (%s) of %d samples saved as map/%s", method, len(coords), key)
    return coords
