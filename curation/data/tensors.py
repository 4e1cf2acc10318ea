"""Tensors on disk: safetensors files with a JSON metadata entry, written atomically, read without unpickling."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from curation.data.atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import torch


def write_safetensors(path: Any, tensors: dict[str, torch.Tensor], key: str, obj: dict[str, Any]) -> None:
    """Write ``tensors`` (name -> contiguous CPU tensor) with ``obj`` as JSON under metadata entry ``key``,
    atomically (:func:`curation.data.atomic.atomic_write`): a reader never sees half a checkpoint."""
    from safetensors.torch import save

    atomic_write(path, save(tensors, metadata={key: json.dumps(obj)}))


def read_safetensors(path: Any, key: str, *,
                      skip_prefix: str = "") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A safetensors file's JSON metadata entry and its tensors, without unpickling.

    Parameters
    ----------
    path : the file.
    key : the metadata entry that holds the JSON dict (``"config"`` for heads, ``"state"`` for training states).
    skip_prefix : tensors whose names start with it are not read (``"tower."``: a head without its tuned tower).

    Returns
    -------
    meta : the decoded dict, {} when the file has no such entry (then no tensor is read either).
    tensors : name -> tensor (CPU).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(key, "{}"))
        if not meta:
            return {}, {}
        return meta, {k: f.get_tensor(k) for k in f.keys() if not (skip_prefix and k.startswith(skip_prefix))}
