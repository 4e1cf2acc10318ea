"""Local engine vs a local Ray cluster (1 and 2 worker nodes): embedding, kNN graph, out-of-fold (prints figures).

The same N real Fashion-MNIST images (demo workspaces built with one seed) are embedded by the local
DataLoader loop and by Ray Data on a cluster of 1 and of 2 node processes on 127.0.0.1 (one encoder actor
per node, 1 CPU each); the kNN graph and the out-of-fold probabilities of the same vectors follow. Reports
seconds, images/s, the 2-worker / 1-worker ratio, Ray / local, Ray's fixed overhead (cluster start,
actor start), equality of the results, and the load average (the machine is shared: ratios move with it).

Example (the issue's size; minutes per 1,000 images on 2 loaded cores)::

    .venv/bin/python benchmarks/ray_scale.py --n 20000 --encoder efficientnet-lite0 --out ray_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATION_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _stage_local(ws, encoder: str, k: int, folds: int, chunk: int) -> dict:
    from curation.data.store import single_from_matrix
    from curation.features.embed import embed_workspace
    from curation.features.neighbors import knn_graph
    from curation.labels.oof import out_of_fold_probs

    out: dict = {"load_before": _load()}
    t = time.perf_counter()
    emb = embed_workspace(ws, encoder, device="cpu", chunk_size=chunk)
    out["embed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    idx, _ = knn_graph(ws, emb, k=k)
    out["knn_s"] = time.perf_counter() - t
    X = np.asarray(emb.vectors, np.float32)
    y = single_from_matrix(ws.store.label_matrix(emb.ids))
    t = time.perf_counter()
    probs = out_of_fold_probs(X, y, n_classes=int(y.max()) + 1, folds=folds)
    out["oof_s"] = time.perf_counter() - t
    out["load_after"] = _load()
    return out | {"_vectors": np.asarray(emb.vectors), "_idx": np.asarray(idx), "_probs": probs, "_X": X, "_y": y}


def _stage_ray(ws, encoder: str, workers: int, k: int, folds: int, chunk: int, X, y) -> dict:
    from curation.features.embed import embed_workspace
    from curation.features.neighbors import knn_graph
    from curation.labels.oof import out_of_fold_probs
    from curation.runtime.engines import local_cluster
    from curation.runtime.ray_jobs import RayEmbedRunner, knn_graph_on_ray, oof_on_ray

    out: dict = {"load_before": _load()}
    t = time.perf_counter()
    with local_cluster(workers, cpus_per_node=1) as lc:
        out["cluster_start_s"] = time.perf_counter() - t
        first: list[float] = []
        t = time.perf_counter()

        def tick(fraction: float, message: str = "") -> None:
            if fraction > 0 and not first:
                first.append(time.perf_counter() - t)

        runner = RayEmbedRunner(workers=workers)
        emb = embed_workspace(ws, encoder, device="cpu", chunk_size=chunk, progress=tick, runner=runner)
        out["embed_s"] = time.perf_counter() - t
        out["first_batch_s"] = first[0] if first else float("nan")
        out["worker_processes"] = runner.stats.get("workers")
        t = time.perf_counter()
        rep = knn_graph_on_ray(ws, emb, k=k, shards=2 * workers, address=lc.address)
        out["knn_s"] = time.perf_counter() - t
        out["knn_recall"] = rep["recall"]
        idx, _ = knn_graph(ws, emb, k=k)
        t = time.perf_counter()
        with oof_on_ray(lc.address):
            probs = out_of_fold_probs(X, y, n_classes=int(y.max()) + 1, folds=folds)
        out["oof_s"] = time.perf_counter() - t
    out["load_after"] = _load()
    return out | {"_vectors": np.asarray(emb.vectors), "_idx": np.asarray(idx), "_probs": probs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="images (default 300: a few minutes on 2 shared cores)")
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--workers", default="1,2", help="Ray worker node counts to run (default 1,2)")
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--chunk", type=int, default=128, help="samples per embedding chunk")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)

    from curation.data.demo import build_demo

    tmp = Path(tempfile.mkdtemp(prefix="ray-scale-"))
    rows: dict[str, dict] = {}
    try:
        print(f"{a.n} Fashion-MNIST images, {a.encoder}, {os.cpu_count()} cores, load {_load()}", flush=True)
        loc = _stage_local(build_demo(tmp / "local", n=a.n, seed=0, source="fashion-mnist"), a.encoder, a.k, a.folds,
                           a.chunk)
        rows["local"] = loc
        print(f"local: embed {loc['embed_s']:.1f}s  kNN {loc['knn_s']:.2f}s  OOF {loc['oof_s']:.2f}s", flush=True)
        for w in [int(x) for x in a.workers.split(",") if x.strip()]:
            ws = build_demo(tmp / f"ray{w}", n=a.n, seed=0, source="fashion-mnist")
            r = _stage_ray(ws, a.encoder, w, a.k, a.folds, a.chunk, loc["_X"], loc["_y"])
            r["vectors_max_diff"] = float(np.abs(r["_vectors"] - loc["_vectors"]).max())
            r["graph_identical"] = float((r["_idx"] == loc["_idx"]).mean())
            r["oof_max_diff"] = float(np.abs(r["_probs"] - loc["_probs"]).max())
            rows[f"ray{w}"] = r
            print(f"ray x{w}: cluster start {r['cluster_start_s']:.1f}s, embed {r['embed_s']:.1f}s (first batch "
                  f"{r['first_batch_s']:.1f}s, {r['worker_processes']} actor processes), kNN {r['knn_s']:.2f}s "
                  f"(recall {r['knn_recall']:.4f}), OOF {r['oof_s']:.2f}s; |dv| {r['vectors_max_diff']:.1e}, "
                  f"graph identical {r['graph_identical']:.4f}, |dp| {r['oof_max_diff']:.1e}; load {r['load_after']}",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| run | embed s | img/s | kNN s | OOF s | cluster start s | first batch s | load (1/5/15 min) after |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['embed_s']:.1f} | {a.n / r['embed_s']:.2f} | {r['knn_s']:.2f} | {r['oof_s']:.2f} | "
              f"{r.get('cluster_start_s', 0):.1f} | {r.get('first_batch_s', 0):.1f} | {r['load_after']} |")
    if "ray1" in rows and "ray2" in rows:
        r1, r2 = rows["ray1"], rows["ray2"]
        print(f"\n2 workers / 1 worker: embed x{r1['embed_s'] / r2['embed_s']:.2f}, "
              f"steady-state (after the first batch) x{(r1['embed_s'] - r1['first_batch_s']) / max(r2['embed_s'] - r2['first_batch_s'], 1e-9):.2f}, "
              f"kNN x{r1['knn_s'] / r2['knn_s']:.2f}, OOF x{r1['oof_s'] / r2['oof_s']:.2f} (goal for embedding: >= 1.6)")
    for name, r in rows.items():
        if name != "local":
            print(f"{name} / local embed time: {r['embed_s'] / rows['local']['embed_s']:.2f} "
                  f"(+ {r['cluster_start_s']:.1f}s to start the cluster)")
    if a.out:
        from curation.data.atomic import atomic_write

        clean = {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in rows.items()}
        atomic_write(a.out, json.dumps({"n": a.n, "encoder": a.encoder, "runs": clean}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
