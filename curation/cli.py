"""``python -m curation``: every step headless; ``--json`` output, exit codes 0 ok / 1 failure / 2 usage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from curation.core.progress import TqdmProgress, null_progress
from curation.data.disk import DISK_ERRORS, StoreError, check_writable, disk_message
from curation.data.workspace import DB_NAME, Workspace
from curation.runtime.engines import add_engine_args

log = logging.getLogger(__name__)
DEFAULT_DEMO = Path("demo-workspace")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Options that do not go together (exit code 2, like argparse's own usage errors)."""


class Failed(Exception):
    """A command that ran but did not fully succeed (exit code 1); its result was already printed."""


def _with_bar(a: argparse.Namespace, desc: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(..., progress=...)`` with a progress bar on a terminal only (never in pipes, --json or --quiet)."""
    if getattr(a, "quiet", False) or getattr(a, "json", False) or not sys.stderr.isatty():
        return fn(*args, progress=null_progress, **kwargs)
    bar = TqdmProgress(desc)
    try:
        return fn(*args, progress=bar, **kwargs)
    finally:
        bar.close()


def emit(a: argparse.Namespace, text: str, data: Any) -> None:
    """Print a result: ``data`` as one JSON document with --json, else ``text`` (nothing with --quiet)."""
    if getattr(a, "json", False):
        print(json.dumps(data, ensure_ascii=False, default=_jsonable))
    elif not getattr(a, "quiet", False) and text:
        print(text)


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "to_dict"):
        return v.to_dict("records") if hasattr(v, "columns") else v.to_dict()
    return str(v)


def _records(df: Any) -> list[dict]:
    """A DataFrame as JSON-ready records, its index as the first field."""
    import numpy as np

    out = df.reset_index() if df.index.name else df
    recs = out.to_dict("records")
    for r in recs:
        for k, v in r.items():
            if isinstance(v, float) and not np.isfinite(v):
                r[k] = None
    return recs


def cmd_init(a: argparse.Namespace) -> None:
    existed = (Path(a.workspace).expanduser() / DB_NAME).exists()
    ws = Workspace.create(a.workspace, task=a.task or "single")
    if existed and a.task and ws.store.task != a.task:
        if ws.store.last_event_id() == 0:
            ws.store.set_task(a.task)
        else:
            raise StoreError(f"{ws.root} is a {ws.store.task}-label workspace with labels already; `init --task "
                             f"{a.task}` does not convert it. Switch the task on the Home page (it checks what the "
                             "change means for your labels), or init a new folder.")
    emit(a, f"workspace ready at {ws.root} ({ws.store.task}-label)",
         {"workspace": str(ws.root), "task": ws.store.task, "created": not existed})


SKIPPED_SHOWN = 50
"""Skipped files listed by `ingest` in the terminal (the rest are counted)."""


def cmd_ingest(a: argparse.Namespace) -> None:
    from curation.data.ingest import ingest

    ws = Workspace.create(a.workspace) if a.create else Workspace.open(a.workspace)
    report = _with_bar(a, "ingest", ingest, ws, a.source, labels=a.labels, image_root=a.image_root, split=a.split)
    text = report.summary()
    if len(report.skipped):
        text += "\n\nskipped:\n" + report.skipped.head(SKIPPED_SHOWN).to_string(index=False)
        if len(report.skipped) > SKIPPED_SHOWN:
            text += (f"\n... and {len(report.skipped) - SKIPPED_SHOWN} more: the Home page's ingest form or "
                     "--json lists them all.")
    lost = report.skipped["reason"].astype(str).str.contains("label|class name", regex=True)
    emit(a, text, {"source": report.source, "root": report.root, "added": report.added, "existing": report.existing,
                   "vanished": report.vanished, "restored": report.restored, "classes_added": report.classes_added,
                   "labels_imported": report.labels_imported, "task": report.task, "task_changed": report.task_changed,
                   "notes": report.notes, "skipped": _records(report.skipped)})
    if lost.any() or (a.strict and len(report.skipped)):
        why = f"{int(lost.sum())} rows lost their labels" if lost.any() else f"{len(report.skipped)} rows skipped"
        raise Failed(f"{why} (listed above); the other images were added.")


def cmd_demo(a: argparse.Namespace) -> None:
    from curation.data.demo import build_demo

    ws = _with_bar(a, "demo", build_demo, a.workspace, n=a.n, seed=a.seed)
    res: dict[str, Any] = {"workspace": str(ws.root), "images": int(len(ws.store.sample_ids()))}
    if a.pipeline:
        res["pipeline"] = _run_pipeline(a, ws, encoder=a.encoder)
    emit(a, f"demo workspace ready at {ws.root}: {res['images']} images", res)


def _run_pipeline(a: argparse.Namespace, ws: Workspace, *, encoder: str | None = None, **engine: str | None) -> Any:
    from curation.runtime.tasks import JOBS

    return _with_bar(a, "pipeline", JOBS["pipeline"], ws, {"encoder": encoder, **engine})


def cmd_embed(a: argparse.Namespace) -> None:
    from curation.runtime.ray_jobs import embed_function
    ws = Workspace.open(a.workspace)
    emb = _with_bar(a, "embed", embed_function(a.engine, a.address), ws, a.encoder, retry_failed=a.retry_failed)
    emit(a, emb.summary(), emb.record())


def cmd_import_embeddings(a: argparse.Namespace) -> None:
    from curation.features.imported import import_embeddings
    ws = Workspace.open(a.workspace)
    emb = import_embeddings(ws, a.file, column=a.column, name=a.name)
    emit(a, f"imported {len(emb.ids)} embeddings as {emb.encoder_name}",
         {"n": int(len(emb.ids)), "encoder": emb.encoder_name})


def cmd_map(a: argparse.Namespace) -> None:
    from curation.runtime.tasks import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar(a, "map", JOBS["map"], ws, {"method": a.method, "reproducible": not a.fast})
    emit(a, f"map of {res['n']} points ({a.method})", res)


def cmd_cluster(a: argparse.Namespace) -> None:
    from curation.runtime.tasks import JOBS

    ws = Workspace.open(a.workspace)
    res = _with_bar(a, "clusters", JOBS["clusters"], ws, {"k": a.k, "method": a.method})
    emit(a, f"{res['n_clusters']} clusters" + (f", {res['noise']} noise samples" if res["noise"] else ""), res)


def cmd_suggest(a: argparse.Namespace) -> None:
    from curation.labels.suggest import source_table
    from curation.runtime.tasks import JOBS, embeddings_or_raise

    ws = Workspace.open(a.workspace)
    res = _with_bar(a, "suggest", JOBS["suggest"], ws, {})
    table = source_table(ws, embeddings_or_raise(ws))
    ens = "fitted" if table.attrs["fitted"] else table.attrs["reason"]
    ece = {k: "n/a" if table.attrs[k] is None else f"{table.attrs[k]:.3f}" for k in ("ece_mean", "ece_pooled")}
    emit(a, f"suggestions for {res['n']} samples; ensemble {ens} (ECE on the labelled samples: mean of the sources "
         f"{ece['ece_mean']}, pooled {ece['ece_pooled']})\n" + table.to_string(),
         {**res, "ensemble": ens, "ece_mean": table.attrs["ece_mean"], "ece_pooled": table.attrs["ece_pooled"],
          "sources": _records(table)})


def cmd_issues(a: argparse.Namespace) -> None:
    import numpy as np

    from curation.labels.issues import issue_summary, missing_labels
    from curation.runtime.tasks import embeddings_or_raise, run_issues

    ws = Workspace.open(a.workspace)
    df, res = _with_bar(a, "issues", run_issues, ws, force=a.refit)
    fit = "refitted" if res["refitted"] else "fit reused"
    names = np.array([*ws.store.class_names(), ""], object)  # index -1 (none) → ""
    errors = df[df["is_label_issue"]].nsmallest(a.top, "label_score")
    errors = errors.assign(given=names[errors["given"].to_numpy()], suggested=names[errors["suggested"].to_numpy()],
                           doubted=names[errors["doubted"].to_numpy()], path=ws.store.samples().loc[errors.index, "path"])
    cols = ["doubted" if ws.store.task == "multi" else "given", "label_score", "suggested", "suggested_prob", "path"]
    outliers = df.nsmallest(a.top, "outlier_score")[["outlier_score", "cluster_noise"]]
    second = missing_labels(ws, embeddings_or_raise(ws)).head(a.top)
    text = (f"{res['n']} samples, {res['label_issues']} likely label errors ({fit}; {res['changed']} samples changed "
            f"label since the fit, {res['threshold']} allowed before the next refit)\n\n{issue_summary(df).to_string()}"
            "\n\nlikely label errors:\n" + errors[cols].to_string()
            + "\n\noutliers:\n" + outliers.to_string()
            + f"\n\nnear-duplicates with conflicting labels: {int(df['duplicate_conflict'].sum())}"
            + "\n\ncandidates for a second label:\n" + second.to_string(index=False))
    if a.csv:
        from curation.data.atomic import atomic_write

        atomic_write(a.csv, lambda tmp: df.to_csv(tmp))
        text += f"\n\nfull table written to {a.csv}"
    emit(a, text, {**res, "label_errors": _records(errors[cols].rename_axis("sample_id")),
                   "outliers": _records(outliers.rename_axis("sample_id")),
                   "duplicate_conflicts": int(df["duplicate_conflict"].sum()),
                   "second_label_candidates": _records(second), "csv": str(a.csv) if a.csv else None})


def cmd_pipeline(a: argparse.Namespace) -> None:
    res = _run_pipeline(a, Workspace.open(a.workspace), encoder=a.encoder, engine=a.engine, address=a.address)
    emit(a, "pipeline done: " + ", ".join(str(k) for k in (res or {})), res)


def cmd_train(a: argparse.Namespace) -> None:
    ws = Workspace.open(a.workspace)
    tune = {"encoder": a.encoder, "unfreeze_blocks": a.unfreeze, "lr": a.lr, "head_lr": a.head_lr,
            "batch_size": a.batch_size, "amp": a.amp, "augment": False if a.no_augment else None,
            "patience": a.patience, "num_workers": a.workers}
    if a.finetune or a.resume is not None:
        from curation.models.finetune import run_finetune

        if a.elr:
            raise UsageError("--elr applies to heads on embeddings; drop --finetune or --elr.")
        if a.kind is not None:
            raise UsageError("--kind chooses a head on embeddings; a fine-tune trains the tower with a linear head.")
        config = {k: v for k, v in {**tune, "epochs": a.epochs, "device": a.device}.items() if v is not None}
        run_id = _with_bar(a, "fine-tune", run_finetune, ws, config, resume=False if a.resume is None else a.resume)
    else:
        from curation.models.runs import run_training

        if any(v is not None for v in tune.values()):
            raise UsageError("--encoder, --unfreeze, --lr, --head-lr, --batch-size, --amp, --no-augment, --patience "
                             "and --workers are fine-tune options: add --finetune.")
        head = {"kind": a.kind, "epochs": a.epochs, "device": a.device, "elr": a.elr or None}
        config = {k: v for k, v in head.items() if v is not None}
        run_id = _with_bar(a, "train", run_training, ws, config)
    run = ws.store.run(run_id)
    m = run["metrics"]
    if ws.store.task == "multi" or "mAP" in m:
        shown = f"mAP {m.get('mAP', float('nan')):.4f}, micro-F1 {m.get('micro_f1', float('nan')):.4f}"
    else:
        shown = f"accuracy {m.get('accuracy', float('nan')):.4f}, macro-F1 {m.get('macro_f1', float('nan')):.4f}"
    emit(a, f"run {run_id} {run['status']} on {run['device']}: {shown}",
         {"run": int(run_id), "status": run["status"], "device": run["device"], "task": ws.store.task,
          "metrics": {k: v for k, v in m.items() if isinstance(v, (int, float, str)) or v is None}})


def cmd_evaluate(a: argparse.Namespace) -> None:
    from curation.models.runs import METRIC_KEYS, latest_run

    ws = Workspace.open(a.workspace)
    run = ws.store.run(a.run) if a.run else latest_run(ws, kind=None)
    if run is None:
        raise StoreError("No finished training run: run `python -m curation train WS` first.")
    m = run["metrics"]
    lines = [f"run {run['id']} ({run['kind']}, labels up to event {run['last_event_id']}, {run['device']})"]
    lines += [f"  {k:>18}: {m[k]:.4f}" for k in METRIC_KEYS if isinstance(m.get(k), (int, float))]
    lines += [f"  ({m['assumption']})"] if m.get("assumption") else []
    if m.get("per_class"):
        import pandas as pd

        lines.append(pd.DataFrame(m["per_class"]).to_string(index=False))
    emit(a, "\n".join(lines), {"run": int(run["id"]), "kind": run["kind"], "last_event_id": run["last_event_id"],
                               "device": run["device"], "metrics": m})


def cmd_export(a: argparse.Namespace) -> None:
    if a.format == "cleanlab":
        from curation.labels.heldout import export_cleanlab

        ws = Workspace.open(a.workspace)
        path = _with_bar(a, "out-of-fold probabilities", export_cleanlab, ws, a.dest, overwrite=a.overwrite)
    else:
        from curation.data.export import export

        ws = Workspace.open(a.workspace)
        path = export(ws, a.format, a.dest, link=a.link, drop_same_images=a.drop_same_images, overwrite=a.overwrite,
                      include_unlabelled=not a.labelled_only)
    emit(a, f"wrote {path}", {"format": a.format, "path": str(path)})


def cmd_label(a: argparse.Namespace) -> None:
    from curation.api import apply_corrections, apply_labels, select

    ws = Workspace.open(a.workspace)
    if a.csv is not None:
        if a.ids or a.query or a.class_name:
            raise UsageError("--csv carries its own ids and labels: drop --ids, --query and the class name.")
        batch, n, skipped = apply_corrections(ws, a.csv, create=a.create, actor="cli")
        text = f"applied {n} corrections" + (f" ({len(skipped)} rows skipped)" if len(skipped) else "")
    else:
        if a.action is None or (a.action != "clear" and not a.class_name):
            raise UsageError("Give an action and a class: `label WS set CLASS --ids 3,4` (or `label WS clear "
                             "--ids ...`, or `label WS --csv corrections.csv`).")
        ids = [int(x) for x in a.ids.split(",") if x.strip()] if a.ids else None
        chosen = select(ws, ids=ids, query=a.query)
        batch = None if a.dry_run else apply_labels(ws, a.action, a.class_name, chosen, create=a.create, actor="cli")
        n, skipped = len(chosen), None
        text = f"{'would change' if a.dry_run else a.action} {n} images" + (f" ({a.class_name})" if a.class_name else "")
    if batch is not None:
        text += f" in batch {batch}; undo with `python -m curation undo {ws.root} {batch}`"
    elif not getattr(a, "dry_run", False):
        text += "; nothing changed"
    if skipped is not None and len(skipped):
        text += "\n\nskipped:\n" + skipped.to_string(index=False)
    emit(a, text, {"batch": batch, "rows": n, "skipped": _records(skipped) if skipped is not None else []})
    if skipped is not None and len(skipped):
        raise Failed(f"{len(skipped)} corrections were skipped (listed above); the others form batch {batch}.")


def cmd_undo(a: argparse.Namespace) -> None:
    ws = Workspace.open(a.workspace)
    new = ws.store.undo(a.batch, actor="cli")
    emit(a, f"undid batch {a.batch} (new batch {new})", {"undone": a.batch, "batch": new})


def cmd_labels(a: argparse.Namespace) -> None:
    from curation.api import sample_frame, select

    ws = Workspace.open(a.workspace)
    df = sample_frame(ws).drop(columns=["file"])
    if a.query:
        df = df.loc[select(ws, query=a.query)]
    emit(a, df.head(a.top).to_string() + (f"\n... {len(df) - a.top} more (--top, --json)" if len(df) > a.top else ""),
         _records(df))


def cmd_list(a: argparse.Namespace) -> None:
    from curation.features.encoders import list_encoders

    encoders = list(list_encoders())
    text = "encoders:\n" + "\n".join(f"  {n}" for n in encoders)
    data: dict[str, Any] = {"encoders": encoders}
    if a.workspace:
        ws = Workspace.open(a.workspace)
        arts = ws.artifacts.list()
        text += f"\ncached artifacts in {ws.root / 'artifacts'}:\n"
        text += arts[["kind", "key"]].to_string(index=False) if len(arts) else "  none"
        data["artifacts"] = _records(arts[["kind", "key"]]) if len(arts) else []
    emit(a, text, data)


def cmd_doctor(a: argparse.Namespace) -> None:
    from curation.runtime.doctor import doctor

    ws = Workspace.open(a.workspace)
    report = doctor(ws, repair=a.repair)
    emit(a, report.summary(), {"problems": report.problems, "repaired": report.repaired,
                               "problems_left": report.problems_left})
    if report.problems_left:
        raise Failed("problems are left: run `python -m curation doctor WS --repair`, or see the lines above.")


def cmd_backup(a: argparse.Namespace) -> None:
    ws = Workspace.open(a.workspace)
    ws.store.backup(a.dest)
    emit(a, f"backed up {ws.root / 'curation.db'} to {a.dest}", {"workspace": str(ws.root), "backup": str(a.dest)})


def cmd_restore(a: argparse.Namespace) -> None:
    from curation.runtime.doctor import restore

    workspace, backup = Path(a.workspace), Path(a.backup)
    if (backup / DB_NAME).exists() and not (workspace / DB_NAME).exists() and workspace.is_file():
        print(f"note: `restore BACKUP WS` is deprecated; the order is `restore WS BACKUP` like every other command "
              f"(read as restore {backup} {workspace}).", file=sys.stderr)
        workspace, backup = backup, workspace
    restore(backup, workspace)
    emit(a, f"restored {backup} into {workspace}", {"workspace": str(workspace), "backup": str(backup)})


def cmd_jobs(a: argparse.Namespace) -> None:
    from curation.runtime.liveness import refresh

    ws = Workspace.open(a.workspace)
    df = refresh(ws)
    cols = ["kind", "status", "progress", "message"]
    emit(a, df[cols].to_string() if len(df) else "no jobs", _records(df[cols]) if len(df) else [])


def cmd_submit(a: argparse.Namespace) -> None:
    from curation.runtime.jobs import active_jobs, submit

    ws = Workspace.open(a.workspace)
    if a.if_needed:
        busy = active_jobs(ws)
        if (busy["kind"] == a.kind).any():
            emit(a, f"a {a.kind} job is already running", {"job": None, "reason": "running"})
            return
        if a.kind == "pipeline" and _pipeline_done(ws):
            emit(a, "pipeline results are up to date", {"job": None, "reason": "up to date"})
            return
    try:
        params = json.loads(a.params) if a.params else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params is not JSON ({exc.msg}): e.g. --params '{{\"encoder\": \"...\"}}'.") from None
    job_id = submit(ws, a.kind, params)
    emit(a, f"submitted {a.kind} job {job_id}; follow it with `python -m curation jobs {ws.root}` or in the app",
         {"job": int(job_id), "kind": a.kind})


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
    p = argparse.ArgumentParser(prog="python -m curation", description="Image-dataset curation studio, headless. "
                                "Exit codes: 0 ok, 1 failure, 2 usage.")
    p.add_argument("-v", "--verbose", action="store_true")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as one JSON document")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no result text")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        kw: dict[str, Any] = {"help": help, "description": help} if help else {}
        sp = sub.add_parser(name, parents=[common], **kw)
        sp.set_defaults(func=fn)
        return sp

    sp = add("init", cmd_init, "create a workspace folder")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--task", choices=("single", "multi"), default=None,
                    help="single (default) or multi; an existing workspace with labels keeps its task")
    sp = add("ingest", cmd_ingest, "add images with their labels: an image folder (class folders, split folders), "
             "a manifest (.csv/.jsonl/.parquet), HF Parquet/Arrow/save_to_disk/imagefolder, COCO .json, FiftyOne")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("source", type=Path)
    sp.add_argument("--labels", default="auto", metavar="auto|folders|none|COLUMN",
                    help="where labels come from (default auto; a column name picks that column)")
    sp.add_argument("--image-root", type=Path, default=None, help="folder relative manifest paths start from")
    sp.add_argument("--split", choices=("train", "val", "test", ""), default=None, help="force this split")
    sp.add_argument("--create", action="store_true", help="create the workspace when missing")
    sp.add_argument("--strict", action="store_true", help="exit 1 when any file or row was skipped")
    sp = add("demo", cmd_demo, "build the demo workspace on real Fashion-MNIST images")
    sp.add_argument("workspace", type=Path, nargs="?", default=DEFAULT_DEMO)
    sp.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--pipeline", action="store_true", help="also embed, map, cluster and suggest")
    sp.add_argument("--encoder", default=None)
    sp = add("embed", cmd_embed, "embed the images (resumable)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--encoder", default=None, help="encoder name (see `list`); default OpenCLIP, else offline")
    sp.add_argument("--retry-failed", action="store_true", help="embed every image that failed before again")
    add_engine_args(sp)
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
    sp = add("pipeline", cmd_pipeline, "embed → map → clusters → suggestions → issues")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--encoder", default=None)
    add_engine_args(sp)
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
    from curation.data.export import FORMATS

    sp.add_argument("format", choices=FORMATS)
    sp.add_argument("dest", type=Path, nargs="?", default=None,
                    help="file or folder to write (default: a dated name under WS/exports/)")
    sp.add_argument("--link", choices=("copy", "symlink", "hardlink"), default="copy")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    sp.add_argument("--labelled-only", action="store_true", help="leave out images without a label")
    sp.add_argument("--drop-same-images", action="store_true",
                    help="leave out images reviewed as the same picture as their near-duplicate")
    sp = add("label", cmd_label, "change labels in one undoable batch: set / add / remove / reject / clear a class "
             "on ids, on a query, or from a corrections CSV")
    sp.add_argument("workspace", type=Path)
    from curation.api import ACTIONS

    sp.add_argument("action", nargs="?", choices=ACTIONS, default=None)
    sp.add_argument("class_name", nargs="?", default=None, metavar="CLASS")
    sp.add_argument("--ids", default=None, help="comma-separated sample ids")
    sp.add_argument("--query", default=None,
                    help="pandas query over path, split, label, labels, rejected, sha1, width, height, sample_id, "
                         "e.g. \"label == 'cat' and split == 'val'\"")
    sp.add_argument("--csv", type=Path, default=None,
                    help="corrections: columns sample_id (or path), label, optional action")
    sp.add_argument("--create", action="store_true", help="create classes that do not exist yet")
    sp.add_argument("--dry-run", action="store_true", help="say how many images would change, change nothing")
    sp = add("undo", cmd_undo, "undo a label batch (its inverse is a new batch)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("batch", type=int)
    sp = add("labels", cmd_labels, "the current labels of the images (ids, paths, splits, rejections)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--query", default=None, help="as for `label`")
    sp.add_argument("--top", type=int, default=50, help="rows shown as text (--json lists all)")
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
    sp = add("restore", cmd_restore, "restore a backup into a workspace (`restore WS BACKUP`)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("backup", type=Path)
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
    return __import__("curation.cli_extra", fromlist=["register"]).register(add, p)  # contrast, guidelines, subset…


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code: 0 ok, 1 failure, 2 usage (argparse's too), 130 interrupted."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "worker" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    as_json = getattr(args, "json", False)
    try:
        check_writable(args.command, getattr(args, "workspace", None), repair=getattr(args, "repair", False))
        args.func(args)
    except UsageError as exc:
        _error(as_json, exc, "usage")
        return EXIT_USAGE
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (StoreError, FileNotFoundError, ValueError, RuntimeError, *DISK_ERRORS) as exc:  # read-only, full: 1 line
        print(said, file=sys.stderr) if (said := disk_message(exc)) else _error(as_json, exc, type(exc).__name__)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted; completed work is kept and the next run resumes from it", file=sys.stderr)
        return 130
    return EXIT_OK


def _error(as_json: bool, exc: Exception, kind: str) -> None:
    print(f"error: {exc}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": str(exc), "kind": kind}, ensure_ascii=False))
