"""Evaluate: a run's metrics, per-class table, confusion matrix, and the images behind each cell to review."""

import numpy as np
import streamlit as st

from curation.evaluate import classification_report
from curation.ui import actions, labels, loaders, mapview, runs, selection, widgets

st.set_page_config(page_title="Evaluate · Curation studio", page_icon="📊", layout="wide")
st.title("Evaluate")
ws = widgets.require_workspace()

all_runs = ws.store.runs()
done = runs.done_runs(all_runs)
if not done:
    st.info("No finished training run yet: train one on the Train page.")
    st.page_link("pages/3_Train.py", label="Train", icon="🏋️")
    st.stop()

run_id = st.selectbox("Run", done, format_func=lambda r: f"Run {r} · {all_runs.loc[r, 'config'].get('kind', '')} "
                                                          f"· {all_runs.loc[r, 'device']}", key="eval_run")
metrics = all_runs.loc[run_id, "metrics"]
older = [r for r in done if r < run_id]
previous = all_runs.loc[older[0], "metrics"] if older else None
cols = st.columns(len(runs.METRICS))
for col, (name, (value, delta)) in zip(cols, runs.metric_deltas(metrics, previous).items()):
    col.metric(runs.METRICS[name], "—" if np.isnan(value) else f"{value:.3f}",
               delta=None if delta is None else f"{delta:+.3f}",
               delta_color="inverse" if name in runs.LOWER_IS_BETTER else "normal")
st.caption("Headline metrics as recorded by the run (validation set, labels at training time)"
           + (f"; deltas vs run {older[0]}." if older else "."))

pred = None
with widgets.guard("loading predictions"):
    pred = loaders.predictions(ws, run_id)
if pred is None:
    st.stop()
pred_ids, probs = pred
names = ws.store.class_names()[: probs.shape[1]]
which = st.radio("Evaluate on", list(runs.EVAL_SETS), format_func=runs.EVAL_SETS.get, horizontal=True,
                 key="eval_set")
ids, y_true, p = runs.eval_subset(pred_ids, probs, ws.store.single_labels(pred_ids), metrics, which)
if len(ids) == 0:
    st.info("No labelled samples in this set.")
    st.stop()
report = classification_report(y_true, p, names)
st.caption(f"{len(ids):,} samples, current labels · accuracy {report['accuracy']:.3f}, "
           f"macro-F1 {report['macro_f1']:.3f}")

table_col, cm_col = st.columns([2, 3])
with table_col:
    st.dataframe(report["per_class"].round(3))
with cm_col:
    st.plotly_chart(mapview.confusion_figure(report["confusion"], names), key="eval_confusion")

st.subheader("Images behind a cell")
i0, j0 = selection.worst_cell(report["confusion"])
c1, c2 = st.columns(2)
ti = c1.selectbox("True class", range(len(names)), index=i0, format_func=names.__getitem__, key="eval_true")
pj = c2.selectbox("Predicted class", range(len(names)), index=j0, format_func=names.__getitem__, key="eval_pred")
conf = p.max(axis=1)
cell = selection.confusion_cell_ids(ids, y_true, report["y_pred"], ti, pj, confidence=conf)
st.caption(f"{len(cell):,} images, most confident first.")
if ws.store.task == "single":
    st.caption("Single-label workspace: “Both valid” records the review but keeps one label.")

page = widgets.page_slice(len(cell), key="eval_cell_page", per_page=12)
conf_of = dict(zip(ids.tolist(), conf.tolist()))
current = labels.label_text(ws.store.label_matrix(cell[page]), ws.store.class_names())
grid = st.columns(4)
for n, (sid, label) in enumerate(zip(cell[page].tolist(), current)):
    with grid[n % 4], st.container(border=True):
        paths, _ = widgets.thumbnails(ws, [sid])
        if paths:
            st.image(paths[0], width=140)
        st.caption(f"#{sid} · label {label} · predicted {names[pj]} ({conf_of[sid]:.2f})")
        for verdict, text in actions.VERDICTS.items():
            if st.button(text, key=f"verdict_{verdict}_{sid}"):
                with widgets.guard("recording the review"):
                    batch = actions.record_verdict(ws, sid, verdict, predicted_idx=pj, run_id=int(run_id))
                    if batch is None:
                        st.toast(f"#{sid}: {text.lower()} (review recorded)")
                    else:
                        widgets.toast_batch(batch, f"#{sid}: {text.lower()}")
                    st.rerun()
