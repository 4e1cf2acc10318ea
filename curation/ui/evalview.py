"""Evaluate-page pieces: a run judged on current labels, the clickable confusion map, reliability plot, sections."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from html import escape
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from curation.data.pins import pinned
from curation.data.workspace import Workspace
from curation.models import evaluate
from curation.models.runs import compare_runs
from curation.ui import actions, labels, loaders, runs, selection, widgets
from curation.ui.text import clean

K_CHART = "eval_confusion"  # plotly_chart selection state of the confusion map
K_TRUE = "eval_true"  # selectbox: true class of the chosen cell
K_PRED = "eval_pred"  # selectbox: predicted class of the chosen cell
K_CLICK = "eval_confusion_click"  # the last click copied into the selectboxes (later reruns keep the choice)
MISTAKES_QUEUE = "evaluate"  # verdicts on off-diagonal cells: reviewed model mistakes
AGREED_QUEUE = "evaluate_agreed"  # verdicts on diagonal cells (model and label agree): not mistakes
CELL_PAGE = 12
MAX_CELL_TEXT = 30  # classes above which the counts are not written in the cells
MAX_MAP_CLASSES = 40  # classes the confusion map draws at most (the selectboxes offer all)


# ---------------------------------------------------------------------- data
@dataclass
class Evaluation:
    """A run's predictions judged against the current labels on one evaluation set.

    Attributes
    ----------
    names : K class names (the run's probability columns).
    report : ``evaluate.classification_report`` (single) or ``evaluate.multilabel_report`` (multi).
    confusion : (K, K) int64, rows true class, columns top-1 prediction.
    pair_ids, pair_true, pair_pred : (P,) int64, one entry per count of ``confusion``: sample id, true
        class, top-1 class (P = M for single-label; see ``evaluate.multilabel_confusion_pairs``).
    pair_conf : (P,) float, the top-1 probability.
    """

    names: list[str]
    report: dict[str, Any]
    confusion: np.ndarray
    pair_ids: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    pair_conf: np.ndarray

    def cell(self, true_k: int, pred_k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, top-1 probabilities) of the samples behind one cell, most confident first."""
        pos = selection.confusion_cell_ids(np.arange(len(self.pair_ids)), self.pair_true, self.pair_pred, true_k,
                                           pred_k, confidence=self.pair_conf)
        return self.pair_ids[pos], np.asarray(self.pair_conf, np.float64)[pos]


def evaluation(ids: np.ndarray, probs: np.ndarray, y: np.ndarray, *, task: str, names: Sequence[str],
               thresholds: Sequence[float] | None = None, unknown: str = "negative",
               verified: np.ndarray | None = None) -> Evaluation:
    """Metrics, confusion matrix and cell contents of a run on labelled samples.

    Parameters
    ----------
    ids : (M,) int64 sample ids.
    probs : (M, K) float, the run's probabilities (softmax for single-label, sigmoid for multi-label).
    y : single-label: (M,) int class index in [0, K). Multi-label: (M, K) int8 label matrix.
    task : "single" or "multi" (the run's task).
    names : K class names.
    thresholds : (K,) per-class decision thresholds of a multi-label run (default 0.5).
    unknown, verified : multi-label only, see ``evaluate.multilabel_report`` (how unknown labels count; the images
        whose every label was reviewed, reported apart under ``report["verified"]``).
    """
    ids = np.asarray(ids, np.int64)
    probs = np.asarray(probs, np.float64)
    if task == "single":
        report = evaluate.classification_report(y, probs, names)
        rows, true_k, pred_k = np.arange(len(ids)), np.asarray(y, np.int64), report["y_pred"]
    else:
        report = evaluate.multilabel_report(y, probs, names, thresholds=thresholds, unknown=unknown,
                                            verified=verified)
        rows, true_k, pred_k = evaluate.multilabel_confusion_pairs(y, probs)
    confusion = evaluate.confusion_matrix(true_k, pred_k, probs.shape[1])
    return Evaluation(names=list(names), report=report, confusion=confusion, pair_ids=ids[rows], pair_true=true_k,
                      pair_pred=pred_k, pair_conf=probs.max(1)[rows])


def multilabel_assumption(report: dict[str, Any]) -> None:
    """State how unknown labels were counted, and the verified-subset figures that need no such assumption."""
    st.caption(f"Multi-label metrics: {report['assumption']}. Predicted {report['labels_per_image']:.2f} labels "
               f"per image, given {report['labels_per_image_given']:.2f}.")
    v = report.get("verified")
    if v is None:
        st.caption("Verified subset: no image here has every label reviewed yet (review images to get figures "
                   "with no assumption).")
    else:
        st.caption(f"Verified subset ({v['n']:,} images whose every label was reviewed, no assumption): mAP "
                   f"{v['mAP']:.3f}, micro-F1 {v['micro_f1']:.3f}, ReaL accuracy {v['real_accuracy']:.3f}.")


def live_metrics(report: dict[str, Any], task: str) -> dict[str, float]:
    """Display name -> value of the metrics recomputed on the current labels."""
    if task == "single":
        return {"Accuracy": report["accuracy"], "Balanced accuracy": report["balanced_accuracy"],
                "Macro-F1": report["macro_f1"], f"Top-{report['k']} accuracy": report["top_k"],
                "ECE": report["ece"], "NLL": report["nll"]}
    return {"mAP": report["mAP"], "Micro-F1": report["micro_f1"], "Macro-F1": report["macro_f1"],
            "ReaL accuracy": report["real_accuracy"], "Micro precision": report["micro_precision"],
            "Micro recall": report["micro_recall"]}


def run_label(all_runs: pd.DataFrame, run_id: int) -> str:
    """"Run 3 · head (linear) · cpu": id, kind (head, finetune, …), model kind from its config, device."""
    rec = all_runs.loc[run_id]
    cfg = rec["config"] if isinstance(rec["config"], dict) else {}
    detail = f" ({cfg['kind']})" if cfg.get("kind") else ""
    return f"Run {run_id} · {rec['kind']}{detail} · {rec['device']}"


def prediction_text(ids: np.ndarray, pred_ids: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    """"name (0.93)" of each sample's top-1 prediction by a run, or "not predicted".

    Parameters
    ----------
    ids : (M,) sample ids to describe.
    pred_ids : (N,) int64 ascending ids the run predicted; ``probs`` (N, K) follows them.
    classes : the run's K class names.
    """
    ids = np.asarray(ids, np.int64)
    pred_ids = np.asarray(pred_ids, np.int64)
    out = np.full(len(ids), "not predicted", dtype=object)
    if len(pred_ids) == 0:
        return out.tolist()
    pos = np.clip(np.searchsorted(pred_ids, ids), 0, len(pred_ids) - 1)
    found = pred_ids[pos] == ids
    p = np.asarray(probs)[pos[found]]
    top = p.argmax(1)
    out[found] = [f"{classes[k]} ({c:.2f})" for k, c in zip(top.tolist(), p[np.arange(len(p)), top].tolist())]
    return out.tolist()


def pinned_captions(pins: np.ndarray, matrix: np.ndarray, names: Sequence[str], pred_ids: np.ndarray,
                    probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    """"<labels> · <prediction> · right|wrong" for each pinned sample under one run ("—" when the sample is
    unlabelled or the run did not predict it).

    Parameters
    ----------
    pins : (M,) int64 pinned ids; ``matrix`` (M, K') their current label states, columns ``names``.
    pred_ids : (N,) int64 ascending ids the run predicted; ``probs`` (N, K) follows them, columns ``classes``
        (the run's classes: the first K of the store's, in the same order).
    """
    pins = np.asarray(pins, np.int64)
    k = min(matrix.shape[1], np.asarray(probs).shape[1])
    judged = np.isin(pins, pred_ids) & (np.asarray(matrix)[:, :k] == evaluate.POSITIVE).any(1)
    right = np.zeros(len(pins), bool)
    if judged.any():
        rows = np.searchsorted(pred_ids, pins[judged])
        right[judged] = evaluate.top1_correct(np.asarray(matrix)[judged, :k], np.asarray(probs)[rows, :k])
    verdict = np.where(judged, np.where(right, "right", "wrong"), "—")
    return [f"{lab} · {p} · {v}" for lab, p, v in
            zip(labels.label_text(matrix, names), prediction_text(pins, pred_ids, probs, classes), verdict)]


def label_change_counts(events: pd.DataFrame) -> pd.DataFrame:
    """Label events between two snapshots, counted by source: batches, events, samples touched."""
    if events.empty:
        return pd.DataFrame(columns=["batches", "events", "samples"], index=pd.Index([], name="source"))
    g = events.groupby("source")
    return pd.DataFrame({"batches": g["batch_id"].nunique(), "events": g.size(), "samples": g["sample_id"].nunique()})


def pinned_runs_table(all_runs: pd.DataFrame, run_ids: Sequence[int]) -> pd.DataFrame:
    """Each run's must-not-fail result as recorded when it trained (``metrics["pinned"]``).

    Columns: run, kind, pinned (samples it was judged on), accuracy, failed (ids, comma-separated),
    in_training (pinned samples that were in its training set, which flatter it).
    """
    rows = []
    for r in run_ids:
        p = all_runs.loc[r, "metrics"].get("pinned") or {}
        rows.append({"run": int(r), "kind": all_runs.loc[r, "kind"], "pinned": int(p.get("n", 0)),
                     "accuracy": p.get("accuracy"), "failed": ", ".join(map(str, p.get("failed_ids", []))),
                     "in_training": int(p.get("n_in_train", 0))})
    return pd.DataFrame(rows, columns=["run", "kind", "pinned", "accuracy", "failed", "in_training"])


# ---------------------------------------------------------------------- figures
def shown_classes(confusion: np.ndarray, *, limit: int = MAX_MAP_CLASSES) -> np.ndarray:
    """(n,) int64 ascending class indices the confusion map draws: all of them up to ``limit``, else the
    ``limit`` classes most involved in confusions (off-diagonal row + column counts, then support)."""
    c = np.asarray(confusion, np.int64)
    if c.shape[0] <= limit:
        return np.arange(c.shape[0])
    off = c.sum(0) + c.sum(1) - 2 * np.diag(c)
    return np.sort(np.lexsort((-c.sum(1), -off))[:limit]).astype(np.int64)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], *,
                     selected: tuple[int, int] | None = None) -> go.Figure:
    """Confusion heat map you can click: rows true class, columns predicted, counts in the cells.

    Heat maps return no selection to Streamlit, so a transparent square marker sits on every non-empty
    cell with ``customdata = [true_idx, pred_idx]`` (class indices into ``confusion``, read back by
    ``selection.confusion_click``). The colour is the share of the true class (row-normalised), so small
    confusions of big classes still show. Beyond ``MAX_MAP_CLASSES`` classes only those of
    :func:`shown_classes` are drawn. Class names are HTML-escaped (plotly renders a few tags).
    """
    c = np.asarray(confusion, np.int64)
    classes = shown_classes(c)
    n = len(classes)
    sub = c[np.ix_(classes, classes)]
    names = [escape(clean(class_names[k])) for k in classes.tolist()]
    share = sub / np.maximum(c.sum(1)[classes], 1)[:, None]
    height = max(320, 28 * n + 120)
    rows, cols = np.nonzero(sub)
    heat = go.Heatmap(z=share, x=np.arange(n), y=np.arange(n), colorscale="Blues", zmin=0, zmax=1, hoverinfo="skip",
                      text=sub if n <= MAX_CELL_TEXT else None, texttemplate="%{text}" if n <= MAX_CELL_TEXT else None,
                      colorbar={"title": {"text": "share of true class", "side": "right"}, "thickness": 12})
    cells = go.Scatter(x=cols, y=rows, mode="markers", customdata=np.c_[classes[rows], classes[cols]].tolist(),
                       showlegend=False, selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}},
                       marker={"symbol": "square", "size": float(np.clip(0.9 * (height - 120) / max(n, 1), 6, 60)),
                               "color": "rgba(0,0,0,0)"},
                       hovertext=[f"true {names[i]}<br>predicted {names[j]}<br>{sub[i, j]} samples"
                                  for i, j in zip(rows.tolist(), cols.tolist())],
                       hovertemplate="%{hovertext}<extra></extra>")
    fig = go.Figure([heat, cells])
    ticks = {"tickmode": "array", "tickvals": list(range(n)), "ticktext": names, "showgrid": False, "zeroline": False}
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, clickmode="event+select",
                      uirevision="confusion", plot_bgcolor="white",
                      xaxis={**ticks, "title": {"text": "predicted"}, "side": "bottom"},
                      yaxis={**ticks, "title": {"text": "true"}, "autorange": "reversed"})
    if selected is not None and set(selected) <= set(classes.tolist()):
        i, j = np.searchsorted(classes, selected).tolist()
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line={"color": "#d62728", "width": 3})
    return fig


def reliability_figure(bins: pd.DataFrame) -> go.Figure:
    """Reliability diagram from ``evaluate.reliability_bins``: accuracy per confidence bin (bars, sample
    counts written on them), the mean confidence of each bin, and the diagonal of perfect calibration."""
    full = bins[bins["count"] > 0]
    lo, hi = full["lo"].to_numpy(float), full["hi"].to_numpy(float)
    bars = go.Bar(x=(lo + hi) / 2, y=full["accuracy"], width=0.95 * (hi - lo), name="accuracy",
                  marker={"color": "#4c78a8"}, text=full["count"], texttemplate="%{text}", textposition="outside",
                  customdata=np.c_[lo, hi, full["confidence"], full["count"]],
                  hovertemplate="confidence %{customdata[0]:.2f}–%{customdata[1]:.2f}<br>mean confidence "
                                "%{customdata[2]:.3f}<br>accuracy %{y:.3f}<br>%{customdata[3]} samples<extra></extra>")
    conf = go.Scatter(x=full["confidence"], y=full["accuracy"], mode="markers", name="mean confidence",
                      marker={"color": "#f58518", "size": 8}, hoverinfo="skip")
    diag = go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", hoverinfo="skip",
                      line={"color": "#888", "dash": "dash"})
    fig = go.Figure([bars, conf, diag])
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10}, plot_bgcolor="white",
                      xaxis={"title": {"text": "confidence (top-1 probability)"}, "range": [0, 1]},
                      yaxis={"title": {"text": "accuracy"}, "range": [0, 1.12]},
                      legend={"orientation": "h", "y": 1.1}, bargap=0)
    return fig


# ---------------------------------------------------------------------- page sections
def metric_cards(values: Mapping[str, float], deltas: Mapping[str, float | None] | None = None, *,
                 lower_is_better: Sequence[str] = ()) -> None:
    """One ``st.metric`` per value ("—" for NaN), with its delta when given."""
    for col, (name, value) in zip(st.columns(len(values)), values.items()):
        delta = (deltas or {}).get(name)
        col.metric(name, "—" if value is None or np.isnan(value) else f"{value:.3f}",
                   delta=None if delta is None else f"{delta:+.3f}",
                   delta_color="inverse" if name in lower_is_better else "normal")


def recorded_metric_cards(metrics: dict[str, Any], previous: dict[str, Any] | None, *, task: str) -> None:
    """The headline metrics a run recorded when it trained, with deltas vs the previous run."""
    names = runs.MULTI_METRICS if task == "multi" else runs.METRICS
    recorded = runs.metric_deltas(metrics, previous, names=names)
    metric_cards({names[k]: v for k, (v, _) in recorded.items()}, {names[k]: d for k, (_, d) in recorded.items()},
                 lower_is_better=[names[k] for k in runs.LOWER_IS_BETTER if k in names])


def cell_picker(confusion: np.ndarray, names: Sequence[str]) -> tuple[int, int]:
    """The clickable confusion map and the two selectboxes (keyboard fallback), kept in sync.

    A new click on the map sets the selectboxes; choosing in the selectboxes moves the outlined cell.
    Starts on the largest off-diagonal cell.
    """
    k = len(names)
    click = selection.confusion_click(st.session_state.get(K_CHART))
    if click is None:  # cleared (or never clicked): the next click applies even on the same cell
        st.session_state.pop(K_CLICK, None)
    elif click != st.session_state.get(K_CLICK) and max(click) < k and min(click) >= 0:
        st.session_state[K_CLICK] = click
        st.session_state[K_TRUE], st.session_state[K_PRED] = click
    start = selection.worst_cell(confusion)
    for key, value in ((K_TRUE, start[0]), (K_PRED, start[1])):
        if st.session_state.get(key) not in range(k):
            st.session_state[key] = value
    chosen = (int(st.session_state[K_TRUE]), int(st.session_state[K_PRED]))
    if k > MAX_MAP_CLASSES:
        st.caption(f"The map shows the {MAX_MAP_CLASSES} of {k} classes most involved in confusions; the boxes "
                   "below reach every class.")
    st.plotly_chart(confusion_figure(confusion, names, selected=chosen), on_select="rerun", selection_mode="points",
                    key=K_CHART, config={"displaylogo": False})
    c1, c2 = st.columns(2)
    ti = c1.selectbox("True class", range(k), format_func=lambda i: clean(names[i]), key=K_TRUE)
    pj = c2.selectbox("Predicted class", range(k), format_func=lambda i: clean(names[i]), key=K_PRED)
    return int(ti), int(pj)


def cell_review(ws: Workspace, ev: Evaluation, true_k: int, pred_k: int, *, run_id: int) -> None:
    """The images behind one cell with their label, prediction and confidence, each with the review
    verdicts (one store batch when a label changes, one review row always) and Pin / Unpin."""
    ids, conf = ev.cell(true_k, pred_k)
    mistake = true_k != pred_k
    if mistake and len(ids):
        from curation.ui.beyond import contrast_panel

        with st.expander("What sets this cell apart from the correctly predicted images of its class"):
            contrast_panel(ws, ids, ev.cell(true_k, true_k)[0], key="eval_apart", what_a="this cell",
                           what_b="the correct ones")
    st.caption(f"{len(ids):,} images, most confident first."
               + ("" if mistake else " Model and label agree in this cell: verdicts here are recorded but do "
                                     "not count as reviewed mistakes."))
    if ws.store.task == "single":
        st.caption("Single-label workspace: “Both valid” records the review but keeps one label (switch the task "
                   "on the Home page, under “Task”, to keep both).")
    from curation.ui import grid

    grid.open_button(np.asarray(ids, np.int64), f"run {run_id}: true {ev.names[true_k]}, predicted "
                     f"{ev.names[pred_k]}", key="eval_open_grid")
    page = widgets.page_slice(len(ids), key="eval_cell_page", per_page=CELL_PAGE)
    shown, shown_conf = ids[page], conf[page]
    current = labels.label_text(ws.store.label_matrix(shown), ws.store.class_names())
    pins = set(pinned(ws).tolist())
    queue = MISTAKES_QUEUE if mistake else AGREED_QUEUE
    earlier = _latest_verdicts(ws.store.reviews(queue), run_id=int(run_id))
    for sid, label, c in zip(widgets.cards(ws, shown, columns=3, width=140, border=True), current,
                             shown_conf.tolist()):
        st.caption(f"#{sid} · label {widgets.md_escape(label)} · predicted {widgets.md_escape(ev.names[pred_k])} "
                   f"({c:.2f})"
                   + (f" · **reviewed: {actions.VERDICTS[earlier[sid]].lower()}**" if sid in earlier else ""))
        buttons = st.columns(2, gap="small")
        for k, (verdict, text) in enumerate(actions.VERDICTS.items()):
            if buttons[k % 2].button(text, key=f"verdict_{verdict}_{sid}", width="stretch",
                                     type="primary" if earlier.get(sid) == verdict else "secondary"):
                with widgets.guard("recording the review"):
                    batch = actions.record_verdict(ws, sid, verdict, predicted_idx=pred_k, run_id=int(run_id),
                                                   queue=queue, true_idx=true_k)
                    if batch is None:
                        st.toast(f"#{sid}: {text.lower()} (review recorded)")
                    else:
                        widgets.toast_batch(batch, f"#{sid}: {text.lower()}")
                    st.rerun()
        is_pinned = sid in pins
        if st.button("Unpin" if is_pinned else "Pin", key=f"pin_{sid}", icon=":material/push_pin:",
                     help="Must-not-fail slice: every later run reports whether it gets this image right."):
            with widgets.guard("pinning"):
                actions.pin_samples(ws, [sid], pin=not is_pinned)
                st.rerun()


def _latest_verdicts(reviews: pd.DataFrame, *, run_id: int) -> dict[int, str]:
    """Sample id -> the latest Evaluate verdict given for it on this run (reviews are ordered by id)."""
    if reviews.empty:
        return {}
    mine = reviews[(reviews["run_id"] == run_id) & reviews["verdict"].isin(list(actions.VERDICTS))]
    return dict(zip(mine["sample_id"].astype(int), mine["verdict"]))


def not_mistakes_section(ws: Workspace) -> None:
    """The share of reviewed model mistakes that were not the model's fault, per run and overall."""
    table = evaluate.review_outcomes(ws.store.reviews(MISTAKES_QUEUE), queue=MISTAKES_QUEUE)
    overall = table.loc["all"]
    if overall["reviewed"] == 0:
        st.caption("No model mistake reviewed yet: open an off-diagonal cell above and give each image a verdict.")
        return
    st.metric("Mistakes that were not mistakes", f"{overall['share']:.0%}",
              help="Label wrong, both valid or ambiguous, among reviewed model mistakes (latest verdict per image).")
    st.caption(f"{int(overall['not_mistakes'])} of {int(overall['reviewed'])} reviewed model mistakes were the "
               "label's fault, had two valid answers, or were ambiguous.")
    st.dataframe(table.rename(index=lambda r: "all runs" if r == "all" else f"run {r}"),
                 column_config={"share": st.column_config.NumberColumn("share", format="%.2f")})


@st.cache_resource(show_spinner="Comparing runs…", max_entries=4)
def _compare(_ws: Workspace, root: str, run_a: int, run_b: int) -> dict[str, Any]:
    """``runs.compare_runs`` plus label text: "was → now" of the relabelled samples between the snapshots,
    and the labels of the flipped samples at B's snapshot (what they were judged against). Runs and past
    events never change, so the pair of run ids is the key."""
    cmp = compare_runs(_ws, run_a, run_b)
    snap = {r: int(_ws.store.run(r)["last_event_id"]) for r in (run_a, run_b)}
    lo, hi = sorted(snap.values())
    rel = cmp["relabelled_ids"]
    names = _ws.store.class_names()
    was = labels.label_text(_ws.store.label_matrix(rel, upto_event=lo), names)
    now = labels.label_text(_ws.store.label_matrix(rel, upto_event=hi), names)
    cmp["relabel_text"] = [f"{a} → {b}" for a, b in zip(was, now)]
    for key in ("became_right", "became_wrong"):
        cmp[f"{key}_labels"] = labels.label_text(_ws.store.label_matrix(cmp[key], upto_event=snap[run_b]), names)
    return cmp


def compare_section(ws: Workspace, all_runs: pd.DataFrame, done: Sequence[int], *, default_b: int) -> None:
    """Pick runs A and B: metric deltas overall and per class, samples that flipped, label changes between."""
    if len(done) < 2:
        st.caption("Train a second run to compare two runs.")
        return
    fmt = partial(run_label, all_runs)
    older = [r for r in done if r < default_b]
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A (before)", done, index=done.index(older[0] if older else done[-1]), format_func=fmt,
                     key="eval_cmp_a")
    b = c2.selectbox("Run B (after)", done, index=done.index(default_b), format_func=fmt, key="eval_cmp_b")
    if a == b:
        st.info("Pick two different runs.")
        return
    with widgets.guard("comparing the runs"):
        _comparison(ws, all_runs, _compare(ws, str(ws.root), int(a), int(b)), int(a), int(b))


def _comparison(ws: Workspace, all_runs: pd.DataFrame, cmp: dict[str, Any], a: int, b: int) -> None:
    st.caption("Metric deltas (B − A) from each run's own validation report, with the labels each trained on.")
    left, right = st.columns(2)
    left.dataframe(cmp["overall"].round(4))
    right.dataframe(cmp["per_class"].round(4))
    n_shared = len(cmp["shared_val_ids"])
    if cmp["accuracy_a"] is not None:
        st.caption(f"On the {n_shared:,} validation samples both runs held out, judged against run B's labels: "
                   f"accuracy {cmp['accuracy_a']:.3f} → {cmp['accuracy_b']:.3f}.")
    rel = cmp["relabelled_ids"]
    label_now = labels.label_text(ws.store.label_matrix(rel), ws.store.class_names())
    pa, pb = loaders.predictions(ws, a), loaders.predictions(ws, b)
    classes = {r: all_runs.loc[r, "metrics"].get("classes", ws.store.class_names()) for r in (a, b)}
    fixed = np.intersect1d(cmp["became_right"], rel)
    tabs = st.tabs([f"Became right ({len(cmp['became_right'])})", f"Became wrong ({len(cmp['became_wrong'])})",
                    f"Label changes ({len(rel)} samples)"])
    for tab, key in zip(tabs[:2], ("became_right", "became_wrong")):
        with tab:
            ids = cmp[key]
            text_a = prediction_text(ids, *pa, classes[a])
            text_b = prediction_text(ids, *pb, classes[b])
            widgets.image_grid(ws, ids, [f"{lab} · A {x} · B {y}" for lab, x, y in
                                         zip(cmp[f"{key}_labels"], text_a, text_b)], key=f"eval_{key}_page")
    with tabs[2]:
        st.caption(f"What did the fixes buy: {len(fixed)} of the {len(cmp['became_right'])} samples that became "
                   "right were relabelled between the two runs' snapshots.")
        st.dataframe(label_change_counts(cmp["label_events"]))
        widgets.image_grid(ws, rel, [f"{t} (now {n})" for t, n in zip(cmp["relabel_text"], label_now)],
                           key="eval_relabelled_page")


def pinned_section(ws: Workspace, all_runs: pd.DataFrame, done: Sequence[int], *, run_id: int,
                   pred: tuple[np.ndarray, np.ndarray]) -> None:
    """The must-not-fail slice: its samples (with the chosen run's prediction), each run's result, unpin."""
    pins = pinned(ws)
    st.caption(f"{len(pins)} pinned samples. Pin images from the cells above (or in bulk on the Map page); "
               "a run reports on the samples pinned when it trained.")
    st.dataframe(pinned_runs_table(all_runs, done), hide_index=True,
                 column_config={"accuracy": st.column_config.NumberColumn("accuracy", format="%.3f")})
    if len(pins) == 0:
        return
    st.caption(f"Pinned samples, with what run {run_id} predicts for them today:")
    classes = all_runs.loc[run_id, "metrics"].get("classes", ws.store.class_names())
    widgets.image_grid(ws, pins, pinned_captions(pins, ws.store.label_matrix(pins), ws.store.class_names(), *pred,
                                                 classes), key="eval_pinned_page")
    c1, c2 = st.columns([3, 1])
    drop = c1.multiselect("Unpin", pins.tolist(), format_func=lambda s: f"#{s}", key="eval_unpin")
    c2.write("")
    if c2.button("Unpin", key="eval_unpin_apply", disabled=not drop):
        with widgets.guard("unpinning"):
            actions.pin_samples(ws, drop, pin=False)
            st.session_state.pop("eval_unpin", None)
            st.rerun()
