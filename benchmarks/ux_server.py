"""Server-side script-run time of each page and of a few actions (Streamlit ``AppTest``, no browser): the part of a
page update the app controls; the browser's drawing comes on top (``benchmarks/ux_browser.py``).

    python benchmarks/ux_server.py WS [--pages Map Grid ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = {"Home": None, "Map": "pages/1_Map.py", "Grid": "pages/8_Grid.py", "Clusters": "pages/2_Clusters.py",
         "Review": "pages/3_Review.py", "History": "pages/7_History.py"}


def measure(ws: Path, pages: list[str]) -> dict[str, dict[str, float]]:
    from streamlit.testing.v1 import AppTest

    os.environ["CURATION_WORKSPACE"] = str(ws)
    out: dict[str, dict[str, float]] = {"cold": {}, "warm": {}, "action": {}}
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=1800)
    for name in pages:
        if PAGES[name]:
            at.switch_page(PAGES[name])
        t = time.perf_counter()
        at.run()
        out["cold"][name] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        at.run()
        out["warm"][name] = round(time.perf_counter() - t, 3)
        assert not at.exception, [e.message for e in at.exception]
        print(name, out["cold"][name], out["warm"][name], flush=True)
        if name == "Grid":
            for label, key in (("Grid: number key 1", "grid_n1"), ("Grid: → key", "grid_kRight"),
                               ("Grid: Tick page", "grid_tick_page")):
                t = time.perf_counter()
                at.button(key).click().run()
                out["action"][label] = round(time.perf_counter() - t, 3)
                print(label, out["action"][label], flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--pages", nargs="*", default=list(PAGES))
    args = ap.parse_args()
    print(json.dumps(measure(args.workspace, args.pages), indent=1))
