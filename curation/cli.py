"""``python -m curation``: every pipeline step headless, with progress bars."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from curation.progress import TqdmProgress
from curation.store import StoreError
from curation.workspace import Workspace

log = logging.getLogger(__name__)
DEFAULT_DEMO = Path("demo-workspace")


def _with_bar(desc: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    bar = TqdmProgress(desc)
    try:
        return fn(*args, progress=bar, **kwargs)
    finally:
        bar.close()


def cmd_init(a: argparse.Namespace) -> None:
    ws = Workspace.create(a.workspace, task=a.task)
    print(f"workspace ready at {ws.root} ({ws.store.task}-label)")


def cmd_ingest(a: argparse.Namespace) -> None:
    from curation.ingest import ingest

    ws = Workspace.create(a.workspace) if a.create else Workspace.open(a.workspace)
    report = _with_bar("ingest", ingest, ws, a.source, labels=a.labels, image_root=a.image_root)
    print(report.summary())


def cmd_demo(a: argparse.Namespace) -> None:
    from curation.demo import build_demo

    ws = _with_bar("demo", build_demo, a.workspace, n=a.n, seed=a.seed)
    print(f"demo workspace ready at {ws.root}: {len(ws.store.sample_ids())} images")
    if a.pipeline:
        _run_pipeline(ws, encoder=a.encoder)


def _run_pipeline(ws: Workspace, *, encoder: str | None = None) -> None:
    from curation.jobs import JOBS

    _with_bar("pipeline", JOBS["pipeline"], ws, {"encoder": encoder})


def cmd_embed(a: argparse.Namespace) -> None:
    from curation.embed import embed_workspace

    ws = Workspace.open(a.workspace)
    emb = _with_bar("embed", embed_workspace, ws, a.encoder)
    print(f"{len(emb.ids)} embeddings ({emb.encoder_name}, {emb.vectors.shape[1]}-d) on {emb.device}")


def cmd_import_embeddings(a: argparse.Namespace) -> None:
    from curation.embed import import_embeddings

    ws = Workspace.open(a.workspace)
    emb = import_embeddings(ws, a.file, column=a.column, name=a.name)
    print(f"imported {len(emb.ids)} embeddings as {emb.encoder_name}")


def cmd_map(a: argparse.Namespace) -> None:
    from curation.jobs import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar("map", JOBS["map"], ws, {"method": a.method, "reproducible": not a.fast})
    print(f"map of {res['n']} points ({a.method})")


def cmd_cluster(a: argparse.Namespace) -> None:
    from curation.jobs import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar("clusters", JOBS["clusters"], ws, {"k": a.k})
    print(f"{res['n_clusters']} clusters")


def cmd_suggest(a: argparse.Namespace) -> None:
    from curation.jobs import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar("suggest", JOBS["suggest"], ws, {})
    print(f"suggestions for {res['n']} samples")


def cmd_pipeline(a: argparse.Namespace) -> None:
    _run_pipeline(Workspace.open(a.workspace), encoder=a.encoder)


def cmd_train(a: argparse.Namespace) -> None:
    from curation.train import run_training

    ws = Workspace.open(a.workspace)
    config = {"kind": a.kind, "epochs": a.epochs, "device": a.device}
    run_id = _with_bar("train", run_training, ws, config)
    run = ws.store.run(run_id)
    m = run["metrics"]
    print(f"run {run_id} {run['status']} on {run['device']}: "
          f"accuracy {m.get('accuracy', float('nan')):.4f}, macro-F1 {m.get('macro_f1', float('nan')):.4f}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from curation.train import latest_run

    ws = Workspace.open(a.workspace)
    run = ws.store.run(a.run) if a.run else latest_run(ws)
    if run is None:
        raise StoreError("No finished training run: run `python -m curation train WS` first.")
    m = run["metrics"]
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "top_k", "ece", "pinned_accuracy")
    print(f"run {run['id']} ({run['kind']}, labels up to event {run['last_event_id']}, {run['device']})")
    for k in keys:
        if k in m and m[k] is not None:
            print(f"  {k:>18}: {m[k]:.4f}")
    if m.get("per_class"):
        import pandas as pd

        print(pd.DataFrame(m["per_class"]).to_string(index=False))


def cmd_export(a: argparse.Namespace) -> None:
    from curation.export import export

    ws = Workspace.open(a.workspace)
    path = export(ws, a.format, a.dest, link=a.link)
    print(f"wrote {path}")


def cmd_list(a: argparse.Namespace) -> None:
    from curation.embed import list_encoders

    print("encoders:")
    for name in list_encoders():
        print(f"  {name}")
    if a.workspace:
        ws = Workspace.open(a.workspace)
        arts = ws.artifacts.list()
        print(f"cached artifacts in {ws.root / 'artifacts'}:")
        print(arts[["kind", "key"]].to_string(index=False) if len(arts) else "  none")


def cmd_doctor(a: argparse.Namespace) -> None:
    from curation.doctor import doctor

    ws = Workspace.open(a.workspace)
    report = doctor(ws, repair=a.repair)
    print(report.summary())
    if report.problems_left:
        sys.exit(1)


def cmd_backup(a: argparse.Namespace) -> None:
    ws = Workspace.open(a.workspace)
    ws.store.backup(a.dest)
    print(f"backed up {ws.root / 'curation.db'} to {a.dest}")


def cmd_restore(a: argparse.Namespace) -> None:
    from curation.doctor import restore

    restore(a.backup, a.workspace)
    print(f"restored {a.backup} into {a.workspace}")


def cmd_jobs(a: argparse.Namespace) -> None:
    from curation.jobs import refresh

    ws = Workspace.open(a.workspace)
    df = refresh(ws)
    print(df[["kind", "status", "progress", "message"]].to_string() if len(df) else "no jobs")


def cmd_submit(a: argparse.Namespace) -> None:
    from curation.jobs import active_jobs, submit

    ws = Workspace.open(a.workspace)
    if a.if_needed:
        busy = active_jobs(ws)
        if (busy["kind"] == a.kind).any():
            print(f"a {a.kind} job is already running")
            return
        if a.kind == "pipeline" and _pipeline_done(ws):
            print("pipeline results are up to date")
            return
    params = json.loads(a.params) if a.params else {}
    job_id = submit(ws, a.kind, params)
    print(f"submitted {a.kind} job {job_id}; follow it with `python -m curation jobs {ws.root}` or in the app")


def _pipeline_done(ws: Workspace) -> bool:
    from curation.embed import load_embeddings
    from curation.project import load_map

    emb = load_embeddings(ws)
    return emb is not None and len(emb.ids) == len(ws.store.sample_ids()) and load_map(ws, emb) is not None


def cmd_worker(a: argparse.Namespace) -> None:
    from curation.jobs import run_job

    run_job(Workspace.open(a.workspace), a.job)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m curation", description="Image-dataset curation studio, headless.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help) if help else sub.add_parser(name)
        sp.set_defaults(func=fn)
        return sp

    sp = add("init", cmd_init, "create a workspace folder")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--task", choices=("single", "multi"), default="single")
    sp = add("ingest", cmd_ingest, "add an image folder or a manifest to a workspace")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("source", type=Path)
    sp.add_argument("--labels", choices=("auto", "folders", "none"), default="auto")
    sp.add_argument("--image-root", type=Path, default=None)
    sp.add_argument("--create", action="store_true", help="create the workspace when missing")
    sp = add("demo", cmd_demo, "build the demo workspace on real Fashion-MNIST images")
    sp.add_argument("workspace", type=Path, nargs="?", default=DEFAULT_DEMO)
    sp.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--pipeline", action="store_true", help="also embed, map, cluster and suggest")
    sp.add_argument("--encoder", default=None)
    sp = add("embed", cmd_embed, "embed the images (resumable)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--encoder", default=None, help="encoder name (see `list`); default OpenCLIP, else offline")
    sp = add("import-embeddings", cmd_import_embeddings, "bring your own embeddings (.npy or Parquet)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("file", type=Path)
    sp.add_argument("--column", default=None)
    sp.add_argument("--name", default="user")
    sp = add("map", cmd_map, "compute the 2-D map")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--method", choices=("umap", "pca"), default="umap")
    sp.add_argument("--fast", action="store_true", help="parallel UMAP (not bit-reproducible)")
    sp = add("cluster", cmd_cluster, "cluster the embeddings")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--k", type=int, default=None, help="number of clusters (default: automatic)")
    sp = add("suggest", cmd_suggest, "compute label suggestions")
    sp.add_argument("workspace", type=Path)
    sp = add("pipeline", cmd_pipeline, "embed → map → clusters → suggestions")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--encoder", default=None)
    sp = add("train", cmd_train, "train a classifier head on the embeddings")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--kind", choices=("linear", "mlp"), default="linear")
    sp.add_argument("--epochs", type=int, default=100)
    sp.add_argument("--device", default="auto")
    sp = add("evaluate", cmd_evaluate, "show a run's evaluation")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--run", type=int, default=None)
    sp = add("export", cmd_export, "write the curated labels")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("format", choices=("csv", "jsonl", "parquet", "hf", "imagefolder", "cleanlab"))
    sp.add_argument("dest", type=Path)
    sp.add_argument("--link", choices=("copy", "symlink", "hardlink"), default="copy")
    sp = add("list", cmd_list, "encoders available and artifacts cached")
    sp.add_argument("workspace", type=Path, nargs="?")
    sp = add("jobs", cmd_jobs, "background jobs of a workspace")
    sp.add_argument("workspace", type=Path)
    sp = add("doctor", cmd_doctor, "check a workspace and repair what can be repaired")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--repair", action="store_true")
    sp = add("backup", cmd_backup, "online backup of the label store")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("dest", type=Path)
    sp = add("restore", cmd_restore, "restore a backup into a workspace")
    sp.add_argument("backup", type=Path)
    sp.add_argument("workspace", type=Path)
    sp = add("submit", cmd_submit, "run a job in a background worker process")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("kind", choices=("pipeline", "embed", "map", "clusters", "suggest", "train"))
    sp.add_argument("--params", default=None, help="JSON parameters of the job")
    sp.add_argument("--if-needed", action="store_true", help="skip when results are current or a job runs")
    sp = add("worker", cmd_worker, "")  # internal: runs one job in this process
    sp.add_argument("workspace", type=Path)
    sp.add_argument("job", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "worker" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (StoreError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed work is kept and the next run resumes from it", file=sys.stderr)
        return 130
    return 0
