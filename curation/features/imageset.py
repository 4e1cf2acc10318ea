"""Images into batches: a decoding dataset for DataLoader workers, collation, worker and batch-size choice."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from curation.data import sources
from curation.features.encoders import (  # noqa: F401 - re-exported: curation.features.embed is the public face
    DEFAULT_ENCODER,
    OFFLINE_ENCODER,
    TINY_TEST,
    Encoder,
    EncoderError,
    EncoderUnavailable,
    NoTextTower,
    PrecomputedEncoder,
    default_encoder,
    get_encoder,
    list_encoders,
    offline,
    pick_device,
    register_encoder,
    register_tiny_openclip,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- image loading (workers)
def _load_pil(path: str) -> Any:
    try:
        from curation.data.images import load_image
    except ImportError:  # images.py not present: same contract, minimal version
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    return load_image(path)


class ImageDataset:
    """Map-style dataset over (path) rows: decode + uint8 preprocessing, errors returned as reasons."""

    def __init__(self, paths: np.ndarray, transform: Any, size: int, allowed: list[str]) -> None:
        self.paths, self.transform, self.size, self.allowed = paths, transform, int(size), allowed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        import torch

        path = str(self.paths[i])
        try:
            real = os.path.realpath(path)
            if not any(real == a or real.startswith(a.rstrip(os.sep) + os.sep) for a in self.allowed):
                raise PermissionError("outside the workspace and its image folders")
            if not sources.exists(real):
                raise FileNotFoundError("file not found")
            x = self.transform(_load_pil(real))
            return x, ""
        except Exception as exc:  # noqa: BLE001 - any decode problem is a per-sample report, never fatal
            reason = getattr(exc, "reason", None)
            if not reason:
                msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                reason = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), str(reason)


def collate_images(items: list[tuple[Any, str]]) -> tuple[Any, list[str]]:
    import torch

    xs, reasons = zip(*items)
    return torch.stack(xs), list(reasons)


def worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def auto_workers(device: str) -> int:
    """DataLoader workers: on a GPU decoding is the bottleneck (use most cores); on a CPU the model is,
    and one worker (measured on 2 cores: see docs/performance.md) overlaps decoding with the forward pass."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.startswith("cuda") or device == "mps":
        return max(1, min(n - 1, 16))
    return 1 if n >= 2 else 0


def auto_batch_size(encoder: Encoder) -> int:
    """Batch size: 32 on CPU; on CUDA the largest power of two whose activations fit in ~60% of free memory."""
    dev = getattr(encoder, "device", "cpu")
    if not dev.startswith("cuda"):
        return int(getattr(encoder, "default_batch_size", 32))
    try:
        import torch

        size = encoder.transform.size
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        probe = 16
        encoder.encode_images(torch.zeros((probe, 3, size, size), dtype=torch.uint8))
        per = max((torch.cuda.max_memory_allocated() - base) / probe, 1.0)
        free, _ = torch.cuda.mem_get_info()
        bs = int(2 ** np.floor(np.log2(max(0.6 * free / per, 16))))
        return int(min(max(bs, 16), 1024))
    except Exception as exc:  # noqa: BLE001
        log.info("batch-size probe failed (%s); using %d", exc, encoder.default_batch_size)
        return int(encoder.default_batch_size)
