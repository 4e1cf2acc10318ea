"""Per-class guideline cards for annotators: typical examples, boundaries, confusions, worked verdicts, notes; export."""

from __future__ import annotations

import base64
import html
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

NOTE_PREFIX = "guideline_note:"
"""Store meta key of a class's note: ``guideline_note:<class id>`` (the id survives a rename)."""
WORKED_VERDICTS = ("both_valid", "ambiguous", "out_of_vocabulary", "label_wrong", "model_wrong", "both_wrong")
"""Review verdicts (``curation.core.vocab.VERDICTS``) shown as worked examples, in this order."""
VERDICT_TEXT = {"both_valid": "Both labels are valid", "ambiguous": "Ambiguous: fits more than one class or none",
                "out_of_vocabulary": "Out of vocabulary: none of the classes", "label_wrong": "The label was wrong",
                "model_wrong": "The model was wrong; the label stands",
                "both_wrong": "Both the label and the model were wrong"}
FORMATS = ("html", "markdown")
MAX_NOTE = 20_000
PAIR_CAP = 4000
"""Members per class compared pairwise for the boundary (seeded sample above it)."""


class GuidelineError(ValueError):
    """Guidelines that cannot be built or written; the message says what to do."""


@dataclass
class Boundary:
    """This class against one class it is confused with: pairs of nearest images across the boundary.

    Attributes
    ----------
    other : name of the other class; count : confusions between the two in the latest run (both directions).
    ours, theirs : (P,) int64 sample ids, pair i = (ours[i], theirs[i]), closest pair first.
    similarity : (P,) float cosine similarity of each pair.
    """

    other: str
    count: int
    ours: np.ndarray
    theirs: np.ndarray
    similarity: np.ndarray


@dataclass
class ClassGuide:
    """Everything an annotator needs about one class."""

    class_id: int
    name: str
    n_labelled: int
    typical: np.ndarray
    boundaries: list[Boundary]
    confusions: pd.DataFrame
    worked: pd.DataFrame
    note: str
    run_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- notes (store meta, one transaction each)
def get_note(ws: Any, class_id: int) -> str:
    """The user's note on a class ("" when none)."""
    return ws.store.meta(f"{NOTE_PREFIX}{int(class_id)}", "") or ""


def set_note(ws: Any, class_id: int, text: str) -> None:
    """Store the user's note on a class (one transactional write; "" clears it)."""
    if int(class_id) not in set(ws.store.classes().index.tolist()):
        raise GuidelineError(f"No class with id {class_id}; see `python -m curation guidelines WS --list`.")
    text = str(text)
    if len(text) > MAX_NOTE:
        raise GuidelineError(f"A note holds at most {MAX_NOTE} characters ({len(text)} given); shorten it.")
    ws.store.set_meta(f"{NOTE_PREFIX}{int(class_id)}", text)


# ---------------------------------------------------------------------- the cards
def confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts of label i predicted as j, i != j (diagonal zeroed)."""
    t = np.asarray(y_true, np.int64)
    p = np.asarray(y_pred, np.int64)
    ok = (t >= 0) & (p >= 0)
    m = np.bincount(t[ok] * n_classes + p[ok], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    np.fill_diagonal(m, 0)
    return m


def nearest_pairs(a: np.ndarray, b: np.ndarray, *, n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` closest (row of a, row of b) pairs, each row of ``a`` used once (its nearest b).

    Parameters
    ----------
    a : (Na, D), b : (Nb, D) float32 L2-normalised.

    Returns
    -------
    rows_a, rows_b : (P,) int64; similarity : (P,) float32, best first.
    """
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    s = a @ b.T
    best_b = s.argmax(1)
    best = s[np.arange(len(a)), best_b]
    order = np.argsort(-best, kind="stable")[:n]
    return order.astype(np.int64), best_b[order].astype(np.int64), best[order].astype(np.float32)


def class_guides(ws: Any, emb: Any, *, classes: Sequence[str] | None = None, n_typical: int = 6,
                 n_boundary: int = 4, max_confused: int = 3, run_id: int | None = None, seed: int = 0) -> list[ClassGuide]:
    """Guideline cards for the workspace's classes (default all).

    Parameters
    ----------
    ws : Workspace; emb : its Embeddings (ids (N,), vectors (N, D) L2-normalised).
    classes : class names to build (default every class).
    n_typical : medoids shown per class; n_boundary : pairs shown per confused class.
    max_confused : confused classes shown per class (the most frequent in the run; without a run, the
        classes whose centroids are nearest).
    run_id : the run whose predictions give the confusions (default the newest finished head or fine-tune).

    Returns
    -------
    One ClassGuide per class, in class-id order.
    """
    from curation.data.store import POSITIVE
    from curation.structure.cluster import medoids

    table = ws.store.classes()
    names = table["name"].tolist()
    cids = table.index.to_numpy(np.int64)
    if classes is not None:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise GuidelineError(f"Unknown class(es) {unknown}; classes are {names}.")
    ids = np.asarray(emb.ids, np.int64)
    M = ws.store.label_matrix(ids)
    pos = M == POSITIVE
    X = np.asarray(emb.vectors, np.float32)
    K = len(names)
    run_id = run_id if run_id is not None else ws.store.newest_run_id(kinds=("head", "finetune"))
    conf = np.zeros((K, K), np.int64)
    if run_id is not None:
        from curation.models.runs import load_predictions

        pred = load_predictions(ws, run_id)
        if pred is not None:
            pids, probs = np.asarray(pred[0], np.int64), np.asarray(pred[1], np.float32)
            rows = np.searchsorted(ids, pids)
            ok = (rows < len(ids)) & (ids[np.minimum(rows, len(ids) - 1)] == pids) if len(ids) else rows < 0
            y_true = np.full(len(pids), -1, np.int64)
            single = pos[rows[ok]]
            y_true[ok] = np.where(single.sum(1) == 1, single.argmax(1), -1)
            conf = confusion_pairs(y_true, probs.argmax(1), K)
    cents = np.zeros((K, X.shape[1]), np.float32)
    counts = pos.sum(0)
    for k in range(K):  # over classes
        if counts[k]:
            c = X[pos[:, k]].mean(0)
            cents[k] = c / max(float(np.linalg.norm(c)), 1e-12)
    reviews = ws.store.reviews()
    rng = np.random.default_rng(seed)
    out = []
    for k in range(K):  # over classes
        if classes is not None and names[k] not in classes:
            continue
        members = np.flatnonzero(pos[:, k])
        if len(members) > PAIR_CAP:
            members = np.sort(rng.choice(members, PAIR_CAP, replace=False))
        typical = ids[members[medoids(X[members], n=n_typical, seed=seed)]] if len(members) else np.zeros(0, np.int64)
        both = conf[k] + conf[:, k]
        if both.any():
            others = [j for j in np.argsort(-both, kind="stable") if both[j] > 0][:max_confused]
        else:  # no run: the classes nearest in embedding space
            sims = cents @ cents[k]
            sims[k] = -np.inf
            sims[counts == 0] = -np.inf
            others = [j for j in np.argsort(-sims, kind="stable") if np.isfinite(sims[j])][:max_confused]
        bounds = []
        for j in others:  # a few confused classes per class
            theirs = np.flatnonzero(pos[:, j] & ~pos[:, k])
            if len(theirs) > PAIR_CAP:
                theirs = np.sort(rng.choice(theirs, PAIR_CAP, replace=False))
            mine = np.setdiff1d(members, theirs)
            ra, rb, s = nearest_pairs(X[mine], X[theirs], n=n_boundary)
            bounds.append(Boundary(other=names[j], count=int(both[j]), ours=ids[mine[ra]], theirs=ids[theirs[rb]],
                                   similarity=s))
        confusions = pd.DataFrame({"other": [names[j] for j in range(K) if j != k and (conf[k, j] or conf[j, k])],
                                   "labelled_this_predicted_other": [int(conf[k, j]) for j in range(K)
                                                                     if j != k and (conf[k, j] or conf[j, k])],
                                   "labelled_other_predicted_this": [int(conf[j, k]) for j in range(K)
                                                                     if j != k and (conf[k, j] or conf[j, k])]})
        if len(confusions):
            confusions["total"] = confusions.iloc[:, 1] + confusions.iloc[:, 2]
            confusions = confusions.sort_values("total", ascending=False, kind="stable").reset_index(drop=True)
        out.append(ClassGuide(class_id=int(cids[k]), name=names[k], n_labelled=int(counts[k]), typical=typical,
                              boundaries=bounds, confusions=confusions,
                              worked=_worked(reviews, ids[pos[:, k]]), note=get_note(ws, int(cids[k])),
                              run_id=run_id))
    return out


def _worked(reviews: pd.DataFrame, class_ids: np.ndarray, *, per_verdict: int = 4) -> pd.DataFrame:
    """Latest review verdict per sample among this class's images, kept when it is a worked-example verdict."""
    cols = ["sample_id", "verdict", "queue", "time"]
    if reviews is None or reviews.empty:
        return pd.DataFrame(columns=cols)
    r = reviews[reviews["sample_id"].isin(class_ids)].sort_index().drop_duplicates("sample_id", keep="last")
    r = r[r["verdict"].isin(WORKED_VERDICTS)]
    r = r.assign(order=r["verdict"].map({v: i for i, v in enumerate(WORKED_VERDICTS)}))
    r = r.sort_values(["order", "time"], ascending=[True, False], kind="stable").groupby("verdict").head(per_verdict)
    return r[cols].reset_index(drop=True)


# ---------------------------------------------------------------------- export
def _thumb_bytes(ws: Any, sample_id: int) -> bytes | None:
    from curation.data.images import thumbnail_path

    try:
        return Path(thumbnail_path(ws, int(sample_id))).read_bytes()
    except Exception as exc:  # noqa: BLE001 - an unreadable image is left out of the export, not fatal
        log.warning("guidelines: no thumbnail for sample %s (%s)", sample_id, exc)
        return None


def _mime(data: bytes) -> str:
    return "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/webp" if data[8:12] == b"WEBP" else "image/jpeg"


def _md(text: Any) -> str:
    """User text made inert in Markdown (and in the HTML Markdown may carry)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~&])", r"\\\1", str(text))


def render_html(ws: Any, guides: Sequence[ClassGuide], *, title: str = "Labelling guidelines") -> str:
    """One self-contained HTML document (thumbnails inlined as base64; every user text HTML-escaped)."""
    e = html.escape
    cache: dict[int, str] = {}

    def img(sid: int, caption: str = "") -> str:
        if sid not in cache:
            data = _thumb_bytes(ws, sid)
            cache[sid] = "" if data is None else f"data:{_mime(data)};base64,{base64.b64encode(data).decode()}"
        src = cache[sid]
        if not src:
            return f'<figure class="missing">#{int(sid)} (unreadable)</figure>'
        return f'<figure><img src="{src}" alt="sample {int(sid)}"><figcaption>#{int(sid)} {e(caption)}</figcaption></figure>'

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}figure{display:inline-block;"
             "margin:4px;text-align:center;font-size:11px}img{width:112px;height:112px;object-fit:contain;"
             "border:1px solid #ccc}.pair{display:inline-block;border:1px solid #ddd;margin:4px;padding:2px}"
             "section{border-top:2px solid #444;margin-top:2em}pre{white-space:pre-wrap;background:#f6f6f6;"
             "padding:.5em}</style></head><body>",
             f"<h1>{e(title)}</h1><p>Generated {e(time.strftime('%Y-%m-%d %H:%M'))}; "
             f"{len(guides)} classes.</p><ul>"]
    parts += [f'<li><a href="#c{g.class_id}">{e(g.name)}</a> ({g.n_labelled} labelled)</li>' for g in guides]
    parts.append("</ul>")
    for g in guides:
        parts.append(f'<section id="c{g.class_id}"><h2>{e(g.name)}</h2><p>{g.n_labelled} labelled images.</p>')
        if g.note:
            parts.append(f"<h3>Note</h3><pre>{e(g.note)}</pre>")
        parts.append("<h3>Typical examples</h3><div>" + "".join(img(int(s)) for s in g.typical) + "</div>")
        if g.boundaries:
            parts.append("<h3>Boundaries</h3>")
            for b in g.boundaries:
                what = f"confused {b.count} times in run {g.run_id}" if b.count else "nearest class"
                parts.append(f"<h4>{e(g.name)} | {e(b.other)} ({e(what)})</h4><div>")
                parts += [f'<span class="pair">{img(int(a), g.name)}{img(int(t), b.other)}</span>'
                          for a, t in zip(b.ours, b.theirs)]
                parts.append("</div>")
        if len(g.confusions):
            parts.append("<h3>Common confusions</h3><table><tr><th>other class</th><th>labelled this, predicted "
                         "other</th><th>labelled other, predicted this</th></tr>")
            parts += [f"<tr><td>{e(r.other)}</td><td>{int(r.labelled_this_predicted_other)}</td>"
                      f"<td>{int(r.labelled_other_predicted_this)}</td></tr>" for r in g.confusions.itertuples()]
            parts.append("</table>")
        if len(g.worked):
            parts.append("<h3>Worked examples (reviewers' verdicts)</h3>")
            for verdict, grp in g.worked.groupby("verdict", sort=False):
                parts.append(f"<h4>{e(VERDICT_TEXT.get(str(verdict), str(verdict)))}</h4><div>"
                             + "".join(img(int(s)) for s in grp["sample_id"]) + "</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def render_markdown(ws: Any, guides: Sequence[ClassGuide], folder: Path, *,
                    title: str = "Labelling guidelines") -> dict[Path, bytes | str]:
    """The Markdown export as {path: content}: ``README.md`` plus ``images/<id>.<ext>`` (user text escaped)."""
    files: dict[Path, bytes | str] = {}

    def img(sid: int, caption: str = "") -> str:
        data = _thumb_bytes(ws, sid)
        if data is None:
            return f"#{int(sid)} (unreadable)"
        ext = {"image/png": "png", "image/webp": "webp"}.get(_mime(data), "jpg")
        rel = Path("images") / f"{int(sid)}.{ext}"
        files[folder / rel] = data
        return f"![sample {int(sid)}]({rel.as_posix()})"

    lines = [f"# {_md(title)}", "", f"{len(guides)} classes.", ""]
    for g in guides:
        lines += [f"## {_md(g.name)}", "", f"{g.n_labelled} labelled images.", ""]
        if g.note:
            lines += ["### Note", "", *[f"> {_md(ln)}" for ln in g.note.splitlines()], ""]
        lines += ["### Typical examples", "", " ".join(img(int(s)) for s in g.typical), ""]
        for b in g.boundaries:
            lines += [f"### Boundary: {_md(g.name)} \\| {_md(b.other)}", "",
                      f"| {_md(g.name)} | {_md(b.other)} | similarity |", "|---|---|---|"]
            lines += [f"| {img(int(a))} | {img(int(t))} | {float(s):.2f} |"
                      for a, t, s in zip(b.ours, b.theirs, b.similarity)]
            lines.append("")
        if len(g.confusions):
            lines += ["### Common confusions", "", "| other class | labelled this, predicted other | "
                      "labelled other, predicted this |", "|---|---|---|"]
            lines += [f"| {_md(r.other)} | {int(r.labelled_this_predicted_other)} | "
                      f"{int(r.labelled_other_predicted_this)} |" for r in g.confusions.itertuples()]
            lines.append("")
        for verdict, grp in g.worked.groupby("verdict", sort=False) if len(g.worked) else []:
            lines += [f"### Worked example: {_md(VERDICT_TEXT.get(str(verdict), str(verdict)))}", "",
                      " ".join(img(int(s)) for s in grp["sample_id"]), ""]
    files[folder / "README.md"] = "\n".join(lines)
    return files


def export_guidelines(ws: Any, guides: Sequence[ClassGuide], dest: Path | str, *, fmt: str = "html",
                      title: str = "Labelling guidelines", overwrite: bool = False) -> Path:
    """Write the cards: ``html`` = one self-contained file, ``markdown`` = a folder (README.md + images/).

    Every file goes through ``atomic_write``. Returns the file or folder written."""
    from curation.data.atomic import atomic_write

    if fmt not in FORMATS:
        raise GuidelineError(f"Unknown guideline format {fmt!r}; use one of {list(FORMATS)}.")
    dest = Path(dest)
    if fmt == "html":
        if dest.exists() and not overwrite:
            raise GuidelineError(f"{dest} exists; pass overwrite=True (CLI --overwrite) or pick another name.")
        atomic_write(dest, render_html(ws, guides, title=title))
        return dest
    if (dest / "README.md").exists() and not overwrite:
        raise GuidelineError(f"{dest} already holds guidelines; pass overwrite=True (CLI --overwrite).")
    for path, content in render_markdown(ws, guides, dest, title=title).items():
        atomic_write(path, content)
    return dest
