"""The Streamlit UI: pure helpers of ``curation.ui`` and every page through ``AppTest``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from curation.store import POSITIVE
from curation.ui import labels, mapview, runs, selection, state
from curation.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = ["pages/1_Map.py", "pages/2_Review.py", "pages/3_Train.py", "pages/4_Evaluate.py", "pages/5_History.py",
         "pages/6_Search.py"]
CLASSES = ["circle", "square", "triangle"]
N = 60


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def clear_caches():
    """Caches outlive AppTest instances in one process: start every test from empty ones."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def _write_images(folder: Path) -> tuple[pd.DataFrame, list[list[str]]]:
    """60 tiny PNGs, 20 per class (grey levels by class); every fourth one unlabelled."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records, labels_ = [], []
    for i in range(N):
        k = i % 3
        pixels = np.clip(rng.normal(60 + 80 * k, 10, size=(8, 8, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(pixels).save(path)
        data = path.read_bytes()
        records.append({"path": path.name, "sha1": hashlib.sha1(data).hexdigest(), "bytes": len(data),
                        "width": 8, "height": 8})
        labels_.append([] if i % 4 == 3 else [CLASSES[k]])
    return pd.DataFrame(records), labels_


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A labelled workspace of 60 images (no embeddings), which the app opens through the environment."""
    ws = Workspace.create(tmp_path / "ws")
    folder = tmp_path / "images"
    records, labels_ = _write_images(folder)
    ws.store.add_classes(CLASSES)
    ws.store.add_samples(ws.store.root_id(folder), records, labels=labels_)
    monkeypatch.setenv(state.WORKSPACE_ENV, str(ws.root))
    return ws


@pytest.fixture
def embedded(workspace: Workspace, tmp_path: Path) -> Workspace:
    """The workspace with user-supplied embeddings (class-separated), a PCA map and suggestions."""
    embed = pytest.importorskip("curation.embed", reason="curation.embed is not written yet")
    from curation.project import compute_map

    ids = workspace.store.sample_ids()
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 16)) * 4
    vectors = centers[np.arange(len(ids)) % 3] + rng.normal(size=(len(ids), 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    file = tmp_path / "vectors.parquet"
    pd.DataFrame({"id": ids, "embedding": list(vectors)}).to_parquet(file)
    emb = embed.import_embeddings(workspace, file, column="embedding", name="user")
    compute_map(workspace, emb, method="pca")
    return workspace


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


# ---------------------------------------------------------------------- pure helpers
def test_selected_ids_reads_customdata_only():
    chart = {"selection": {"points": [
        {"customdata": 17, "point_index": 0, "curve_number": 0},
        {"customdata": [5], "point_index": 0, "curve_number": 1},  # same index, other colour / trace
        {"customdata": 17, "point_index": 3},
        {"point_index": 9},  # no customdata: ignored
    ], "point_indices": [0, 0, 3, 9], "box": [], "lasso": []}}
    assert selection.selected_ids(chart).tolist() == [5, 17]
    assert selection.selected_ids(None).tolist() == []
    assert selection.selected_ids({"selection": {"points": []}}).dtype == np.int64


def test_selected_ids_from_a_multicolour_map_figure():
    xy = np.array([[0, 0], [1, 1], [2, 2]], np.float32)
    ids = np.array([40, 7, 12])
    cats = ["a", "b", "(unlabelled)"]
    fig = mapview.map_figure(xy, ids, categories=cats, colours=mapview.category_colours(cats), hover=cats)
    assert len(fig.data) == 1 and fig.data[0].type == "scattergl"
    assert len(set(fig.data[0].marker.color)) == 3
    points = [{"customdata": int(fig.data[0].customdata[i]), "point_index": i} for i in (0, 2)]
    assert selection.selected_ids({"selection": {"points": points}}).tolist() == [12, 40]


def test_confusion_cell_ids_and_worst_cell():
    ids = np.array([10, 11, 12, 13, 14, 15])
    y_true = np.array([0, 0, 1, 1, 1, -1])
    y_pred = np.array([0, 1, 0, 0, 1, 0])
    conf = np.array([0.9, 0.8, 0.3, 0.7, 0.9, 0.99])
    assert selection.confusion_cell_ids(ids, y_true, y_pred, 1, 0).tolist() == [12, 13]
    assert selection.confusion_cell_ids(ids, y_true, y_pred, 1, 0, confidence=conf).tolist() == [13, 12]
    assert selection.worst_cell(np.array([[5, 1], [2, 9]])) == (1, 0)
    assert selection.worst_cell(np.eye(2, dtype=int)) == (0, 0)


def test_review_queue_orders_and_filters():
    ids = np.array([1, 2, 3, 4])
    m = np.array([[0, 0], [1, 0], [0, 0], [1, 0]], np.int8)
    sugg = pd.DataFrame({"class_idx": [0, 1, 1, 0], "class_name": ["a", "b", "b", "a"],
                         "confidence": [0.5, 0.9, 0.8, 0.99], "source": "knn"}, index=[1, 2, 3, 4])
    assert labels.review_queue(ids, m, sugg, queue="unlabelled").index.tolist() == [3, 1]
    assert labels.review_queue(ids, m, sugg, queue="disagree").index.tolist() == [2]
    assert labels.label_text(m, ["a", "b"]) == [labels.NONE, "a", labels.NONE, "a"]


def test_colour_modes_and_subsample():
    ids = np.array([1, 2])
    sugg = pd.DataFrame({"class_name": ["x", "y"], "confidence": [0.2, 0.9]}, index=[2, 1])
    assert mapview.colour_by("label", ids, label_text=["a", "b"])[0] == ["a", "b"]
    assert mapview.colour_by("suggestion", ids, label_text=["a", "b"], sugg=sugg)[0] == ["y", "x"]
    assert mapview.colour_by("confidence", ids, label_text=["a", "b"], sugg=sugg)[1].tolist() == [0.9, 0.2]
    rows = selection.subsample(1000, 100)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)


def test_eval_subset_keeps_the_runs_validation_samples():
    ids = np.array([1, 2, 3, 4])
    probs = np.eye(4, 2)
    got_ids, y, p = runs.eval_subset(ids, probs, np.array([0, -1, 1, 5]), {"val_ids": [1, 2, 4]}, "val")
    assert got_ids.tolist() == [1] and y.tolist() == [0] and p.shape == (1, 2)


# ---------------------------------------------------------------------- pages
def test_home_without_workspace_offers_demo_and_create(tmp_path, monkeypatch):
    monkeypatch.setenv(state.WORKSPACE_ENV, str(tmp_path / "nothing-here"))
    at = _app()
    assert any(b.label == "Build the demo workspace" for b in at.button)
    assert any("No workspace" in i.value for i in at.info)


def test_home_summary(workspace):
    at = _app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == "60"
    assert metrics["Classes"] == "3"
    assert metrics["Labelled"] == "45" and metrics["Unlabelled"] == "15"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_without_embeddings(workspace, page):
    at = _app(page)
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_with_embeddings(embedded, page):
    at = _app(page)
    assert not at.error, [e.value for e in at.error]


def test_map_bulk_assign_writes_one_batch(embedded):
    ws = embedded
    ids = ws.store.sample_ids()[:5]
    at = _app("pages/1_Map.py")
    at.session_state[state.K_MAP_CHART] = {"selection": {
        "points": [{"customdata": int(i)} for i in ids], "point_indices": [], "box": [], "lasso": []}}
    at.run()
    assert not at.exception
    before = len(ws.store.batches())
    next(s for s in at.selectbox if s.key == "bulk_class").set_value("triangle")
    at.run()
    _button(at, "bulk_apply").click().run()
    assert not at.exception
    batches = ws.store.batches()
    assert len(batches) == before + 1 and batches.iloc[0]["source"] == "bulk"
    k = CLASSES.index("triangle")
    assert (ws.store.label_matrix(ids)[:, k] == POSITIVE).all()
    assert at.session_state[state.K_LAST_BATCH] == int(batches.index[0])


def test_review_accept_writes_a_suggestion_event(embedded):
    pytest.importorskip("curation.suggest", reason="curation.suggest is not written yet")
    ws = embedded
    at = _app("pages/2_Review.py")
    _button(at, "review_accept").click().run()
    assert not at.exception
    batch_id = int(ws.store.batches().index[0])
    assert ws.store.batches().iloc[0]["source"] == "suggestion"
    ev = ws.store.events(batch_id)
    (sid,) = at.session_state[state.K_REVIEW_DONE]
    assert sid in ev["sample_id"].tolist()
    assert ev[(ev["sample_id"] == sid) & (ev["state"] == POSITIVE)].shape[0] == 1
    _button(at, "review_undo").click().run()
    assert ws.store.batches().iloc[0]["source"] == "undo"
    assert at.session_state[state.K_REVIEW_DONE] == []


def test_history_undo_restores_labels(workspace):
    ws = workspace
    ids = ws.store.sample_ids()[:3]
    before = ws.store.label_matrix(ids).copy()
    batch = ws.store.set_label(ids, ws.store.class_id("square"), source="human")
    at = _app("pages/5_History.py")
    next(s for s in at.selectbox if s.key == "history_batch").set_value(batch)
    at.run()
    _button(at, "history_undo").click().run()
    assert not at.exception
    np.testing.assert_array_equal(ws.store.label_matrix(ids), before)
    assert ws.store.batches().iloc[0]["source"] == "undo"


def test_evaluate_drilldown_with_a_run(embedded):
    train = pytest.importorskip("curation.train")
    ws = embedded
    run_id = train.run_training(ws, {"epochs": 20, "val_fraction": 0.3})
    at = _app("pages/4_Evaluate.py")
    assert [m.label for m in at.metric][:4] == list(runs.METRICS.values())
    next(r for r in at.radio if r.key == "eval_set").set_value("labelled")
    at.run()
    next(s for s in at.selectbox if s.key == "eval_true").set_value(0)
    next(s for s in at.selectbox if s.key == "eval_pred").set_value(0)
    at.run()
    assert not at.exception
    ids, probs = train.load_predictions(ws, run_id)
    y = ws.store.single_labels(ids)
    expected = {int(i) for i, t, p in zip(ids, y, probs.argmax(1)) if t == 0 and p == 0}
    shown = {int(c.value.split(" ")[0].lstrip("#")) for c in at.caption if c.value.startswith("#")}
    assert shown and shown <= expected
    sid = min(shown)
    before = len(ws.store.reviews())
    _button(at, f"verdict_model_wrong_{sid}").click().run()
    assert len(ws.store.reviews()) == before + 1


def test_search_by_image_finds_neighbours(embedded: Workspace) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/6_Search.py").run()
    assert not at.exception
    at.button(key="search_similar").click().run()
    assert not at.exception and not at.error


def test_issue_queue_orders_by_label_score() -> None:
    issues = pd.DataFrame({"given": [0, 1, -1, 0], "is_label_issue": [True, True, False, False],
                           "suggested": [1, 0, 1, 0], "suggested_prob": [0.9, 0.7, 0.5, 0.9],
                           "label_score": [0.30, 0.05, 1.0, 0.9]}, index=pd.Index([10, 11, 12, 13], name="id"))
    q = labels.issue_queue(issues, ["cat", "dog"])
    assert q.index.tolist() == [11, 10]
    assert q["class_name"].tolist() == ["cat", "dog"] and (q["source"] == "confident learning + kNN").all()


def test_review_issue_queue_accept_writes_one_batch(embedded: Workspace) -> None:
    ids = embedded.store.sample_ids()
    wrong = int(ids[0])  # class 0 by construction: plant a wrong label
    embedded.store.set_label([wrong], embedded.store.class_id(CLASSES[1]), source="human")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/2_Review.py").run()
    at.radio(key="review_kind").set_value("issues").run()
    assert not at.exception and not at.error
    before = len(embedded.store.batches())
    accept = [b for b in at.button if b.key == "review_accept"]
    assert accept, "the planted error should head the queue"
    accept[0].click().run()
    assert len(embedded.store.batches()) == before + 1
    assert embedded.store.batches().iloc[0]["source"] == "suggestion"
    assert embedded.store.single_labels(np.array([wrong]))[0] == 0
