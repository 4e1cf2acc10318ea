"""``python -m curation contrast | guidelines | subset | transfer``: the issue-19 commands, registered by ``cli.py``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

Add = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _say(a: argparse.Namespace, text: str, data: Any) -> None:
    """``data`` as one JSON document with --json, else ``text`` (nothing with --quiet); as ``curation.cli.emit``."""
    if a.json:
        print(json.dumps(data, ensure_ascii=False, default=str))
    elif not a.quiet and text:
        print(text)


def _emb(ws: Workspace) -> Any:
    from curation.runtime.tasks import embeddings_or_raise

    return embeddings_or_raise(ws)


def _read_ids(spec: str | None, ws: Workspace) -> np.ndarray | None:
    """Sample ids from ``1,2,5``, ``@file`` (one id a line or a CSV with an ``id`` column), ``cluster:N``,
    ``class:NAME``, ``wrong:RUN`` / ``right:RUN`` (a run's mistakes / hits), ``cell:RUN:TRUE:PRED``; None = the rest."""
    if spec is None:
        return None
    if spec.startswith("@"):
        text = Path(spec[1:]).read_text()
        if Path(spec[1:]).suffix.lower() == ".csv":
            import pandas as pd

            return pd.read_csv(Path(spec[1:]))["id"].to_numpy(np.int64)
        return np.array([int(t) for t in text.split()], np.int64)
    kind, _, rest = spec.partition(":")
    if kind == "cluster":
        from curation.structure.cluster import load_clustering

        cl = load_clustering(ws, _emb(ws))
        if cl is None:
            raise ValueError("No clusters yet: run `python -m curation cluster WS` first.")
        return np.asarray(cl.ids, np.int64)[np.asarray(cl.labels) == int(rest)]
    if kind == "class":
        ids = ws.store.sample_ids()
        return ids[ws.store.label_matrix(ids)[:, ws.store.class_names().index(rest)] == 1]
    if kind in ("wrong", "right", "cell"):
        from curation.models.runs import load_predictions

        run, _, cell = rest.partition(":")
        pred = load_predictions(ws, int(run))
        if pred is None:
            raise ValueError(f"Run {run} has no predictions; see `python -m curation evaluate WS`.")
        ids, probs = np.asarray(pred[0], np.int64), np.asarray(pred[1])
        y = ws.store.single_labels(ids)
        p = probs.argmax(1)
        if kind == "cell":
            names = ws.store.class_names()
            t, _, q = cell.partition(":")
            return ids[(y == names.index(t)) & (p == names.index(q))]
        return ids[(y >= 0) & ((p != y) if kind == "wrong" else (p == y))]
    return np.array([int(t) for t in spec.replace(",", " ").split()], np.int64)


def cmd_contrast(a: argparse.Namespace) -> None:
    from curation.structure.contrast import contrast

    ws = Workspace.open(a.workspace)
    ga, gb = _read_ids(a.a, ws), _read_ids(a.b, ws)
    res = contrast(ws, _emb(ws), ga, gb, sources=a.sources.split(",") if a.sources != "auto" else "auto",
                   user_terms=a.term or (), top=a.top)
    data = {"n_a": res.n_a, "n_b": res.n_b, "notes": res.notes, "terms": res.table.to_dict("records"),
            "examples": {t: [e[0].tolist(), e[1].tolist()] for t, e in res.examples.items()}}
    text = "\n".join([f"A: {res.n_a} images, B: {res.n_b} images; AUROC > 0.5 = higher in A",
                      *[f"note: {n}" for n in res.notes],
                      res.table[["term", "source", "auroc", "direction"]].to_string(index=False, float_format="%.3f")])
    _say(a, text, data)


def cmd_guidelines(a: argparse.Namespace) -> None:
    from curation.labels.guidelines import class_guides, export_guidelines, set_note

    ws = Workspace.open(a.workspace)
    if a.note is not None:
        if not a.cls or len(a.cls) != 1:
            raise ValueError("--note needs exactly one --class NAME.")
        set_note(ws, ws.store.class_id(a.cls[0]), a.note)
        if a.dest is None:
            _say(a, "note saved", {"note_saved": a.cls[0]})
            return
    guides = class_guides(ws, _emb(ws), classes=a.cls, run_id=a.run)
    if a.dest is None:
        lines = []
        for g in guides:
            conf = ", ".join(f"{r.other} ({r.total})" for r in g.confusions.head(3).itertuples()) or "none recorded"
            lines.append(f"{g.name}: {g.n_labelled} labelled; typical {g.typical.tolist()}; confusions: {conf}; "
                         f"{len(g.worked)} worked examples")
        _say(a, "\n".join(lines), [{"class": g.name, "labelled": g.n_labelled, "typical": g.typical.tolist(),
                                    "confusions": g.confusions.to_dict("records"), "note": g.note,
                                    "worked": g.worked[["sample_id", "verdict"]].to_dict("records")} for g in guides])
        return
    out = export_guidelines(ws, guides, a.dest, fmt=a.format, overwrite=a.overwrite)
    _say(a, f"guidelines for {len(guides)} classes written to {out}", {"written": str(out), "classes": len(guides)})


def cmd_subset(a: argparse.Namespace) -> None:
    from curation.labels.subsets import workspace_subset, write_subset

    ws = Workspace.open(a.workspace)
    budget: int | float = float(a.budget) if "." in a.budget else int(a.budget)
    sub = workspace_subset(ws, _emb(ws), budget, scope=a.scope, hard_fraction=a.hard,
                           hard_source=a.hard_source, dedup_threshold=None if a.no_dedup else a.dedup,
                           k=a.k, within=a.within, balance=a.balance, seed=a.seed)
    dest = a.dest or ws.root / "exports" / f"subset-{len(sub.ids)}.csv"
    write_subset(sub, dest, ws=ws)
    _say(a, f"{len(sub.ids)} images over {sub.n_clusters} clusters ({sub.duplicates_removed} near-duplicates left "
            f"out) written to {dest}", {"written": str(dest), "n": int(len(sub.ids)), "clusters": sub.n_clusters,
                                        "duplicates_removed": sub.duplicates_removed, "config": sub.config})


def cmd_transfer(a: argparse.Namespace) -> None:
    from curation.core.progress import TqdmProgress
    from curation.models.transfer import advice, transfer_scores

    ws = Workspace.open(a.workspace)
    bar = None if a.quiet or a.json else TqdmProgress("transfer")
    try:
        table = transfer_scores(ws, encoders=a.encoder or None, sample=a.sample, seed=a.seed, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    tip = advice(table, ws.store.meta("encoder"))
    text = f"{table.attrs.get('n')} labelled images scored\n{table.to_string(float_format='%.3f')}" + (
        f"\n{tip}" if tip else "")
    _say(a, text, {"n": table.attrs.get("n"), "advice": tip,
                   "encoders": json.loads(table.reset_index().to_json(orient="records"))})


def register(add: Add, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the subcommands to ``python -m curation`` (``add(name, fn, help)`` returns the sub-parser, which
    carries the common ``--json`` / ``--quiet``); returns ``parser``."""
    ids_help = "ids: 1,2,3 | @file.txt | @file.csv (id column) | cluster:N | class:NAME | wrong:RUN | right:RUN | cell:RUN:TRUE:PRED"
    sp = add("contrast", cmd_contrast, "what sets group A apart from group B (default: the rest), in words")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("a", help=f"group A {ids_help}")
    sp.add_argument("b", nargs="?", default=None, help="group B, same forms (default every other embedded image)")
    sp.add_argument("--sources", default="auto", help="auto, or a comma list of attributes,imagenet,clip")
    sp.add_argument("--term", action="append", help="extra CLIP term (repeatable)")
    sp.add_argument("--top", type=int, default=15)
    sp = add("guidelines", cmd_guidelines, "per-class guideline cards: list, set a note, export HTML / Markdown")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("dest", type=Path, nargs="?", default=None, help="file (html) or folder (markdown) to write")
    sp.add_argument("--format", choices=("html", "markdown"), default="html")
    sp.add_argument("--class", dest="cls", action="append", help="only this class (repeatable)")
    sp.add_argument("--note", default=None, help="store this note on the one --class")
    sp.add_argument("--run", type=int, default=None, help="run whose confusions are shown (default newest)")
    sp.add_argument("--overwrite", action="store_true")
    sp = add("subset", cmd_subset, "a cluster-balanced subset without near-duplicates, as a manifest CSV")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("budget", help="number of images (100) or fraction (0.1)")
    sp.add_argument("dest", type=Path, nargs="?", default=None, help=".csv manifest or .txt id list")
    sp.add_argument("--scope", choices=("all", "labelled", "unlabelled"), default="all")
    sp.add_argument("--hard", type=float, default=0.0, help="share of the budget for the hardest images (0..1)")
    sp.add_argument("--hard-source", choices=("issues", "confidence"), default="issues")
    sp.add_argument("--dedup", type=float, default=0.95, help="near-duplicate cosine similarity (default 0.95)")
    sp.add_argument("--no-dedup", action="store_true")
    sp.add_argument("--k", type=int, default=None, help="clusters (default: from the budget)")
    sp.add_argument("--within", choices=("auto", "typical", "random"), default="auto",
                    help="how a cluster's share is filled: auto = its most typical image, then random")
    sp.add_argument("--balance", type=float, default=0.0,
                    help="after one image per cluster: 0 = the rest by cluster size (default), 1 = evenly")
    sp.add_argument("--seed", type=int, default=0)
    sp = add("transfer", cmd_transfer, "which encoder fits your labels (LogME, kNN, linear probe)")
    sp.add_argument("workspace", type=Path)
    sp.add_argument("--encoder", action="append", help="encoder to score (repeatable; default all available)")
    sp.add_argument("--sample", type=int, default=500, help="labelled images scored (default 500)")
    sp.add_argument("--seed", type=int, default=0)
    return parser
