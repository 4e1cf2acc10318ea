"""The Grid page and the studio parts around it through ``AppTest``: number keys label the current image, the
cursor moves, ticks narrow the bulk bar, tags are undoable, the filter is shared, the class manager never creates a
class without an explicit click."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_ok, open_page
from test_review_page import CLASSES, _build

from curation.data import classes, tags
from curation.data.store import POSITIVE
from curation.data.workspace import Workspace
from curation.ui import state

PAGE = "pages/8_Grid.py"


@pytest.fixture
def single(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    return _build(tmp_path, monkeypatch, "single")


def _click(at, key: str):
    at.button(key).click().run()
    assert_ok(at, no_errors=True)
    return at


@pytest.mark.slow
def test_grid_keys_ticks_and_tags(single: Workspace) -> None:
    ws = single
    at = open_page(PAGE, no_errors=True)
    ids = ws.store.sample_ids()
    assert any("30 images" in m.value for m in at.markdown)
    # number key 2 labels the current (first) image with the second class in display order, then moves on
    second = classes.display_order(ws.store)[1]
    n_batches = len(ws.store.batches())
    _click(at, "grid_n2")
    assert len(ws.store.batches()) == n_batches + 1
    m = ws.store.label_matrix(ids[:1])
    assert m[0, ws.store.class_names().index(second)] == POSITIVE
    assert at.session_state["grid_cur"] == 1
    _click(at, "grid_kDown")
    assert at.session_state["grid_cur"] == 7
    _click(at, "grid_kSpace")  # tick the current image: the bulk bar acts on it alone
    assert at.session_state["grid_sel"] == {int(ids[7])}
    tags.tag(ws.store, [], "blurry")  # a known tag (the browser test types a new one)
    at.run()
    at.selectbox("grid_tag").set_value("blurry").run()
    _click(at, "grid_tag_tag")
    assert tags.tagged(ws.store, "blurry").tolist() == [int(ids[7])]
    _click(at, "grid_undo")  # the last action was the tag batch: undo takes the tag off
    assert tags.tagged(ws.store, "blurry").tolist() == []


def test_filter_is_shared_and_views_are_saved(single: Workspace) -> None:
    ws = single
    at = open_page(PAGE, no_errors=True)
    at.multiselect("fb_labels").set_value(["circle"]).run()
    assert_ok(at)
    assert any("images" in m.value and m.value.startswith("**") for m in at.markdown)
    n_circle = int((ws.store.label_matrix(ws.store.sample_ids())[:, 0] == POSITIVE).sum())
    assert any(f"**{n_circle} images**" in m.value for m in at.markdown)
    at.text_input("fbv_name").set_value("circles").run()
    _click(at, "fbv_save")
    from curation.labels.filters import views
    assert views(ws.store)["circles"].labels == ["circle"]
    at.switch_page("pages/1_Map.py").run()  # the same filter on the Map
    assert_ok(at)
    assert at.multiselect("fb_labels").value == ["circle"]


def test_new_class_needs_an_explicit_click(single: Workspace) -> None:
    ws = single
    at = open_page(PAGE, no_errors=True)
    before = ws.store.class_names()
    at.text_input("grid_class_new_name").set_value("Trous").run()
    assert ws.store.class_names() == before  # typing a name never creates it
    _click(at, "grid_class_new_create")
    assert ws.store.class_names() == [*before, "Trous"]
    assert at.session_state["grid_class"] == "Trous"


def test_class_manager_on_home(single: Workspace) -> None:
    ws = single
    at = open_page(None, no_errors=True)
    classes.create(ws.store, "Trous")
    at.run()
    at.selectbox("cm_delete").set_value("Trous").run()
    _click(at, "cm_delete_go")
    assert "Trous" not in ws.store.class_names()
    at.selectbox("cm_merge_src").set_value(CLASSES[0]).run()
    at.selectbox("cm_merge_dst").set_value(CLASSES[1]).run()
    at.checkbox("cm_merge_sure").check().run()
    _click(at, "cm_merge_go")
    assert ws.store.class_names() == CLASSES[1:]
    assert at.session_state[state.K_LAST_BATCH] == ws.store.batches().index[0]
    _click(at, "task_switch")
    assert ws.store.task == "multi"


def test_pages_show_the_running_pipeline_instead_of_a_dead_end(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    ws = Workspace.create(tmp_path / "empty")
    monkeypatch.setenv(state.WORKSPACE_ENV, str(ws.root))
    job = ws.store.submit_job("pipeline", {})
    ws.store.update_job(job, status="running", pid=os.getpid(), started=time.time(), message="embedding 10%")
    for page in ("pages/1_Map.py", "pages/2_Clusters.py", "pages/8_Grid.py"):
        at = open_page(page)
        assert any("The pipeline is running" in i.value for i in at.info), page
        assert not [b for b in at.button if "pipeline" in str(b.key) and b.label == "Run pipeline"], page
    at = open_page(None)
    run = [b for b in at.button if b.label.startswith("Run pipeline")]
    assert run and run[0].disabled  # one pipeline at a time
    from curation.ui import jobpanel
    assert jobpanel.active_pipeline(ws).name == job


def test_review_number_keys_correct_to_the_first_classes(single: Workspace) -> None:
    ws = single
    at = open_page("pages/3_Review.py", no_errors=True)
    reviews = len(ws.store.reviews())
    first = classes.display_order(ws.store)[0]
    _click(at, "review_n1")
    rec = ws.store.reviews().iloc[-1]
    assert len(ws.store.reviews()) == reviews + 1 and rec["verdict"] == "corrected"
    m = ws.store.label_matrix(np.array([int(rec["sample_id"])]))
    assert m[0, ws.store.class_names().index(first)] == POSITIVE and (m == POSITIVE).sum() == 1
    assert at.button("review_task").label == "Switch to multi-label"  # where "Both valid" points


def test_history_asks_before_undoing_a_big_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    ws = Workspace.create(tmp_path / "big")
    monkeypatch.setenv(state.WORKSPACE_ENV, str(ws.root))
    n = 1_100
    recs = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 10, "width": 4, "height": 4})
    ws.store.add_samples(ws.store.root_id(ws.root), recs, labels=[["Coat"]] * n)
    batch = int(ws.store.batches().index[0])
    at = open_page("pages/7_History.py")
    assert at.button("history_undo").disabled  # 1,100 events: not before the confirmation
    box = at.checkbox(f"history_undo_{batch}_sure")
    assert "1,100 label changes on 1,100 images" in box.label
    box.check().run()
    _click(at, "history_undo")
    assert ws.store.batches().iloc[0]["undoes"] == batch


def test_search_results_are_actionable_and_similar_opens_the_grid(single: Workspace) -> None:
    at = open_page("pages/6_Search.py", no_errors=True)
    _click(at, "search_similar")
    cards = [c for c in at.checkbox if str(c.key).startswith("search_x")]
    assert cards and at.button("search_apply") is not None  # the results carry the grid's bulk bar
    first = int(cards[1].key.rsplit("_", 1)[-1])
    at.button(f"search_sim_{first}").click().run()
    assert_ok(at)
    chosen = at.session_state[state.K_GRID]
    assert chosen["ids"][0] == first and chosen["source"] == f"images like #{first}"
    assert [t.value for t in at.title] == ["Grid"]  # now on the Grid page, showing them
    assert any(f"{len(chosen['ids'])} images" in m.value for m in at.markdown)


def test_home_counts_the_images_right_after_an_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    ws = Workspace.create(tmp_path / "fresh")
    monkeypatch.setenv(state.WORKSPACE_ENV, str(ws.root))
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    at = open_page(None)
    assert next(m for m in at.metric if m.label == "Samples").value == "0"
    next(t for t in at.text_input if t.label == "Image folder or manifest file").set_value(str(folder.parent))
    next(b for b in at.button if b.label == "Ingest").click().run()
    assert_ok(at)
    assert next(m for m in at.metric if m.label == "Samples").value == "5"  # no reload needed
    assert not next(b for b in at.button if b.label.startswith("Run pipeline")).disabled
    assert any("5" in s.value for s in at.success)  # the ingest report survives the rerun
