"""Per-page warm load time and action → updated page time in headless Chromium on the real app (docs/ux.md).

    python benchmarks/ux_workspace.py /tmp/ux3k --n 3000     # once: demo images, pixel embeddings, PCA map, clusters
    python benchmarks/ux_browser.py /tmp/ux3k [--repeat 2]

A page's time runs from ``goto`` until a text that only the finished page shows is on screen and Streamlit's
script run has ended; "warm" is the best of ``--repeat`` visits after a first (cold) one. An action's time runs
from the key press or click until the store holds its batch (or the page shows its result) and the run ended.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PAGES = [("Home", "", "Samples"), ("Map", "Map", "Colour by"), ("Grid", "Grid", "Acts on all"),
         ("Clusters", "Clusters", "Sort by"), ("Review", "Review", "to review"), ("Train", "Train", "What to train"),
         ("Evaluate", "Evaluate", "Evaluate"), ("Search", "Search", "By image"), ("History", "History", "Export")]


def _visit(page, url: str, ready: str) -> float:
    from appserver import wait_idle

    t = time.perf_counter()
    page.goto(url)
    page.get_by_text(ready).first.wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    return time.perf_counter() - t


def _until(check, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and not check():
        time.sleep(0.05)


def measure(ws_path: Path, *, repeat: int = 2) -> dict[str, dict[str, float]]:
    from appserver import AppServer, chromium, wait_idle

    from curation.data.workspace import Workspace

    ws = Workspace.open(ws_path)
    app = AppServer(ws_path, ws_path / "ux_server.log")
    url = app.start()
    out: dict[str, dict[str, float]] = {"load_cold": {}, "load_warm": {}, "action": {}}
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, path, ready in PAGES:
                out["load_cold"][name] = round(_visit(page, f"{url}/{path}", ready), 2)
                out["load_warm"][name] = round(min(_visit(page, f"{url}/{path}", ready) for _ in range(repeat)), 2)
                print(name, out["load_cold"][name], out["load_warm"][name], flush=True)

            def action(label: str, do, done) -> None:
                t = time.perf_counter()
                do()
                _until(done)
                wait_idle(page, 300_000)
                out["action"][label] = round(time.perf_counter() - t, 2)
                print(label, out["action"][label], flush=True)

            _visit(page, f"{url}/Grid", "Acts on all")
            page.locator("h1").first.click()
            n = len(ws.store.batches())
            action("Grid: number key 1 → image labelled, cursor on", lambda: page.keyboard.press("1"),
                   lambda: len(ws.store.batches()) > n)
            action("Grid: → key → cursor moved", lambda: page.keyboard.press("ArrowRight"),
                   lambda: page.locator('[class*="st-key-grid_card_cur_"]').count() > 0)
            action("Grid: Tick page", lambda: page.locator(".st-key-grid_tick_page button").click(),
                   lambda: page.get_by_text("Acts on the 24 ticked images").count() > 0)
            n = len(ws.store.batches())
            action("Grid: Accept suggestions of 24 → updated",
                   lambda: page.locator(".st-key-grid_accept button").click(),
                   lambda: len(ws.store.batches()) > n or page.get_by_text("nothing changed").count() > 0)
            _visit(page, f"{url}/Clusters", "Sort by")
            action("Clusters: Open → cluster shown at the top",
                   lambda: page.locator(".st-key-clusters_open_0 button").click(),
                   lambda: page.locator(".st-key-clusters_close").count() > 0)
            _visit(page, f"{url}/Review", "to review")
            page.locator("h1").first.click()
            r = len(ws.store.reviews())
            action("Review: A (accept) → next item", lambda: page.keyboard.press("a"),
                   lambda: len(ws.store.reviews()) > r)
            _visit(page, f"{url}/Map", "Colour by")
            page.wait_for_selector(".js-plotly-plot canvas", timeout=300_000)
            wait_idle(page, 300_000)

            def lasso() -> None:
                box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
                cx, cy, w, h = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"], box["height"]
                page.mouse.move(cx - 0.1 * w, cy - 0.1 * h)
                page.mouse.down()
                for x, y in [(cx + 0.1 * w, cy - 0.1 * h), (cx + 0.1 * w, cy + 0.1 * h), (cx - 0.1 * w, cy + 0.1 * h),
                             (cx - 0.1 * w, cy - 0.09 * h)]:
                    page.mouse.move(x, y, steps=8)
                page.mouse.up()

            action("Map: lasso → selection grid shown", lasso,
                   lambda: page.get_by_text("selected").count() > 0)
    finally:
        app.stop()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    res = measure(args.workspace, repeat=args.repeat)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
