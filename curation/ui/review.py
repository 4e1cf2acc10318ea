"""The Review page's parts: the queue's session state, the item card with keyboard-shortcut actions, the queue's
self-measurement, "accept all above confidence X" and the zero-shot prompt editor."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from curation.core.vocab import REJECTED
from curation.data import sources
from curation.data.workspace import Workspace
from curation.labels import queues
from curation.ui import actions, classes, labels, state, widgets
from curation.ui.text import clean, plain

SHORTCUTS = {"accepted": "A", "both_valid": "B", "rejected": "X", "ambiguous": "M", "out_of_vocabulary": "O",
             "label_right": "K", "duplicate": "D", "skipped": "S"}
"""Keyboard shortcuts of the actions (Streamlit reserves C and R, so Reject is X and Correct is the type-ahead)."""
KEYS = {"accepted": "review_accept", "both_valid": "review_both", "rejected": "review_reject",
        "ambiguous": "review_ambiguous", "out_of_vocabulary": "review_oov", "label_right": "review_right",
        "duplicate": "review_duplicate", "skipped": "review_skip"}
HELP = {"accepted": "Make the proposed class this image's label.",
        "both_valid": "Keep the current labels and add the proposed class (multi-label workspaces).",
        "rejected": "Record that the proposed class does not apply.",
        "ambiguous": "The image fits more than one class, or none clearly.",
        "out_of_vocabulary": "The image shows none of the classes.",
        "label_right": "The current label is right: the queue flagged it wrongly.",
        "duplicate": "The two images are the same picture.",
        "skipped": "Decide later: the image comes back next session."}
IMAGE_WIDTH = 480


# ---------------------------------------------------------------------- session state
def handled() -> list[int]:
    """Samples handled in this session (any action, Skip included), oldest first."""
    return st.session_state.setdefault(state.K_REVIEW_DONE, [])


def mark(sample_id: int, batch_id: int | None, queue: str) -> None:
    """Record that a sample was handled in ``queue``, with the label batch it wrote (None when none)."""
    handled().append(int(sample_id))
    st.session_state.setdefault(state.K_REVIEW_BATCHES, []).append((batch_id, queue))
    state.remember_batch(batch_id)


def undo_last(ws: Workspace) -> int | None:
    """Undo the last handled sample's batch, record the undo as a review, and put it back first; returns it.

    The sample stays handled when the store refuses the undo (e.g. the batch was undone in another window)."""
    done = handled()
    if not done:
        return None
    batches = st.session_state.setdefault(state.K_REVIEW_BATCHES, [])
    batch, queue = batches[-1] if batches else (None, "confirm")
    if batch is not None:
        ws.store.undo(int(batch))
    sample_id = done.pop()
    if batches:
        batches.pop()
    ws.store.add_reviews([sample_id], queue=queue, verdict="undone", batch_id=batch)
    if batch is not None and st.session_state.get(state.K_LAST_BATCH) == batch:
        st.session_state.pop(state.K_LAST_BATCH)
    st.session_state[state.K_REVIEW_FRONT] = sample_id
    return sample_id


def pending(queue: pd.DataFrame, *, balanced: bool) -> pd.DataFrame:
    """The queue without this session's handled samples, in review order, an undone sample first."""
    left = queue[~queue.index.isin(handled())]
    return queues.to_front(queues.order(left, balanced=balanced), st.session_state.get(state.K_REVIEW_FRONT))


# ---------------------------------------------------------------------- actions (button callbacks)
def _act(ws: Workspace, sample_id: int, verdict: str, queue: str, class_name: str, replace: bool,
         reject_key: str | None = None) -> None:
    reject = bool(st.session_state.get(reject_key)) if reject_key else False
    with widgets.guard(actions.REVIEW_VERDICTS[verdict]):
        batch = actions.review_item(ws, sample_id, verdict, queue=queue, class_name=class_name, replace=replace,
                                    reject=reject)
        mark(sample_id, batch, queue)
        st.session_state.pop(state.K_REVIEW_FRONT, None)
        st.toast(f"#{sample_id}: {actions.REVIEW_VERDICTS[verdict].lower()}"
                 + (f" (batch {batch})" if batch is not None else ""))


def _correct(ws: Workspace, sample_id: int, queue: str, key: str) -> None:
    name = st.session_state.get(key)
    if name:
        _act(ws, sample_id, "corrected", queue, str(name), True)


def _undo(ws: Workspace) -> None:
    with widgets.guard("undoing"):
        back = undo_last(ws)
        st.toast(f"#{back} is back at the front of the queue")


def undo_button(ws: Workspace) -> None:
    """"Undo (U)": undo the last handled item of this session and show it again first."""
    st.button("Undo", key="review_undo", shortcut="U", disabled=not handled(), on_click=_undo, args=(ws,),
              help="Undo the last action of this session; the image comes back first.")


# ---------------------------------------------------------------------- picker and card
def queue_picker(built: dict[str, pd.DataFrame]) -> str:
    """A radio over the queues with their sizes (this session's handled samples left out); returns the choice.

    The sizes go in the captions: option labels must not change between runs, or the browser loses the
    selection."""
    done = handled()
    counts = [int((~built[k].index.isin(done)).sum()) if k in built else 0 for k in queues.QUEUES]
    first = next((i for i, n in enumerate(counts) if n), 0)  # open on a queue with work in it
    return str(st.radio("Queue", list(queues.QUEUES), key="review_kind", horizontal=True, index=first,
                        format_func=queues.QUEUES.get, captions=[f"{n:,} to review" for n in counts]))


def _image(ws: Workspace, sample_id: int, caption: str, width: int) -> None:
    with widgets.guard("showing the image"):
        path = ws.resolve_image(int(sample_id))
        if sources.split_ref(path) is not None:  # embedded in a Parquet / Arrow row: decode it here
            from curation.data.images import load_image

            st.image(load_image(path), width=width, caption=plain(caption))
        else:
            st.image(str(path), width=width, caption=plain(caption))


def _labels_text(matrix_row: np.ndarray, names: Sequence[str]) -> str:
    row = np.asarray(matrix_row)[None, :]
    text = labels.label_text(row, names)[0]
    rejected = labels.label_text(row, names, state=REJECTED, empty="")[0]
    return text + (f"  ·  not: {rejected}" if rejected else "")


def card(ws: Workspace, item: pd.Series, a: queues.Aligned, *, queue: str, vectors: np.ndarray) -> None:
    """One queue item: the image large (both images for a duplicate pair), its labels, the proposal with its
    sources, the actions with their shortcuts, and the nearest labelled images.

    Parameters
    ----------
    item : the queue row (indexed by sample id).
    a : ``curation.labels.queues.align`` output (labels of now); ``vectors`` rows follow ``a.ids``.
    """
    sid = int(item.name)
    row = int(a.rows_of(np.array([sid]))[0])
    names = a.names[:-1].tolist()
    partner = int(item.get("partner", -1))
    img_col, info_col = st.columns([3, 2])
    with img_col:
        if partner >= 0:
            left, right = st.columns(2)
            with left:
                _image(ws, sid, f"#{sid} (this image)", IMAGE_WIDTH // 2 + 40)
            with right:
                other = int(a.rows_of(np.array([partner]))[0])
                _image(ws, partner, f"#{partner} (near-duplicate): {_labels_text(a.matrix[other], names)}",
                       IMAGE_WIDTH // 2 + 40)
        else:
            _image(ws, sid, f"#{sid}", IMAGE_WIDTH)
    with info_col:
        st.markdown("**Current labels**")
        st.text(clean(_labels_text(a.matrix[row], names)))
        st.markdown("**Proposed**")
        proposal = (f"{item['class_name']}  ·  confidence {item['confidence']:.2f}  ·  {item['source']}"
                    if item["class_name"] else "(no proposal)")
        st.text(clean(proposal))
        by_source = labels.sources_text(item)
        if by_source:
            st.caption(f"Per source: {plain(by_source)}")
        st.caption(f"{queues.SCORES[queue]}: {item['score']:.2f} · value of a look {item['value']:.2f}"
                   + (" · the two labels conflict" if bool(item.get("conflict", False)) else ""))
        action_bar(ws, item, queue=queue, names=names)
    near = labels.nearest_rows(vectors, row, a.given >= 0, k=6)
    if len(near):
        st.markdown("**Nearest labelled images**")
        widgets.image_grid(ws, a.ids[near], labels.label_text(a.matrix[near], names), key="review_near_page",
                           width=110)


def action_bar(ws: Workspace, item: pd.Series, *, queue: str, names: Sequence[str]) -> None:
    """The action buttons (one batch and one review row each) and the type-ahead correction picker."""
    sid, name = int(item.name), str(item["class_name"])
    reject_key = "review_reject_on_mark"
    shown = ["accepted", "both_valid", "rejected", "ambiguous", "out_of_vocabulary"]
    shown += [] if queue == "confirm" else ["label_right"]
    shown += ["duplicate"] if queue == "duplicates" else []
    shown += ["skipped"]
    needs_class = {"accepted", "both_valid", "rejected"}
    cols = st.columns(3)
    for i, verdict in enumerate(shown):
        cols[i % 3].button(actions.REVIEW_VERDICTS[verdict], key=KEYS[verdict], shortcut=SHORTCUTS[verdict],
                           help=HELP[verdict], type="primary" if verdict == "accepted" else "secondary",
                           width="stretch", wrap=True,
                           disabled=verdict in needs_class and not name, on_click=_act,
                           args=(ws, sid, verdict, queue, name, queue == "errors", reject_key))
    st.checkbox("M / O also reject the proposal", key=reject_key, disabled=not name,
                help="Ambiguous (M) and Out of vocabulary (O) also record that the proposed class does not apply.")
    if ws.store.task == "single":
        st.caption("Both valid (B) adds a second label, which needs a multi-label workspace.")
        classes.task_switch(ws, key="review_task")
    order = classes.ordered_names(ws)[:9]
    if order:
        st.caption("Correct to (number keys):")
        with st.container(horizontal=True):
            for i, cls in enumerate(order, start=1):
                st.button(f"{i} · {widgets.md_escape(cls)}", key=f"review_n{i}", shortcut=str(i), on_click=_act,
                          args=(ws, sid, "corrected", queue, cls, True),
                          help=f"Make “{widgets.md_escape(cls)}” this image's only label")
    key = f"review_fix_{queue}_{sid}"
    st.selectbox("Correct to (type a class, Enter applies)", classes.ordered_names(ws), index=None, key=key,
                 format_func=clean,
                 placeholder="Type a class…", on_change=_correct, args=(ws, sid, queue, key))


# ---------------------------------------------------------------------- self-measurement
def error_estimate(issues: pd.DataFrame | None) -> None:
    """How many label errors the data probably holds (``curation.labels.issues.issue_summary``'s estimate),
    beside how many the queue flags: plan a review of about that many."""
    est = None if issues is None else issues.attrs.get("label_error_estimate")
    if est is None:
        return
    st.caption(f"About {est:,.0f} label errors expected in the labelled data (estimate from the noise model); "
               f"{int(issues['is_label_issue'].sum()):,} flagged. Reviewing about 1.5 × the estimate down this "
               "queue finds most of them.")


def measurement(a: queues.Aligned, reviews: pd.DataFrame, sugg: pd.DataFrame, *, queue: str,
                correct: np.ndarray) -> None:
    """This queue's hit rate (overall, last 20, by class), the diminishing-returns notice, and per-class
    accuracy of the suggestions (``correct``: ``curation.labels.queues.measured_correct``)."""
    task = queues.task_of(a)
    rates = queues.hit_rates(reviews, task=task)
    this = rates.loc[queue] if queue in rates.index else None
    c1, c2, c3 = st.columns(3)
    c1.metric("Reviewed in this queue", 0 if this is None else int(this["reviewed"]))
    c2.metric("Hit rate", "–" if this is None else f"{this['hit_rate']:.0%}",
              help="Share of reviewed items that were real problems (a label changed, a second label was "
                   "added, ambiguous or out of vocabulary) rather than right as they were.")
    c3.metric(f"Hit rate, last {queues.RECENT}", "–" if this is None else f"{this['recent_hit_rate']:.0%}")
    if this is not None and bool(this["diminishing"]):
        st.warning(f"Diminishing returns: the last {queues.RECENT} reviews here found real problems in "
                   f"{this['recent_hit_rate']:.0%} of items against {this['hit_rate']:.0%} overall. Switch queue, "
                   "or accept the confident rest in bulk below.", icon=":material/trending_down:")
    with st.expander("How the queues measure up"):
        if len(rates):
            st.caption("Every queue (latest decision per image; skips and undos left out)")
            st.dataframe(rates.rename(index=queues.QUEUES), width="stretch")
            by_class = queues.hit_rates(reviews, by=sugg["class_name"], task=task)
            if queue in by_class.index.get_level_values(0):
                st.caption("This queue by suggested class")
                st.dataframe(by_class.loc[queue], width="stretch")
        else:
            st.caption("No reviews yet: hit rates appear as you work through a queue.")
        st.caption("Suggestion accuracy by class, where the truth is known (labelled images, whose suggestion "
                   "never saw their own label, and reviewed ones). Easy classes tend to get more pseudo-labels.")
        st.dataframe(queues.suggestion_accuracy(a, correct=correct), width="stretch")


# ---------------------------------------------------------------------- accept all above X
def _accept_all(ws: Workspace, ids: np.ndarray, class_idx: np.ndarray) -> None:
    with widgets.guard("accepting in bulk"):
        batch = actions.accept_suggestions(ws, ids, pd.DataFrame({"class_idx": class_idx}, index=ids))
        st.session_state["bulk_accept_confirm"] = False
        widgets.toast_batch(batch, f"Accepted {len(ids):,} suggestions")


def accept_all(ws: Workspace, a: queues.Aligned, *, reviews: pd.DataFrame, correct: np.ndarray,
               clusters: pd.Series | None) -> None:
    """"Accept all above confidence X" for a class or a cluster: the count, the precision measured at X
    (``correct``: ``curation.labels.queues.measured_correct``), and one bulk batch after an explicit confirmation."""
    with st.expander("Accept all above confidence X"):
        scopes = ["class", "cluster"] if clusters is not None else ["class"]
        scope = st.radio("For", scopes, horizontal=True, key="bulk_accept_scope",
                         format_func={"class": "a suggested class", "cluster": "a cluster"}.get)
        if scope == "cluster":
            member = clusters.reindex(a.ids).to_numpy()
            choices, sizes = np.unique(member[~pd.isna(member)], return_counts=True)
            size_of = dict(zip(choices.tolist(), sizes.tolist()))  # counted once, not once per option and run
            picked = st.selectbox("Cluster", choices.tolist(), key="bulk_accept_cluster",
                                  format_func=lambda c: f"cluster {c} ({size_of[c]:,} images)")
            in_scope = member == picked
        else:
            picked = st.selectbox("Class", range(len(a.names) - 1), key="bulk_accept_class",
                                  format_func=lambda k: clean(a.names[k]))
            in_scope = a.cls == picked
        x = st.slider("Confidence X", 0.0, 1.0, 0.9, 0.01, key="bulk_accept_x")
        plan = queues.accept_plan(a, threshold=x, scope=in_scope, reviews=reviews, correct=correct)
        c1, c2 = st.columns(2)
        c1.metric("Would be labelled", f"{plan.n:,}", help="Unlabelled, unreviewed images with confidence ≥ X.")
        c2.metric("Measured precision at X", "–" if not plan.measured else f"{plan.precision:.0%}",
                  help="Accuracy of suggestions with confidence ≥ X where the truth is known.")
        if plan.measured:
            st.caption(f"Measured on {plan.measured:,} images (labelled ones, whose suggestion never saw their own "
                       f"label, and reviewed ones); 95 % lower bound {plan.low:.0%}.")
        else:
            st.caption("Not measured: no labelled or reviewed image has a suggestion this confident here.")
        sure = st.checkbox(f"Yes, label these {plan.n:,} images with their suggestion", key="bulk_accept_confirm",
                           disabled=plan.n == 0)
        st.button("Accept all", key="bulk_accept_apply", type="primary", disabled=not (sure and plan.n),
                  on_click=_accept_all, args=(ws, plan.ids, plan.class_idx))


# ---------------------------------------------------------------------- zero-shot prompts
def prompt_editor(ws: Workspace, emb: Any) -> None:
    """Edit each class's zero-shot prompt (only when the encoder has a text tower; otherwise say why it is off)."""
    if not getattr(emb, "has_text", False):
        st.caption(f"Zero-shot prompts are off: the encoder in use ({plain(getattr(emb, 'encoder_name', 'unknown'))}) has "
                   "no text tower.")
        return
    with st.expander("Zero-shot prompts"):
        classes = ws.store.classes()
        with st.form("review_prompts", border=False):
            st.caption("How zero-shot suggestions describe each class, e.g. “a photo of a tabby cat”. Empty = the "
                       "default templates with the class name.")
            texts = {int(cid): st.text_input(widgets.md_escape(row["name"]), value=str(row["prompt"]),
                                             key=f"prompt_{cid}")
                     for cid, row in classes.iterrows()}
            if st.form_submit_button("Save prompts"):
                changed = [cid for cid, text in texts.items() if text.strip() != str(classes.at[cid, "prompt"])]
                with widgets.guard("saving prompts"):
                    for cid in changed:
                        ws.store.set_prompt(cid, texts[cid].strip())
                    st.toast(f"Saved {len(changed)} prompt(s)")
