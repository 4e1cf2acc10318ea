"""The Evaluate page: clickable confusion cells, verdicts, run comparison, pinned slice, multi-label runs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_ok, open_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from curation.core.vocab import POSITIVE
from curation.data import pins
from curation.data.workspace import Workspace
from curation.models.evaluate import multilabel_confusion_pairs
from curation.ui import evalview, selection, state

model_runs = pytest.importorskip("curation.models.runs")
embed = pytest.importorskip("curation.features.imported")

PAGE = "pages/5_Evaluate.py"
CLASSES = ["circle", "square", "triangle"]
N = 60
FAST = {"epochs": 40, "batch_size": 0, "patience": 0, "val_fraction": 0.3}


# ---------------------------------------------------------------------- fixtures
def _build(root: Path, *, task: str) -> tuple[Workspace, int, int]:
    """A workspace of 60 tiny images with class-separated imported embeddings and two runs.

    Single-label: run A is a barely trained head, then 4 labels are fixed, then run B trains properly,
    so B gets samples right that A got wrong. Multi-label: every third image also carries the next class.
    """
    folder = root / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records, labels_ = [], []
    for i in range(N):
        k = i % 3
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(np.full((8, 8, 3), 60 + 80 * k, np.uint8)).save(path)
        data = path.read_bytes()
        records.append({"path": path.name, "sha1": hashlib.sha1(data + bytes([i])).hexdigest(), "bytes": len(data),
                        "width": 8, "height": 8})
        extra = [CLASSES[(k + 1) % 3]] if task == "multi" and i % 3 == 0 else []
        labels_.append([CLASSES[k], *extra])
    ws = Workspace.create(root / "ws", task=task)
    ws.store.add_classes(CLASSES)
    ids, _ = ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(records), labels=labels_)
    centers = rng.normal(size=(3, 16)) * 3
    vectors = centers[np.arange(N) % 3] + rng.normal(size=(N, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    file = root / "vectors.parquet"
    pd.DataFrame({"id": ids, "embedding": list(vectors)}).to_parquet(file)
    embed.import_embeddings(ws, file, column="embedding", name="user")
    if task == "single":  # plant 4 wrong labels the first run learns from
        for n, sid in enumerate(ids[:4]):
            ws.store.set_label([sid], ws.store.class_id(CLASSES[(n + 1) % 3]))
    a = model_runs.run_training(ws, {**FAST, "epochs": 1, "lr": 1e-4})
    if task == "single":  # fix them
        for n, sid in enumerate(ids[:4]):
            ws.store.set_label([sid], ws.store.class_id(CLASSES[n % 3]))
    b = model_runs.run_training(ws, FAST)
    ws.store.close()
    return ws, a, b


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, int]]:
    """Built once: a single-label and a multi-label workspace, each with two finished runs."""
    out = {}
    for task in ("single", "multi"):
        ws, a, b = _build(tmp_path_factory.mktemp(task), task=task)
        out[task] = (ws.root, a, b)
    return out


def _copy(templates, task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, int, int]:
    src, a, b = templates[task]
    shutil.copytree(src, tmp_path / "ws")
    monkeypatch.setenv(state.WORKSPACE_ENV, str(tmp_path / "ws"))
    return Workspace.open(tmp_path / "ws"), a, b


@pytest.fixture
def single(templates, tmp_path, monkeypatch) -> tuple[Workspace, int, int]:
    return _copy(templates, "single", tmp_path, monkeypatch)


@pytest.fixture
def multi(templates, tmp_path, monkeypatch) -> tuple[Workspace, int, int]:
    return _copy(templates, "multi", tmp_path, monkeypatch)


def _page() -> AppTest:
    return open_page(PAGE, no_errors=True)


def _shown_ids(at: AppTest) -> list[int]:
    """Ids of the images in the cell grid, ascending (their captions start with "#<id> · label"; the grid's
    four columns make the element order column-major, so the page's ranking is checked in the pure tests)."""
    return sorted(int(c.value.split(" ")[0].lstrip("#")) for c in at.caption if c.value.startswith("#"))


def _click(at: AppTest, i: int, j: int) -> None:
    at.session_state[evalview.K_CHART] = {"selection": {"points": [{"customdata": [i, j]}], "point_indices": [],
                                                        "box": [], "lasso": []}}
    at.run()
    assert_ok(at)


def _expected_cell(ws: Workspace, run_id: int, i: int, j: int, *, which: str = "val") -> list[int]:
    """The cell's ids computed independently of the page: most confident first, ties by id."""
    ids, probs = model_runs.load_predictions(ws, run_id)
    keep = np.isin(ids, ws.store.run(run_id)["metrics"][f"{which}_ids"])
    ids, probs = ids[keep], probs[keep]
    if ws.store.task == "single":
        y = ws.store.single_labels(ids)
        rows = np.flatnonzero((y == i) & (probs.argmax(1) == j))
    else:
        r, t, p = multilabel_confusion_pairs(ws.store.label_matrix(ids), probs)
        rows = r[(t == i) & (p == j)]
    order = np.lexsort((ids[rows], -probs[rows].max(1)))
    return ids[rows][order].tolist()


def _click_a_mistake(ws: Workspace, run_id: int) -> tuple[AppTest, int, int]:
    """The page on ``run_id`` with an off-diagonal cell clicked: (app, true class, predicted class)."""
    at = _page()
    at.selectbox(key="eval_run").set_value(run_id)
    at.run()
    i, j = _a_mistake(ws, run_id)
    _click(at, i, j)
    return at, i, j


def _a_mistake(ws: Workspace, run_id: int) -> tuple[int, int]:
    """An off-diagonal cell of the run's validation confusion with at least one sample."""
    for i in range(3):
        for j in range(3):
            if i != j and _expected_cell(ws, run_id, i, j):
                return i, j
    raise AssertionError("the weak run should make mistakes")


# ---------------------------------------------------------------------- pure pieces
def test_confusion_figure_cells_carry_their_coordinates():
    c = np.array([[5, 1, 0], [2, 9, 0], [0, 0, 4]])
    fig = evalview.confusion_figure(c, ["a<b>", "b", "c"], selected=(1, 0))
    heat, cells = fig.data
    assert heat.type == "heatmap" and heat.hoverinfo == "skip"
    assert cells.type == "scatter" and len(cells.customdata) == int((c > 0).sum())  # empty cells: no marker
    k = next(n for n, d in enumerate(cells.customdata) if list(d) == [1, 0])
    assert (cells.x[k], cells.y[k]) == (0, 1) and "2 samples" in cells.hovertext[k]
    assert "<b>" not in "".join(cells.hovertext) and "a&lt;b&gt;" in fig.layout.xaxis.ticktext[0]
    point = {"customdata": list(cells.customdata[k]), "curve_number": 1, "point_index": k}
    assert selection.confusion_click({"selection": {"points": [point]}}) == (1, 0)
    assert len(fig.layout.shapes) == 1


def test_confusion_click_conversion():
    state_ = {"selection": {"points": [{"customdata": [2, 1], "point_index": 7}], "point_indices": [7],
                            "box": [], "lasso": []}}
    assert selection.confusion_click(state_) == (2, 1)
    assert selection.confusion_click(None) is None
    assert selection.confusion_click({"selection": {"points": []}}) is None
    assert selection.confusion_click({"selection": {"points": [{"customdata": 5}]}}) is None
    # what the browser really sends for a numpy customdata row
    assert selection.confusion_click({"selection": {"points": [{"customdata": {"0": 2, "1": 0}}]}}) == (2, 0)


def test_big_confusion_maps_draw_the_most_confused_classes():
    c = np.diag(np.full(50, 10))
    c[7, 31] = 4
    c[45, 2] = 1
    shown = evalview.shown_classes(c, limit=4)
    assert shown.tolist() == [2, 7, 31, 45]
    fig = evalview.confusion_figure(c, [f"c{i}" for i in range(50)], selected=(7, 31))
    assert fig.data[0].z.shape == (evalview.MAX_MAP_CLASSES,) * 2
    assert [7, 31] in [list(d) for d in fig.data[1].customdata] and len(fig.layout.shapes) == 1


def test_reliability_figure_shows_counts_and_diagonal():
    from curation.models.evaluate import reliability_bins

    rb = reliability_bins(np.array([0.95, 0.95, 0.55]), np.array([True, False, True]), bins=10)
    fig = evalview.reliability_figure(rb)
    bars = fig.data[0]
    assert bars.type == "bar" and list(bars.text) == [1, 2] and list(bars.y) == [1.0, 0.5]
    assert list(fig.data[2].x) == [0, 1] and list(fig.data[2].y) == [0, 1]


def test_evaluation_multilabel_pairs_and_prediction_text():
    Y = np.array([[1, 1, 0], [1, -1, 0], [0, 1, 0]], np.int8)
    probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    ev = evalview.evaluation(np.array([10, 11, 12]), probs, Y, task="multi", names=["a", "b", "c"],
                             thresholds=[0.5, 0.5, 0.5])
    np.testing.assert_array_equal(ev.confusion, [[0, 1, 0], [0, 1, 1], [0, 0, 0]])
    assert ev.cell(0, 1)[0].tolist() == [11] and ev.cell(1, 1)[0].tolist() == [10]
    single = evalview.evaluation(np.array([5, 6, 7]), np.array([[0.6, 0.4], [0.9, 0.1], [0.3, 0.7]]),
                                 np.array([0, 0, 0]), task="single", names=["a", "b"])
    ids, conf = single.cell(0, 0)
    assert ids.tolist() == [6, 5] and conf.tolist() == [0.9, 0.6]  # most confident first
    assert ev.report["real_accuracy"] == pytest.approx(1 / 3)
    text = evalview.prediction_text(np.array([12, 99]), np.array([10, 11, 12]), probs, ["a", "b", "c"])
    assert text == ["c (0.70)", "not predicted"]


def test_pinned_captions_judge_each_pinned_sample():
    pins = np.array([1, 2, 3, 4])
    matrix = np.array([[1, 0], [0, 1], [0, 0], [1, 0]], np.int8)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]])
    got = evalview.pinned_captions(pins, matrix, ["a", "b"], np.array([1, 2, 3]), probs, ["a", "b"])
    assert got == ["a · a (0.90) · right", "b · a (0.80) · wrong", "(unlabelled) · a (0.50) · —",
                   "a · not predicted · —"]


# ---------------------------------------------------------------------- the page
def test_click_and_selectboxes_open_the_same_cell(single):
    ws, a, b = single
    at, i, j = _click_a_mistake(ws, a)
    assert (at.selectbox(key=evalview.K_TRUE).value, at.selectbox(key=evalview.K_PRED).value) == (i, j)
    assert _shown_ids(at) == sorted(_expected_cell(ws, a, i, j)[:evalview.CELL_PAGE])
    # the selectboxes take over; the old click does not pull them back
    at.selectbox(key=evalview.K_TRUE).set_value(j)
    at.selectbox(key=evalview.K_PRED).set_value(j)
    at.run()
    assert_ok(at)
    assert at.selectbox(key=evalview.K_TRUE).value == j
    assert _shown_ids(at) == sorted(_expected_cell(ws, a, j, j)[:evalview.CELL_PAGE])


def test_verdict_writes_review_and_label_batch(single):
    ws, a, b = single
    at, i, j = _click_a_mistake(ws, a)
    sid = _shown_ids(at)[0]
    at.button(key=f"verdict_label_wrong_{sid}").click().run()
    assert_ok(at)
    rev = ws.store.reviews().iloc[-1]
    assert (rev["sample_id"], rev["verdict"], rev["queue"], rev["run_id"]) == (sid, "label_wrong", "evaluate", a)
    batch = ws.store.batches().iloc[0]
    assert batch["source"] == "review" and int(rev["batch_id"]) == int(batch.name)
    ev = ws.store.events(int(batch.name))
    assert set(zip(ev["class_name"], ev["state"])) == {(CLASSES[j], POSITIVE), (CLASSES[i], 0)}
    assert ws.store.single_labels(np.array([sid]))[0] == j
    metric = next(m for m in at.metric if m.label == "Mistakes that were not mistakes")
    assert metric.value == "100%"
    # a model-wrong verdict changes no label
    other = [s for s in _shown_ids(at) if s != sid]
    if other:
        n_batches = len(ws.store.batches())
        at.button(key=f"verdict_model_wrong_{other[0]}").click().run()
        assert len(ws.store.batches()) == n_batches and ws.store.reviews().iloc[-1]["verdict"] == "model_wrong"


def test_compare_runs_shows_flips_and_label_changes(single):
    ws, a, b = single
    cmp = model_runs.compare_runs(ws, a, b)
    assert len(cmp["became_right"]) > 0
    at = _page()
    at.selectbox(key="eval_cmp_a").set_value(a)
    at.selectbox(key="eval_cmp_b").set_value(b)
    at.run()
    assert_ok(at)
    tabs = {t.label.split(" (")[0]: t for t in at.tabs}
    right = tabs["Became right"]
    assert right.label == f"Became right ({len(cmp['became_right'])})"
    shown = [int(c.split(" ")[0].lstrip("#")) for img in right.image for c in img.captions]
    assert shown == cmp["became_right"].tolist()[:48]
    changes = tabs["Label changes"]
    assert changes.label == "Label changes (4 samples)"
    assert changes.dataframe[0].value.loc["human", "samples"] == 4
    captions = [c for img in changes.image for c in img.captions]
    assert len(captions) == 4 and all("→" in c for c in captions)


def test_pin_from_the_cell_and_unpin_from_the_slice(single):
    ws, a, b = single
    at = _page()
    sid = _shown_ids(at)[0]
    agree = at.selectbox(key=evalview.K_TRUE).value == at.selectbox(key=evalview.K_PRED).value
    at.button(key=f"pin_{sid}").click().run()
    assert_ok(at)
    assert pins.pinned(ws).tolist() == [sid]
    assert at.button(key=f"pin_{sid}").label == "Unpin"
    captions = [c for img in at.image for c in img.captions if c.startswith(f"#{sid} ")]
    assert captions and captions[-1].endswith("right" if agree else "wrong")
    at.multiselect(key="eval_unpin").set_value([sid])
    at.run()
    at.button(key="eval_unpin_apply").click().run()
    assert_ok(at)
    assert pins.pinned(ws).tolist() == []


def test_runs_report_their_pinned_slice(single):
    ws, a, b = single
    table = evalview.pinned_runs_table(ws.store.runs(), [b, a])
    assert table["run"].tolist() == [b, a] and (table["pinned"] == 0).all()


def test_multilabel_workspace(multi):
    ws, a, b = multi
    at = _page()
    labels_ = [m.label for m in at.metric]
    assert labels_[:4] == ["mAP", "Micro-F1", "Macro-F1", "ReaL accuracy"]
    assert "ReaL accuracy" in labels_[4:]
    by = next(d.value for d in at.dataframe if "n_labels" in d.value.columns)
    assert set(by["n_labels"]) == {1, 2}
    for i, j in ((0, 0), (1, 1), _a_mistake(ws, a)):
        _click(at, i, j)
        assert _shown_ids(at) == sorted(_expected_cell(ws, b, i, j)[:evalview.CELL_PAGE])


def test_finetune_runs_are_read_like_head_runs(single):
    ws, a, b = single
    rec = ws.store.run(b)
    rid = ws.store.add_run("finetune", {"encoder": "openclip:ViT-B-32", "epochs": 3},
                           last_event_id=rec["last_event_id"], encoder="enc", device="cpu")
    ids, probs = model_runs.load_predictions(ws, b)
    ws.artifacts.save_arrays(model_runs.PREDICTIONS_KIND, f"run-{rid}", {"ids": np.asarray(ids), "probs": np.asarray(probs)},
                             config={"run_id": rid})
    ws.store.update_run(rid, status="done", duration=1.0, metrics=rec["metrics"])
    at = _page()
    run_box = at.selectbox(key="eval_run")
    assert run_box.value == rid and f"Run {rid} · finetune · cpu" in run_box.options
    assert [m.label for m in at.metric][:4] == ["Accuracy", "Balanced accuracy", "Macro-F1", "ECE"]
    at.selectbox(key="eval_cmp_a").set_value(b)
    at.run()
    assert_ok(at)
    assert {t.label for t in at.tabs} >= {"Became right (0)", "Became wrong (0)"}  # same predictions as run b


def test_multilabel_label_wrong_rejects_the_wrong_label_in_the_same_batch(multi):
    ws, _, b = multi
    from curation.core.vocab import POSITIVE, REJECTED
    from curation.ui import actions

    sid = int(ws.store.sample_ids()[1])  # labelled "square" only
    before = ws.store.label_matrix([sid])[0]
    true_k = int(np.flatnonzero(before == POSITIVE)[0])
    pred_k = (true_k + 1) % 3
    batch = actions.record_verdict(ws, sid, "label_wrong", predicted_idx=pred_k, run_id=b, true_idx=true_k)
    after = ws.store.label_matrix([sid])[0]
    assert after[pred_k] == POSITIVE and after[true_k] == REJECTED
    assert len(ws.store.events(batch)) == 2 and ws.store.check() == []
    ws.store.undo(batch)
    assert (ws.store.label_matrix([sid])[0] == before).all()


def test_page_verdicts_are_the_engines():
    """The Evaluate buttons and the engine's outcome table name the same verdicts (no drift between the lists)."""
    from curation.models.evaluate import MISTAKE_VERDICTS
    from curation.ui import actions

    assert set(actions.VERDICTS) == set(MISTAKE_VERDICTS)
