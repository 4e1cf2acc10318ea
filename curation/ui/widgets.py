"""Reusable page pieces: error guard, workspace and embeddings gates, sidebar, thumbnail grids, undo."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import loaders, state
from curation.ui.text import clean, plain, plain_lines  # noqa: F401 - clean re-exported for pages

log = logging.getLogger(__name__)

GRID_PAGE = 48


def md_escape(text: object) -> str:
    """User text for anything Streamlit renders as Markdown: :func:`curation.ui.text.plain` (the one rule)."""
    return plain(text)


@contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show an engine error as ``st.error(message)`` (the traceback goes to the server log only)."""
    try:
        yield
    except ImportError as exc:
        log.exception("missing module while %s", what)
        st.error(f"{plain(what) + ': ' if what else ''}this needs a part of curation or a library that is not "
                 f"available here ({plain(exc)}).")
    except Exception as exc:  # engine errors carry user-facing messages; st.stop/rerun are BaseExceptions
        log.exception("error while %s", what)
        st.error(f"{plain(what) + ': ' if what else ''}{plain_lines(exc)}")


PAGES = [("app.py", "Home", ":material/home:"), ("pages/1_Map.py", "Map", ":material/scatter_plot:"),
         ("pages/2_Clusters.py", "Clusters", ":material/workspaces:"),
         ("pages/3_Review.py", "Review", ":material/fact_check:"),
         ("pages/4_Train.py", "Train", ":material/model_training:"),
         ("pages/5_Evaluate.py", "Evaluate", ":material/analytics:"),
         ("pages/6_Search.py", "Search", ":material/search:"), ("pages/7_History.py", "History", ":material/history:"),
         ("pages/8_Grid.py", "Grid", ":material/grid_view:"),
         ("pages/9_Guidelines.py", "Guidelines", ":material/menu_book:")]
"""The pages in loop order (see → fix → retrain → inspect): script, title, icon. Streamlit's own page list is
off (``client.showSidebarNavigation``): it would title Home after its file, "app"."""


def sidebar() -> None:
    """The sidebar: the pages, and which workspace this session works on, with a box to open another."""
    state.check_host()
    with st.sidebar:
        for script, title, icon in PAGES:
            st.page_link(script, label=title, icon=icon)
        st.divider()
        path = state.workspace_path()
        st.caption("Workspace")
        st.code(str(path), language=None)
        with st.form("open_workspace", border=False):
            other = st.text_input("Open another workspace folder", placeholder="/path/to/workspace")
            if st.form_submit_button("Open") and other.strip():
                with guard("opening the workspace"):
                    st.session_state[state.K_WORKSPACE] = str(state.confine(other, what="open the workspace"))
                    st.rerun()


def require_workspace() -> Workspace:
    """The session's workspace; without one, point to Home (where one is built or created) and stop."""
    sidebar()
    ws = None
    failed = True
    with guard("opening the workspace"):
        ws = loaders.current_workspace()
        failed = False
    if failed:
        st.stop()
    if ws is not None:
        read_only_banner(ws)
    if ws is None:
        st.warning(f"No workspace at {md_escape(str(state.workspace_path()))}. Build the demo or create one on the Home page.")
        st.page_link("app.py", label="Go to Home", icon=":material/home:")
        st.stop()
    return ws


def read_only_banner(ws: Workspace) -> None:
    """Say, on every page, that a workspace which cannot be written is open read-only, and what still works."""
    if ws.read_only:
        st.warning(f"Read-only workspace: {plain(ws.read_only_reason)}. Browsing, search and export to another "
                   "folder work; label changes, ingest and the pipeline are off (nothing is written). Copy the "
                   "workspace to a writable folder to change it.", icon=":material/lock:")


def thumbnails(ws: Workspace, ids: Sequence[int]) -> tuple[list[str], list[int]]:
    """Thumbnail files of the samples that can be shown, and the ids that cannot (missing or broken)."""
    from curation.data.images import ImageError, thumbnail_path

    paths, bad = [], []
    for sid in ids:
        try:
            paths.append(str(thumbnail_path(ws, int(sid))))
        except ImageError as exc:  # a vanished or broken file is expected: the card says so, the log one line
            log.warning("no thumbnail for sample %s: %s", sid, exc)
            bad.append(int(sid))
        except Exception:  # anything else is a bug worth its traceback, but must not hide the rest of the grid
            log.warning("no thumbnail for sample %s", sid, exc_info=True)
            bad.append(int(sid))
    return paths, bad


def page_slice(n: int, *, key: str, per_page: int = GRID_PAGE) -> slice:
    """A page picker for ``n`` items; returns the slice of the current page."""
    pages = max(1, -(-n // per_page))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages}, {per_page} a page)", min_value=1, max_value=pages,
                                   value=1, step=1, key=key))
    return slice((page - 1) * per_page, min(n, page * per_page))


def cards(ws: Workspace, ids: np.ndarray, *, columns: int, width: int, border: bool = False) -> Iterator[int]:
    """Thumbnail cards for images that carry their own widgets (one page of ids: see :func:`page_slice`).

    For each id, enters its card, draws its thumbnail (nothing when the image cannot be read) and yields the
    id, so the loop body fills in the rest of the card. Iterate to the end (a ``for`` loop)."""
    cols = st.columns(columns)
    for n, sid in enumerate(np.asarray(ids, np.int64).tolist()):
        with cols[n % columns], st.container(border=border):
            paths, _ = thumbnails(ws, [sid])
            if paths:
                st.image(paths[0], width=width)
            yield sid


def image_grid(ws: Workspace, ids: np.ndarray, captions: Sequence[str], *, key: str,
               per_page: int = GRID_PAGE, width: int = 120) -> None:
    """Paged thumbnails (served over HTTP by ``st.image``), each captioned with its id and labels."""
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        st.caption("No images.")
        return
    page = page_slice(len(ids), key=key, per_page=per_page)
    shown = ids[page]
    caps = dict(zip(shown.tolist(), list(captions)[page]))
    paths, bad = thumbnails(ws, shown)
    unreadable = set(bad)
    ok = [int(s) for s in shown if int(s) not in unreadable]
    if paths:
        st.image(paths, width=width, caption=[f"#{s} {plain(caps[s])}" for s in ok])
    if bad:
        st.caption(f"{len(bad)} images could not be read: {', '.join(map(str, bad[:10]))}")


def toast_batch(batch_id: int | None, what: str) -> None:
    """Tell the user what a label action wrote, and remember it for Undo."""
    if batch_id is None:
        st.toast(f"{plain(what)}: nothing changed")
    else:
        state.remember_batch(batch_id)
        st.toast(f"{plain(what)}: batch {batch_id}")


BIG_UNDO = 1_000
"""Undoing a batch of more events than this asks for a confirmation with its counts first."""


def undo_is_confirmed(n_events: int, n_samples: int, *, key: str) -> bool:
    """For a batch over :data:`BIG_UNDO` events, a tick box saying what the undo changes; True once ticked (or
    for a small batch)."""
    if n_events <= BIG_UNDO:
        return True
    return st.checkbox(f"Yes, undo {n_events:,} label changes on {n_samples:,} images", key=f"{key}_sure")


def undo_last_button(ws: Workspace, *, key: str) -> None:
    """An "Undo last" button for the newest label or tag batch this session wrote (a confirmation first when it
    changed over :data:`BIG_UNDO` labels)."""
    from curation.data import tags

    kind = st.session_state.get(state.K_LAST_KIND, "label")
    last = st.session_state.get(state.K_LAST_TAG_BATCH if kind == "tag" else state.K_LAST_BATCH)
    ok = True
    if last and kind == "label":
        rec = ws.store.batches(limit=1_000_000)
        n = int(rec.loc[int(last), "n_events"]) if int(last) in rec.index else 0
        if n > BIG_UNDO:
            ok = undo_is_confirmed(n, int(ws.store.events(int(last))["sample_id"].nunique()), key=key)
    what = f"tag batch {last}" if kind == "tag" else f"batch {last}"
    if st.button(f"Undo last ({what})" if last else "Undo last", key=key, disabled=last is None or not ok):
        with guard("undoing"):
            undo = tags.undo(ws.store, int(last)) if kind == "tag" else ws.store.undo(int(last))
            st.session_state.pop(state.K_LAST_TAG_BATCH if kind == "tag" else state.K_LAST_BATCH, None)
            st.toast(f"Undid {what}" + (f" (undo {undo})" if undo else ""))
            st.rerun()


def optional(load, ws: Workspace, what: str):
    """``load(ws)``, or None with a short note when the engine part behind it is unavailable or fails."""
    try:
        return load(ws)
    except ImportError:
        log.warning("%s unavailable", what, exc_info=True)
        st.caption(f"{plain(what.capitalize())} unavailable in this installation.")
    except Exception as exc:  # engine errors carry user-facing messages
        log.exception("loading %s", what)
        st.error(f"Loading {plain(what)}: {plain(exc)}")
    return None
