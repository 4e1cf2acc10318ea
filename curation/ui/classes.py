"""Class pickers that never create a class by accident, the class manager (create, rename, merge, delete, order,
colour), and the single ↔ multi-label task switch."""

from __future__ import annotations

import streamlit as st

from curation.data import classes as engine
from curation.data.workspace import Workspace
from curation.ui import state, widgets
from curation.ui.text import clean

TASK_EFFECT = {
    "multi": "Switching to multi-label keeps every label as it is; from then on an image may carry several classes "
             "(“Both valid” adds a second label) and an unlabelled class means “nobody said”, never “no”.",
    "single": "Switching to single-label keeps every label as it is and is refused while any image carries two or "
              "more classes (resolve those first); from then on giving an image a class replaces its label.",
}


def ordered_names(ws: Workspace) -> list[str]:
    """Class names in the display order (the order of the pickers and of the number keys 1–9)."""
    return engine.display_order(ws.store)


def _create(ws: Workspace, key: str, picker_key: str | None) -> None:
    name = str(st.session_state.get(f"{key}_name") or "").strip()
    with widgets.guard("creating the class"):
        engine.create(ws.store, name)
        st.session_state[f"{key}_name"] = ""
        if picker_key:
            st.session_state[picker_key] = name
        st.toast(f"Created class {widgets.md_escape(repr(name))}")


def new_class_box(ws: Workspace, *, key: str, picker_key: str | None = None) -> None:
    """A name box and an explicit "Create class 'NAME'" button (the only way the app creates a class).

    Parameters
    ----------
    key : widget-key prefix.
    picker_key : a class picker's key that is set to the new class once it exists.
    """
    name = st.text_input("New class name", key=f"{key}_name", placeholder="e.g. Sandal")
    wanted = str(name or "").strip()
    problem = engine.name_problem(ws.store, wanted) if wanted else None
    if problem:
        st.caption(widgets.md_escape(problem))
    st.button(f"Create class “{widgets.md_escape(wanted)}”" if wanted else "Create class", key=f"{key}_create",
              type="primary", disabled=not wanted or problem is not None, on_click=_create, args=(ws, key, picker_key),
              help="Creates the class. Typing in a class picker only ever picks an existing class.")


def class_picker(ws: Workspace, label: str, *, key: str, names: list[str] | None = None,
                 container=None) -> str | None:
    """A type-ahead over the *existing* classes (Enter picks the highlighted match, never a new class), with a
    "New class" popover beside it that creates one after an explicit click.

    Returns
    -------
    The chosen class name, or None.
    """
    names = ordered_names(ws) if names is None else names
    where = container or st
    left, right = where.columns([3, 2], vertical_alignment="bottom")
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
    chosen = left.selectbox(label, names, index=None, key=key, placeholder="Type to find a class…", format_func=clean,
                            help="Picks an existing class. To add one, use “New class”.")
    with right.popover("New class", icon=":material/add:"):
        new_class_box(ws, key=f"{key}_new", picker_key=key)
    return chosen


# ---------------------------------------------------------------------- manager
def manager(ws: Workspace) -> None:
    """Every class with its colour, number key and use; create, rename, merge, delete, reorder, recolour."""
    use = engine.usage(ws.store)
    if use.empty:
        st.caption("No classes yet.")
    else:
        table = use[["key", "name", "colour", "positive", "rejected"]].rename(columns={"key": "key"})
        st.dataframe(table.style.apply(lambda col: [f"background-color: {c}; color: {c}" for c in col],
                                       subset=["colour"]),
                     hide_index=True, width="stretch",
                     column_config={"key": st.column_config.TextColumn("key", width="small",
                                                                       help="Number key in Review and the grid"),
                                    "colour": st.column_config.TextColumn("colour", width="small")})
    names = use["name"].tolist()
    new_tab, rename_tab, merge_tab, delete_tab, order_tab = st.tabs(["New", "Rename", "Merge", "Delete",
                                                                      "Order & colour"])
    with new_tab:
        new_class_box(ws, key="cm_new")
    with rename_tab:
        old = st.selectbox("Class", names, index=None, key="cm_rename_old", format_func=clean)
        new = st.text_input("New name", key="cm_rename_new")
        if st.button("Rename", key="cm_rename_go", disabled=not old or not str(new).strip()):
            with widgets.guard("renaming"):
                engine.rename(ws.store, old, new)
                st.toast(widgets.md_escape(f"Renamed {old!r} to {str(new).strip()!r}"))
                st.rerun()
    with merge_tab:
        st.caption("Moves every label of the first class onto the second, as one undoable batch (History), and "
                   "removes the first. Undoing the batch brings the class back.")
        src = st.selectbox("Merge", names, index=None, key="cm_merge_src", format_func=clean)
        dst = st.selectbox("into", [n for n in names if n != src], index=None, key="cm_merge_dst", format_func=clean)
        if src and dst:
            n = int(use.loc[use["name"] == src, "positive"].iloc[0])
            sure = st.checkbox(widgets.md_escape(f"Yes: move {n:,} images from “{src}” to “{dst}” and remove “{src}”"),
                               key="cm_merge_sure")
            if st.button("Merge", key="cm_merge_go", type="primary", disabled=not sure):
                with widgets.guard("merging"):
                    batch = engine.merge(ws.store, src, dst)
                    widgets.toast_batch(batch, widgets.md_escape(f"Merged {src!r} into {dst!r}"))
                    st.session_state.pop("cm_merge_sure", None)
                    st.rerun()
    with delete_tab:
        free = use.loc[use["deletable"], "name"].tolist()
        st.caption("Only a class no image carries can be deleted; merge a used class into another instead.")
        gone = st.selectbox("Unused class", free, index=None, key="cm_delete", format_func=clean)
        if st.button("Delete", key="cm_delete_go", disabled=not gone):
            with widgets.guard("deleting"):
                engine.delete(ws.store, gone)
                st.toast(widgets.md_escape(f"Deleted class {gone!r}"))
                st.rerun()
    with order_tab:
        pick = st.selectbox("Class", names, index=None, key="cm_order_pick", format_func=clean)
        c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
        if c1.button("Move up", key="cm_up", disabled=not pick):
            engine.move(ws.store, pick, -1)
            st.rerun()
        if c2.button("Move down", key="cm_down", disabled=not pick):
            engine.move(ws.store, pick, +1)
            st.rerun()
        if pick:
            now = str(use.loc[use["name"] == pick, "colour"].iloc[0])
            colour = c3.color_picker("Colour", value=now, key=f"cm_colour_{pick}")
            if colour.lower() != now.lower():
                with widgets.guard("recolouring"):
                    engine.set_colour(ws.store, pick, colour)
                    st.rerun()


def _switch_task(ws: Workspace, task: str) -> None:
    with widgets.guard("switching the task"):
        ws.store.set_task(task)
        st.toast(f"This workspace is now {'multi' if task == 'multi' else 'single'}-label")


def task_switch(ws: Workspace, *, key: str = "task_switch") -> None:
    """The single ↔ multi-label switch, saying what it does to existing labels before it does it."""
    now = ws.store.task
    other = "single" if now == "multi" else "multi"
    st.caption(f"This workspace is **{now}-label**. " + TASK_EFFECT[other])
    st.button(f"Switch to {other}-label", key=key, on_click=_switch_task, args=(ws, other))


def remember_tag_batch(batch: int | None) -> None:
    """Remember the newest tag batch of this session (the grid's Undo)."""
    if batch is not None:
        st.session_state[state.K_LAST_TAG_BATCH] = int(batch)
        st.session_state[state.K_LAST_KIND] = "tag"
