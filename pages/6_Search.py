"""Search: images like a text prompt (OpenCLIP text tower) or like a chosen image (faiss neighbours)."""

import numpy as np
import streamlit as st

from curation.ui import jobpanel, labels, widgets

st.set_page_config(page_title="Search · Curation studio", layout="wide")
st.title("Search")
ws = widgets.require_workspace()

emb = jobpanel.require_embeddings(ws, "No embeddings yet: run the pipeline from the Home page first.")

text_tab, image_tab = st.tabs(["By text", "By image"])
hits = None
with text_tab:
    if not emb.has_text:
        st.info(f"Text search is off: the encoder in use ({widgets.md_escape(emb.encoder_name)}) has no text tower. "
                "Embed with OpenCLIP to search by prompt.")
    else:
        query = st.text_input("Describe what you are looking for", placeholder="a photo of a red dress",
                              key="search_text")
        if query:
            with widgets.guard("searching"):
                from curation.features.text import search_text
                hits = search_text(ws, emb, query, k=48)
with image_tab:
    ids = np.asarray(emb.ids, np.int64)
    sid = st.number_input("Sample id", min_value=int(ids.min()), max_value=int(ids.max()), value=int(ids.min()),
                          step=1, key="search_sample")
    if st.button("Find similar images", key="search_similar"):
        with widgets.guard("finding similar images"):
            from curation.features.text import similar_images
            st.image(str(ws.resolve_image(int(sid))), width=160, caption=f"#{int(sid)} (query)")
            hits = similar_images(emb, int(sid), k=48)

if hits is not None:
    found, scores = hits
    text = labels.label_text(ws.store.label_matrix(found), ws.store.class_names())
    widgets.image_grid(ws, found, [f"{t} · {s:.2f}" for t, s in zip(text, scores)], key="search_grid_page")
