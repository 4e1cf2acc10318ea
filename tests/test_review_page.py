"""The Review page through ``AppTest``: every queue action writes one batch (or only a review row), undo restores,
"accept all above X" writes one batch of the shown size, and the prompt editor saves prompts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_ok, open_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from curation.core.vocab import POSITIVE, REJECTED
from curation.data.workspace import Workspace
from curation.ui import state

PAGE = "pages/3_Review.py"
CLASSES = ["circle", "square", "triangle"]
N = 30


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str) -> Workspace:
    """30 tiny images in 3 separable classes (every fourth unlabelled) with imported embeddings."""
    embed = pytest.importorskip("curation.features.imported")
    ws = Workspace.create(tmp_path / "ws", task=task)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    records, labels = [], []
    for i in range(N):
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(np.full((8, 8, 3), 60 + 80 * (i % 3), np.uint8)).save(path)
        data = path.read_bytes()
        records.append({"path": path.name, "sha1": hashlib.sha1(data + bytes([i])).hexdigest(), "bytes": len(data),
                        "width": 8, "height": 8})
        labels.append([] if i % 4 == 3 else [CLASSES[i % 3]])
    ws.store.add_classes(CLASSES)
    ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(records), labels=labels)
    ids = ws.store.sample_ids()
    vectors = rng.normal(size=(3, 16))[np.arange(N) % 3] * 4 + rng.normal(size=(N, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    file = tmp_path / "vectors.parquet"
    pd.DataFrame({"id": ids, "embedding": list(vectors)}).to_parquet(file)
    embed.import_embeddings(ws, file, column="embedding", name="user")
    monkeypatch.setenv(state.WORKSPACE_ENV, str(ws.root))
    return ws


@pytest.fixture
def single(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    return _build(tmp_path, monkeypatch, "single")


@pytest.fixture
def multi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    return _build(tmp_path, monkeypatch, "multi")


def _page() -> AppTest:
    return open_page(PAGE, timeout=120, no_errors=True)


def _shown(at: AppTest) -> int:
    """The sample the card shows (its correction picker is keyed by it)."""
    return int(next(s.key for s in at.selectbox if s.key.startswith("review_fix_")).rsplit("_", 1)[1])


def _last_review(ws: Workspace) -> pd.Series:
    return ws.store.reviews().iloc[-1]


def test_confirm_queue_accept_skip_ambiguous_correct_and_undo(single: Workspace) -> None:
    ws = single
    at = _page()
    assert at.radio(key="review_kind").value == "confirm"
    shortcuts = {b.key: b.proto.shortcut.upper() for b in at.button}
    assert shortcuts["review_accept"] == "A" and shortcuts["review_undo"] == "U"

    # accept: one suggestion batch making the proposed class positive, one review row
    before = len(ws.store.batches())
    at.button(key="review_accept").click().run()
    assert_ok(at)
    (sid,) = at.session_state[state.K_REVIEW_DONE]
    batches = ws.store.batches()
    assert len(batches) == before + 1 and batches.iloc[0]["source"] == "suggestion"
    assert (ws.store.label_matrix(np.array([sid])) == POSITIVE).sum() == 1
    review = _last_review(ws)
    assert (review["sample_id"], review["queue"], review["verdict"]) == (sid, "confirm", "accepted")
    assert int(review["batch_id"]) == int(batches.index[0])

    # undo: the label is gone again, the undo is recorded, and the sample is back at the front
    at.button(key="review_undo").click().run()
    assert_ok(at)
    assert ws.store.batches().iloc[0]["source"] == "undo"
    assert (ws.store.label_matrix(np.array([sid])) == POSITIVE).sum() == 0
    assert _last_review(ws)["verdict"] == "undone" and at.session_state[state.K_REVIEW_DONE] == []
    assert at.session_state[state.K_REVIEW_FRONT] == sid
    assert _shown(at) == sid

    # skip: a review row, no batch; the next sample comes up
    n_batches = len(ws.store.batches())
    at.button(key="review_skip").click().run()
    assert_ok(at)
    assert len(ws.store.batches()) == n_batches and _last_review(ws)["verdict"] == "skipped"
    assert at.session_state[state.K_REVIEW_DONE] == [sid]

    # ambiguous: a review row only; with "also reject" it writes one rejection batch
    at.button(key="review_ambiguous").click().run()
    assert_ok(at)
    amb = int(at.session_state[state.K_REVIEW_DONE][-1])
    assert len(ws.store.batches()) == n_batches
    assert (_last_review(ws)["sample_id"], _last_review(ws)["verdict"]) == (amb, "ambiguous")
    at.checkbox(key="review_reject_on_mark").check().run()
    at.button(key="review_oov").click().run()
    assert_ok(at)
    oov = int(at.session_state[state.K_REVIEW_DONE][-1])
    assert len(ws.store.batches()) == n_batches + 1
    assert (ws.store.label_matrix(np.array([oov])) == REJECTED).sum() == 1
    assert _last_review(ws)["verdict"] == "out_of_vocabulary" and not pd.isna(_last_review(ws)["batch_id"])

    # correct through the type-ahead picker: one human batch
    fixed = _shown(at)
    at.selectbox(key=f"review_fix_confirm_{fixed}").set_value("triangle").run()
    assert_ok(at)
    assert ws.store.batches().iloc[0]["source"] == "human"
    assert ws.store.single_labels(np.array([fixed]))[0] == CLASSES.index("triangle")
    assert (_last_review(ws)["sample_id"], _last_review(ws)["verdict"]) == (fixed, "corrected")

    # the queue measures itself: 3 decisions so far (ambiguous, out of vocabulary, corrected) are all hits
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Reviewed in this queue"] == "3" and metrics["Hit rate"] == "100%"


def test_both_valid_is_refused_in_a_single_label_workspace(single: Workspace) -> None:
    at = _page()
    n_batches, n_reviews = len(single.store.batches()), len(single.store.reviews())
    at.button(key="review_both").click().run()
    assert not at.exception
    assert any("single-label" in e.value.replace("\\", "") for e in at.error)  # shown as plain text
    assert len(single.store.batches()) == n_batches and len(single.store.reviews()) == n_reviews


def test_multi_label_both_valid_label_right_and_reject(multi: Workspace) -> None:
    ws = multi
    # two circles by construction, labelled square only: circle is missing on both (the queue holds real gaps only:
    # with unknown labels as weak negatives, complete single-label images are no longer proposed a second label)
    wrong = ws.store.sample_ids()[[0, 6]].astype(int).tolist()
    ws.store.apply(wrong, [ws.store.class_id("square")] * 2, POSITIVE, source="human", exclusive=True)
    from curation.runtime import rescore
    rescore.rescore(ws, debounce=0)  # the worker's refresh after those labels lands before the visit
    at = _page()
    at.radio(key="review_kind").set_value("missing").run()
    assert_ok(at)
    sid = _shown(at)
    before = ws.store.label_matrix(np.array([sid]))[0]
    at.button(key="review_both").click().run()  # the proposed class is added, the label kept
    assert_ok(at)
    after = ws.store.label_matrix(np.array([sid]))[0]
    assert (after[before == POSITIVE] == POSITIVE).all() and (after == POSITIVE).sum() == (before == POSITIVE).sum() + 1
    assert ws.store.batches().iloc[0]["source"] == "review"
    assert (_last_review(ws)["queue"], _last_review(ws)["verdict"]) == ("missing", "both_valid")

    rescore.rescore(ws, debounce=0)  # the background refresh after that label lands; the page's poll reruns it
    at.run()
    n_batches = len(ws.store.batches())
    at.button(key="review_right").click().run()  # "the labels are right": a review row only
    assert_ok(at)
    assert len(ws.store.batches()) == n_batches and _last_review(ws)["verdict"] == "label_right"

    at.radio(key="review_kind").set_value("confirm").run()
    at.button(key="review_reject").click().run()
    assert_ok(at)
    sid = int(at.session_state[state.K_REVIEW_DONE][-1])
    assert len(ws.store.batches()) == n_batches + 1
    assert (ws.store.label_matrix(np.array([sid])) == REJECTED).sum() == 1
    assert (_last_review(ws)["queue"], _last_review(ws)["verdict"]) == ("confirm", "rejected")


def test_accept_all_above_x_writes_one_batch_of_the_shown_size(single: Workspace) -> None:
    ws = single
    at = _page()
    at.slider(key="bulk_accept_x").set_value(0.0).run()
    shown = int(next(m.value for m in at.metric if m.label == "Would be labelled").replace(",", ""))
    assert shown > 0
    assert at.button(key="bulk_accept_apply").disabled  # not before the confirmation
    before = len(ws.store.batches())
    at.checkbox(key="bulk_accept_confirm").check().run()
    at.button(key="bulk_accept_apply").click().run()
    assert_ok(at)
    batches = ws.store.batches()
    assert len(batches) == before + 1 and batches.iloc[0]["source"] == "bulk"
    assert int(batches.iloc[0]["n_events"]) == shown
    bulk = ws.store.reviews()
    assert (bulk["verdict"] == "bulk_accepted").sum() == shown
    assert next(m.value for m in at.metric if m.label == "Would be labelled") == "0"


def test_accept_all_by_cluster_counts_the_cluster(single: Workspace) -> None:
    from curation.features.embed import load_embeddings
    from curation.structure.cluster import compute_clusters

    clusters = compute_clusters(single, load_embeddings(single), k=3)["cluster"]
    at = _page()
    at.radio(key="bulk_accept_scope").set_value("cluster").run()
    at.slider(key="bulk_accept_x").set_value(0.0).run()
    assert_ok(at)
    picked = at.selectbox(key="bulk_accept_cluster").value
    members = clusters.index[clusters == picked]
    unlabelled = (single.store.label_matrix(members.to_numpy()) != POSITIVE).all(axis=1).sum()
    assert next(m.value for m in at.metric if m.label == "Would be labelled") == str(unlabelled)


def _prompt_script() -> None:
    from types import SimpleNamespace

    from curation.ui import loaders, review

    review.prompt_editor(loaders.current_workspace(), SimpleNamespace(has_text=True, encoder_name="tiny"))


def test_prompt_editor_writes_the_prompt(single: Workspace) -> None:
    at = _page()
    assert any("no text tower" in c.value for c in at.caption)  # imported vectors: no zero-shot
    at = AppTest.from_function(_prompt_script, default_timeout=60)
    at.run()
    assert_ok(at)
    cid = single.store.class_id("square")
    at.text_input(key=f"prompt_{cid}").input("a photo of a square tile")
    next(b for b in at.button if "Save prompts" in b.label).click()
    at.run()
    assert_ok(at)
    assert single.store.classes().at[cid, "prompt"] == "a photo of a square tile"


def test_page_opens_on_the_first_queue_with_work(single: Workspace) -> None:
    """With every image labelled there is nothing to confirm: the page opens on the next queue that has items."""
    ids = single.store.sample_ids()
    unlabelled = ids[3::4]
    single.store.set_label(unlabelled, single.store.class_id(CLASSES[0]), source="human")
    at = _page()
    assert at.radio(key="review_kind").value != "confirm"
    assert "0 to review" in at.radio(key="review_kind").proto.captions[0]
