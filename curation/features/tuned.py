"""Tuned encoders: a fine-tune run's image tower as an encoder (``finetuned:run-<id>``), read from its checkpoint."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.features.encoders import Encoder, EncoderError, get_encoder, register_encoder

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from curation.data.workspace import Workspace

ENCODER_PREFIX = "finetuned:"
TOWER_PREFIX = "tower."
"""Checkpoint tensors of the tuned image tower are named ``tower.<name>``; the head's are not prefixed."""
CHECKPOINT_KIND = "checkpoints"
FINETUNE_RUN_KIND = "finetune"


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_tower(enc: Encoder, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tower.``-prefixed tensors into ``enc``'s tower; refuse names the tower does not have."""
    unexpected = enc.tower().load_state_dict(prefixed(tensors, TOWER_PREFIX), strict=False).unexpected_keys
    if unexpected:
        raise EncoderError(f"{source} holds tower tensors {unexpected[:3]}… that {enc.name} does not have; it was "
                            "tuned from another encoder.")


class FinetunedEncoder(Encoder):
    """A base encoder whose image tower carries a fine-tune run's weights (``finetuned:run-<id>``).

    Same preprocessing and width as the base; its ``id`` and ``fingerprint`` include the checkpoint's
    sha256, so its embeddings get their own cache key. No text tower: the tuned image features no longer
    match the base's text space, so zero-shot and text search are off with it.
    """

    has_text = False

    def __init__(self, name: str, base: Encoder, *, digest: str) -> None:
        self.base, self.name = base, name
        self.id = f"finetuned:{base.id}:{digest[:16]}"
        self.fingerprint = hashlib.sha1(f"{base.fingerprint}:{digest}".encode()).hexdigest()[:16]
        self.dim, self.device, self.transform = base.dim, base.device, base.transform
        self.default_batch_size = base.default_batch_size

    def preprocessing(self) -> dict[str, Any]:
        return self.base.preprocessing()

    def normalize(self, batch: Any) -> Any:
        return self.base.normalize(batch)

    def encode_images(self, batch: Any) -> np.ndarray:
        return self.base.encode_images(batch)


def encoder_name(run_id: int) -> str:
    """The encoder name of a fine-tune run's tuned tower: ``finetuned:run-<id>``."""
    return f"{ENCODER_PREFIX}run-{int(run_id)}"


def run_of(name: str) -> int:
    m = re.fullmatch(rf"{ENCODER_PREFIX}run-(\d+)", name)
    if m is None:
        raise EncoderError(f"Fine-tuned encoders are named {ENCODER_PREFIX}run-<id> (a fine-tune run), not {name!r}.")
    return int(m.group(1))


def finetuned_encoder(ws: Workspace, name: str, *, device: str | None = None) -> FinetunedEncoder:
    """Build ``finetuned:run-<id>``: the run's base encoder with the tuned tower from its checkpoint
    (the factory behind that registry prefix; use ``get_encoder(name, workspace=ws)``)."""
    from safetensors.torch import load_file

    from curation.data.store import StoreError

    run_id = run_of(name)
    try:
        rec = ws.store.run(run_id)
    except StoreError as exc:
        raise EncoderError(f"{name}: {ws.root} has no run {run_id}; pick a fine-tune run from the Train page.") from exc
    key = f"run-{run_id}"
    if rec["kind"] != FINETUNE_RUN_KIND or not ws.artifacts.exists(CHECKPOINT_KIND, key):
        raise EncoderError(f"{name}: run {run_id} is a {rec['kind']} run with status {rec['status']} and no tuned "
                           "tower; fine-tune first (Train page, or `python -m curation train WS --finetune`).")
    meta = ws.artifacts.meta(CHECKPOINT_KIND, key) or {}
    cfg = meta.get("config", {})
    base = get_encoder(cfg["base_encoder"], device=device, cache=False)
    if base.fingerprint != cfg.get("base_fingerprint"):
        raise EncoderError(f"{name}: the weights of {cfg['base_encoder']} changed since run {run_id} was tuned "
                           f"(fingerprint {cfg.get('base_fingerprint')} → {base.fingerprint}); fine-tune again.")
    ws.artifacts.verify(CHECKPOINT_KIND, key)  # a tampered or truncated file is refused, not loaded
    load_tower(base, load_file(str(ws.artifacts.path(CHECKPOINT_KIND, key, "safetensors"))), f"run {run_id}")
    return FinetunedEncoder(name, base, digest=meta["sha256"]["safetensors"])


def tuned_encoder(ws: Workspace, run_id: int, *, device: str | None = None) -> FinetunedEncoder:
    """A fresh (uncached) ``finetuned:run-<id>`` encoder: a long-lived worker keeps no tower after its job."""
    return get_encoder(encoder_name(run_id), device=device, cache=False, workspace=ws)  # type: ignore[return-value]


def _factory(name: str, *, device: str | None = None, workspace: Any = None) -> Encoder:
    if workspace is None:
        raise EncoderError(f"{name} is a fine-tuned tower stored in a workspace: pass workspace= to get_encoder.")
    return finetuned_encoder(workspace, name, device=device)


register_encoder(ENCODER_PREFIX, _factory, prefix=True, needs_workspace=True)
