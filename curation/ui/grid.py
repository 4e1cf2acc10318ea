"""The image grid every selection opens (lasso, cluster, filter, search, confusion cell): paged cards with a
keyboard cursor, ticks, number keys 1–9 for the first classes, "find similar" on every card, and one bulk bar."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import actions, classes, labels, loaders, state, widgets
from curation.ui.text import clean

PER_PAGE = 24
COLUMNS = 6
THUMB = 130
MOVES = {"Left": -1, "Right": +1, "Up": -COLUMNS, "Down": +COLUMNS}
"""Cursor keys and how far each moves the cursor (a row is COLUMNS cards)."""


def open_grid(ids: Sequence[int] | np.ndarray, source: str, *, switch: bool = True) -> None:
    """Make ``ids`` the Grid page's images (``source`` says where they came from) and go there."""
    st.session_state[state.K_GRID] = {"ids": np.asarray(ids, np.int64).tolist(), "source": str(source)}
    for k in ("grid_cur", "grid_page", "grid_sel"):
        st.session_state.pop(k, None)
    if switch:
        st.switch_page("pages/8_Grid.py")


def open_button(ids: np.ndarray, source: str, *, key: str, label: str = "Open in grid") -> None:
    """A button that opens ``ids`` in the Grid page."""
    if st.button(f"{label} ({len(ids):,})", key=key, icon=":material/grid_view:", disabled=len(ids) == 0):
        open_grid(ids, source)


def find_similar(ws: Workspace, sample_id: int, *, k: int = 48, switch: bool = True) -> None:
    """Open the images most like one sample (with it first) in the grid."""
    from curation.features.text import similar_images

    emb = loaders.embeddings(ws)
    if emb is None:
        st.warning("No embeddings yet: run the pipeline first.")
        return
    found, _ = similar_images(emb, int(sample_id), k=k)
    open_grid(np.concatenate([[int(sample_id)], found]), f"images like #{int(sample_id)}", switch=switch)


# ---------------------------------------------------------------------- state
def _sel(key: str) -> set[int]:
    return st.session_state.setdefault(f"{key}_sel", set())


def _box(key: str, sid: int) -> str:
    """The widget key of a card's tick box. It carries a version that changes whenever ticks are changed from the
    server (Tick page, Clear, Space), so the browser draws fresh boxes instead of sending stale values back."""
    return f"{key}_x{int(st.session_state.get(f'{key}_ver', 0))}_{int(sid)}"


def _tick(key: str, sid: int, on: bool) -> None:
    """Tick or untick one card from the server (the boxes are redrawn: see :func:`_box`)."""
    (_sel(key).add if on else _sel(key).discard)(int(sid))
    st.session_state[f"{key}_ver"] = int(st.session_state.get(f"{key}_ver", 0)) + 1


def _toggle(key: str, sid: int) -> None:
    """Checkbox callback: the selection follows the box the person clicked."""
    on = bool(st.session_state.get(_box(key, sid)))
    (_sel(key).add if on else _sel(key).discard)(int(sid))


def _move(key: str, step: int, n: int) -> None:
    cur = int(st.session_state.get(f"{key}_cur", 0))
    cur = int(np.clip(cur + step, 0, max(n - 1, 0)))
    st.session_state[f"{key}_cur"] = cur
    st.session_state[f"{key}_page"] = cur // PER_PAGE


def _page(key: str, step: int, n: int) -> None:
    pages = max(1, -(-n // PER_PAGE))
    page = int(np.clip(int(st.session_state.get(f"{key}_page", 0)) + step, 0, pages - 1))
    st.session_state[f"{key}_page"] = page
    st.session_state[f"{key}_cur"] = page * PER_PAGE


def _space(key: str, ids: np.ndarray) -> None:
    cur = int(st.session_state.get(f"{key}_cur", 0))
    if 0 <= cur < len(ids):
        sid = int(ids[cur])
        _tick(key, sid, sid not in _sel(key))


def _number(ws: Workspace, key: str, ids: np.ndarray, name: str) -> None:
    """Number key: give the cursor's image this class (one batch), then move on."""
    cur = int(st.session_state.get(f"{key}_cur", 0))
    if not 0 <= cur < len(ids):
        return
    sid = int(ids[cur])
    with widgets.guard("labelling"):
        batch = actions.bulk_label(ws, np.array([sid]), name, "assign")
        state.remember_batch(batch)
        st.toast(f"#{sid} → {widgets.md_escape(name)}")
    _move(key, +1, len(ids))


def _similar(ws: Workspace, sid: int) -> None:
    with widgets.guard("finding similar images"):
        find_similar(ws, sid, switch=False)
    st.session_state["grid_go"] = True


# ---------------------------------------------------------------------- bulk bar
def bulk_bar(ws: Workspace, ids: np.ndarray, *, key: str, sugg: pd.DataFrame | None) -> None:
    """One bar of bulk actions on the ticked images (all of the grid when none is ticked): label, tag, accept
    suggestions, mark reviewed, pin, undo. Each label or tag action is one undoable batch."""
    from curation.data import tags

    ticked = np.array(sorted(_sel(key) & set(ids.tolist())), np.int64)
    target = ticked if len(ticked) else ids
    with st.container(border=True):
        st.caption(f"Acts on the {len(ticked):,} ticked images" if len(ticked) else
                   f"Acts on all {len(ids):,} images (tick images, or press Space on the current one, to act on "
                   "fewer)")
        c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
        with c1:
            target_class = classes.class_picker(ws, "Class", key=f"{key}_class")
        action = c2.selectbox("Action", list(actions.BULK_ACTIONS), format_func=actions.BULK_ACTIONS.get,
                              key=f"{key}_action")
        if c3.button(f"Apply to {len(target):,}", type="primary", key=f"{key}_apply", disabled=not target_class):
            with widgets.guard("labelling"):
                widgets.toast_batch(actions.bulk_label(ws, target, target_class, action),
                                    f"{actions.BULK_ACTIONS[action]} on {len(target):,}")
                st.rerun()
        t1, t0, t2, t3, t4 = st.columns([2, 2, 1, 1, 2], vertical_alignment="bottom")
        known = tags.names(ws.store)
        picked = t1.selectbox("Tag", known, index=None, key=f"{key}_tag", placeholder="an existing tag…",
                              format_func=clean,
                              help="Tags are free marks, not classes: “blurry”, “check later”…")
        fresh = t0.text_input("or a new tag", key=f"{key}_tag_new", placeholder="e.g. blurry").strip()
        tag = fresh or picked
        for col, on, label in ((t2, True, "Tag"), (t3, False, "Untag")):
            if col.button(label, key=f"{key}_tag_{label.lower()}", disabled=not tag):
                with widgets.guard("tagging"):
                    batch = tags.tag(ws.store, target, str(tag), on=on)
                    classes.remember_tag_batch(batch)
                    st.toast(f"{label}ged {len(target):,} images “{widgets.md_escape(tag)}”" if batch
                             else f"{label}: nothing changed")
                    st.rerun()
        with t4:
            widgets.undo_last_button(ws, key=f"{key}_undo")
        b1, b2, b3 = st.columns(3, vertical_alignment="bottom")
        replace = b1.checkbox("also replace labels that disagree", key=f"{key}_accept_replace",
                              help="Off: only images without a label get their suggestion.")
        n_sugg = 0 if sugg is None else len(actions.suggestions_to_accept(ws, target, sugg, replace_labels=replace))
        if b1.button(f"Accept suggestions ({n_sugg:,})", key=f"{key}_accept", disabled=n_sugg == 0):
            with widgets.guard("accepting suggestions"):
                widgets.toast_batch(actions.accept_suggestions(ws, target, sugg, replace_labels=replace),
                                    f"Accepted {n_sugg:,} suggestions")
                st.rerun()
        if b2.button("Mark reviewed", key=f"{key}_reviewed", help="Record that these labels were checked"):
            with widgets.guard("recording the review"):
                st.toast(f"Marked {actions.mark_reviewed(ws, target):,} images reviewed")
        if b3.button("Pin as must-not-fail", key=f"{key}_pin"):
            with widgets.guard("pinning"):
                st.toast(f"Pinned: the must-not-fail slice has {actions.pin_samples(ws, target):,} images")


# ---------------------------------------------------------------------- grid
def keys_row(ws: Workspace, ids: np.ndarray, *, key: str) -> None:
    """The keyboard: arrows move the cursor, Space ticks, PageUp/PageDown page, 1–9 label the current image."""
    n = len(ids)
    with st.container(horizontal=True):
        for name, step in MOVES.items():
            st.button({"Left": "←", "Right": "→", "Up": "↑", "Down": "↓"}[name], key=f"{key}_k{name}",
                      shortcut=name, on_click=_move, args=(key, step, n), help=f"Move the cursor ({name})")
        st.button("Tick (Space)", key=f"{key}_kSpace", shortcut="Space", on_click=_space, args=(key, ids))
        st.button("Page ↑", key=f"{key}_kPgUp", shortcut="PageUp", on_click=_page, args=(key, -1, n))
        st.button("Page ↓", key=f"{key}_kPgDn", shortcut="PageDown", on_click=_page, args=(key, +1, n))
    order = classes.ordered_names(ws)[:9]
    if order:
        with st.container(horizontal=True):
            for i, name in enumerate(order, start=1):
                st.button(f"{i} · {widgets.md_escape(name)}", key=f"{key}_n{i}", shortcut=str(i), on_click=_number,
                          args=(ws, key, ids, name),
                          help=f"Label the current image “{widgets.md_escape(name)}” and move on")


def grid(ws: Workspace, ids: np.ndarray, *, key: str = "grid", sugg: pd.DataFrame | None = None,
         source: str = "") -> None:
    """The paged grid of ``ids`` with the cursor, ticks, number keys, "Similar" per card and the bulk bar."""
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        st.caption("No images match.")
        return
    sel = _sel(key)
    pages = max(1, -(-len(ids) // PER_PAGE))
    page = int(np.clip(int(st.session_state.get(f"{key}_page", 0)), 0, pages - 1))
    cur = int(np.clip(int(st.session_state.get(f"{key}_cur", page * PER_PAGE)), 0, len(ids) - 1))
    head, tools = st.columns([3, 2], vertical_alignment="bottom")
    head.markdown(f"**{len(ids):,} images**" + (f" · {widgets.md_escape(source)}" if source else "")
                  + f" · {len(sel & set(ids.tolist())):,} ticked · page {page + 1} of {pages}")
    with tools, st.container(horizontal=True):
        if st.button("Tick page", key=f"{key}_tick_page"):
            for sid in ids[page * PER_PAGE:(page + 1) * PER_PAGE].tolist():
                _tick(key, sid, True)
        if st.button("Clear ticks", key=f"{key}_clear", disabled=not sel):
            for sid in list(sel):
                _tick(key, sid, False)
    bulk_bar(ws, ids, key=key, sugg=sugg)
    keys_row(ws, ids, key=key)
    shown = ids[page * PER_PAGE:(page + 1) * PER_PAGE]
    names = ws.store.class_names()
    text = labels.label_text(ws.store.label_matrix(shown), names)
    tag_text = _tags(ws, shown)
    cols = st.columns(COLUMNS)
    for n, (sid, caption) in enumerate(zip(shown.tolist(), text)):
        here = page * PER_PAGE + n == cur
        with cols[n % COLUMNS], st.container(border=True, key=f"{key}_card{'_cur' if here else ''}_{sid}"):
            paths, _ = widgets.thumbnails(ws, [sid])
            if paths:
                st.image(paths[0], width=THUMB)
            line = f"{'▶ ' if here else ''}#{sid} · {caption}"
            if sugg is not None and sid in sugg.index and isinstance(sugg.at[sid, "class_name"], str):
                line += f" · suggests {sugg.at[sid, 'class_name']} ({float(sugg.at[sid, 'confidence']):.2f})"
            if tag_text.get(sid):
                line += f" · tags: {tag_text[sid]}"
            st.checkbox(widgets.md_escape(line), value=sid in sel, key=_box(key, sid), on_change=_toggle,
                        args=(key, sid))
            st.button("Similar", key=f"{key}_sim_{sid}", icon=":material/image_search:", on_click=_similar,
                      args=(ws, sid), help="Open the images most like this one")
    if st.session_state.pop("grid_go", False):
        st.switch_page("pages/8_Grid.py")


def _tags(ws: Workspace, ids: np.ndarray) -> dict[int, str]:
    from curation.data import tags

    return {int(k): v for k, v in tags.tags_of(ws.store, ids).items() if v}
