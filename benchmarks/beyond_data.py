"""Cached Fashion-MNIST features for the issue-19 benchmarks: raw EfficientNet-Lite0 pooled features (final
layer and five intermediate depths) plus brightness- and colour-shifted copies, computed once.

    .venv/bin/python -m benchmarks.beyond_data --n 4000 --shifted 400   # writes benchmarks/.cache/*.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.label_quality import load_fashion  # noqa: E402  one Fashion-MNIST reader

CACHE = Path(__file__).resolve().parent / ".cache"
TAPS = (2, 4, 7, 10, 13)
"""Blocks after which a pooled feature is also kept (EfficientNet-Lite0 has 16 blocks)."""


def to_rgb(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) grey → (n, 28, 28, 3) uint8."""
    return np.repeat(images[..., None], 3, axis=-1)


def shift_brightness(rgb: np.ndarray, factor: float = 1.6) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * factor + 20, 0, 255).astype(np.uint8)


def shift_colour(rgb: np.ndarray) -> np.ndarray:
    """Tint towards orange (keeps brightness roughly)."""
    x = rgb.astype(np.float32)
    x = x * np.array([1.15, 0.95, 0.6], np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def features(rgb: np.ndarray, *, random_init: bool = False) -> dict[str, np.ndarray]:
    """Raw pooled features {"final": (n, 1280), "b2": ..., ...} of EfficientNet-Lite0 on (n, H, W, 3) uint8."""
    import torch
    from PIL import Image

    from curation.features.encoders import get_encoder

    enc = get_encoder("efficientnet-lite0", device="cpu")
    model = enc.model
    if random_init:
        from efficientnet_lite_pytorch import EfficientNet

        torch.manual_seed(0)
        model = EfficientNet.from_name("efficientnet-lite0").eval()
    out: dict[str, list[np.ndarray]] = {"final": [], **{f"b{t}": [] for t in TAPS}}
    t0 = time.time()
    with torch.inference_mode():
        for s in range(0, len(rgb), 64):
            x = torch.stack([enc.transform(Image.fromarray(a)) for a in rgb[s:s + 64]])
            x = enc.normalize(x)
            h = model._swish(model._bn0(model._conv_stem(x)))
            for i, block in enumerate(model._blocks):
                h = block(h)
                if i in TAPS:
                    out[f"b{i}"].append(h.mean((2, 3)).numpy())
            h = model._swish(model._bn1(model._conv_head(h)))
            out["final"].append(h.mean((2, 3)).numpy())
            print(f"\r{s + len(x)}/{len(rgb)} ({time.time() - t0:.0f} s)", end="", flush=True)
    print()
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--shifted", type=int, default=400)
    ap.add_argument("--random-init", type=int, default=2000, help="images also embedded by a random-weight net")
    a = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    images, y = load_fashion(a.n)
    rgb = to_rgb(images)
    path = CACHE / f"fmnist-{a.n}.npz"
    if not path.exists():
        f = features(rgb)
        np.savez(path, y=y, images=images, **f)
    sp = CACHE / f"fmnist-{a.n}-shifted-{a.shifted}.npz"
    if not sp.exists():
        base = rgb[:a.shifted]
        fb = features(shift_brightness(base))["final"]
        fc = features(shift_colour(base))["final"]
        np.savez(sp, bright=fb, colour=fc)
    rp = CACHE / f"fmnist-{a.n}-random-{a.random_init}.npz"
    if a.random_init and not rp.exists():
        np.savez(rp, final=features(rgb[:a.random_init], random_init=True)["final"])
    print("cached under", CACHE)


if __name__ == "__main__":
    main()
