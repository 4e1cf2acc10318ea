"""The job kinds: what each background job runs (embed, map, clusters, suggest, issues, pipeline, train, ...)."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

JobFn = Callable[[Workspace, dict, ProgressFn], dict]
JOBS: dict[str, JobFn] = {}
"""Job kind -> function; :func:`curation.runtime.jobs.submit` refuses kinds not in here."""


def job(kind: str) -> Callable[[JobFn], JobFn]:
    """Register ``fn(ws, params, progress) -> result dict`` as the job kind ``kind``."""

    def register(fn: JobFn) -> JobFn:
        JOBS[kind] = fn
        return fn

    return register


@job("embed")
def _embed(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Params: ``encoder``, ``chunk_size``, ``batch_size``, ``num_workers``; ``engine`` (``local`` | ``ray``) with
    ``address`` (Ray head ``host:port``; None = a private local Ray), ``workers`` and ``num_gpus`` (per actor)."""
    from curation.features.embed import embed_workspace
    from curation.runtime.engines import check_engine

    options = {k: int(params[k]) for k in ("chunk_size", "batch_size", "num_workers")
               if params.get(k) is not None}
    if check_engine(params.get("engine")) == "ray":
        from curation.runtime.ray_jobs import embed_on_ray

        options.pop("num_workers", None)
        emb = embed_on_ray(ws, params.get("encoder"), address=params.get("address"), workers=params.get("workers"),
                           num_gpus=float(params.get("num_gpus") or 0), retry_failed=bool(params.get("retry_failed")),
                           progress=progress, **options)
        return {"n": int(len(emb.ids)), "encoder": emb.encoder_name, "device": emb.device, "key": emb.key,
                "engine": "ray", "failed": int(len(emb.skipped))}
    emb = embed_workspace(ws, params.get("encoder"), retry_failed=bool(params.get("retry_failed")),
                          progress=progress, **options)
    return {"n": int(len(emb.ids)), "encoder": emb.encoder_name, "device": emb.device, "key": emb.key,
            "failed": int(len(emb.skipped))}


@job("map")
def _map(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.features.project import compute_map

    emb = embeddings_or_raise(ws)
    coords = compute_map(ws, emb, method=params.get("method", "umap"),
                         reproducible=params.get("reproducible", True), progress=progress)
    return {"n": int(len(coords)), "method": params.get("method", "umap")}


@job("clusters")
def _clusters(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Params: ``method`` (``auto`` | ``kmeans`` | ``hkmeans`` | ``hdbscan``, default auto), ``k`` (None = automatic)."""
    from curation.structure.cluster import compute_clusters

    progress(0.02, "clustering")
    k = params.get("k")
    df = compute_clusters(ws, embeddings_or_raise(ws), k=None if k is None else int(k), method=params.get("method") or "auto",
                          progress=progress)
    noise = df["cluster"] < 0
    return {"n_clusters": int(df.loc[~noise, "cluster"].nunique()), "noise": int(noise.sum())}


@job("suggest")
def _suggest(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.labels.suggest import suggestions

    df = suggestions(ws, embeddings_or_raise(ws), progress=progress)
    return {"n": int(len(df))}


def run_issues(ws: Workspace, *, force: bool = False, progress: ProgressFn = null_progress
               ) -> tuple[pd.DataFrame, dict]:
    """Refresh the expensive label fit (out-of-fold heads, propagation, ensemble) when labels changed enough
    since the last one (``force``: anyway), then compute and store the issue table of the current labels; the
    noise of the clustering in use (HDBSCAN's -1) feeds the outlier scores.

    Returns
    -------
    The issue table (``curation.labels.issues.compute_issues``) and a summary: n, label_issues, refitted, fit key,
    samples changed since the fit, and the change threshold of the next refit.
    """
    from curation.labels.issues import compute_issues
    from curation.labels.suggest import refresh

    emb = embeddings_or_raise(ws)
    fit = refresh(ws, emb, force=force, progress=sub_progress(progress, 0.0, 0.9))
    df = compute_issues(ws, emb, save=True, progress=sub_progress(progress, 0.9, 1.0))
    return df, {"n": int(len(df)), "label_issues": int(df["is_label_issue"].sum()),
                "refitted": bool(fit["refitted"]), "fit": fit["key"], "changed": int(fit["changed"]),
                "threshold": int(fit["threshold"])}


@job("issues")
def _issues(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """:func:`run_issues` as a job; returns its summary."""
    return run_issues(ws, force=bool(params.get("force", False)), progress=progress)[1]


@job("pipeline")
def _pipeline(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Embed → map → clusters → suggestions → issues, each reusing what its artifact key already holds.

    Params: the ``embed`` job's (``encoder``, ``chunk_size``, ..., ``engine``, ``address``) at top level; ``map``
    and ``clusters`` optional dicts of those jobs' params (default: seeded UMAP, automatic clusters). With
    ``engine="ray"`` the kNN graphs and the out-of-fold folds also run on the cluster.
    """
    from curation.runtime.engines import check_engine

    embed_params = {k: v for k, v in params.items() if k not in ("map", "clusters")}
    if check_engine(params.get("engine")) == "ray":
        return _pipeline_on_ray(ws, params, embed_params, progress)
    out = {"embed": _embed(ws, embed_params, sub_progress(progress, 0.0, 0.7))}
    out["map"] = _map(ws, params.get("map") or {}, sub_progress(progress, 0.7, 0.9))
    out["clusters"] = _clusters(ws, params.get("clusters") or {}, sub_progress(progress, 0.9, 0.95))
    out["suggest"] = _suggest(ws, {}, sub_progress(progress, 0.95, 0.99))
    out["issues"] = _issues(ws, {}, sub_progress(progress, 0.99, 1.0))  # reuses the suggestions' fit
    out["rescore"] = _rescore(ws, {"debounce": 0}, progress)  # the scores pages show, saved beside the store
    return out


@job("rescore")
def _rescore(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Suggestions, issue scores and second-label candidates of the current labels, saved for the pages
    (:func:`curation.runtime.rescore.rescore`); params: ``debounce`` seconds of label silence to wait for."""
    from curation.runtime.rescore import DEBOUNCE, rescore

    meta = rescore(ws, debounce=float(params.get("debounce", DEBOUNCE)), progress=progress)
    return {k: meta[k] for k in ("last_event", "n", "seconds", "skipped")}


def _pipeline_on_ray(ws: Workspace, params: dict, embed_params: dict, progress: ProgressFn) -> dict:
    """The pipeline with embedding, the kNN graphs (the map's and the label fit's) and the out-of-fold folds on
    Ray; the map, clusters and issue table then run here on the cached artifacts."""
    from curation.labels.suggest import GRAPH_K
    from curation.runtime.ray_jobs import knn_graph_on_ray, oof_on_ray

    address = params.get("address")
    out = {"embed": _embed(ws, embed_params, sub_progress(progress, 0.0, 0.6))}
    emb = embeddings_or_raise(ws)
    ks = sorted({int((params.get("map") or {}).get("k", 15)), GRAPH_K})
    out["knn"] = [knn_graph_on_ray(ws, emb, k=k, address=address,
                                   progress=sub_progress(progress, 0.6 + 0.05 * i, 0.65 + 0.05 * i))
                  for i, k in enumerate(ks)]
    out["map"] = _map(ws, params.get("map") or {}, sub_progress(progress, 0.7, 0.85))
    out["clusters"] = _clusters(ws, params.get("clusters") or {}, sub_progress(progress, 0.85, 0.9))
    with oof_on_ray(address):
        out["suggest"] = _suggest(ws, {}, sub_progress(progress, 0.9, 0.98))
        out["issues"] = _issues(ws, {}, sub_progress(progress, 0.98, 1.0))
    out["rescore"] = _rescore(ws, {"debounce": 0}, progress)  # the scores pages show, saved beside the store
    out["engine"] = "ray"
    return out


@job("train")
def _train(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.models.runs import run_training

    run_id = run_training(ws, params, progress=progress)
    return {"run_id": int(run_id), "status": ws.store.run(run_id)["status"]}


@job("finetune")
def _finetune(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Fine-tune the image tower; a resubmitted job (Resume) continues its unfinished run from the last epoch."""
    from curation.models.finetune import run_finetune

    params = dict(params)
    run_id = run_finetune(ws, params, resume=params.pop("resume", True), progress=progress)
    return {"run_id": int(run_id), "status": ws.store.run(run_id)["status"]}


@job("reembed")
def _reembed(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    """Re-embed with a fine-tune run's tower (``finetuned:run-<id>`` becomes the active encoder), then map,
    clusters and suggestions; the tower is built uncached, so the worker keeps none after the job."""
    from curation.features.tuned import tuned_encoder

    return _pipeline(ws, {"encoder": tuned_encoder(ws, int(params["run_id"]))}, progress)


@job("doctor")
def _doctor(ws: Workspace, params: dict, progress: ProgressFn) -> dict:
    from curation.runtime.doctor import doctor

    progress(0.1, "checking the workspace")
    rep = doctor(ws, repair=bool(params.get("repair", False)))
    return {"problems": rep.problems, "repaired": rep.repaired, "left": rep.problems_left}


def embeddings_or_raise(ws: Workspace) -> Any:
    """The workspace's embeddings (``curation.features.embed.Embeddings``), or a RuntimeError saying how to make them."""
    from curation.features.embed import load_embeddings
    emb = load_embeddings(ws)
    if emb is None:
        raise RuntimeError("No embeddings yet: run the pipeline (or `python -m curation embed WS`) first.")
    return emb
