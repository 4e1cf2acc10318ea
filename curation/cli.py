"""``python -m curation``: every pipeline step headless, with progress bars."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from curation.core.progress import TqdmProgress
from curation.data.atomic import atomic_write
from curation.data.store import StoreError
from curation.data.workspace import Workspace

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


SKIPPED_SHOWN = 50
"""Skipped files listed by `ingest` in the terminal (the rest are counted)."""


def cmd_ingest(a: argparse.Namespace) -> None:
    from curation.data.ingest import ingest

    ws = Workspace.create(a.workspace) if a.create else Workspace.open(a.workspace)
    report = _with_bar("ingest", ingest, ws, a.source, labels=a.labels, image_root=a.image_root)
    print(report.summary())
    if len(report.skipped):
        print("\nskipped:\n" + report.skipped.head(SKIPPED_SHOWN).to_string(index=False))
        if len(report.skipped) > SKIPPED_SHOWN:
            print(f"... and {len(report.skipped) - SKIPPED_SHOWN} more: the Home page's ingest form lists them all.")


def cmd_demo(a: argparse.Namespace) -> None:
    from curation.data.demo import build_demo

    ws = _with_bar("demo", build_demo, a.workspace, n=a.n, seed=a.seed)
    print(f"demo workspace ready at {ws.root}: {len(ws.store.sample_ids())} images")
    if a.pipeline:
        _run_pipeline(ws, encoder=a.encoder)


def _run_pipeline(ws: Workspace, *, encoder: str | None = None) -> None:
    from curation.runtime.tasks import JOBS

    _with_bar("pipeline", JOBS["pipeline"], ws, {"encoder": encoder})


def cmd_embed(a: argparse.Namespace) -> None:
    from curation.features.embed import embed_workspace
    ws = Workspace.open(a.workspace)
    emb = _with_bar("embed", embed_workspace, ws, a.encoder)
    print(f"{len(emb.ids)} embeddings ({emb.encoder_name}, {emb.vectors.shape[1]}-d) on {emb.device}")


def cmd_import_embeddings(a: argparse.Namespace) -> None:
    from curation.features.imported import import_embeddings
    ws = Workspace.open(a.workspace)
    emb = import_embeddings(ws, a.file, column=a.column, name=a.name)
    print(f"imported {len(emb.ids)} embeddings as {emb.encoder_name}")


def cmd_map(a: argparse.Namespace) -> None:
    from curation.runtime.tasks import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar("map", JOBS["map"], ws, {"method": a.method, "reproducible": not a.fast})
    print(f"map of {res['n']} points ({a.method})")


def cmd_cluster(a: argparse.Namespace) -> None:
    from curation.runtime.tasks import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar("clusters", JOBS["clusters"], ws, {"k": a.k, "method": a.method})
    print(f"{res['n_clusters']} clusters" + (f", {res['noise']} noise samples" if res["noise"] else ""))


def cmd_suggest(a: argparse.Namespace) -> None:
    from curation.labels.suggest import source_table
    from curation.runtime.tasks import JOBS, embeddings_or_raise

    ws = Workspace.open(a.workspace)
    res = _with_bar("suggest", JOBS["suggest"], ws, {})
    table = source_table(ws, embeddings_or_raise(ws))
    ens = "fitted" if table.attrs["fitted"] else table.attrs["reason"]
    ece = {k: "n/a" if table.attrs[k] is None else f"{table.attrs[k]:.3f}" for k in ("ece_mean", "ece_pooled")}
    print(f"suggestions for {res['n']} samples; ensemble {ens} (ECE on the labelled samples: mean of the sources "
          f"{ece['ece_mean']}, pooled {ece['ece_pooled']})")
    print(table.to_string())


def cmd_issues(a: argparse.Namespace) -> None:
    import numpy as np

    from curation.labels.issues import missing_labels
    from curation.runtime.tasks import embeddings_or_raise, run_issues

    ws = Workspace.open(a.workspace)
    df, res = _with_bar("issues", run_issues, ws, force=a.refit)
    fit = "refitted" if res["refitted"] else "fit reused"
    print(f"{res['n']} samples, {res['label_issues']} likely label errors ({fit}; {res['changed']} samples changed "
          f"label since the fit, {res['threshold']} allowed before the next refit)")
    names = np.array([*ws.store.class_names(), ""], object)  # index -1 (none) → ""
    errors = df[df["is_label_issue"]].nsmallest(a.top, "label_score")
    errors = errors.assign(given=names[errors["given"].to_numpy()], suggested=names[errors["suggested"].to_numpy()],
                           path=ws.store.samples().loc[errors.index, "path"])
    cols = ["given", "label_score", "suggested", "suggested_prob", "path"]
    print("\nlikely label errors:\n" + errors[cols].to_string())
    print("\noutliers:\n" + df.nsmallest(a.top, "outlier_score")[["outlier_score", "cluster_noise"]].to_string())
    print(f"\nnear-duplicates with conflicting labels: {int(df['duplicate_conflict'].sum())}")
    second = missing_labels(ws, embeddings_or_raise(ws)).head(a.top)
    print("\ncandidates for a second label:\n" + second.to_string(index=False))
    if a.csv:
        atomic_write(a.csv, df.to_csv)
        print(f"\nfull table written to {a.csv}")


def cmd_pipeline(a: argparse.Namespace) -> None:
    _run_pipeline(Workspace.open(a.workspace), encoder=a.encoder)


def cmd_train(a: argparse.Namespace) -> None:
    ws = Workspace.open(a.workspace)
    tune = {"encoder": a.encoder, "unfreeze_blocks": a.unfreeze, "lr": a.lr, "head_lr": a.head_lr,
            "batch_size": a.batch_size, "amp": a.amp, "augment": False if a.no_augment else None,
            "patience": a.patience, "num_workers": a.workers}
    if a.finetune or a.resume is not None:
        from curation.models.finetune import run_finetune

        if a.elr:
            raise ValueError("--elr applies to heads on embeddings; drop --finetune or --elr.")
        if a.kind is not None:
            raise ValueError("--kind chooses a head on embeddings; a fine-tune trains the tower with a linear head.")
        config = {k: v for k, v in {**tune, "epochs": a.epochs, "device": a.device}.items() if v is not None}
        run_id = _with_bar("fine-tune", run_finetune, ws, config, resume=False if a.resume is None else a.resume)
    else:
        from curation.models.runs import run_training

        if any(v is not None for v in tune.values()):
            raise ValueError("--encoder, --unfreeze, --lr, --head-lr, --batch-size, --amp, --no-augment, --patience "
                             "and --workers are fine-tune options: add --finetune.")
        head = {"kind": a.kind, "epochs": a.epochs, "device": a.device, "elr": a.elr or None}
        config = {k: v for k, v in head.items() if v is not None}
        run_id = _with_bar("train", run_training, ws, config)
    run = ws.store.run(run_id)
    m = run["metrics"]
    print(f"run {run_id} {run['status']} on {run['device']}: "
          f"accuracy {m.get('accuracy', float('nan')):.4f}, macro-F1 {m.get('macro_f1', float('nan')):.4f}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from curation.models.runs import latest_run

    ws = Workspace.open(a.workspace)
    run = ws.store.run(a.run) if a.run else latest_run(ws, kind=None)
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
    from curation.data.export import export

    ws = Workspace.open(a.workspace)
    path = export(ws, a.format, a.dest, link=a.link, drop_same_images=a.drop_same_images)
    print(f"wrote {path}")


def cmd_list(a: argparse.Namespace) -> None:
    from curation.features.encoders import list_encoders
    print("encoders:")
    for name in list_encoders():
        print(f"  {name}")
    if a.workspace:
        ws = Workspace.open(a.workspace)
        arts = ws.artifacts.list()
        print(f"cached artifacts in {ws.root / 'artifacts'}:")
        print(arts[["kind", "key"]].to_string(index=False) if len(arts) else "  none")


def cmd_doctor(a: argparse.Namespace) -> None:
    from curation.runtime.doctor import doctor

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
    from curation.runtime.doctor import restore

    restore(a.backup, a.workspace)
    print(f"restored {a.backup} into {a.workspace}")


def cmd_jobs(a: argparse.Namespace) -> None:
    from curation.runtime.liveness import refresh

    ws = Workspace.open(a.workspace)
    df = refresh(ws)
    print(df[["kind", "status", "progress", "message"]].to_string() if len(df) else "no jobs")


def cmd_submit(a: argparse.Namespace) -> None:
    from curation.runtime.jobs import active_jobs, submit

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
    from curation.features.embed import load_embeddings
    from curation.features.project import latest_map

    emb = load_embeddings(ws)
    return emb is not None and len(emb.ids) == len(ws.store.sample_ids()) and latest_map(ws, emb) is not None


def cmd_worker(a: argparse.Namespace) -> None:
    from curation.runtime.jobs import run_job, serve

    ws = Workspace.open(a.workspace)
    if a.job is None:
        serve(ws, idle=a.idle)
    else:
        run_job(ws, a.job)


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
    from curation.structure.cluster import METHODS

    sp.add_argument("--method", choices=METHODS, default="auto",
                    help="auto: k-means, hierarchical above 200,000 images or k >= 256; hdbscan: no k, noise = -1")
    sp = add("suggest", cmd_suggest, "compute label suggestions")
    sp.add_argument("workspace", type=Path)
    sp = add("issues", cmd_issues, "likely label errors, outliers, duplicates and second-label candidates")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--refit", action="store_true", help="refit the out-of-fold heads even if labels changed little")
    sp.add_argument("--top", type=int, default=10, help="rows shown per list (default 10)")
    sp.add_argument("--csv", type=Path, default=None, help="write the full per-sample table here")
    sp = add("pipeline", cmd_pipeline, "embed → map → clusters → suggestions")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--encoder", default=None)
    sp = add("train", cmd_train, "train a classifier head on the embeddings, or fine-tune the image tower")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--kind", choices=("linear", "mlp"), default=None, help="head on embeddings (default linear)")
    sp.add_argument("--epochs", type=int, default=None, help="at most (default: 100 for heads, 10 for a fine-tune)")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--elr", action="store_true",
                    help="noise-robust head training (early-learning regularisation; single-label)")
    sp.add_argument("--finetune", action="store_true", help="fine-tune the image tower plus a linear head")
    sp.add_argument("--encoder", default=None, help="fine-tune: encoder to tune (default: the active one)")
    sp.add_argument("--unfreeze", type=int, default=None, help="fine-tune: final blocks to train (0 = head only)")
    sp.add_argument("--lr", type=float, default=None, help="fine-tune: tower learning rate")
    sp.add_argument("--head-lr", type=float, default=None)
    sp.add_argument("--batch-size", type=int, default=None)
    sp.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=None, help="mixed precision")
    sp.add_argument("--no-augment", action="store_true", default=None)
    sp.add_argument("--patience", type=int, default=None)
    sp.add_argument("--workers", type=int, default=None, help="image-decoding processes (-1 = automatic)")
    sp.add_argument("--resume", type=int, nargs="?", const=True, default=None, metavar="RUN",
                    help="continue an unfinished fine-tune: RUN, or the newest one with these options")
    sp = add("evaluate", cmd_evaluate, "show a run's evaluation")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--run", type=int, default=None)
    sp = add("export", cmd_export, "write the curated labels")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("format", choices=("csv", "jsonl", "parquet", "hf", "imagefolder", "cleanlab"))
    sp.add_argument("dest", type=Path, nargs="?", default=None,
                    help="file or folder to write (default: a dated name under WS/exports/)")
    sp.add_argument("--link", choices=("copy", "symlink", "hardlink"), default="copy")
    sp.add_argument("--drop-same-images", action="store_true",
                    help="leave out images reviewed as the same picture as their near-duplicate")
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
    sp = add("submit", cmd_submit, "run a job in the workspace's background worker process")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("kind", choices=("pipeline", "embed", "map", "clusters", "suggest", "issues", "train",
                                     "finetune", "reembed"))
    sp.add_argument("--params", default=None, help="JSON parameters of the job")
    sp.add_argument("--if-needed", action="store_true", help="skip when results are current or a job runs")
    sp = add("worker", cmd_worker, "")  # internal: the warm worker (no JOB) or one job in this process
    sp.add_argument("workspace", type=Path)
    sp.add_argument("job", type=int, nargs="?", default=None)
    sp.add_argument("--idle", type=float, default=None, help="seconds without a job before the worker exits")
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
