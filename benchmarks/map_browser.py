"""Benchmark: how long the Map page takes to draw N points in headless Chromium (WebGL via SwiftShader).

Run: ``.venv/bin/python benchmarks/map_browser.py [--n 100000] [--workspace DIR] [--repeat 3]
[--shot FILE.png]``. Prints figures; not a test.

The workspace (built once, reused when DIR already holds one) has N real Fashion-MNIST images
(Debian ``dataset-fashion-mnist``; above 70,000 the extra images are real ones shifted by 1-2
pixels), written as PNG files; 30 % of them unlabelled, the rest labelled with their true class.
Its vectors are the pixels reduced to 64-d by PCA, brought in with ``import_embeddings``; the
pipeline's map (fast UMAP) and suggestions are computed up front, as the app's pipeline would.
Then ``streamlit run app.py`` serves it, Chromium opens ``/Map``, and three times are taken from
the navigation: the plot's WebGL canvas in the page, the plot drawn (plotly's ``_fullData`` holds
all N points and the Streamlit run is over), and the same for a reload (server caches warm).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the app-server and Chromium helpers live there

from appserver import CHROMIUM, AppServer, chromium, wait_idle  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def fashion(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 real images (train then test; beyond 70,000, real ones shifted) and (n,) labels."""
    xs, ys = [], []
    for part in ("train", "t10k"):
        with gzip.open(FASHION / f"{part}-images-idx3-ubyte.gz") as f:
            xs.append(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28))
        with gzip.open(FASHION / f"{part}-labels-idx1-ubyte.gz") as f:
            ys.append(np.frombuffer(f.read(), np.uint8, offset=8))
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    if n <= len(x):
        return x[:n], y[:n]
    rng = np.random.default_rng(0)
    extra = rng.choice(len(x), n - len(x))
    shifts = rng.choice([-2, -1, 1, 2], size=(len(extra), 2))
    shifted = np.stack([np.roll(x[i], tuple(s), axis=(0, 1)) for i, s in zip(extra, shifts)])
    return np.concatenate([x, shifted]), np.concatenate([y, y[extra]])


def build(dest: Path, n: int) -> None:
    """Write the images, samples and labels, and import the pixel-PCA vectors."""
    import pandas as pd
    from PIL import Image
    from sklearn.decomposition import PCA

    from curation.data.workspace import Workspace
    from curation.features.imported import import_embeddings
    t = time.perf_counter()
    images, y = fashion(n)
    folder = dest.parent / f"{dest.name}-images"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        data = buf.getvalue()
        name = f"{i:06d}.png"
        (folder / name).write_bytes(data)
        records.append({"path": name, "sha1": hashlib.sha1(data).hexdigest(), "bytes": len(data), "width": 28,
                        "height": 28})
    unlabelled = np.random.default_rng(1).random(n) < 0.3
    labels = [[] if u else [CLASSES[k]] for u, k in zip(unlabelled, y)]
    ws = Workspace.create(dest)
    ws.store.add_classes(CLASSES)
    ids, _ = ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(records), labels=labels)
    print(f"wrote {n:,} images and samples in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    vecs = PCA(64, random_state=0).fit_transform(images.reshape(n, -1).astype(np.float32) / 255.0)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "vectors.npy", vecs.astype(np.float32))
        import_embeddings(ws, Path(tmp) / "vectors.npy", ids_or_paths=ids.tolist(), name="fashion-pixel-pca")
    print(f"imported vectors in {time.perf_counter() - t:.1f} s", flush=True)


def prepare(dest: Path) -> None:
    """What the pipeline leaves behind, computed when missing: the fast UMAP map and the suggestions."""
    from curation.data.workspace import Workspace
    from curation.features.embed import load_embeddings
    from curation.features.project import compute_map
    from curation.labels.suggest import suggestions

    ws = Workspace.open(dest)
    emb = load_embeddings(ws)
    t = time.perf_counter()
    compute_map(ws, emb, method="umap", reproducible=False)
    t_map = time.perf_counter() - t
    t = time.perf_counter()
    suggestions(ws, emb)
    print(f"fast UMAP map {t_map:.1f} s, suggestions {time.perf_counter() - t:.1f} s (0 when cached), {load()}",
          flush=True)


def figure_seconds(dest: Path) -> None:
    """Server side: build the single-trace figure and serialise it, as the page does."""
    from curation.data.workspace import Workspace
    from curation.features.embed import load_embeddings
    from curation.features.project import latest_map
    from curation.ui import mapview

    ws = Workspace.open(dest)
    emb = load_embeddings(ws)
    xy, _ = latest_map(ws, emb, method="umap")
    names = ws.store.class_names()
    y = ws.store.single_labels(emb.ids)
    cats = [names[k] if k >= 0 else "(unlabelled)" for k in y]
    t = time.perf_counter()
    fig = mapview.map_figure(xy, emb.ids, categories=cats, colours=mapview.category_colours(cats),
                             hover=mapview.hover_text(emb.ids, cats))
    size = len(fig.to_json())
    print(f"figure of {len(xy):,} points built and serialised in {time.perf_counter() - t:.2f} s "
          f"({size / 1e6:.1f} MB JSON), {load()}", flush=True)


def measure(dest: Path, n: int, repeat: int, shot: Path | None) -> None:
    server = AppServer(dest, dest.parent / f"{dest.name}-server.log")
    url = server.start(timeout=120)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)  # the Home page first, so the Map timing does not include Streamlit's own start
            page.wait_for_selector('[data-testid="stApp"]', timeout=120_000)
            for run in range(repeat):
                t = time.perf_counter()
                page.goto(f"{url}/Map")
                page.wait_for_selector(".js-plotly-plot canvas", timeout=300_000)
                t_canvas = time.perf_counter() - t
                if run == 0:
                    assert page.evaluate("!!document.createElement('canvas').getContext('webgl')"), "no WebGL"
                page.wait_for_function(
                    f"(() => {{ const d = document.querySelector('.js-plotly-plot'); return d && d._fullData && "
                    f"d._fullData[0] && d._fullData[0]._length === {n}; }})()", timeout=300_000)
                wait_idle(page, timeout=300_000)
                t_drawn = time.perf_counter() - t
                print(f"visit {run + 1} ({'server caches cold' if run == 0 else 'warm'}): canvas after "
                      f"{t_canvas:.1f} s, {n:,} points drawn and page idle after {t_drawn:.1f} s, {load()}",
                      flush=True)
            if shot is not None:
                page.wait_for_timeout(1000)
                page.screenshot(path=str(shot), full_page=False)
                print(f"screenshot: {shot}")
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--workspace", type=Path, default=Path(tempfile.gettempdir()) / "curation-map-bench" / "ws")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shot", type=Path, default=None, help="save a screenshot of the drawn map")
    args = ap.parse_args()
    if not FASHION.exists():
        sys.exit("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist")
    if not Path(CHROMIUM).exists():
        sys.exit("Chromium is missing: apt-get install -y chromium")
    dest = args.workspace.resolve()
    if not (dest / "curation.db").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        build(dest, args.n)
    prepare(dest)
    print(f"device: {os.cpu_count()} cores, headless Chromium (SwiftShader WebGL); workspace {dest}, {load()}")
    figure_seconds(dest)
    measure(dest, args.n, args.repeat, args.shot)


if __name__ == "__main__":
    main()
