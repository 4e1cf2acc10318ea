"""Benchmark: ingest and export throughput per format (images/s) and round-trip equality.

Run: ``.venv/bin/python benchmarks/formats.py [--n 3000] [--formats csv,hf,...] [--json]``.

Data: ``--n`` real Fashion-MNIST images (28x28 PNG; random pixels when the dataset is absent) in an ImageFolder
tree with train/val/test split folders and class names with spaces, a comma and a ``/``; then 5 % of the images
relabelled, 2 % of them with a rejected class, 10 % left unlabelled. For every format: export (images/s),
ingest of the export into a fresh workspace (images/s), and whether labels, splits and rejections came back
equal (keyed by image content). ``hf-parquet`` is also read back by row (random access, as thumbnails and the
embedding loader do). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curation.data.export import export  # noqa: E402
from curation.data.images import load_image  # noqa: E402
from curation.data.ingest import ingest  # noqa: E402
from curation.data.store import POSITIVE, REJECTED  # noqa: E402
from curation.data.workspace import Workspace  # noqa: E402

FORMATS = ("csv", "jsonl", "parquet", "hf", "hf-parquet", "imagefolder", "fiftyone", "coco")
NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat, long", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot")


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images and (n,) class indices: Fashion-MNIST when present, else random pixels."""
    from curation.data.demo import fashion_available, load_fashion

    rng = np.random.default_rng(seed)
    if fashion_available():
        x, y = load_fashion()
        pick = rng.choice(len(x), n, replace=False)
        return x[pick], y[pick].astype(np.int64)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def build(root: Path, n: int, seed: int = 0) -> Workspace:
    """The source tree and its workspace, with relabels, rejections and unlabelled images."""
    x, y = images(n, seed)
    rng = np.random.default_rng(seed)
    splits = rng.choice(["train", "val", "test"], n, p=[0.7, 0.15, 0.15])
    for i in range(n):
        folder = root / "src" / splits[i] / NAMES[y[i]].replace("/", "%2F")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(folder / f"{i}.png")
    ws = Workspace.create(root / "ws")
    t = time.perf_counter()
    ingest(ws, root / "src")
    build.ingest_s = time.perf_counter() - t  # type: ignore[attr-defined]
    ids = ws.store.sample_ids()
    k = len(ws.store.class_names())
    relabel = rng.choice(ids, len(ids) // 20, replace=False)
    ws.store.set_label(relabel, int(rng.integers(1, k + 1)))
    ws.store.reject_label(relabel[: len(ids) // 50], 1)
    ws.store.apply(rng.choice(ids, len(ids) // 10, replace=False), [1], 0, source="human", exclusive=False)
    return ws


def state(ws: Workspace) -> dict[str, tuple[frozenset, frozenset, str]]:
    s = ws.store.samples()
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(s.index.to_numpy())
    return {h: (frozenset(names[r == POSITIVE]), frozenset(names[r == REJECTED]), sp)
            for h, r, sp in zip(s["sha1"], m, s["split"])}


def run(n: int, formats: list[str], root: Path) -> dict:
    ws = build(root, n)
    want = state(ws)
    out = {"n": n, "folder_ingest_img_s": n / build.ingest_s, "formats": {}}  # type: ignore[attr-defined]
    for fmt in formats:
        dest = root / "out" / (f"labels.{fmt}" if fmt in ("csv", "jsonl", "parquet") else fmt)
        t = time.perf_counter()
        path = export(ws, fmt, dest)
        t_exp = time.perf_counter() - t
        fresh = Workspace.create(root / f"fresh-{fmt}")
        t = time.perf_counter()
        ingest(fresh, path)
        t_ing = time.perf_counter() - t
        got = state(fresh)
        if fmt == "imagefolder":  # holds labelled images only, no rejections
            expect = {h: (v[0], frozenset(), v[2]) for h, v in want.items() if v[0]}
        else:
            expect = want
        row = {"export_img_s": len(want) / t_exp, "ingest_img_s": len(got) / t_ing, "round_trip_equal": got == expect}
        if fmt == "hf-parquet":
            ids = fresh.store.sample_ids()
            pick = np.random.default_rng(1).choice(ids, min(500, len(ids)), replace=False)
            t = time.perf_counter()
            for sid in pick:
                load_image(fresh.resolve_image(int(sid)))
            row["read_by_row_img_s"] = len(pick) / (time.perf_counter() - t)
        out["formats"][fmt] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        res = run(a.n, [f for f in a.formats.split(",") if f], Path(tmp))
    res["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['n']} images ({res['machine']}); folder ingest {res['folder_ingest_img_s']:.0f} img/s")
    print(f"{'format':<12} {'export img/s':>13} {'ingest img/s':>13} {'round trip':>11}")
    for fmt, r in res["formats"].items():
        extra = f"   read by row {r['read_by_row_img_s']:.0f} img/s" if "read_by_row_img_s" in r else ""
        print(f"{fmt:<12} {r['export_img_s']:>13.0f} {r['ingest_img_s']:>13.0f} "
              f"{'equal' if r['round_trip_equal'] else 'DIFFERS':>11}{extra}")


if __name__ == "__main__":
    main()
