"""Cluster-balanced subsets: near-duplicates removed (SemDeDup on the kNN graph), then sampling spread over clusters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

WITHIN = ("auto", "typical", "random")
"""How a cluster's share is filled: ``typical`` = the members nearest its centroid first, ``random`` = seeded draw,
``auto`` = for budgets up to :data:`TYPICAL_SHARE` of the candidates the most typical member first, then seeded
draw; above it a seeded draw (stratified sampling): prototypes help small budgets and cost large ones."""
TYPICAL_SHARE = 0.2
"""Largest budget (share of the candidates) for which ``within="auto"`` starts each cluster with its most typical image
(measured: +0.10 accuracy at 5 %, none at 20 %, -0.02 at 50 %; docs/beyond.md)."""
BALANCE = 0.0
"""Default :func:`weighted_allocation` balance: one image per cluster, then the rest in proportion to cluster size
(measured: as good as random at 50 % budgets, where an even spread over-samples small clusters; docs/beyond.md)."""
DEDUP_THRESHOLD = 0.95
"""Cosine similarity at or above which two images count as near-duplicates (SemDeDup's epsilon = 1 - 0.95)."""
SUBSET_KIND = "subsets"


class SubsetError(ValueError):
    """A subset that cannot be drawn as asked; the message says what to do."""


def semdedup(knn_idx: np.ndarray, knn_sims: np.ndarray, *, threshold: float = DEDUP_THRESHOLD,
             priority: np.ndarray | None = None) -> np.ndarray:
    """SemDeDup on a kNN graph: drop an image when a neighbour with a higher priority is at least ``threshold``
    similar (the rule of Abbas et al. 2023, with the kNN graph standing in for the per-cluster similarity matrix).

    Parameters
    ----------
    knn_idx, knn_sims : (N, k) neighbour rows (-1 = none, self excluded) and cosine similarities.
    threshold : similarity at or above which a pair is a duplicate.
    priority : (N,) float, higher = keep (default: lower row number wins, i.e. ``-row``). SemDeDup keeps the
        member least similar to its cluster centroid; :func:`balanced_subset` keeps the hardest when asked.

    Returns
    -------
    (N,) bool, True = kept. Every duplicate group keeps at least its top-priority member.
    """
    idx = np.asarray(knn_idx, np.int64)
    sims = np.asarray(knn_sims, np.float32)
    n = len(idx)
    if idx.shape != sims.shape:
        raise SubsetError(f"knn_idx {idx.shape} and knn_sims {sims.shape} differ; rebuild the kNN graph.")
    if not 0.0 < threshold <= 1.0:
        raise SubsetError(f"threshold must be in (0, 1], got {threshold}.")
    pr = -np.arange(n, dtype=np.float64) if priority is None else np.asarray(priority, np.float64)
    # ties in priority are broken by row so that exactly one of two equal-priority twins goes
    rank = np.empty(n, np.int64)
    rank[np.lexsort((-np.arange(n), pr))] = np.arange(n)
    valid = (idx >= 0) & (sims >= threshold)
    nb_rank = np.where(valid, rank[np.clip(idx, 0, max(n - 1, 0))], -1)
    return ~(nb_rank > rank[:, None]).any(axis=1)


def even_allocation(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Spread ``budget`` as evenly as possible over groups of ``sizes`` (water-filling: a group smaller than
    the even share gives its rest to the others; leftovers go to the largest groups first).

    Returns
    -------
    (G,) int64 counts, each <= its size, summing to min(budget, sizes.sum()).
    """
    sizes = np.asarray(sizes, np.int64)
    budget = int(min(budget, sizes.sum()))
    if budget <= 0:
        return np.zeros(len(sizes), np.int64)
    s = np.sort(sizes)
    # largest level L with sum(min(size, L)) <= budget
    cum = np.r_[0, np.cumsum(s)]
    g = len(s)
    level = 0
    for i in range(g):  # over groups (a few hundred at most), not samples
        need = cum[i] + s[i] * (g - i)
        if need <= budget:
            level = int(s[i])
        else:
            level = int((budget - cum[i]) // (g - i))
            break
    alloc = np.minimum(sizes, level)
    rest = budget - int(alloc.sum())
    if rest > 0:
        room = np.flatnonzero(alloc < sizes)
        order = room[np.argsort(-sizes[room], kind="stable")][:rest]
        alloc[order] += 1
    return alloc


def weighted_allocation(sizes: np.ndarray, budget: int, *, balance: float = 1.0) -> np.ndarray:
    """Spread ``budget`` over groups in proportion to ``size ** (1 - balance)``, each non-empty group getting at
    least one image when the budget allows (else the largest groups get one each).

    Quotas are water-filled (a group never gets more than its size; what it cannot take goes to the others),
    rounded by largest remainder; the groups lifted to one image are paid for by the groups most above their
    quota. ``balance=1``: even; ``balance=0``: proportional to size (stratified sampling).

    Returns
    -------
    (G,) int64 counts, each <= its size, summing to min(budget, sizes.sum()).
    """
    sizes = np.asarray(sizes, np.int64)
    if not 0.0 <= balance <= 1.0:
        raise SubsetError(f"balance must be in [0, 1], got {balance}.")
    budget = int(min(budget, sizes.sum()))
    alloc = np.zeros(len(sizes), np.int64)
    nonempty = np.flatnonzero(sizes > 0)
    if budget <= 0:
        return alloc
    if budget <= len(nonempty):
        alloc[nonempty[np.argsort(-sizes[nonempty], kind="stable")[:budget]]] = 1
        return alloc
    w = np.where(sizes > 0, sizes.astype(np.float64) ** (1.0 - balance), 0.0)
    quota = np.zeros(len(sizes))
    open_ = sizes > 0
    free = float(budget)
    while open_.any():  # water-filling: at most G rounds, each one fills a group or ends
        q = free * np.where(open_, w, 0.0) / max(float(w[open_].sum()), 1e-12)
        full = open_ & (q >= sizes)
        if not full.any():
            quota[open_] = q[open_]
            break
        quota[full] = sizes[full]
        free -= float(sizes[full].sum())
        open_ &= ~full
    alloc = np.floor(quota).astype(np.int64)
    rest = budget - int(alloc.sum())
    if rest > 0:
        room = np.flatnonzero(alloc < sizes)
        alloc[room[np.argsort(-(quota - alloc)[room], kind="stable")[:rest]]] += 1
    lift = np.flatnonzero((alloc == 0) & (sizes > 0))
    if len(lift):  # one image per group, paid by the groups most above their quota
        alloc[lift] = 1
        for _ in range(len(lift)):  # over lifted groups (bounded by G)
            surplus = np.where(alloc > 1, alloc - quota, -np.inf)
            alloc[int(np.argmax(surplus))] -= 1
    return alloc


@dataclass
class Subset:
    """A drawn subset.

    Attributes
    ----------
    ids : (M,) int64 chosen sample ids, in the order they were picked (hard examples first).
    table : DataFrame indexed by chosen id: cluster, reason ("hard" / "balanced"), hard score (NaN = none).
    duplicates_removed : number of candidates dropped as near-duplicates.
    n_clusters : clusters the budget was spread over.
    config : the options that drew it.
    """

    ids: np.ndarray
    table: pd.DataFrame
    duplicates_removed: int
    n_clusters: int
    config: dict[str, Any] = field(default_factory=dict)


def default_k(budget: int, n: int) -> int:
    """Clusters for a budget: one per chosen image up to 100 (each pick a prototype), then ~sqrt(budget) x 10."""
    return int(max(1, min(n, budget if budget <= 100 else max(100, int(10 * np.sqrt(budget))))))


def balanced_subset(vectors: np.ndarray, budget: int, *, ids: np.ndarray | None = None,
                    knn_idx: np.ndarray | None = None, knn_sims: np.ndarray | None = None,
                    dedup_threshold: float | None = DEDUP_THRESHOLD, k: int | None = None,
                    clusters: np.ndarray | None = None, within: str = "auto",
                    hard_scores: np.ndarray | None = None, hard_fraction: float = 0.0,
                    balance: float = BALANCE, seed: int = 0) -> Subset:
    """Choose ``budget`` images spread evenly over clusters, after near-duplicate removal.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised embeddings of the candidates.
    budget : number of images to choose (an int), capped at the candidates left after deduplication.
    ids : (N,) int64 sample ids (default row numbers).
    knn_idx, knn_sims : (N, k) kNN graph for deduplication (computed when None and deduplication is on).
    dedup_threshold : cosine similarity of near-duplicates (None = keep them all).
    k : clusters (default :func:`default_k`); hierarchical k-means above 256 clusters.
    clusters : (N,) int precomputed cluster labels (overrides ``k``; -1 = its own group).
    within : :data:`WITHIN`, how each cluster's share is filled.
    hard_scores : (N,) float, lower = harder (label-quality or confidence scores); NaN = unknown.
    hard_fraction : share of the budget filled first with the hardest images (0..1).
    balance : how evenly the clusters share the budget after one image each (:func:`weighted_allocation`):
        1 = evenly, 0 = in proportion to their sizes.

    Returns
    -------
    Subset.
    """
    x = np.ascontiguousarray(vectors, np.float32)
    n = len(x)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    if within not in WITHIN:
        raise SubsetError(f"Unknown within-cluster order {within!r}; use one of {list(WITHIN)}.")
    if not 0.0 <= hard_fraction <= 1.0:
        raise SubsetError(f"hard_fraction must be in [0, 1], got {hard_fraction}.")
    if hard_fraction > 0 and hard_scores is None:
        raise SubsetError("hard_fraction > 0 needs hard_scores (issue or confidence scores): run `issues` first.")
    if budget < 1 or n == 0:
        raise SubsetError(f"Nothing to choose: budget {budget}, {n} candidates.")
    rng = np.random.default_rng(seed)
    hard = None if hard_scores is None else np.asarray(hard_scores, np.float64)
    keep = np.ones(n, bool)
    if dedup_threshold is not None and n > 1:
        if knn_idx is None or knn_sims is None:
            from curation.features.neighbors import knn

            knn_idx, knn_sims = knn(x, k=min(10, n - 1))
        # keep the hardest of a duplicate group when hard examples are wanted, else the most atypical (SemDeDup)
        prio = -np.nan_to_num(hard, nan=np.inf) if hard is not None and hard_fraction > 0 else rng.random(n)
        keep = semdedup(knn_idx, knn_sims, threshold=dedup_threshold, priority=prio)
    cand = np.flatnonzero(keep)
    budget = int(min(budget, len(cand)))
    picked: list[np.ndarray] = []
    reason: list[np.ndarray] = []
    if hard is not None and hard_fraction > 0:
        n_hard = int(round(budget * hard_fraction))
        h = hard[cand]
        order = cand[np.argsort(np.where(np.isnan(h), np.inf, h), kind="stable")]
        order = order[np.isfinite(hard[order])][:n_hard]
        picked.append(order), reason.append(np.full(len(order), "hard"))
        cand = np.setdiff1d(cand, order)
    left = budget - sum(len(p) for p in picked)
    if clusters is not None:
        lab = np.asarray(clusters, np.int64)
        lab = np.where(lab < 0, lab.max() + 1, lab)
    else:
        kk = int(min(k or default_k(left, len(cand)), max(len(cand), 1)))
        lab = np.zeros(n, np.int64)
        if len(cand) and kk > 1:
            from curation.structure.cluster import hkmeans, kmeans

            fit = hkmeans if kk >= 256 else kmeans
            lab[cand] = fit(x[cand], kk, seed=seed)[0]
    mode = within if within != "auto" or left <= TYPICAL_SHARE * max(len(cand), 1) else "random"
    chosen_b = _fill(x, cand, lab, left, within=mode, rng=rng, balance=balance)
    picked.append(chosen_b), reason.append(np.full(len(chosen_b), "balanced"))
    rows = np.concatenate(picked).astype(np.int64)
    table = pd.DataFrame({"cluster": lab[rows], "reason": np.concatenate(reason),
                          "hard_score": hard[rows] if hard is not None else np.nan},
                         index=pd.Index(ids[rows], name="id"))
    config = {"budget": int(budget), "dedup_threshold": dedup_threshold, "k": int(len(np.unique(lab[cand])))
              if len(cand) else 0, "within": within, "hard_fraction": hard_fraction, "balance": balance, "seed": seed}
    return Subset(ids=ids[rows], table=table, duplicates_removed=int(n - keep.sum()),
                  n_clusters=int(len(np.unique(lab[cand]))) if len(cand) else 0, config=config)


def _fill(x: np.ndarray, cand: np.ndarray, lab: np.ndarray, budget: int, *, within: str,
          rng: np.random.Generator, balance: float) -> np.ndarray:
    """Pick ``budget`` rows of ``cand`` spread evenly over their clusters ``lab[cand]``."""
    if budget <= 0 or len(cand) == 0:
        return np.zeros(0, np.int64)
    cl = lab[cand]
    uniq, inv = np.unique(cl, return_inverse=True)
    sizes = np.bincount(inv, minlength=len(uniq))
    alloc = weighted_allocation(sizes, budget, balance=balance)
    key = rng.random(len(cand))
    if within in ("typical", "auto"):
        sums = np.zeros((len(uniq), x.shape[1]), np.float64)
        np.add.at(sums, inv, x[cand])
        cents = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        near = -np.einsum("ij,ij->i", x[cand], cents[inv].astype(np.float32))  # nearest the centroid first
        if within == "typical":
            key = near
        else:  # each cluster's most typical member first, the rest in random order
            first = np.zeros(len(cand), bool)
            order = np.lexsort((near, inv))
            first[order[np.r_[0, np.cumsum(sizes)][:-1]]] = True
            key = np.where(first, -np.inf, key)
    order = np.lexsort((key, inv))  # by cluster, then by key
    pos_in_cluster = np.arange(len(cand)) - np.r_[0, np.cumsum(sizes)][:-1][inv[order]]
    take = order[pos_in_cluster < alloc[inv[order]]]
    return cand[take]


def random_subset(ids: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """The baseline: ``budget`` ids drawn uniformly (seeded)."""
    ids = np.asarray(ids, np.int64)
    return np.sort(np.random.default_rng(seed).choice(ids, int(min(budget, len(ids))), replace=False))


def workspace_subset(ws: Any, emb: Any, budget: int | float, *, scope: str = "all", hard_fraction: float = 0.0,
                     hard_source: str = "issues", dedup_threshold: float | None = DEDUP_THRESHOLD,
                     k: int | None = None, within: str = "auto", balance: float = BALANCE,
                     seed: int = 0) -> Subset:
    """A cluster-balanced subset of a workspace's embedded images.

    Parameters
    ----------
    budget : a count (int >= 1) or a fraction of the candidates (0 < float < 1).
    scope : "all", "labelled" or "unlabelled" candidates.
    hard_source : "issues" (label-quality score of the latest issues run) or "confidence" (suggestion
        confidence); lower = harder.
    Other parameters as in :func:`balanced_subset`.
    """
    from curation.data.store import POSITIVE
    from curation.features.neighbors import knn_graph

    scopes = ("all", "labelled", "unlabelled")
    if scope not in scopes:
        raise SubsetError(f"Unknown scope {scope!r}; use one of {list(scopes)}.")
    if hard_source not in ("issues", "confidence"):
        raise SubsetError(f"Unknown hard_source {hard_source!r}; use 'issues' or 'confidence'.")
    ids = np.asarray(emb.ids, np.int64)
    rows = np.arange(len(ids))
    if scope != "all":
        labelled = (ws.store.label_matrix(ids) == POSITIVE).any(axis=1)
        rows = rows[labelled if scope == "labelled" else ~labelled]
    if len(rows) == 0:
        raise SubsetError(f"No {scope} embedded images to choose from.")
    count = int(round(budget * len(rows))) if isinstance(budget, float) and budget < 1 else int(budget)
    if count < 1:
        raise SubsetError(f"Budget {budget} selects no image out of {len(rows)}; ask for more.")
    idx = sims = None
    if dedup_threshold is not None:
        gi, gs = knn_graph(ws, emb)
        if scope == "all":
            idx, sims = gi, gs
        else:  # keep only edges inside the candidates, renumbered
            remap = np.full(len(ids), -1, np.int64)
            remap[rows] = np.arange(len(rows))
            idx = np.where(gi[rows] >= 0, remap[np.clip(gi[rows], 0, None)], -1)
            sims = np.where(idx >= 0, gs[rows], -1.0).astype(np.float32)
    hard = _hard_scores(ws, emb, hard_source) if hard_fraction > 0 else None
    res = balanced_subset(np.asarray(emb.vectors[rows], np.float32), count, ids=ids[rows], knn_idx=idx,
                          knn_sims=sims, dedup_threshold=dedup_threshold, k=k, within=within, balance=balance,
                          hard_scores=None if hard is None else hard[rows], hard_fraction=hard_fraction, seed=seed)
    res.config.update({"scope": scope, "hard_source": hard_source, "encoder": emb.encoder_name})
    return res


def _hard_scores(ws: Any, emb: Any, source: str) -> np.ndarray:
    """(N,) lower = harder, aligned with ``emb.ids`` (NaN where unknown): the label-quality score of the current
    labels (``issues``) or the suggestion confidence (``confidence``), from the cached label fit."""
    if source == "issues":
        from curation.labels.issues import compute_issues

        df, column = compute_issues(ws, emb), "label_score"
    else:
        from curation.labels.suggest import suggestions

        df, column = suggestions(ws, emb), "confidence"
    if df is None or column not in df:
        raise SubsetError(f"No {source} scores: run `python -m curation issues WS` (or the pipeline) first, or "
                          "set the hard share to 0.")
    return df[column].reindex(emb.ids).to_numpy(np.float64)


def write_subset(sub: Subset, dest: Path | str, *, ws: Any = None) -> Path:
    """Write a subset as a manifest CSV (id, path, cluster, reason, hard_score) or, for a ``.txt`` file, one id a
    line; atomically."""
    from curation.data.atomic import atomic_write

    dest = Path(dest)
    if dest.suffix.lower() == ".txt":
        atomic_write(dest, "".join(f"{int(i)}\n" for i in sub.ids))
        return dest
    df = sub.table.copy()
    if ws is not None:
        samples = ws.store.samples()
        df.insert(0, "path", [str(Path(r) / p) for r, p in zip(samples.loc[df.index, "root"],
                                                               samples.loc[df.index, "path"])])
    atomic_write(dest, df.reset_index().to_csv(index=False))
    return dest
