"""Search: images like a text prompt (OpenCLIP text tower) or like a chosen image (faiss neighbours); the results
open in the grid with its bulk actions and "find similar" on every card."""

import numpy as np
import streamlit as st

from curation.ui import grid, jobpanel, loaders, widgets

st.set_page_config(page_title="Search · Curation studio", layout="wide")
st.title("Search")
ws = widgets.require_workspace()

emb = jobpanel.require_embeddings(ws, "No embeddings yet: run the pipeline from the Home page first.")
K_HITS = "search_hits"  # {"ids": [...], "what": str}: the last results, kept while people act on them

text_tab, image_tab = st.tabs(["By text", "By image"])
with text_tab:
    if not emb.has_text:
        st.info(f"Text search is off: the encoder in use ({widgets.md_escape(emb.encoder_name)}) has no text tower. "
                "Embed with OpenCLIP to search by prompt, or search by image (or “Similar” on any image card).")
    else:
        query = st.text_input("Describe what you are looking for", placeholder="a photo of a red dress",
                              key="search_text")
        if query and st.session_state.get(K_HITS, {}).get("what") != f"“{query}”":
            with widgets.guard("searching"):
                from curation.features.text import search_text
                found, _ = search_text(ws, emb, query, k=96)
                st.session_state[K_HITS] = {"ids": np.asarray(found, np.int64).tolist(), "what": f"“{query}”"}
with image_tab:
    ids = np.asarray(emb.ids, np.int64)
    st.caption("Type a sample id, or press “Similar” on any image card (here, on the Map, in the grid).")
    sid = st.number_input("Sample id", min_value=int(ids.min()), max_value=int(ids.max()), value=int(ids.min()),
                          step=1, key="search_sample")
    if st.button("Find similar images", key="search_similar"):
        with widgets.guard("finding similar images"):
            from curation.features.text import similar_images
            found, _ = similar_images(emb, int(sid), k=96)
            st.session_state[K_HITS] = {"ids": [int(sid), *np.asarray(found, np.int64).tolist()],
                                        "what": f"images like #{int(sid)} (query)"}

hits = st.session_state.get(K_HITS)
if hits:
    found = np.asarray(hits["ids"], np.int64)
    st.subheader(f"Results: {widgets.md_escape(hits['what'])}", anchor=False)
    grid.open_button(found, f"search: {hits['what']}", key="search_open_grid")
    grid.grid(ws, found, key="search", sugg=widgets.optional(loaders.suggestions, ws, "suggestions"),
              source=f"search: {hits['what']}")
