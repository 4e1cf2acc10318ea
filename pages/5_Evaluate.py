"""Evaluate: a run's metrics, calibration, clickable confusion matrix, the images behind each cell to review,
run comparison and the must-not-fail slice."""

import streamlit as st

from curation.ui import evalview, loaders, runs, widgets

st.set_page_config(page_title="Evaluate · Curation studio", page_icon="📊", layout="wide")
st.title("Evaluate")
ws = widgets.require_workspace()

all_runs = ws.store.runs()
done = runs.done_runs(all_runs)
if not done:
    st.info("No finished training run yet: train one on the Train page.")
    st.page_link("pages/4_Train.py", label="Train", icon=":material/model_training:")
    st.stop()

run_id = st.selectbox("Run", done, format_func=lambda r: evalview.run_label(all_runs, r), key="eval_run")
run = all_runs.loc[run_id]
metrics = run["metrics"]
task = metrics.get("task", ws.store.task)
older = [r for r in done if r < run_id]
evalview.recorded_metric_cards(metrics, all_runs.loc[older[0], "metrics"] if older else None, task=task)
st.caption(f"Recorded when run {run_id} trained: its {metrics.get('headline_split') or 'validation'} set, "
           "with the labels it trained on" + (f"; deltas vs run {older[0]}." if older else "."))

pred = None
with widgets.guard("loading predictions"):
    pred = loaders.predictions(ws, run_id)
if pred is None:
    st.stop()
pred_ids, probs = pred
classes = metrics.get("classes") or ws.store.class_names()[: probs.shape[1]]
which = st.radio("Evaluate on", list(runs.EVAL_SETS), format_func=runs.EVAL_SETS.get, horizontal=True,
                 key="eval_set")
ids, y, p = runs.eval_subset(pred_ids, probs, ws.store.single_labels(pred_ids), metrics, which)
if len(ids) == 0:
    st.info("No labelled samples in this set.")
    st.stop()
labels_now = y if task == "single" else ws.store.label_matrix(ids)[:, : p.shape[1]]
unknown, verified = "negative", None
if task == "multi":
    from curation.models.evaluate import UNKNOWN_AS, verified_rows

    unknown = st.radio("Unknown labels count as", list(UNKNOWN_AS), horizontal=True, key="eval_unknown",
                       format_func={"negative": "negatives (default)", "ignore": "left out"}.get)
    verified = verified_rows(ids, labels_now, ws.store.reviews())
ev = evalview.evaluation(ids, p, labels_now, task=task, names=classes, thresholds=metrics.get("thresholds"),
                         unknown=unknown, verified=verified)
changed = ws.store.last_event_id() - int(run["last_event_id"])
st.subheader(f"On {len(ids):,} samples with the current labels")
if changed:
    st.caption(f"{changed:,} label events since this run trained: these figures use today's labels.")
evalview.metric_cards(evalview.live_metrics(ev.report, task), lower_is_better=["ECE", "NLL"])
if task == "multi":
    evalview.multilabel_assumption(ev.report)

table_col, side_col = st.columns([3, 2])
with table_col:
    st.dataframe(ev.report["per_class"].round(3))
with side_col:
    if task == "single":
        st.plotly_chart(evalview.reliability_figure(ev.report["reliability"]), key="eval_reliability")
    else:
        st.caption("ReaL accuracy (top-1 is any of the image's labels) by number of labels per image")
        st.dataframe(ev.report["real_by_n_labels"].round(3), hide_index=True)
        st.caption("Per-class thresholds: " + ("the run's (tuned on validation)." if metrics.get("thresholds")
                                              else "0.5 (the run recorded none)."))

st.subheader("Confusion matrix")
st.caption("Click a cell, or choose it below, to open the images behind it."
           + (" Multi-label: an image whose top-1 class is none of its labels counts once per label."
              if task == "multi" else ""))
true_k, pred_k = evalview.cell_picker(ev.confusion, ev.names)
evalview.cell_review(ws, ev, true_k, pred_k, run_id=int(run_id))

st.subheader("Mistakes that were not mistakes")
evalview.not_mistakes_section(ws)

st.subheader("Compare two runs")
evalview.compare_section(ws, all_runs, done, default_b=int(run_id))

st.subheader("Must-not-fail slice")
evalview.pinned_section(ws, all_runs, done, run_id=int(run_id), pred=pred)
