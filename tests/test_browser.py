"""End to end in headless Chromium: the real demo, the real server, every page, the whole loop.

Lasso on the map → accept the selection's suggestions in bulk → open a cluster → fix a likely label error by keyboard shortcut → train a
head as a background job → evaluate → search → history. Screenshots go to ``test-artifacts/screenshots/tour``
(``CURATION_UPDATE_DOCS=1`` copies them to ``docs/screenshots`` for the README tour).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from appserver import CHROMIUM, ROOT, AppServer, chromium, errors_shown, wait_idle
from conftest import needs_fashion

SHOTS = ROOT / "test-artifacts" / "screenshots" / "tour"

pytestmark = [pytest.mark.browser, needs_fashion,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium for the browser test")]


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-image demo workspace with its pipeline run (real EfficientNet-Lite0, real UMAP)."""
    ws = tmp_path_factory.mktemp("e2e") / "demo"
    subprocess.run([sys.executable, "-m", "curation", "demo", str(ws), "--n", "300", "--pipeline",
                    "--encoder", "efficientnet-lite0"], cwd=ROOT, check=True, timeout=900)
    return ws


@pytest.fixture(scope="module")
def server(demo_ws: Path):
    app = AppServer(demo_ws, demo_ws.parent / "server.log")
    url = app.start()
    yield url
    app.stop()
    assert "Traceback" not in app.log_text(), app.log_text()[-3000:]


@pytest.fixture(scope="module")
def page(server: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1400, "height": 1000})


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check()`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _images_loaded(page, timeout: float = 30_000) -> None:
    """Wait until every image on the page has been fetched and decoded (thumbnails arrive over HTTP)."""
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                           timeout=timeout)


def _shot(page, name: str) -> None:
    wait_idle(page)
    _images_loaded(page)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def _visit(page, url: str, ready: str) -> None:
    """Open a page and wait until ``ready`` (a text on it) shows and the script run has finished."""
    page.goto(url)
    page.get_by_text(ready).first.wait_for(timeout=60_000)
    wait_idle(page)
    assert errors_shown(page) == []


def _lasso(page) -> None:
    """Drag a lasso over the middle of the map's drag layer."""
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    assert box is not None
    cx, cy, w, h = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"], box["height"]
    page.mouse.move(cx - 0.3 * w, cy - 0.3 * h)
    page.mouse.down()
    for x, y in [(cx + 0.3 * w, cy - 0.3 * h), (cx + 0.3 * w, cy + 0.3 * h), (cx - 0.3 * w, cy + 0.3 * h),
                 (cx - 0.3 * w, cy - 0.29 * h)]:
        page.mouse.move(x, y, steps=10)
    page.mouse.up()


def test_whole_loop(page, server: str, demo_ws: Path) -> None:
    from curation.data.workspace import Workspace

    ws = Workspace.open(demo_ws)
    _visit(page, server, "Samples")
    nav = page.locator('[data-testid="stSidebar"] a').all_inner_texts()
    assert [t.split()[-1] for t in nav] == ["Home", "Map", "Clusters", "Review", "Train", "Evaluate", "Search",
                                        "History", "Grid", "Guidelines"], nav
    _shot(page, "1_home.png")

    # Map: lasso → accept the selection's suggestions as one bulk batch
    page.goto(f"{server}/Map")
    page.wait_for_selector(".js-plotly-plot canvas", timeout=90_000)
    assert page.evaluate("!!document.createElement('canvas').getContext('webgl')"), "no WebGL in this Chromium"
    wait_idle(page)
    _lasso(page)
    page.get_by_text("selected").first.wait_for(timeout=60_000)
    _shot(page, "2_map_selection.png")
    batches_before = len(ws.store.batches())
    page.locator(".st-key-bulk_accept button").click()
    _until(lambda: len(ws.store.batches()) > batches_before, 30, "the bulk batch")
    newest = ws.store.batches().iloc[0]
    assert len(ws.store.batches()) == batches_before + 1 and newest["source"] == "bulk"
    wait_idle(page)
    assert errors_shown(page) == []

    # Map: with Mouse on "click to preview", a click on a point opens that sample (its id from customdata)
    page.get_by_role("radio", name="click to preview").click()
    wait_idle(page)
    # the map may be redrawn meanwhile (fresh scores from the background rescore rerun the page): wait for it
    page.wait_for_function("(document.querySelector('.js-plotly-plot') || {})._fullLayout?.dragmode === 'pan'",
                           timeout=90_000)
    wait_idle(page)
    page.wait_for_timeout(1000)  # the redrawn plot binds its click handlers
    x, y, near = page.evaluate("""() => { const gd = document.querySelector('.js-plotly-plot');
        const d = gd._fullData[0], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const r = gd.getBoundingClientRect(), i = Math.floor(d.x.length / 2);
        const px = k => r.left + xa._offset + xa.l2p(d.x[k]), py = k => r.top + ya._offset + ya.l2p(d.y[k]);
        const id = k => Array.isArray(d.customdata[k]) ? d.customdata[k][0] : d.customdata[k];
        const near = [...d.x.keys()].filter(k => Math.hypot(px(k) - px(i), py(k) - py(i)) < 6).map(id);
        return [px(i), py(i), near]; }""")
    heading = page.get_by_text(re.compile(r"^Sample \d+$")).first
    for attempt in range(3):  # a click that lands while plotly is still redrawing is dropped: click again
        page.mouse.click(x, y)
        try:
            heading.wait_for(timeout=15_000)
            break
        except Exception:
            assert attempt < 2, "a click on a map point never opened its preview"
    assert int(heading.inner_text().split()[1]) in near  # the clicked point (or one drawn on top of it)
    wait_idle(page)
    assert errors_shown(page) == []

    # Clusters: the gallery, then one cluster opened onto its images
    _visit(page, f"{server}/Clusters", "Sort by")
    _shot(page, "3_clusters.png")
    page.locator(".st-key-clusters_open_0 button").click()
    wait_idle(page)
    opened = page.get_by_text("Leave out images that already carry another label").first
    opened.wait_for(timeout=30_000)
    assert errors_shown(page) == []
    opened.scroll_into_view_if_needed()
    _shot(page, "3_cluster_open.png")

    # Review: the likely-errors queue; accept the proposed fix of its top item by keyboard shortcut (A)
    _visit(page, f"{server}/Review", "Likely label errors")
    page.get_by_text("Likely label errors").first.click()
    wait_idle(page)
    page.locator(".st-key-review_accept button").first.wait_for(timeout=30_000)
    _shot(page, "4_review.png")
    reviews_before, batches_before = len(ws.store.reviews()), len(ws.store.batches())
    page.locator("h1").first.click()  # focus off the queue picker: shortcuts do not fire inside inputs
    page.keyboard.press("a")
    _until(lambda: len(ws.store.reviews()) > reviews_before, 30, "the review row of the A shortcut")
    review = ws.store.reviews().iloc[-1]
    assert review["verdict"] == "accepted" and review["queue"] == "errors"
    assert len(ws.store.batches()) == batches_before + 1 and int(review["batch_id"]) == ws.store.batches().index[0]
    wait_idle(page)
    assert errors_shown(page) == []

    # Train: a head on the embeddings as a background job, trained on the labels including the bulk fix
    _visit(page, f"{server}/Train", "What to train")
    page.get_by_role("button", name="Train", exact=True).click()
    _until(lambda: len(ws.store.runs()) and ws.store.runs().iloc[0]["status"] in ("done", "failed"), 180,
           "the training run")
    run = ws.store.runs().iloc[0]
    assert run["status"] == "done"
    assert run["last_event_id"] >= int(ws.store.events(newest.name).index.max())
    page.wait_for_timeout(2500)
    _shot(page, "5_train.png")

    # Evaluate: metrics, confusion matrix and the images behind its worst cell
    _visit(page, f"{server}/Evaluate", "Accuracy")
    _shot(page, "6_evaluate.png")
    cell = page.get_by_text("Confusion matrix").first
    cell.scroll_into_view_if_needed()
    _shot(page, "6_evaluate_cell.png")

    # Search: images like a chosen one, on the cached faiss index
    _visit(page, f"{server}/Search", "By image")
    page.get_by_text("By image").first.click()
    page.locator(".st-key-search_similar button").click()
    page.get_by_text("(query)").first.wait_for(timeout=30_000)
    assert errors_shown(page) == []
    _shot(page, "7_search.png")

    # History: every batch, undoable
    _visit(page, f"{server}/History", "Export")
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    _shot(page, "8_history.png")
    assert ws.store.check() == []
    if os.environ.get("CURATION_UPDATE_DOCS"):
        shutil.copytree(SHOTS, ROOT / "docs" / "screenshots", dirs_exist_ok=True)
