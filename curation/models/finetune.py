"""Fine-tuning an image tower plus a head: mixed precision, on-device augmentation, resumable runs.

One cohesive module: one fine-tuning session (model, optimiser, AMP, augmentation, resumable state) and
the run it records; tuned encoders are read back by :mod:`curation.features.tuned`.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from curation.core.progress import Cancelled, ProgressFn, null_progress
from curation.core.vocab import POSITIVE
from curation.data.tensors import read_safetensors, write_safetensors
from curation.features.encoders import OFFLINE_ENCODER, Encoder, EncoderError, get_encoder
from curation.features.imageset import ImageDataset, auto_workers, collate_images, worker_init
from curation.features.tuned import CHECKPOINT_KIND, ENCODER_PREFIX, TOWER_PREFIX, load_tower, prefixed, run_of
from curation.features.tuned import FINETUNE_RUN_KIND as RUN_KIND
from curation.models.heads import (
    HeadConfig,
    JsonConfig,
    TrainedHead,
    TrainingCancelled,
    TrainingError,
    build_head,
    class_weights,
    free_device_memory,
    masked_bce,
    multilabel_weights,
    pick_device,
    train_head,
    val_metric,
)
from curation.models.runs import LiveCurves, RunData, finish_run, run_data, save_run_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

STATE_KIND = "training_state"
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
WARMUP = 0.05
"""Share of the optimiser steps with a linear learning-rate warm-up (then cosine decay to 0)."""
CPU_IMAGES_PER_S: dict[str, tuple[float, float]] = {
    # encoder name prefix: (training images/s, 2 blocks unfrozen; inference images/s) on 2 CPU cores, from
    # docs/performance.md (training measured with other jobs running: conservative for the page's warning)
    OFFLINE_ENCODER: (22.0, 43.0),
    "openclip:": (5.5, 20.0),
}


@dataclass
class FinetuneConfig(JsonConfig):
    """Hyper-parameters of an image-tower fine-tune (JSON-able; stored with every run).

    Attributes
    ----------
    encoder : registry name of the encoder whose image tower is tuned; "" = the workspace's active
        encoder (a fine-tuned one stands for its base). Runs record the resolved name.
    unfreeze_blocks : how many final blocks of the tower are trained (with the layers after them);
        0 = the tower stays frozen and only the head learns.
    epochs : maximum passes over the training images.
    lr, head_lr : AdamW learning rates of the tower and of the head (linear warm-up over the first 5 %
        of the steps, then cosine decay to 0).
    weight_decay : AdamW decoupled weight decay.
    batch_size : images per optimiser step.
    amp : "auto" (bf16 autocast on CUDA GPUs that support it, else fp16 with a gradient scaler; off on
        CPU and MPS), "bf16", "fp16" (CUDA only) or "off".
    augment : random resized crop (scale 0.5-1, ratio 3/4-4/3), horizontal flip and a light colour
        jitter, applied to uint8 batches on the device.
    patience : stop after this many epochs without a lower validation loss; the best epoch's weights
        are kept. 0 = train all epochs.
    val_fraction : share of labelled samples held out when the store marks no "val" split (hash split,
        as for heads).
    seed : seeds the split, the shuffling, the augmentation and dropout (each epoch from ``seed`` and
        its number, so a resumed run continues as an uninterrupted one would).
    device : "auto", "cpu", "cuda" or "mps".
    class_weight, label_smoothing : as for heads (:class:`curation.models.heads.HeadConfig`).
    num_workers : image-decoding processes; -1 = automatic (most cores on a GPU, one on a CPU).
    probe_init : first fit a linear head on the frozen tower's features (a linear probe), then tune
        tower and head from there ("LP-FT", Kumar et al. 2022: tuning from a random head distorts
        the pretrained features).
    """

    encoder: str = ""
    unfreeze_blocks: int = 2
    epochs: int = 10
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    amp: str = "auto"
    augment: bool = True
    patience: int = 3
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    class_weight: bool = True
    label_smoothing: float = 0.1
    num_workers: int = -1
    probe_init: bool = True

    def _validate(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise TrainingError(f"amp must be one of {AMP_CHOICES}, not {self.amp!r}.")
        if self.epochs < 1 or self.batch_size < 1 or self.unfreeze_blocks < 0:
            raise TrainingError("epochs and batch_size must be at least 1 and unfreeze_blocks at least 0.")
        if not (0 <= self.val_fraction < 1 and 0 <= self.label_smoothing < 1):
            raise TrainingError("val_fraction and label_smoothing must lie in [0, 1).")

    def head_config(self) -> HeadConfig:
        """The head's config: a linear head, with this run's class weighting and label smoothing."""
        return HeadConfig(kind="linear", class_weight=self.class_weight, label_smoothing=self.label_smoothing,
                          val_fraction=0.0, seed=self.seed, device=self.device)


# ---------------------------------------------------------------------- the tower
def unfreeze_last(enc: Encoder, n_blocks: int) -> tuple[list[str], list[Any]]:
    """Freeze ``enc``'s image tower except its last ``n_blocks`` blocks and the layers after them.

    The blocks come from the encoder's entry in :data:`curation.features.encoders.TOWER_BLOCKS` (ViT OpenCLIP
    towers: ``transformer.resblocks`` then ``ln_post``, ``proj``; EfficientNet-Lite0: ``_blocks``
    then ``_conv_head``, ``_bn1``).

    Returns
    -------
    tuned : state-dict names inside ``enc.tower()`` of what fine-tuning changes (parameters and
        buffers such as BatchNorm statistics); what a tuned checkpoint stores.
    modules : the modules to run in train mode while training (dropout, BatchNorm statistics); the
        rest of the tower stays in eval mode.
    """
    if not hasattr(enc, "tower_blocks"):
        raise TrainingError(f"{enc.name} has no image tower to fine-tune; use an OpenCLIP ViT or {OFFLINE_ENCODER}.")
    try:
        path, count, tail = enc.tower_blocks()
    except EncoderError as exc:
        raise TrainingError(str(exc)) from exc
    if not 0 <= n_blocks <= count:
        raise TrainingError(f"{enc.name}'s image tower has {count} blocks: unfreeze_blocks must be 0 to {count}, "
                            f"not {n_blocks}.")
    prefixes = [f"{path}.{i}" for i in range(count - n_blocks, count)] + (list(tail) if n_blocks else [])

    def is_tuned(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    tower = enc.tower()
    for name, param in tower.named_parameters():
        param.requires_grad_(is_tuned(name))
    modules = dict(tower.named_modules())
    return [k for k in tower.state_dict() if is_tuned(k)], [modules[p] for p in prefixes if p in modules]


def augment_batch(x: torch.Tensor, *, generator: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.1) -> torch.Tensor:
    """Random resized crop, horizontal flip and colour jitter of a whole batch on its device.

    Parameters
    ----------
    x : (B, 3, H, W) uint8 images (any device).
    generator : CPU generator that draws the per-image parameters (seeded: reproducible).
    scale, ratio : crop area as a share of the image, and crop aspect ratio (drawn log-uniformly).
    jitter : brightness, contrast and saturation factors are drawn from [1 - jitter, 1 + jitter].

    Returns
    -------
    (B, 3, H, W) uint8 on the same device.
    """
    import torch
    from torchvision.ops import roi_align

    B, _, H, W = x.shape
    u = torch.rand(8, B, generator=generator, dtype=torch.float64)
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * H * W
    r = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    w, h = torch.sqrt(area * r).clamp(max=W), torch.sqrt(area / r).clamp(max=H)
    x0, y0 = u[2] * (W - w), u[3] * (H - h)
    boxes = torch.stack([torch.arange(B, dtype=torch.float64), x0, y0, x0 + w, y0 + h], 1)
    out = roi_align(x.float(), boxes.to(x.device, torch.float32), output_size=(H, W), spatial_scale=1.0,
                    sampling_ratio=2, aligned=True)
    flip = (u[4] < 0.5).to(x.device)[:, None, None, None]
    out = torch.where(flip, out.flip(-1), out)
    bright, contrast, sat = ((1 + jitter * (2 * u[5:8] - 1)).float().to(x.device)[:, :, None, None, None])
    out = out * bright
    grey = (out * torch.tensor([0.299, 0.587, 0.114], device=x.device)[None, :, None, None]).sum(1, keepdim=True)
    mean = grey.mean((2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    grey = (grey - mean) * contrast + mean
    out = grey + (out - grey) * sat
    return out.clamp(0, 255).round().to(torch.uint8)


def base_encoder_name(ws: Workspace, name: str = "") -> str:
    """The encoder a fine-tune starts from: ``name``, else the workspace's active encoder (a fine-tuned
    one stands for its base)."""
    name = name or ws.store.meta("encoder") or ""
    if name.startswith(ENCODER_PREFIX):
        name = str(ws.store.run(run_of(name))["config"]["encoder"])
    if not name:
        raise TrainingError(f"No encoder to fine-tune: embed the dataset first (`python -m curation embed {ws.root}`) "
                            f"or name one (encoder={OFFLINE_ENCODER!r}).")
    if name.startswith("precomputed:"):
        raise TrainingError(f"The active embeddings ({name}) were imported, so there is no image tower to fine-tune; "
                            f"name an encoder (encoder={OFFLINE_ENCODER!r} or an OpenCLIP one).")
    return name


def estimate_seconds(n_labelled: int, n_images: int, *, epochs: int, encoder: str = OFFLINE_ENCODER) -> float:
    """Rough CPU wall time of a fine-tune: ``epochs`` training passes over the labelled images plus two
    inference passes over all ``n_images`` (probe features, final predictions), at the rates measured
    on 2 CPU cores (:data:`CPU_IMAGES_PER_S`)."""
    rates = next((v for k, v in CPU_IMAGES_PER_S.items() if encoder.startswith(k)), CPU_IMAGES_PER_S[OFFLINE_ENCODER])
    return epochs * n_labelled / rates[0] + 2 * n_images / rates[1]


# ---------------------------------------------------------------------- training state (resume)
def save_training_state(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write tensors (safetensors) with ``state`` (JSON) in the file's metadata, atomically."""
    write_safetensors(path, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, "state", state)


def load_training_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) written by :func:`save_training_state` (never unpickles)."""
    state, tensors = read_safetensors(path, "state")
    if not state:
        raise TrainingError(f"{path} is not a curation training state; start a new fine-tune.")
    return tensors, state


def _optimizer_parts(opt: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as tensors ``optim.<param>.<name>`` plus its JSON-able rest."""
    import torch

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{name}"] = v
            else:
                scalars[f"{idx}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: Any, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in [*prefixed(tensors, "optim.").items(), *info["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _resumable(ws: Workspace, cfg: FinetuneConfig | None, run_id: int | None) -> dict[str, Any] | None:
    """The run to continue: ``run_id`` (checked), else the newest unfinished fine-tune with this config on
    the current labels that saved a training state; None when there is none."""
    runs = ws.store.runs()
    if run_id is not None:
        if run_id not in runs.index or runs.loc[run_id, "kind"] != RUN_KIND:
            raise TrainingError(f"Run {run_id} is not a fine-tune run of {ws.root}; see `python -m curation evaluate`.")
        if runs.loc[run_id, "status"] == "done" or not ws.artifacts.exists(STATE_KIND, f"run-{run_id}"):
            raise TrainingError(f"Run {run_id} ({runs.loc[run_id, 'status']}) has no training state to resume "
                                "(it finished, or stopped before its first epoch); start a new fine-tune.")
        candidates = [run_id]
    else:
        assert cfg is not None
        snapshot = ws.store.last_event_id()
        mine = runs[(runs["kind"] == RUN_KIND) & (runs["status"] != "done")] if len(runs) else runs
        candidates = [int(i) for i, r in mine.iterrows() if r["config"] == cfg.to_dict()
                      and int(r["last_event_id"]) == snapshot and ws.artifacts.exists(STATE_KIND, f"run-{int(i)}")]
    if not candidates:
        return None
    rec = ws.store.run(max(candidates))
    rec["id"] = max(candidates)
    return rec


# ---------------------------------------------------------------------- a training session
def _amp_dtype(amp: str, device: str) -> torch.dtype | None:
    import torch

    if amp == "off" or (amp == "auto" and not device.startswith("cuda")):
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        if not device.startswith("cuda"):
            raise TrainingError("amp='fp16' needs a CUDA GPU; use amp='bf16' or 'off' here.")
        return torch.float16
    return torch.bfloat16


class _Session:
    """Everything one fine-tune holds on the device; :meth:`release` lets it all go."""

    def __init__(self, ws: Workspace, cfg: FinetuneConfig, data: RunData, device: str, run_id: int,
                 progress: ProgressFn) -> None:
        import torch

        self.ws, self.cfg, self.data, self.device, self.run_id = ws, cfg, data, device, run_id
        self.progress = progress
        self.enc: Any = get_encoder(cfg.encoder, device=device, cache=False)  # a private copy: its weights change
        self.tuned, self.train_modules = unfreeze_last(self.enc, cfg.unfreeze_blocks)
        self.amp = _amp_dtype(cfg.amp, device)
        self.dev_type = device.split(":")[0]
        self.scaler = torch.amp.GradScaler(self.dev_type, enabled=self.amp == torch.float16)
        frame = ws.store.samples().reindex(data.ids)
        paths = (frame["root"].astype(str) + os.sep + frame["path"].astype(str)).to_numpy()
        allowed = [os.path.realpath(p) for p in map(str, ws.allowed_roots())]
        self.ds = ImageDataset(paths, self.enc.transform, self.enc.transform.size, allowed)
        self.workers = auto_workers(device) if cfg.num_workers < 0 else cfg.num_workers
        self.skipped: dict[int, str] = {}
        self.hcfg = cfg.head_config()
        self.ckpt_extra = {"run_id": run_id, "classes": data.names, "encoder": self.enc.id,
                           "base_encoder": cfg.encoder, "base_fingerprint": self.enc.fingerprint,
                           "last_event_id": data.snapshot, "unfreeze_blocks": cfg.unfreeze_blocks}
        self._targets()
        self.head: Any = None
        self.opt: Any = None

    # -- data
    def _targets(self) -> None:
        import torch

        d, K = self.data, len(self.data.names)
        tr, va = d.mask("train"), d.mask("val")
        self.weak = np.zeros(K, bool)
        if d.task == "single":
            self.y = torch.from_numpy(d.Y).to(self.device)
            cw = class_weights(d.Y[tr], K, self.cfg.class_weight)
            self.cw = torch.tensor(cw, dtype=torch.float32, device=self.device)
            return
        w = np.zeros(d.Y.shape, np.float32)
        w[tr], self.weak = multilabel_weights(d.Y[tr], self.hcfg, K)
        if va.any():
            w[va] = multilabel_weights(d.Y[va], self.hcfg, K, weak=self.weak, class_weight=False)[0]
        self.y = torch.from_numpy((d.Y == POSITIVE).astype(np.float32)).to(self.device)
        self.w = torch.from_numpy(w).to(self.device)

    def batches(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(rows (b,) int64, images (b, 3, S, S) uint8 on the device) per batch of ``rows`` in their order;
        unreadable images are recorded in :attr:`skipped` and left out."""
        import torch
        from torch.utils.data import DataLoader

        bs = self.cfg.batch_size
        plan = [rows[s:s + bs].tolist() for s in range(0, len(rows), bs)]
        loader = iter(DataLoader(self.ds, batch_sampler=plan, num_workers=self.workers, collate_fn=collate_images,
                                 pin_memory=self.dev_type == "cuda", prefetch_factor=4 if self.workers else None,
                                 worker_init_fn=worker_init if self.workers else None))
        try:
            for b in plan:
                x, reasons = next(loader)
                ok = np.array([not r for r in reasons], bool)
                for pos in np.flatnonzero(~ok):
                    self.skipped[int(self.data.ids[b[pos]])] = reasons[pos]
                if ok.any():
                    yield np.asarray(b, np.int64)[ok], x[torch.from_numpy(ok)].to(self.device, non_blocking=True)
        finally:
            del loader  # shuts the decoding workers down, also on a cancel

    # -- the model
    def features(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.nn.functional.normalize(self.enc.tower_features(self.enc.normalize(x)).float(), dim=-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).float()

    def infer(self, rows: np.ndarray, fn: Any, message: str, span: tuple[float, float]) -> tuple[np.ndarray, Any]:
        """``fn(images)`` over ``rows`` in eval mode without gradients: (rows that were read, (M, ·) outputs)."""
        import torch

        self.enc.tower().eval()
        if self.head is not None:
            self.head.eval()
        outs, got = [], []
        n_batches = max(math.ceil(len(rows) / self.cfg.batch_size), 1)
        with torch.no_grad(), torch.autocast(self.dev_type, dtype=self.amp or torch.bfloat16,
                                             enabled=self.amp is not None):
            for b, (r, x) in enumerate(self.batches(rows)):
                outs.append(fn(x).float())
                got.append(r)
                self.progress(span[0] + (span[1] - span[0]) * (b + 1) / n_batches, f"{message} {b + 1}/{n_batches}")
        if not outs:
            raise TrainingError(f"None of the {len(rows)} images could be read ({message}); check the image files "
                                "(`python -m curation doctor WS`).")
        return np.concatenate(got), torch.cat(outs)

    def init_head(self, resumed: bool) -> None:
        """The head: a linear probe on the frozen features (``probe_init``), else a fresh linear layer."""
        import torch

        d, K = self.data, len(self.data.names)
        tr, va = d.mask("train"), d.mask("val")
        if self.cfg.probe_init and not resumed:
            rows, f = self.infer(np.flatnonzero(tr | va), self.features, "probe features", (0.0, 0.08))
            is_val = va[rows]
            X, Y = f.cpu().numpy(), d.Y[rows]
            probe = train_head(X[~is_val], Y[~is_val], task=d.task, config=self.hcfg, n_classes=K,
                               X_val=X[is_val] if is_val.any() else None, Y_val=Y[is_val] if is_val.any() else None)
            self.head = probe.module
        else:
            torch.manual_seed(self.cfg.seed)
            self.head = build_head(self.enc.dim, K, self.hcfg).to(self.device)
        groups = [{"params": list(self.head.parameters()), "lr": self.cfg.head_lr, "base_lr": self.cfg.head_lr}]
        tower_params = [p for p in self.enc.tower().parameters() if p.requires_grad]
        if tower_params:
            groups.append({"params": tower_params, "lr": self.cfg.lr, "base_lr": self.cfg.lr})
        self.opt = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)

    def loss(self, logits: torch.Tensor, rows: np.ndarray, *, train: bool) -> torch.Tensor:
        import torch.nn.functional as F

        r = self.rows_t(rows)
        if self.data.task == "single":
            return F.cross_entropy(logits, self.y[r], weight=self.cw if train else None,
                                   label_smoothing=self.cfg.label_smoothing if train else 0.0)
        return masked_bce(logits, self.y[r], self.w[r], self.cfg.label_smoothing if train else 0.0)

    def rows_t(self, rows: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.asarray(rows, np.int64)).to(self.device)

    def set_train(self) -> None:
        """Train mode for the head and the tuned blocks only (frozen BatchNorm keeps its statistics)."""
        self.enc.tower().eval()
        self.head.train()
        for m in self.train_modules:
            m.train()

    def step(self, rows: np.ndarray, x: torch.Tensor, gen: torch.Generator, lr_factor: float) -> float:
        import torch

        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor
        if self.cfg.augment:
            x = augment_batch(x, generator=gen)
        with torch.autocast(self.dev_type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            loss = self.loss(self.logits(x), rows, train=True)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach())

    # -- checkpoints
    def tower_tensors(self) -> dict[str, torch.Tensor]:
        sd = self.enc.tower().state_dict()
        return {TOWER_PREFIX + k: sd[k] for k in self.tuned}

    def trained_head(self, curves: list[dict], best_epoch: int, thresholds: np.ndarray | None = None) -> TrainedHead:
        K = len(self.data.names)
        head = TrainedHead(module=self.head, task=self.data.task, config=self.hcfg, in_dim=self.enc.dim, n_classes=K,
                           thresholds_=np.full(K, 0.5, np.float32) if thresholds is None else thresholds,
                           curves_=list(curves), best_epoch_=best_epoch, device=self.device)
        head.weak_negatives_ = self.weak
        return head

    def save_state(self, state: dict[str, Any]) -> None:
        opt_tensors, opt_info = _optimizer_parts(self.opt)
        tensors = {**self.tower_tensors(), **{f"head.{k}": v for k, v in self.head.state_dict().items()}, **opt_tensors}
        key = f"run-{self.run_id}"
        save_training_state(self.ws.artifacts.path(STATE_KIND, key, "safetensors"), tensors,
                            {**state, "optimizer": opt_info, "scaler": self.scaler.state_dict()})
        self.ws.artifacts.register_file(STATE_KIND, key, "safetensors", config={"run_id": self.run_id,
                                                                                  "epoch": state["epoch"]})

    def restore_state(self) -> dict[str, Any]:
        tensors, state = load_training_state(self.ws.artifacts.path(STATE_KIND, f"run-{self.run_id}", "safetensors"))
        load_tower(self.enc, tensors, f"the training state of run {self.run_id}")
        self.head.load_state_dict(prefixed(tensors, "head."))
        _restore_optimizer(self.opt, tensors, state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        return state

    def load_best(self) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(self.ws.artifacts.path(CHECKPOINT_KIND, f"run-{self.run_id}", "safetensors")))
        load_tower(self.enc, tensors, f"run {self.run_id}")
        self.head.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(TOWER_PREFIX)
                                   and k != "thresholds"})

    # -- the run
    def train(self, state: dict[str, Any]) -> None:
        """The epochs after ``state["epoch"]``, each: shuffled augmented steps, validation, the curve into the
        run record, the checkpoint when the validation loss improved, the training state; ``state`` (curves,
        best epoch, step, ...) is updated in place, so a cancel finds it current."""
        import torch

        cfg, d = self.cfg, self.data
        train_rows, val_rows = np.flatnonzero(d.mask("train")), np.flatnonzero(d.mask("val"))
        n_batches = math.ceil(len(train_rows) / cfg.batch_size)
        live = LiveCurves(self.ws.store, self.run_id, epochs=cfg.epochs, interval=0.0)
        for epoch in range(int(state["epoch"]) + 1, cfg.epochs + 1):
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout / drop-connect: the same after a resume
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(train_rows)
            self.set_train()
            t0, total, seen = time.perf_counter(), 0.0, 0
            for b, (rows, x) in enumerate(self.batches(order)):
                loss = self.step(rows, x, gen, _lr_factor(state["step"], cfg.epochs * n_batches))
                state["step"] += 1
                total, seen = total + loss * len(rows), seen + len(rows)
                self.progress(0.1 + 0.8 * (epoch - 1 + (b + 1) / n_batches) / cfg.epochs,
                              f"epoch {epoch}/{cfg.epochs} · batch {b + 1}/{n_batches} · loss {loss:.4f}")
            secs = time.perf_counter() - t0
            rec: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(seen, 1), "steps": int(state["step"]),
                                   "images_per_s": seen / max(secs, 1e-9), "seconds": secs}
            if len(val_rows):
                rows, lv = self.infer(val_rows, self.logits, f"epoch {epoch}/{cfg.epochs} · validating",
                                      (0.1 + 0.8 * epoch / cfg.epochs,) * 2)
                rt = self.rows_t(rows)
                rec["val_loss"] = float(self.loss(lv, rows, train=False))
                rec["val_metric"] = val_metric(d.task, lv, self.y[rt], self.w[rt] if d.task == "multi" else None)
            state["curves"].append(rec)
            live(state["curves"])
            score = rec.get("val_loss", rec["train_loss"])
            if score < state["best_score"] - 1e-6:
                state.update(best_score=score, best_epoch=epoch, since_best=0)
                save_run_checkpoint(self.ws, self.run_id, self.trained_head(state["curves"], epoch),
                                    extra=self.ckpt_extra, tensors=self.tower_tensors())
            else:
                state["since_best"] += 1
            state.update(epoch=epoch, seconds=state["seconds"] + secs)
            self.save_state(state)
            if len(val_rows) and cfg.patience and state["since_best"] >= cfg.patience:
                log.info("early stop at epoch %d (best %d)", epoch, state["best_epoch"])
                break

    def finish(self, state: dict[str, Any], *, duration: float) -> None:
        """Best weights back, predictions for every readable sample, (multi-label) thresholds tuned on the
        validation split, then the run's metrics, predictions and checkpoint (:func:`finish_run`)."""
        import torch

        self.load_best()
        d = self.data
        rows, logits = self.infer(np.arange(len(d.ids)), self.logits, "predicting", (0.9, 1.0))
        probs = (torch.softmax(logits, 1) if d.task == "single" else torch.sigmoid(logits)).cpu().numpy()
        done = d.subset(np.isin(np.arange(len(d.ids)), rows))
        v = done.mask("val")
        thresholds = None
        if d.task == "multi" and v.any():
            from curation.models.evaluate import tune_thresholds

            thresholds = tune_thresholds(done.Y[v], probs[v], weights=self.w[self.rows_t(rows[v])].cpu().numpy())
        head = self.trained_head(state["curves"], int(state["best_epoch"]), thresholds)
        head.seconds = float(state["seconds"])
        rates = [c["images_per_s"] for c in state["curves"]]
        finish_run(self.ws, self.run_id, done, probs.astype(np.float32), head, duration=duration,
                   checkpoint_extra=self.ckpt_extra, tensors=self.tower_tensors(),
                   metrics_extra={"images_per_s": float(np.mean(rates)) if rates else None,
                                  "amp": str(self.amp).replace("torch.", "") if self.amp else "off",
                                  "unfreeze_blocks": self.cfg.unfreeze_blocks, "n_skipped": len(self.skipped),
                                  "skipped_ids": sorted(self.skipped), "resumed_at": state["resumed_at"]})

    def release(self) -> None:
        """Drop every tensor this session holds and give cached GPU memory back."""
        self.enc = self.head = self.opt = self.ds = None
        self.y = self.w = self.cw = None
        if self.device != "cpu":  # cycles could still pin device memory; on a CPU refcounting frees it all
            gc.collect()
            free_device_memory(self.device)


def _lr_factor(step: int, total: int) -> float:
    warm = max(1, int(WARMUP * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / max(total - warm, 1)))


# ---------------------------------------------------------------------- runs
def run_finetune(ws: Workspace, config: FinetuneConfig | dict | None = None, *, resume: bool | int = False,
                 progress: ProgressFn | None = None) -> int:
    """Fine-tune an image tower plus a linear head on the workspace's images and labels; record the run.

    Records a run of kind ``"finetune"`` with the artifacts a head run has (see
    :func:`curation.models.runs.run_training`): config (encoder resolved), label snapshot, split, encoder id,
    device, duration, metrics (plus ``images_per_s``, ``amp``, ``n_skipped`` / ``skipped_ids``,
    ``resumed_at``), predictions ``predictions/run-<id>`` for every readable present sample, and the
    checkpoint ``checkpoints/run-<id>.safetensors``: the head (``load_head`` reads it: it applies to
    embeddings made with ``finetuned:run-<id>``) and the tuned tower tensors ``tower.<name>``. Curves go
    to the run record after every epoch; a training state (``training_state/run-<id>.safetensors``:
    tuned weights, optimiser and scaler state, epoch, curves) is saved after every epoch and deleted
    when the run is done.

    Parameters
    ----------
    ws : the workspace.
    config : FinetuneConfig or a dict of its fields (the job's params).
    resume : False = a new run; True = continue the newest unfinished (cancelled, failed or interrupted)
        fine-tune with the same config on the same labels when there is one; a run id = continue that
        run (its own config and label snapshot; ``config`` is ignored). A continued run starts after its
        last completed epoch with its weights, optimiser and scaler state.
    progress : ``progress(fraction, message)`` per batch; raising ``Cancelled`` marks the run
        "cancelled" (its best checkpoint and training state are kept) and raises
        :class:`~curation.models.heads.TrainingCancelled` with ``run_id``.

    Returns
    -------
    The run id.
    """
    t0 = time.perf_counter()
    progress = progress or null_progress
    if isinstance(resume, bool):
        cfg = FinetuneConfig.from_any(config)
        cfg.encoder = base_encoder_name(ws, cfg.encoder)
        prior = _resumable(ws, cfg, None) if resume else None
    else:
        prior = _resumable(ws, None, int(resume))
        assert prior is not None
        cfg = FinetuneConfig.from_any(prior["config"])
    data = run_data(ws, ws.store.sample_ids(), val_fraction=cfg.val_fraction, seed=cfg.seed,
                    snapshot=None if prior is None else int(prior["last_event_id"]))
    device = pick_device(cfg.device)
    if prior is None:
        run_id = ws.store.add_run(RUN_KIND, cfg.to_dict(), last_event_id=data.snapshot, encoder="", device=device)
        before = 0.0
    else:
        run_id, before = int(prior["id"]), float(prior["duration"] or 0.0)
        ws.store.update_run(run_id, status="running", device=device)
        log.info("resuming fine-tune run %d", run_id)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": math.inf, "best_epoch": 0, "since_best": 0,
                             "curves": [], "resumed_at": [], "seconds": 0.0}
    session = None
    try:
        if not data.mask("train").any():
            raise TrainingError("No labelled training samples: label some images (or import labels) before training.")
        progress(0.0, f"loading {cfg.encoder} on {device}")
        session = _Session(ws, cfg, data, device, run_id, progress)
        ws.store.update_run(run_id, encoder=session.enc.id)
        session.init_head(resumed=prior is not None)
        if prior is not None:
            state = session.restore_state()
            state["resumed_at"] = [*state["resumed_at"], state["epoch"] + 1]
        session.train(state)
        session.finish(state, duration=before + time.perf_counter() - t0)
        ws.artifacts.delete(STATE_KIND, f"run-{run_id}")
        progress(1.0, f"run {run_id} done")
        log.info("fine-tune run %d done in %.1fs", run_id, time.perf_counter() - t0)
        return run_id
    except Cancelled as exc:
        artifact = f"{CHECKPOINT_KIND}/run-{run_id}" if ws.artifacts.exists(CHECKPOINT_KIND, f"run-{run_id}") else ""
        ws.store.update_run(run_id, status="cancelled", duration=before + time.perf_counter() - t0, artifact=artifact,
                            metrics={**data.base_metrics(), "curves": state["curves"],
                                     "best_epoch": int(state["best_epoch"])})
        log.info("fine-tune run %d cancelled", run_id)
        raise TrainingCancelled(None, run_id) from exc
    except BaseException as exc:
        ws.store.update_run(run_id, status="failed", duration=before + time.perf_counter() - t0,
                            metrics={**data.base_metrics(), "curves": state["curves"],
                                     "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        if session is not None:
            session.release()
