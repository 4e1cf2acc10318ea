"""Real-image multi-label sets for the benchmarks: colour emoji with CLDR keywords, and Fashion-MNIST mosaics.

Both recipes are in shared/OFFLINE.md:

    apt-get install -y fonts-noto-color-emoji unicode-cldr-core dataset-fashion-mnist
    .venv/bin/python -m benchmarks.multilabel_data --cache /tmp/curation-bench     # renders and embeds once

Embeddings (EfficientNet-Lite0, the offline encoder) are cached as ``.npy`` next to the label matrix, so the
benchmarks that read them run in seconds.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from benchmarks.label_quality import load_fashion

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR = Path("/usr/share/unicode/cldr/common")
MIN_IMAGES = 40


def _emoji_keywords() -> dict[str, list[str]]:
    """Emoji character -> its CLDR English keywords (annotations and derived annotations, no tts names)."""
    out: dict[str, list[str]] = {}
    for name in ("annotations/en.xml", "annotationsDerived/en.xml"):
        root = ET.parse(CLDR / name).getroot()
        for a in root.iter("annotation"):
            if a.get("type") == "tts" or not a.text:
                continue
            out.setdefault(a.get("cp", ""), []).extend(w.strip().lower() for w in a.text.split("|") if w.strip())
    return out


def emoji_set(min_images: int = MIN_IMAGES) -> tuple[list, np.ndarray, list[str]]:
    """(PIL images, (N, K) bool true label matrix, K keyword names): emoji whose keywords are used by at least
    ``min_images`` renderable emoji; only emoji carrying at least one such keyword are kept."""
    from PIL import Image, ImageDraw, ImageFont

    if not EMOJI_FONT.exists() or not CLDR.exists():
        sys.exit("Emoji set: run `apt-get install -y fonts-noto-color-emoji unicode-cldr-core`.")
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    kw = _emoji_keywords()
    images, keys = [], []
    for cp, words in sorted(kw.items()):
        if not cp or not re.search(r"[^\x00-\x7f]", cp):
            continue
        im = Image.new("RGB", (136, 128), "white")
        ImageDraw.Draw(im).text((0, 0), cp, font=font, embedded_color=True)
        if np.asarray(im).min() > 240:            # the font has no glyph for it
            continue
        images.append(im)
        keys.append(set(words))
    counts: dict[str, int] = {}
    for k in keys:
        for w in k:
            counts[w] = counts.get(w, 0) + 1
    names = sorted(w for w, c in counts.items() if c >= min_images)
    Y = np.array([[w in k for w in names] for k in keys], bool)
    keep = Y.any(1)
    return [im for im, k in zip(images, keep) if k], Y[keep], names


def mosaic_set(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(n, 56, 56) uint8 mosaics of 2-4 Fashion-MNIST images in a 2 x 2 grid, (n, 10) bool label matrix, names."""
    from benchmarks.label_quality import CLASSES

    rng = np.random.default_rng(seed)
    imgs, y = load_fashion(4 * n, seed=seed + 100)
    out = np.zeros((n, 56, 56), np.uint8)
    Y = np.zeros((n, 10), bool)
    m = rng.integers(2, 5, n)
    pick = 0
    for i in range(n):
        cells = rng.permutation(4)[: m[i]]
        for c in cells:
            r, q = divmod(int(c), 2)
            out[i, 28 * r: 28 * r + 28, 28 * q: 28 * q + 28] = imgs[pick]
            Y[i, y[pick]] = True
            pick += 1
    return out, Y, list(CLASSES)


def _embed(pils: list, path: Path) -> np.ndarray:
    if path.exists():
        return np.load(path)
    import torch

    from curation.features.encoders import get_encoder

    enc = get_encoder("efficientnet-lite0", device="cpu")
    out, t0 = [], time.time()
    for s in range(0, len(pils), 64):
        batch = torch.stack([enc.preprocess(im.convert("RGB")) for im in pils[s:s + 64]])
        out.append(enc.encode_images(batch))
        print(f"\rembedding {s + len(batch)}/{len(pils)} ({time.time() - t0:.0f} s)", end="", flush=True)
    print()
    X = np.concatenate(out).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


def load(name: str, cache: Path, *, n: int = 1500) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X (N, D) float32 embeddings, Y (N, K) bool true labels, names) of ``"emoji"`` or ``"mosaic"``, cached."""
    from PIL import Image

    if name == "emoji":
        ypath, xpath = cache / "emoji-Y.npy", cache / "emoji-effnet-lite0.npy"
        if ypath.exists() and xpath.exists():
            return np.load(xpath), np.load(ypath), (cache / "emoji-names.txt").read_text().splitlines()
        pils, Y, names = emoji_set()
        X = _embed(pils, xpath)
        np.save(ypath, Y)
        (cache / "emoji-names.txt").write_text("\n".join(names))
        return X, Y, names
    if name == "mosaic":
        ypath, xpath = cache / f"mosaic-{n}-Y.npy", cache / f"mosaic-{n}-effnet-lite0.npy"
        if ypath.exists() and xpath.exists():
            from benchmarks.label_quality import CLASSES

            return np.load(xpath), np.load(ypath), list(CLASSES)
        imgs, Y, names = mosaic_set(n)
        X = _embed([Image.fromarray(a) for a in imgs], xpath)
        np.save(ypath, Y)
        return X, Y, names
    raise ValueError(f"Unknown set {name!r}; use 'emoji' or 'mosaic'.")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/curation-bench"))
    ap.add_argument("--n", type=int, default=1500, help="mosaics")
    a = ap.parse_args()
    for s in ("emoji", "mosaic"):
        X, Y, names = load(s, a.cache, n=a.n)
        print(s, X.shape, Y.shape, f"{Y.sum(1).mean():.2f} labels/image, {(Y.sum(1) > 1).sum()} with several")
