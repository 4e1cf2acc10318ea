"""Scale figures: the pipeline, the label store, UI actions and the map at 100k and 1M samples.

Run (from the repo root):

* ``nice .venv/bin/python benchmarks/scale.py pipeline --n 100000 --dir /tmp/scale100k`` — builds a workspace of
  ``n`` samples whose vectors are real Fashion-MNIST rows (pixels projected to 512-d by PCA, tiled with
  Gaussian jitter; labels: the true class on 60 %, 5 % of those flipped, 40 % unlabelled), brings them in
  through ``import_embeddings`` (the engine of ``python -m curation import-embeddings``), then runs kNN graph,
  map, clusters, suggestions, issues and queues, one stage per child process; prints and writes
  ``<dir>/pipeline.json``: seconds and peak RSS per stage (appended as each stage ends).
* ``.venv/bin/python benchmarks/scale.py store --n 1000000`` — label-store actions: one label, 50, 1k,
  all, undo of all, ``label_matrix``, ``label_counts``, ``check``, per call (median of ``--repeat``).
* ``.venv/bin/python benchmarks/scale.py actions --dir /tmp/scale100k`` — server time of each UI action and
  of each page's data loading on a pipeline workspace (no browser).
* ``.venv/bin/python benchmarks/scale.py map --n 100000`` — the map's first and warm draw in headless
  Chromium (plotly ``Scattergl``), see ``benchmarks/map_browser.py``.

Not a test: sizes are CLI options; figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.data.workspace import Workspace

STAGES = ("workspace", "import", "knn", "map", "clusters", "suggest", "issues", "queues")
DIM = 512


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- data
def fashion_rows(n: int, *, dim: int = DIM, seed: int = 0, jitter: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real Fashion-MNIST rows (70,000 images' pixels, PCA to ``dim``) tiled with Gaussian jitter.

    Returns
    -------
    vectors : (n, dim) float32 (not normalised).
    labels : (n,) int64 true class 0..9.
    """
    from curation.data.demo import FASHION_DIR, read_idx

    imgs = [read_idx(FASHION_DIR / f"{p}-images-idx3-ubyte.gz") for p in ("train", "t10k")]
    labs = [read_idx(FASHION_DIR / f"{p}-labels-idx1-ubyte.gz") for p in ("train", "t10k")]
    x = np.concatenate(imgs).reshape(-1, 784).astype(np.float32) / 255.0
    y = np.concatenate(labs).astype(np.int64)
    x -= x.mean(0)
    # PCA to dim through the 784 x 784 covariance (cheap), keeping the leading directions
    cov = (x.T @ x) / len(x)
    w, v = np.linalg.eigh(cov)
    basis = v[:, np.argsort(w)[::-1][:dim]].astype(np.float32)
    base = x @ basis  # (70000, dim)
    scale = base.std(0, keepdims=True) * jitter
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    src = np.arange(n) % len(base)
    step = 65536
    for a in range(0, n, step):
        b = min(n, a + step)
        out[a:b] = base[src[a:b]] + rng.standard_normal((b - a, dim), dtype=np.float32) * scale
    return out, y[src]


def build_workspace(dest: Path, n: int, *, seed: int = 0, vectors: bool = True) -> None:
    """A workspace of ``n`` samples (fake paths, no image files) with Fashion-MNIST labels on 60 % (5 % of
    them flipped) and (``vectors``) the 512-d vectors saved beside it for the import stage."""
    vecs, y = fashion_rows(n, seed=seed, dim=DIM if vectors else 16)
    if vectors:
        np.save(dest.parent / f"{dest.name}-vectors.npy", vecs)
    del vecs
    rng = np.random.default_rng(seed + 1)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    given = y.copy()
    flip = rng.random(n) < 0.05
    given[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    labelled = rng.random(n) < 0.6
    ws = Workspace.create(dest)
    recs = pd.DataFrame({"path": [f"img/{i:07d}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 1, "width": 28, "height": 28})
    lab = [[names[k]] if ok else [] for k, ok in zip(given.tolist(), labelled.tolist())]
    ws.store.add_samples(ws.store.root_id(dest / "img-root"), recs, labels=lab)
    ws.store.add_classes(names)


def run_stage(ws_dir: Path, stage: str) -> dict[str, Any]:
    """Run one pipeline stage in this process; returns seconds, peak RSS (MB) and what the stage made."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if stage == "workspace":
        n = int(os.environ["SCALE_N"])
        build_workspace(ws_dir, n)
        info["n"] = n
    else:
        ws = Workspace.open(ws_dir)
        if stage == "import":
            from curation.features.imported import import_embeddings
            emb = import_embeddings(ws, ws_dir.parent / f"{ws_dir.name}-vectors.npy", name="fashion-tiled")
            info["n"] = len(emb.ids)
        else:
            from curation.runtime.tasks import JOBS, embeddings_or_raise
            emb = embeddings_or_raise(ws)
            if stage == "knn":
                from curation.features.neighbors import knn_graph
                idx, _ = knn_graph(ws, emb, k=15)
                info["shape"] = list(idx.shape)
            elif stage == "map":
                info.update(JOBS["map"](ws, {"method": "umap", "reproducible": False}, lambda *a, **k: None))
            elif stage == "clusters":
                info.update(JOBS["clusters"](ws, {}, lambda *a, **k: None))
            elif stage == "suggest":
                info.update(JOBS["suggest"](ws, {}, lambda *a, **k: None))
            elif stage == "issues":
                info.update(JOBS["issues"](ws, {}, lambda *a, **k: None))
            elif stage == "queues":
                info.update(build_all_queues(ws, emb))
            else:
                raise ValueError(f"Unknown stage {stage!r}; use one of {STAGES}.")
    return {"stage": stage, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb()),
            **info}


def build_all_queues(ws: Workspace, emb: Any) -> dict[str, Any]:
    """What the Review page builds: aligned suggestions, issues, second-label candidates, the five queues."""
    from curation.labels import queues
    from curation.labels.issues import compute_issues, missing_labels
    from curation.labels.suggest import suggestions

    sugg = suggestions(ws, emb)
    found = compute_issues(ws, emb)
    missing = missing_labels(ws, emb)
    a = queues.align(emb.ids, ws.store.label_matrix(emb.ids), sugg, class_names=ws.store.class_names())
    built = queues.build_queues(a, found, missing, reviews=ws.store.reviews())
    return {"queues": {k: len(v) for k, v in built.items()}}


def pipeline(dest: Path, n: int, stages: list[str]) -> list[dict[str, Any]]:
    """Every stage in its own child process (a clean peak RSS each); results appended to ``dest/pipeline.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    ws_dir = dest / "ws"
    out_file = dest / "pipeline.json"
    results: list[dict[str, Any]] = json.loads(out_file.read_text()) if out_file.exists() else []
    for stage in stages:
        env = {**os.environ, "SCALE_N": str(n), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, __file__, "stage", str(ws_dir), stage], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            res = {"stage": stage, "error": proc.stderr[-2000:]}
        else:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["n"] = n
        results.append(res)
        print(json.dumps(res), flush=True)
        out_file.write_text(json.dumps(results, indent=1))
        if "error" in res:
            break
    return results


# ---------------------------------------------------------------------- label store
CPU: dict[str, float] = {}
"""CPU seconds (this process) of the last :func:`_median` call, by name: on a shared machine wall time mostly
measures the neighbours."""


def _median(fn: Callable[[], Any], repeat: int, name: str = "") -> float:
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if name:
        CPU[name] = statistics.median(cpu)
    return statistics.median(times)


def store_figures(db: Path, *, repeat: int = 5, seed: int = 0, check: bool = True) -> dict[str, float]:
    """Seconds per label-store call on a workspace database (it is changed: run it on a copy)."""
    from curation.data.store import Store

    store = Store(db)
    ids = store.sample_ids()
    k = len(store.class_names())
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {"n": float(len(ids))}
    out["label_matrix (cold)"] = _median(lambda: store.label_matrix(), 1, "label_matrix (cold)")
    out["label_matrix (warm)"] = _median(lambda: store.label_matrix(), repeat, "label_matrix (warm)")
    out["set_label 1"] = _median(lambda: store.set_label(rng.choice(ids, 1), int(rng.integers(1, k + 1))), repeat * 4,
                                 "set_label 1")
    out["label_matrix after 1 label"] = _median(lambda: (store.set_label(rng.choice(ids, 1), 1),
                                                         store.label_matrix()), repeat, "label_matrix after 1 label")
    out["set_label 50"] = _median(lambda: store.set_label(rng.choice(ids, 50, replace=False),
                                                          int(rng.integers(1, k + 1))), repeat, "set_label 50")
    out["set_label 1k"] = _median(lambda: store.set_label(rng.choice(ids, 1000, replace=False),
                                                          int(rng.integers(1, k + 1))), repeat, "set_label 1k")
    out["single_labels"] = _median(lambda: store.single_labels(), repeat, "single_labels")
    out["sample_ids"] = _median(lambda: store.sample_ids(), repeat, "sample_ids")
    out["label_counts"] = _median(lambda: store.label_counts(), repeat, "label_counts")
    t, c = time.perf_counter(), time.process_time()
    b = store.set_label(ids, 1, source="bulk")
    out["relabel all"], out["relabel all (CPU s)"] = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    store.undo(int(b))
    out["undo of all"], out["undo of all (CPU s)"] = time.perf_counter() - t, time.process_time() - c
    out["label_matrix after undo"] = _median(lambda: store.label_matrix(), 1, "label_matrix after undo")
    if check:
        t = time.perf_counter()
        problems = store.check()
        out["check"] = time.perf_counter() - t
        out["check ok"] = float(not problems)
    out.update({f"{name} (CPU s)": v for name, v in CPU.items()})
    out["peak_rss_mb"] = peak_rss_mb()
    out["load"] = os.getloadavg()[0]
    return {k: round(v, 4) for k, v in out.items()}


# ---------------------------------------------------------------------- UI actions and page reruns
PAGES = ("pages/1_Map.py", "pages/2_Clusters.py", "pages/3_Review.py", "pages/7_History.py")


def action_figures(dest: Path, *, repeat: int = 3, seed: int = 0) -> dict[str, float]:
    """Server seconds of each UI action (the functions behind the buttons) and of each page's rerun (Streamlit's
    ``AppTest``, caches warm: the second run) on a pipeline workspace; background rescoring stays off during the
    page runs so they measure the page, then one rescore job's time is reported. The workspace's labels change."""
    from streamlit.testing.v1 import AppTest

    from curation.ui import actions

    os.environ["CURATION_WORKSPACE"] = str(dest)
    os.environ["CURATION_RESCORE"] = "off"
    ws = Workspace.open(dest)
    ids = ws.store.sample_ids()
    names = ws.store.class_names()
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {"n": float(len(ids))}
    out["label one sample"] = _median(lambda: actions.bulk_label(ws, rng.choice(ids, 1), names[1], "assign"), repeat,
                                      "label one sample")
    out["label 1k samples"] = _median(lambda: actions.bulk_label(ws, rng.choice(ids, 1000, replace=False),
                                                                  names[2], "assign"), repeat, "label 1k samples")
    t = time.perf_counter()
    b = actions.bulk_label(ws, ids, names[3], "assign")
    out["label all samples"] = time.perf_counter() - t
    t = time.perf_counter()
    ws.store.undo(int(b))
    out["undo of all"] = time.perf_counter() - t
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
        at.run()
        at.switch_page(page).run()  # cold: caches fill
        t, c = time.perf_counter(), time.process_time()
        at.run()
        out[f"rerun {page} (warm)"] = time.perf_counter() - t
        CPU[f"rerun {page} (warm)"] = time.process_time() - c
        if at.exception:
            out[f"rerun {page} error"] = 1.0
            print(page, [e.message for e in at.exception], file=sys.stderr)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from curation.features.embed import load_embeddings
    t = time.perf_counter()
    build_all_queues(ws, load_embeddings(ws))
    out["queue build (suggestions, issues, missing, five queues)"] = time.perf_counter() - t
    from curation.runtime import rescore
    ws.store.set_label(rng.choice(ids, 50, replace=False), ws.store.class_id(names[0]))
    t = time.perf_counter()
    meta = rescore.rescore(ws, debounce=0)
    out["background rescore after 50 labels (worker)"] = time.perf_counter() - t
    out["rescore skipped"] = float(meta["skipped"])
    out.update({f"{name} (CPU s)": v for name, v in CPU.items()})
    out["peak_rss_mb"] = peak_rss_mb()
    out["load"] = os.getloadavg()[0]
    return {k: round(v, 3) for k, v in out.items()}


# ---------------------------------------------------------------------- the map in a browser
def map_workspace(dest: Path, n: int) -> None:
    """A workspace for the map benchmark: ``n`` samples labelled as in :func:`build_workspace`, 16-d vectors (the
    same tiled Fashion-MNIST rows) and their PCA map; no image files (the map needs none until a click)."""
    from curation.features.imported import import_embeddings
    from curation.features.project import compute_map

    vecs, y = fashion_rows(n, dim=16)
    del y
    build_workspace(dest, n, vectors=False)
    path = dest.parent / f"{dest.name}-vectors16.npy"
    np.save(path, vecs)
    ws = Workspace.open(dest)
    emb = import_embeddings(ws, path, name="fashion-tiled-16")
    compute_map(ws, emb, method="pca")


def map_figures(dest: Path, n: int, repeat: int) -> None:
    """Server time to build and serialise the figure, then first and warm draw of the Map page in headless Chromium
    (``benchmarks/map_browser.measure``), with background rescoring off (it would compete for the 2 cores)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from map_browser import measure

    from curation.features.embed import load_embeddings
    from curation.features.project import latest_map
    from curation.ui import mapview

    ws = Workspace.open(dest)
    emb = load_embeddings(ws)
    found = latest_map(ws, emb, method="pca") or latest_map(ws, emb, method="umap")
    xy = found[0]
    names = ws.store.class_names()
    y = ws.store.single_labels(emb.ids)
    cats = np.array([*names, "(unlabelled)"], dtype=object)[y].tolist()
    t = time.perf_counter()
    fig = mapview.map_figure(xy, emb.ids, categories=cats,
                             colours=mapview.category_colours(cats, fixed=mapview.fixed_colours(ws)), hover=cats)
    size = len(fig.to_json())
    print(json.dumps({"n": len(xy), "figure_seconds": round(time.perf_counter() - t, 2),
                      "json_mb": round(size / 1e6, 1), "load": os.getloadavg()[0]}), flush=True)
    os.environ["CURATION_RESCORE"] = "off"
    measure(dest, len(xy), repeat, None)


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("pipeline", help="build a workspace and run every stage, seconds + peak RSS each")
    sp.add_argument("--n", type=int, default=100_000)
    sp.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one)")
    sp.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    sp = sub.add_parser("stage", help="(internal) one stage in this process")
    sp.add_argument("ws", type=Path)
    sp.add_argument("stage", choices=STAGES)
    sp = sub.add_parser("store", help="label-store calls on a workspace of --n labelled samples")
    sp.add_argument("--n", type=int, default=100_000)
    sp.add_argument("--db", type=Path, default=None, help="use a copy of this curation.db instead of building one")
    sp.add_argument("--repeat", type=int, default=5)
    sp.add_argument("--no-check", action="store_true", help="skip Store.check() (minutes at 1M)")
    sp = sub.add_parser("actions", help="UI actions and page reruns on a pipeline workspace (its labels change)")
    sp.add_argument("--dir", type=Path, required=True, help="the --dir of a finished `pipeline` run")
    sp.add_argument("--repeat", type=int, default=3)
    sp = sub.add_parser("map", help="the Map page's first and warm draw in headless Chromium")
    sp.add_argument("--n", type=int, default=100_000)
    sp.add_argument("--dir", type=Path, default=None, help="working folder (reused when it holds the workspace)")
    sp.add_argument("--repeat", type=int, default=2)
    a = p.parse_args(argv)
    if a.cmd == "stage":
        print(json.dumps(run_stage(a.ws, a.stage)))
    elif a.cmd == "pipeline":
        dest = a.dir or Path(tempfile.mkdtemp(prefix="scale-"))
        pipeline(dest, a.n, [s for s in a.stages.split(",") if s])
    elif a.cmd == "actions":
        print(json.dumps(action_figures(a.dir / "ws", repeat=a.repeat), indent=1))
    elif a.cmd == "map":
        dest = (a.dir or Path(tempfile.gettempdir()) / f"scale-map-{a.n}") / "ws"
        if not (dest / "curation.db").exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            map_workspace(dest, a.n)
        map_figures(dest, a.n, a.repeat)
    elif a.cmd == "store":
        with tempfile.TemporaryDirectory() as tmp:
            if a.db is not None:
                import shutil
                shutil.copy(a.db, Path(tmp) / "curation.db")
                db = Path(tmp) / "curation.db"
            else:
                sys.path.insert(0, str(ROOT / "benchmarks"))
                from reliability import make_workspace
                db = make_workspace(Path(tmp) / "ws", a.n).store.path
            print(json.dumps(store_figures(db, repeat=a.repeat, check=not a.no_check), indent=1))


if __name__ == "__main__":
    main()
