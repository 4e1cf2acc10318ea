"""The Streamlit UI: pure helpers of ``curation.ui`` and every page through ``AppTest``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import open_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from curation.core.vocab import POSITIVE
from curation.data import pins
from curation.data.workspace import Workspace
from curation.ui import labels, mapview, runs, selection, state

PAGES = ["pages/1_Map.py", "pages/2_Clusters.py", "pages/3_Review.py", "pages/4_Train.py", "pages/5_Evaluate.py",
         "pages/6_Search.py", "pages/7_History.py", "pages/8_Grid.py", "pages/9_Guidelines.py"]
CLASSES = ["circle", "square", "triangle"]
N = 60


# ---------------------------------------------------------------------- fixtures
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
    embed = pytest.importorskip("curation.features.imported")
    from curation.features.project import compute_map

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
    return open_page(page)


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


def test_label_text_lists_positives_or_unlabelled():
    m = np.array([[0, 0], [1, 0], [0, -1], [1, 1]], np.int8)
    assert labels.label_text(m, ["a", "b"]) == [labels.NONE, "a", labels.NONE, "a, b"]
    assert labels.label_text(m, ["a", "b"], state=-1, empty="") == ["", "", "b", ""]


def test_colour_modes():
    ids = np.array([1, 2])
    sugg = pd.DataFrame({"class_name": ["x", "y"], "confidence": [0.2, 0.9]}, index=[2, 1])
    assert mapview.colour_by("label", ids, label_text=["a", "b"])[0] == ["a", "b"]
    assert mapview.colour_by("suggestion", ids, label_text=["a", "b"], sugg=sugg)[0] == ["y", "x"]
    assert mapview.colour_by("confidence", ids, label_text=["a", "b"], sugg=sugg)[1].tolist() == [0.9, 0.2]


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
    pytest.importorskip("curation.labels.suggest", reason="curation.labels.suggest is not written yet")
    ws = embedded
    at = _app("pages/3_Review.py")
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
    at = _app("pages/7_History.py")
    next(s for s in at.selectbox if s.key == "history_batch").set_value(batch)
    at.run()
    _button(at, "history_undo").click().run()
    assert not at.exception
    np.testing.assert_array_equal(ws.store.label_matrix(ids), before)
    assert ws.store.batches().iloc[0]["source"] == "undo"


def test_evaluate_drilldown_with_a_run(embedded):
    model_runs = pytest.importorskip("curation.models.runs")
    ws = embedded
    run_id = model_runs.run_training(ws, {"epochs": 20, "val_fraction": 0.3})
    at = _app("pages/5_Evaluate.py")
    assert [m.label for m in at.metric][:4] == list(runs.METRICS.values())
    next(r for r in at.radio if r.key == "eval_set").set_value("labelled")
    at.run()
    next(s for s in at.selectbox if s.key == "eval_true").set_value(0)
    next(s for s in at.selectbox if s.key == "eval_pred").set_value(0)
    at.run()
    assert not at.exception
    ids, probs = model_runs.load_predictions(ws, run_id)
    y = ws.store.single_labels(ids)
    expected = {int(i) for i, t, p in zip(ids, y, probs.argmax(1)) if t == 0 and p == 0}
    shown = {int(c.value.split(" ")[0].lstrip("#")) for c in at.caption if c.value.startswith("#")}
    assert shown and shown <= expected
    sid = min(shown)
    before = len(ws.store.reviews())
    _button(at, f"verdict_model_wrong_{sid}").click().run()
    assert len(ws.store.reviews()) == before + 1


def test_search_by_image_finds_neighbours(embedded: Workspace) -> None:
    at = open_page("pages/6_Search.py")
    at.button(key="search_similar").click().run()
    assert not at.exception and not at.error


def test_review_issue_queue_accept_writes_one_batch(embedded: Workspace) -> None:
    ids = embedded.store.sample_ids()
    wrong = int(ids[0])  # class 0 by construction: plant a wrong label
    embedded.store.set_label([wrong], embedded.store.class_id(CLASSES[1]), source="human")
    at = open_page("pages/3_Review.py", timeout=120)
    at.radio(key="review_kind").set_value("errors").run()
    assert not at.exception and not at.error
    before = len(embedded.store.batches())
    accept = [b for b in at.button if b.key == "review_accept"]
    assert accept, "the planted error should head the queue"
    accept[0].click().run()
    assert len(embedded.store.batches()) == before + 1
    assert embedded.store.batches().iloc[0]["source"] == "suggestion"
    assert embedded.store.single_labels(np.array([wrong]))[0] == 0


# ---------------------------------------------------------------------- map: filters, subsample, selection, bulk
def _drawn_ids(at: AppTest) -> list[int]:
    """Sample ids drawn by the Map page's plotly chart (its figure JSON, read from the element's proto)."""
    import base64
    import json

    (chart,) = [e for e in at.get("plotly_chart")]
    (trace,) = json.loads(chart.proto.spec)["data"]
    data = trace["customdata"]  # plotly ships numpy arrays as {"dtype", "bdata": base64}
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), np.dtype(data["dtype"])).astype(int).tolist()
    return [int(i) for i in data]


def _select(at: AppTest, ids) -> None:
    at.session_state[state.K_MAP_CHART] = {"selection": {
        "points": [{"customdata": int(i), "point_index": 0, "curve_number": 0} for i in ids],
        "point_indices": [0] * len(ids), "box": [], "lasso": []}}


def test_density_sample_keeps_density_and_outliers_and_every_filtered_point():
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(size=(8000, 2)), rng.normal(size=(2000, 2)) * 0.2 + 6, [[40.0, 40.0]]])
    rows = selection.density_sample(xy, 1000)
    assert len(rows) <= 1000 and np.all(np.diff(rows) > 0)
    assert len(xy) - 1 in rows  # the lone outlier keeps its cell
    share = np.mean(rows < 8000)
    assert 0.7 < share < 0.9  # the two blobs keep their 4:1 ratio
    keep = np.zeros(len(xy), bool)
    keep[rng.choice(len(xy), 300, replace=False)] = True
    drawn = selection.rows_to_draw(xy, keep, 1000)
    assert len(drawn) <= 1000 and set(np.flatnonzero(keep)) <= set(drawn.tolist())
    many = np.ones(len(xy), bool)
    assert len(selection.rows_to_draw(xy, many, 1000)) <= 1000  # a filter bigger than the budget is sampled too
    np.testing.assert_array_equal(selection.rows_to_draw(xy[:50], keep[:50], 1000), np.arange(50))


def test_filter_masks():
    ids = np.array([1, 2, 3, 4])
    m = np.array([[1, 0], [0, 1], [0, 0], [0, -1]], np.int8)
    issues = pd.DataFrame({"is_label_issue": [True, False]}, index=[2, 3])
    clusters = pd.Series([0, 1, 1, 0], index=[1, 2, 3, 4])
    assert selection.filter_mask("all", ids).all()
    assert selection.filter_mask("class", ids, labels=m, classes=[1]).tolist() == [False, True, False, False]
    assert selection.filter_mask("unlabelled", ids, labels=m).tolist() == [False, False, True, True]
    assert selection.filter_mask("errors", ids, issues=issues).tolist() == [False, True, False, False]
    assert selection.filter_mask("cluster", ids, clusters=clusters, cluster_ids=[1]).tolist() == [False, True, True,
                                                                                                  False]
    with pytest.raises(ValueError, match="use one of"):
        selection.filter_mask("nope", ids)


def test_map_figure_one_trace_for_every_colour_mode_and_ids_from_customdata():
    ids = np.array([40, 7, 12, 99])
    xy = np.arange(8, dtype=np.float32).reshape(4, 2)
    text = ["a", "b", labels.NONE, "<b>x</b>"]
    sugg = pd.DataFrame({"class_name": ["a", "b"], "confidence": [0.9, 0.4]}, index=[40, 12])
    issues = pd.DataFrame({"label_score": [0.1, 0.8], "outlier_score": [0.5, 0.2]}, index=[7, 99])
    clusters = pd.Series([0, 1, 1, 2], index=ids)
    for mode in mapview.COLOUR_MODES:
        cats, values = mapview.colour_by(mode, ids, label_text=text, sugg=sugg, clusters=clusters, issues=issues,
                                         splits=pd.Series(["train"] * 4, index=ids))
        fig = mapview.map_figure(xy, ids, categories=cats, colours=cats and mapview.category_colours(cats),
                                 values=values, faded=np.array([False, True, False, True]),
                                 hover=mapview.hover_text(ids, text, sugg))
        assert len(fig.data) == 1 and fig.data[0].type == "scattergl", mode
        points = [{"customdata": int(fig.data[0].customdata[i]), "point_index": i, "curve_number": 0} for i in (3, 1)]
        assert selection.selected_ids({"selection": {"points": points}}).tolist() == [7, 99], mode
    label_issue = mapview.colour_by("label issue", ids, label_text=text, issues=issues)[1]
    assert np.isnan(label_issue[0]) and label_issue[1] == 0.1  # missing scores are drawn grey, not as "worst"
    hover = mapview.hover_text(ids, text, sugg)
    assert "&lt;b&gt;" in hover[3] and hover[0] == "a<br>suggests a (0.90)"
    assert "click to preview" in fig.data[0].hovertemplate and "%{customdata}" in fig.data[0].hovertemplate


def test_map_filter_and_subsample_draw_every_filtered_point(embedded, monkeypatch):
    monkeypatch.setattr(mapview, "MAX_POINTS", 25)
    ws = embedded
    unlabelled = [int(i) for i, row in zip(ws.store.sample_ids(), ws.store.label_matrix()) if not (row == POSITIVE).any()]
    at = _app("pages/1_Map.py")
    assert len(_drawn_ids(at)) <= 25
    at.multiselect(key="fb_labels").set_value(["(unlabelled)"]).run()  # the shared filter bar
    assert not at.exception and not at.error
    drawn = _drawn_ids(at)
    assert len(unlabelled) == 15 and set(unlabelled) <= set(drawn) and len(drawn) <= 25
    assert any("all 15 points of the filter" in c.value for c in at.caption)
    _select(at, drawn)  # a lasso over everything drawn: only the filtered points are acted on
    at.run()
    assert any(h.value == "15 selected" for h in at.subheader)


def test_map_selection_of_several_colours_maps_to_the_right_ids(embedded):
    ws = embedded
    ids = ws.store.sample_ids()
    chosen = [int(ids[0]), int(ids[1]), int(ids[3])]  # circle, square and an unlabelled one: three colours
    at = _app("pages/1_Map.py")
    at.segmented_control(key="map_colour").set_value("label").run()
    _select(at, chosen + [10_000])  # an id not on the map is ignored
    at.run()
    assert not at.exception
    assert any(h.value == "3 selected" for h in at.subheader)
    cards = {int(c.key.rsplit("_", 1)[-1]) for c in at.checkbox if str(c.key).startswith("bulk_x")}
    assert cards == set(chosen)  # the grid of the selection


def test_map_click_previews_one_point(embedded):
    import json

    sid = int(embedded.store.sample_ids()[2])
    at = _app("pages/1_Map.py")
    at.segmented_control(key="map_mouse").set_value("pan").run()  # clicks select points outside lasso mode
    (chart,) = at.get("plotly_chart")
    assert json.loads(chart.proto.spec)["layout"]["dragmode"] == "pan"
    _select(at, [sid])
    at.run()
    assert not at.exception and not at.error
    assert any(m.value == f"**Sample {sid}**" for m in at.markdown) and len(at.image) == 2  # preview + grid


def test_map_layout_switch_and_umap_job(embedded, monkeypatch):
    from curation.ui import jobpanel

    submitted = []
    monkeypatch.setattr(jobpanel, "submit", lambda ws, kind, params=None: submitted.append((kind, params)))
    at = _app("pages/1_Map.py")
    assert any("No UMAP map yet" in i.value for i in at.info)  # the fixture computed only PCA
    at.segmented_control(key="map_layout").set_value("pca").run()
    assert not at.info and any(c.value.startswith("PCA of 60") for c in at.caption)
    at.segmented_control(key="map_run_mode").set_value("reproducible").run()
    _button(at, "map_compute").click().run()
    assert submitted == [("map", {"method": "umap", "reproducible": True})]


def test_map_mark_reviewed_and_pin_write_the_right_rows(embedded):
    ws = embedded
    ids = [int(i) for i in ws.store.sample_ids()[5:9]]
    at = _app("pages/1_Map.py")
    _select(at, ids)
    at.run()
    batches = len(ws.store.batches())
    _button(at, "bulk_reviewed").click().run()
    reviews = ws.store.reviews("map")
    assert sorted(reviews["sample_id"].tolist()) == ids and set(reviews["verdict"]) == {"reviewed"}
    _button(at, "bulk_pin").click().run()
    assert not at.exception and not at.error
    assert pins.pinned(ws).tolist() == ids
    assert len(ws.store.batches()) == batches  # neither changes a label


def test_history_export_with_automatic_destination(workspace):
    at = _app("pages/7_History.py")
    next(s for s in at.selectbox if s.label == "Format").set_value("jsonl")
    next(b for b in at.button if b.label == "Export").click().run()
    assert not at.exception and not at.error
    written = sorted((workspace.root / "exports").glob("jsonl-*.jsonl"))
    from curation.ui.text import plain

    assert len(written) == 1 and any(plain(written[0]) in s.value for s in at.success)  # shown as plain text
    assert len(written[0].read_text().splitlines()) == len(workspace.store.sample_ids())


def test_bulk_accept_fills_gaps_unless_asked_to_replace_labels(workspace):
    """A bulk accept labels only unlabelled images, never with a class a person rejected for them; relabelling
    images whose label disagrees with the suggestion takes the explicit ``replace_labels``."""
    from curation.core.vocab import REJECTED
    from curation.ui import actions

    ws = workspace
    ids = ws.store.sample_ids()
    before = ws.store.label_matrix(ids)
    labelled = (before == POSITIVE).any(1)
    unlabelled = ids[~labelled]
    ws.store.reject_label(unlabelled[:1], ws.store.class_id("triangle"))
    sugg = pd.DataFrame({"class_idx": 2.0}, index=ids)  # "triangle" everywhere
    assert set(actions.suggestions_to_accept(ws, ids, sugg).index) == set(unlabelled[1:].tolist())
    batch = actions.accept_suggestions(ws, ids, sugg)
    after = ws.store.label_matrix(ids)
    np.testing.assert_array_equal(after[labelled], before[labelled])          # labels left alone
    assert (after[np.isin(ids, unlabelled[1:]), 2] == POSITIVE).all() and after[~labelled][0, 2] == REJECTED
    assert set(ws.store.reviews().query("verdict == 'bulk_accepted'")["sample_id"]) == set(unlabelled[1:].tolist())
    assert ws.store.batches().loc[batch, "source"] == "bulk"
    wrong = ids[labelled & (before[:, 2] != POSITIVE)]
    assert set(wrong.tolist()) <= set(actions.suggestions_to_accept(ws, ids, sugg, replace_labels=True).index)
    actions.accept_suggestions(ws, ids, sugg, replace_labels=True)
    assert (ws.store.label_matrix(wrong)[:, 2] == POSITIVE).all()
