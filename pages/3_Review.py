"""Review: ranked queues (suggestions, label errors, missing labels, duplicates, outliers) that measure themselves."""

import numpy as np
import streamlit as st

from curation.labels import queues
from curation.ui import filters, freshness, jobpanel, loaders, review, widgets

st.set_page_config(page_title="Review · Curation studio", page_icon="✅", layout="wide")
st.title("Review")
ws = widgets.require_workspace()

NO_SUGGESTIONS = "No suggestions yet: run the pipeline on the Home page."
emb = jobpanel.require_embeddings(ws, NO_SUGGESTIONS)
sugg = widgets.optional(loaders.suggestions, ws, "suggestions")
freshness.show(ws)
if sugg is None:
    jobpanel.stop_for_pipeline(ws, NO_SUGGESTIONS)

ids = np.asarray(emb.ids, np.int64)
names = ws.store.class_names()
matrix = ws.store.label_matrix(ids)
reviews = ws.store.reviews()
found = widgets.optional(loaders.issues, ws, "label-quality ranking")
missing = widgets.optional(loaders.missing_labels, ws, "missing-label candidates")
flt, keep = filters.page_bar(ws, ids, names=names, matrix=matrix, sugg=sugg, issues=found,
                             clusters=widgets.optional(loaders.clusters, ws, "clusters"), compact=True)
aligned = queues.align(ids, matrix, sugg, class_names=names)
built = queues.build_queues(aligned, found, missing, reviews=reviews)
if flt.active:  # the shared filter narrows every queue
    built = {k: q[q.index.isin(ids[keep])] for k, q in built.items()}
correct = queues.measured_correct(aligned, reviews)

kind = review.queue_picker(built)
top = st.columns([2, 1, 1])
balanced = top[1].toggle("Class-balanced order", key="review_balanced",
                         help="Round robin over the classes, so a large easy class does not crowd out the others.")
with top[2]:
    review.undo_button(ws)
queue = review.pending(built[kind], balanced=balanced)
top[0].caption(f"{len(queue):,} to review · {len(review.handled())} handled in this session · ordered by the "
               "expected value of a look")
review.measurement(aligned, reviews, sugg, queue=kind, correct=correct)
if kind == "errors":
    review.error_estimate(found)

if queue.empty:
    st.success("Nothing left in this queue.")
else:
    review.card(ws, queue.iloc[0], aligned, queue=kind, vectors=emb.vectors)

review.accept_all(ws, aligned, reviews=reviews, correct=correct,
                  clusters=widgets.optional(loaders.clusters, ws, "clusters"))
review.prompt_editor(ws, emb)
