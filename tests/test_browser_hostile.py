"""Hostile names in headless Chromium: class, file, split and column names that are Markdown, links, images,
HTML, percent-encoded URLs and bidi overrides render as plain text on every page; no request leaves the page."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from appserver import CHROMIUM, AppServer, chromium, errors_shown, wait_idle
from PIL import Image

from curation.data.ingest import ingest
from curation.data.workspace import Workspace
from curation.ui.widgets import PAGES

SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots" / "hostile"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium for the browser test")]


class _Beacon(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Beacon.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def beacon():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Beacon)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def hostile_names(beacon: str) -> list[str]:
    return [f"![x]({beacon}/label.png)", "[click](https://evil.example/login)", "https://evil%2Eexample/login",
            "www.evil.example", "mail@evil.example", f"<img src={beacon}/html.png>", "abc\u202egpj.exe",
            ":material/home: :red[alarm] $x^2$", "javascript:alert(1)"]


def _images(folder: Path, names: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        arr = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        arr[:, :, i % 3] = 255  # a little structure per class
        Image.fromarray(arr).save(folder / n)


@pytest.fixture(scope="module")
def hostile_ws(tmp_path_factory: pytest.TempPathFactory, beacon: str) -> tuple[Path, Path]:
    """A workspace whose classes and files have hostile names, embedded (tiny OpenCLIP), mapped (PCA),
    clustered, with suggestions, issues and a trained head; plus a manifest for the Home ingest form."""
    from curation.core.progress import null_progress
    from curation.runtime.tasks import JOBS

    root = tmp_path_factory.mktemp("hostile")
    classes = hostile_names(beacon)
    files = [f"{i:02d}-[f]({beacon.replace('://', '_')}_file.png)-{hashlib.sha1(str(i).encode()).hexdigest()[:4]}.png"
             for i in range(6 * len(classes))]
    _images(root / "imgs", files, 0)
    labels = [classes[i % len(classes)] if i % 4 else "" for i in range(len(files))]
    pd.DataFrame({"path": files, "label": labels, "split": ["train", "val"] * (len(files) // 2)}).to_csv(
        root / "labels.csv", index=False)
    ws = Workspace.create(root / "ws")
    ingest(ws, root / "labels.csv", image_root=root / "imgs")
    JOBS["pipeline"](ws, {"encoder": "openclip:tiny-test:random", "num_workers": 0, "map": {"method": "pca"}},
                     null_progress)
    JOBS["train"](ws, {"epochs": 3, "patience": 0, "device": "cpu"}, null_progress)
    # a second manifest for the ingest form: hostile split values and an extra hostile column
    extra = [f"x{i}-{classes[0][:8]}.png".replace("/", "_") for i in range(3)]
    _images(root / "imgs", extra, 1)
    pd.DataFrame({"path": extra, "label": classes[:3], "split": [f"[s]({beacon}/split)", "<b>x</b>", "https://e.x"],
                  f"![c]({beacon}/column.png)": ["a", "b", "c"]}).to_csv(root / "more.csv", index=False)
    pd.DataFrame({f"![c]({beacon}/header.png)": ["a"], "https://evil.example/h": ["b"]}).to_csv(
        root / "nopath.csv", index=False)
    ws.store.close()
    return ws.root, root


def _settle(page, timeout: float = 120.0) -> None:
    """Wait until the script run finished and the page text stopped changing (elements arrive in deltas)."""
    import time

    end, last = time.monotonic() + timeout, -1
    while time.monotonic() < end:
        wait_idle(page, timeout=timeout * 1000)
        page.wait_for_timeout(800)
        n = len(page.evaluate("document.body.innerText"))
        if n == last:
            return
        last = n


_DOM_CHECK = """(app) => {
  const out = {links: [], images: [], bidi: 0};
  for (const a of document.querySelectorAll('a[href]')) {
    const u = new URL(a.getAttribute('href'), location.href);
    if (u.origin !== app || u.protocol === 'javascript:') out.links.push(a.outerHTML.slice(0, 200));
  }
  for (const i of document.querySelectorAll('img')) {
    const src = i.getAttribute('src') || '';
    if (src.startsWith('data:') || src.startsWith('blob:')) continue;
    if (new URL(src, location.href).origin !== app) out.images.push(i.outerHTML.slice(0, 200));
  }
  out.bidi = (document.body.innerText.match(/[\\u202a-\\u202e\\u2066-\\u2069]/g) || []).length;
  out.text = document.body.innerText;
  return out;
}"""


def test_hostile_names_render_as_plain_text_on_every_page(hostile_ws: tuple[Path, Path], beacon: str) -> None:
    ws_dir, root = hostile_ws
    server = AppServer(ws_dir, root / "server.log")
    url = server.start()
    origin = urlsplit(url)
    SHOTS.mkdir(parents=True, exist_ok=True)
    left: list[str] = []
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: left.append(r.url) if urlsplit(r.url).netloc not in (origin.netloc, "")
                    and not r.url.startswith(("data:", "blob:")) else None)
            seen: dict[str, dict] = {}
            # Home: the ingest report (labels, splits, a hostile column) and an error naming hostile headers
            page.goto(url)
            wait_idle(page)
            page.get_by_text("Add images (folder or manifest)").click()
            box = page.get_by_label("Image folder or manifest file")
            for manifest, expect in ((root / "more.csv", "Ingested"), (root / "nopath.csv", "has no path column")):
                box.fill(str(manifest))
                page.get_by_label("Image root for manifest paths (optional)").fill(str(root / "imgs"))
                page.get_by_role("button", name="Ingest").click()
                page.get_by_text(expect).first.wait_for(timeout=60_000)
                wait_idle(page)
                seen[f"Home after {manifest.name}"] = page.evaluate(_DOM_CHECK, f"{origin.scheme}://{origin.netloc}")
            for script, title, _ in PAGES:
                path = "" if script == "app.py" else "/" + Path(script).stem.split("_", 1)[1]
                page.goto(url + path)
                page.locator('[data-testid="stMainBlockContainer"]').wait_for(timeout=60_000)
                _settle(page)
                seen[title] = page.evaluate(_DOM_CHECK, f"{origin.scheme}://{origin.netloc}")
                page.screenshot(path=str(SHOTS / f"{title}.png"), full_page=True)
                assert errors_shown(page) == [], (title, errors_shown(page))
            page.close()
    finally:
        server.stop()
    (SHOTS / "texts.json").write_text(__import__("json").dumps({k: v["text"] for k, v in seen.items()}, indent=1))
    for where, dom in seen.items():
        assert dom["links"] == [], (where, dom["links"])
        assert dom["images"] == [], (where, dom["images"])
        assert dom["bidi"] == 0, where
    assert "⟨U+202E⟩" in seen["Home after more.csv"]["text"] + seen["Review"]["text"] + seen["Clusters"]["text"]
    assert "![c](" in seen["Home after nopath.csv"]["text"]  # the header is shown, as characters
    assert _Beacon.hits == [], _Beacon.hits
    assert left == [], left
    log = server.log_text()  # the refused manifest's error is logged with its traceback (widgets.guard); no other
    assert log.count("Traceback") == log.count("error while ingesting") == 1, log[-3000:]
