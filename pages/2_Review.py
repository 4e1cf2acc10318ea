"""Review: one image at a time from a ranked queue of suggestions; accept, correct, skip or undo."""

import numpy as np
import streamlit as st

from curation.store import POSITIVE
from curation.ui import actions, labels, loaders, review, widgets

st.set_page_config(page_title="Review · Curation studio", page_icon="✅", layout="wide")
st.title("Review")
ws = widgets.require_workspace()

emb = None
with widgets.guard("loading embeddings"):
    emb = loaders.embeddings(ws)
sugg = widgets.optional(loaders.suggestions, ws, "suggestions") if emb is not None else None
if sugg is None:
    st.info("No suggestions yet: run the pipeline on the Home page.")
    st.page_link("app.py", label="Home", icon="🏠")
    st.stop()

ids = np.asarray(emb.ids, np.int64)
names = ws.store.class_names()
matrix = ws.store.label_matrix(ids)
kind = st.radio("Queue", list(labels.QUEUES), format_func=labels.QUEUES.get, horizontal=True, key="review_kind")
if kind == "issues":
    found = widgets.optional(loaders.issues, ws, "label-quality ranking")
    queue = labels.issue_queue(found, names) if found is not None else sugg.iloc[:0]
    sugg = queue  # accepting takes the ranking's suggested class
else:
    queue = labels.review_queue(ids, matrix, sugg, queue=kind)
queue = queue[~queue.index.isin(review.handled())]
st.caption(f"{len(queue):,} to review · {len(review.handled())} handled in this session")

if st.button("Undo last", key="review_undo", disabled=not review.handled()):
    with widgets.guard("undoing"):
        back = review.undo_last(ws)
        st.toast(f"Sample {back} is back in the queue")
        st.rerun()

if queue.empty:
    st.success("Nothing left in this queue.")
    st.stop()

sid = int(queue.index[0])
rec = queue.iloc[0]
row = int(np.flatnonzero(ids == sid)[0])
current = labels.label_text(matrix[row:row + 1], names)[0]

img_col, info_col = st.columns([3, 2])
with img_col:
    with widgets.guard("showing the image"):
        st.image(str(ws.resolve_image(sid)), width=360, caption=f"#{sid}")
with info_col:
    st.markdown("**Current label**")
    st.text(current)
    st.markdown("**Suggestion**")
    st.text(f"{rec['class_name']}  ·  confidence {rec['confidence']:.2f}  ·  {rec['source']}")
    a1, a2 = st.columns(2)
    if a1.button(f"Accept: {rec['class_name']}", type="primary", key="review_accept"):
        with widgets.guard("accepting"):
            review.mark(sid, actions.accept_suggestions(ws, [sid], sugg, source="suggestion"))
            st.rerun()
    if a2.button("Skip", key="review_skip"):
        review.mark(sid, None)
        st.rerun()
    choice = st.selectbox("Correct to", names, index=None, placeholder="Type a class…", key=f"review_fix_{sid}")
    if st.button("Correct", key="review_correct", disabled=choice is None):
        with widgets.guard("correcting"):
            review.mark(sid, actions.correct_label(ws, sid, choice))
            st.rerun()

labelled = (matrix == POSITIVE).any(axis=1)
near = labels.nearest_rows(emb.vectors, row, labelled, k=6)
if len(near):
    st.markdown("**Nearest labelled images**")
    near_text = labels.label_text(matrix[near], names)
    widgets.image_grid(ws, ids[near], near_text, key="review_near_page", width=110)
