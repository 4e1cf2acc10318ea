"""The stateful batch embedder shared by the local DataLoader loop and Ray Data actors, and batch decoding."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from curation.features.encoders import Encoder, EncoderError, get_encoder
from curation.features.imageset import ImageDataset

log = logging.getLogger(__name__)

BatchDict = dict[str, np.ndarray]
"""A batch as Ray Data's ``batch_format="numpy"`` passes it: column name -> (B, ...) array."""


def encode_safe(encoder: Encoder, x: Any) -> np.ndarray:
    """``encoder.encode_images(x)``, halving the batch on CUDA out-of-memory; (B, D) float32."""
    try:
        return encoder.encode_images(x)
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower() or len(x) <= 1:
            raise
        import torch

        torch.cuda.empty_cache()
        h = len(x) // 2
        log.warning("CUDA out of memory at batch %d; splitting", len(x))
        return np.concatenate([encode_safe(encoder, x[:h]), encode_safe(encoder, x[h:])])


class Embedder:
    """Loads an encoder once (per process, or per Ray actor) and maps batches of pixels to vectors.

    The local path (:func:`curation.features.embed.embed_workspace`) calls :meth:`encode` on DataLoader
    batches; the Ray path maps the class over an actor pool
    (``ds.map_batches(Embedder, fn_constructor_kwargs=..., compute=ActorPoolStrategy(size=n))``), where
    :meth:`__call__` turns a decoded batch dict into a batch dict of vectors.

    Parameters
    ----------
    encoder : an :class:`~curation.features.encoders.Encoder` (used as is) or a registry name (built here).
    device : ``cpu`` / ``cuda``; best available when None (names only).
    fingerprint : the weights fingerprint the driver planned with; a different one raises
        :class:`~curation.features.encoders.EncoderError` (a worker would otherwise write foreign vectors).
    workspace_root : folder of the workspace that names like ``finetuned:run-<id>`` refer to.
    threads : torch intra-op threads in this process (a Ray actor gets its share of the node, not every core).
    """

    def __init__(self, encoder: str | Encoder, *, device: str | None = None, fingerprint: str | None = None,
                 workspace_root: str | None = None, threads: int | None = None) -> None:
        if isinstance(encoder, Encoder):
            self.encoder = encoder
        else:
            ws = None
            if workspace_root:
                from curation.data.workspace import Workspace

                ws = Workspace.open(workspace_root)
            self.encoder = get_encoder(str(encoder), device=device, workspace=ws)
        if fingerprint and self.encoder.fingerprint != fingerprint:
            raise EncoderError(f"Encoder {self.encoder.name} has weights {self.encoder.fingerprint} on this worker but "
                               f"{fingerprint} where the job was planned: install the same weights on every node.")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.pid = os.getpid()

    @classmethod
    def wrap(cls, encoder: Encoder) -> "Embedder":
        """An Embedder around an encoder already built in this process."""
        return cls(encoder)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def encode(self, x: Any) -> np.ndarray:
        """(B, 3, H, W) uint8 tensor → (B, D) float32 L2-normalised vectors (batch halved on CUDA OOM)."""
        return encode_safe(self.encoder, x)

    def __call__(self, batch: BatchDict) -> BatchDict:
        """Decoded batch → vectors.

        Parameters
        ----------
        batch : ``pixels`` (B, 3, H, W) uint8, ``reason`` (B,) str ("" = decoded), and any other columns
            (``id``, ``chunk``, ``path``), passed through.

        Returns
        -------
        The other columns, plus ``vector`` (B, D) float32 (zeros where ``reason`` is set) and ``worker``
        (B,) int64, the process id that encoded the batch.
        """
        import torch

        reasons = np.asarray(batch["reason"]).astype(str)
        ok = reasons == ""
        vec = np.zeros((len(reasons), self.dim), np.float32)
        if ok.any():
            vec[ok] = self.encode(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vec
        out["worker"] = np.full(len(reasons), self.pid, np.int64)
        return out


def decode_batch(batch: BatchDict, *, transform: Any, size: int, allowed: list[str]) -> BatchDict:
    """Decode and preprocess a batch of image paths (a CPU task on Ray; the same code as the DataLoader workers).

    Parameters
    ----------
    batch : ``path`` (B,) str and any other columns, passed through.
    transform : the encoder's picklable PIL → (3, H, W) uint8 transform.
    size : its output side H = W (the placeholder of an unreadable image).
    allowed : real folders images may come from (anything else is refused, as locally).

    Returns
    -------
    The columns plus ``pixels`` (B, 3, size, size) uint8 and ``reason`` (B,) str, "" when decoded.
    """
    import torch

    torch.set_num_threads(1)
    paths = np.asarray(batch["path"]).astype(str)
    ds = ImageDataset(paths, transform, size, allowed)
    items = [ds[i] for i in range(len(paths))]
    out = dict(batch)
    out["pixels"] = (torch.stack([x for x, _ in items]).numpy() if items
                     else np.zeros((0, 3, size, size), np.uint8))
    out["reason"] = np.array([r for _, r in items], dtype=object).astype(str)
    return out
