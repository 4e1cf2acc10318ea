"""View helpers for group contrast, guideline cards, cluster-balanced subsets and encoder transferability."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import loaders, widgets

log = logging.getLogger(__name__)

K_CONTRAST = "contrast_result"
K_TRANSFER = "transfer_table"
SHOWN_TERMS = 5
"""Terms shown with example images (the table lists more)."""


# ---------------------------------------------------------------------- group contrast
def _ids_key(ids: np.ndarray | None) -> str:
    import hashlib

    return "rest" if ids is None else hashlib.sha1(np.asarray(ids, np.int64).tobytes()).hexdigest()[:12]


def contrast_panel(ws: Workspace, ids_a: np.ndarray, ids_b: np.ndarray | None = None, *, key: str,
                   what_a: str = "these images", what_b: str = "the rest") -> None:
    """A button that ranks describing terms for A vs B, then the table and the images at both ends."""
    from curation.structure.contrast import contrast

    ids_a = np.asarray(ids_a, np.int64)
    mark = (key, _ids_key(ids_a), _ids_key(ids_b))
    if st.button(f"What sets {what_a} apart?", key=f"{key}_go", disabled=len(ids_a) == 0,
                 help=f"Ranks words and image attributes by how well they tell {what_a} from {what_b} (AUROC)."):
        emb = loaders.embeddings(ws)
        with widgets.guard("contrasting the groups"), st.spinner("Scoring terms…"):
            st.session_state[K_CONTRAST] = (mark, contrast(ws, emb, ids_a, ids_b))
    got = st.session_state.get(K_CONTRAST)
    if got is None or got[0] != mark:
        return
    show_contrast(ws, got[1], key=key, what_a=what_a, what_b=what_b)


def show_contrast(ws: Workspace, res: Any, *, key: str, what_a: str = "A", what_b: str = "B") -> None:
    """The ranked terms (a table: user text stays plain) and, for the best few, example images at both ends."""
    st.caption(f"{res.n_a:,} images vs {res.n_b:,}. AUROC 1.0: the term is stronger in every one of "
               f"{widgets.md_escape(what_a)} than in any of {widgets.md_escape(what_b)}; 0.0: the reverse; 0.5: no "
               "difference.")
    for note in res.notes:
        st.caption(widgets.md_escape(note))
    st.dataframe(res.table[["term", "source", "auroc", "direction"]], hide_index=True,
                 column_config={"auroc": st.column_config.NumberColumn("AUROC", format="%.2f")})
    for r in res.table.head(SHOWN_TERMS).itertuples():
        ea, eb = res.examples[r.term]
        st.text(f"{r.term} ({r.source}, AUROC {r.auroc:.2f}, {r.direction})")
        c1, c2 = st.columns(2)
        for col, ids, label in ((c1, ea, f"in {what_a}"), (c2, eb, f"in {what_b}")):
            paths, _ = widgets.thumbnails(ws, ids)
            if paths:
                col.image(paths, width=80, caption=[f"#{int(i)}" for i in ids[:len(paths)]])
            col.caption(widgets.md_escape(label))


# ---------------------------------------------------------------------- transferability (Home)
def transfer_panel(ws: Workspace) -> None:
    """Score the available encoders on a sample of the labelled images and advise a re-embed when one fits better."""
    from curation.models.transfer import advice, available_encoders, transfer_scores

    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    sample = int(c1.number_input("Labelled images scored", 50, 5000, 300, step=50, key="transfer_sample"))
    names = available_encoders(ws)
    c2.caption("Encoders: " + widgets.md_escape(", ".join(names)) + ". Encoders without cached vectors embed "
               "just these images (about 40 a second on 2 CPU cores).")
    if st.button("Compare encoders", key="transfer_go"):
        with widgets.guard("scoring the encoders"), st.spinner("Scoring encoders…"):
            st.session_state[K_TRANSFER] = (str(ws.root), transfer_scores(ws, encoders=names, sample=sample))
    got = st.session_state.get(K_TRANSFER)
    if got is None or got[0] != str(ws.root):
        return
    table: pd.DataFrame = got[1]
    st.dataframe(table.reset_index(), hide_index=True,
                 column_config={"logme": st.column_config.NumberColumn("LogME", format="%.3f"),
                                "knn": st.column_config.NumberColumn("kNN acc.", format="%.3f"),
                                "linear": st.column_config.NumberColumn("Linear probe", format="%.3f"),
                                "seconds": st.column_config.NumberColumn("s", format="%.1f")})
    tip = advice(table, ws.store.meta("encoder"))
    if tip:
        st.info(widgets.md_escape(tip))
    else:
        st.caption("The encoder in use fits these labels as well as any available one.")


# ---------------------------------------------------------------------- subsets (History & export)
def subset_form(ws: Workspace) -> None:
    """Draw a cluster-balanced subset and write its manifest (exports/)."""
    from curation.labels.subsets import workspace_subset, write_subset

    with st.form("subset"):
        c1, c2, c3, c4 = st.columns(4)
        frac = c1.number_input("Budget (% of the images)", 1, 100, 10, key="subset_budget")
        scope = c2.selectbox("From", ["all", "labelled", "unlabelled"], key="subset_scope")
        hard = c3.number_input("Hard examples (% of the budget)", 0, 100, 0, key="subset_hard",
                               help="Filled first with the lowest label-quality scores (run issues first).")
        within = c4.selectbox("Within a cluster", ["auto", "typical", "random"], key="subset_within",
                              help="auto: each cluster's most typical image, then random ones; typical: the "
                                   "images nearest each cluster's centre first")
        fmt = st.radio("Write", ["manifest CSV", "id list (.txt)"], horizontal=True, key="subset_fmt")
        if st.form_submit_button("Write subset"):
            emb = loaders.embeddings(ws)
            with widgets.guard("drawing the subset"):
                if emb is None:
                    raise ValueError("No embeddings yet: run the pipeline first.")
                sub = workspace_subset(ws, emb, float(frac) / 100 if frac < 100 else len(emb.ids), scope=scope,
                                       hard_fraction=float(hard) / 100, within=within)
                ext = "txt" if fmt.startswith("id") else "csv"
                dest = write_subset(sub, ws.root / "exports" / f"subset-{len(sub.ids)}-{scope}.{ext}", ws=ws)
                st.success(f"{len(sub.ids):,} images over {sub.n_clusters} clusters "
                           f"({sub.duplicates_removed:,} near-duplicates left out) written to "
                           f"{widgets.md_escape(str(dest))}")


# ---------------------------------------------------------------------- guideline cards (page)
def guide_card(ws: Workspace, g: Any) -> None:
    """One class's card: note editor, typical examples, boundaries, confusions, worked examples."""
    from curation.labels.guidelines import VERDICT_TEXT, set_note

    st.subheader(widgets.md_escape(g.name), anchor=False)
    st.caption(f"{g.n_labelled:,} labelled images" + (f" · confusions from run {g.run_id}" if g.run_id else ""))
    note = st.text_area("Note for annotators", value=g.note, key=f"guide_note_{g.class_id}",
                        help="Plain text; stored in the workspace and included in the exports.")
    if st.button("Save note", key=f"guide_save_{g.class_id}", disabled=note == g.note):
        with widgets.guard("saving the note"):
            set_note(ws, g.class_id, note)
            st.toast("Note saved")
            st.rerun()
    st.markdown("**Typical examples**")
    _row(ws, g.typical)
    for b in g.boundaries:
        st.markdown(f"**Boundary with {widgets.md_escape(b.other)}**"
                    + (f" · confused {b.count} times" if b.count else " · nearest class"))
        c1, c2 = st.columns(2)
        c1.caption(widgets.md_escape(g.name))
        c2.caption(widgets.md_escape(b.other))
        with c1:
            _row(ws, b.ours)
        with c2:
            _row(ws, b.theirs)
    if len(g.confusions):
        st.markdown("**Common confusions**")
        st.dataframe(g.confusions, hide_index=True)
    if len(g.worked):
        st.markdown("**Worked examples (reviewers' verdicts)**")
        for verdict, grp in g.worked.groupby("verdict", sort=False):
            st.caption(VERDICT_TEXT.get(str(verdict), str(verdict)))
            _row(ws, grp["sample_id"].to_numpy(np.int64))


def _row(ws: Workspace, ids: np.ndarray) -> None:
    paths, _ = widgets.thumbnails(ws, np.asarray(ids, np.int64))
    if paths:
        st.image(paths, width=96, caption=[f"#{int(i)}" for i in np.asarray(ids)[:len(paths)]])
    else:
        st.caption("No images.")


def export_form(ws: Workspace, guides: list) -> None:
    """Export the shown cards as one HTML file or a Markdown folder under exports/."""
    from curation.labels.guidelines import export_guidelines

    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    fmt = c1.selectbox("Format", ["html", "markdown"], key="guide_fmt")
    if c2.button("Export guidelines", key="guide_export"):
        import time

        name = f"guidelines-{time.strftime('%Y%m%d-%H%M%S')}" + (".html" if fmt == "html" else "")
        with widgets.guard("exporting the guidelines"):
            out = export_guidelines(ws, guides, Path(ws.root) / "exports" / name, fmt=fmt)
            st.success(f"Written to {widgets.md_escape(str(out))}")
            if fmt == "html":
                st.download_button("Download", out.read_bytes(), file_name=out.name, mime="text/html",
                                   key="guide_download")
