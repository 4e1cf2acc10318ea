"""End to end in headless Chromium: the real demo, the real server, lasso → label → train → metrics."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import needs_fashion

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, needs_fashion,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium for the browser test")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-image demo workspace with its pipeline run (real EfficientNet-Lite0, real UMAP)."""
    ws = tmp_path_factory.mktemp("e2e") / "demo"
    subprocess.run([sys.executable, "-m", "curation", "demo", str(ws), "--n", "300", "--pipeline",
                    "--encoder", "efficientnet-lite0"], cwd=ROOT, check=True, timeout=900)
    return ws


@pytest.fixture(scope="module")
def server(demo_ws: Path):
    port = _free_port()
    log = open(demo_ws.parent / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.address", "127.0.0.1", "--server.port", str(port), "--",
                             "--workspace", str(demo_ws)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("streamlit did not answer /_stcore/health within 60 s")
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()
    text = (demo_ws.parent / "server.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def page(server: str):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def _wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def _no_exceptions(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def test_whole_loop(page, server: str, demo_ws: Path) -> None:
    from curation.workspace import Workspace

    ws = Workspace.open(demo_ws)
    page.goto(server)
    page.get_by_text("Samples").first.wait_for(timeout=60_000)
    _wait_idle(page)
    _no_exceptions(page)
    page.screenshot(path=str(SHOTS / "1_home.png"), full_page=True)

    page.goto(f"{server}/Map")
    page.wait_for_selector(".js-plotly-plot canvas", timeout=90_000)
    assert page.evaluate("!!document.createElement('canvas').getContext('webgl')"), "no WebGL in this Chromium"
    _wait_idle(page)
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    assert box is not None
    cx, cy, w, h = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"], box["height"]
    page.mouse.move(cx - 0.3 * w, cy - 0.3 * h)
    page.mouse.down()
    for x, y in [(cx + 0.3 * w, cy - 0.3 * h), (cx + 0.3 * w, cy + 0.3 * h), (cx - 0.3 * w, cy + 0.3 * h),
                 (cx - 0.3 * w, cy - 0.29 * h)]:
        page.mouse.move(x, y, steps=10)
    page.mouse.up()
    page.get_by_text("selected").first.wait_for(timeout=60_000)
    _wait_idle(page)
    page.screenshot(path=str(SHOTS / "2_map_selection.png"), full_page=True)

    batches_before = len(ws.store.batches())
    page.locator(".st-key-bulk_class").click()
    page.keyboard.type("Bag")
    page.keyboard.press("Enter")
    _wait_idle(page)
    page.locator(".st-key-bulk_apply button").click()
    deadline = time.time() + 30
    while len(ws.store.batches()) == batches_before and time.time() < deadline:
        time.sleep(0.3)
    newest = ws.store.batches().iloc[0]
    assert len(ws.store.batches()) == batches_before + 1 and newest["source"] == "bulk"
    _wait_idle(page)
    _no_exceptions(page)

    page.goto(f"{server}/Review")
    _wait_idle(page)
    page.wait_for_timeout(1000)
    _no_exceptions(page)
    page.screenshot(path=str(SHOTS / "3_review.png"), full_page=True)

    page.goto(f"{server}/Train")
    _wait_idle(page)
    page.get_by_role("button", name="Train").click()
    deadline = time.time() + 180
    while time.time() < deadline:
        runs = ws.store.runs()
        if len(runs) and runs.iloc[0]["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    runs = ws.store.runs()
    assert len(runs) and runs.iloc[0]["status"] == "done"
    assert runs.iloc[0]["last_event_id"] >= int(ws.store.events(newest.name).index.max())  # trained on the fix
    page.wait_for_timeout(2500)
    page.screenshot(path=str(SHOTS / "4_train.png"), full_page=True)

    page.goto(f"{server}/Evaluate")
    page.get_by_text("Accuracy").first.wait_for(timeout=60_000)
    _wait_idle(page)
    _no_exceptions(page)
    page.screenshot(path=str(SHOTS / "5_evaluate.png"), full_page=True)

    page.goto(f"{server}/History")
    _wait_idle(page)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    _no_exceptions(page)
    page.screenshot(path=str(SHOTS / "6_history.png"), full_page=True)
    if os.environ.get("CURATION_UPDATE_DOCS"):
        shutil.copytree(SHOTS, ROOT / "docs" / "screenshots", dirs_exist_ok=True)
