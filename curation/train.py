"""Classifier heads on cached embeddings: device choice, training, checkpoints, runs, run comparison.

Image-tower fine-tuning lives in :mod:`curation.finetune`: ``run_finetune`` writes a run of kind
``"finetune"`` through the same run helpers (label snapshot, split, metrics, checkpoint kind
``checkpoints`` and predictions kind ``predictions``, key ``run-<id>``, arrays ``ids`` and ``probs``),
so :func:`load_predictions`, :func:`latest_run`, :func:`compare_runs` and every page that reads runs
work unchanged; its checkpoint adds the tuned tower tensors (``tower.*``) beside the head's.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from curation.progress import Cancelled, ProgressFn, null_progress
from curation.store import POSITIVE, REJECTED, UNKNOWN, single_from_matrix

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from curation.workspace import Workspace

log = logging.getLogger(__name__)

RUN_KIND = "head"
CHECKPOINT_KIND = "checkpoints"
PREDICTIONS_KIND = "predictions"
TOWER_PREFIX = "tower."


class TrainingError(RuntimeError):
    """Training cannot start or failed; the message says what to do."""


class TrainingCancelled(Cancelled):
    """Raised by :func:`train_head` when its progress callback cancelled it.

    Attributes
    ----------
    head : TrainedHead | None, the best weights seen before the cancel (None before the first epoch).
    run_id : int | None, set by :func:`run_training` to the run that was marked cancelled.
    """

    def __init__(self, head: "TrainedHead | None" = None, run_id: int | None = None) -> None:
        super().__init__("training cancelled")
        self.head = head
        self.run_id = run_id


# ---------------------------------------------------------------------- device
def pick_device(pref: str = "auto") -> str:
    """The torch device to train on: ``"cuda"``, then ``"mps"``, then ``"cpu"`` for ``"auto"``.

    An explicit ``pref`` ("cuda", "cuda:1", "mps", "cpu") is checked and refused with a clear message
    when that device is not available here.
    """
    import torch

    pref = (pref or "auto").lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if pref == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if pref.startswith("cuda") and not cuda:
        raise TrainingError(f"Device {pref!r} was requested but torch sees no CUDA GPU here; use device='auto' "
                            "or 'cpu' (or install a CUDA build of torch).")
    if pref == "mps" and not mps:
        raise TrainingError("Device 'mps' was requested but Apple's Metal backend is not available; use "
                            "device='auto' or 'cpu'.")
    if not (pref == "cpu" or pref == "mps" or pref.startswith("cuda")):
        raise TrainingError(f"Unknown device {pref!r}; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return pref


# ---------------------------------------------------------------------- config
class JsonConfig:
    """Mixin of the dataclass configs stored with runs: built from a dict that may not hold unknown keys,
    written back as a JSON-able dict; subclasses check their values in :meth:`_validate`."""

    @classmethod
    def from_any(cls, config: "JsonConfig | dict[str, Any] | None") -> Any:
        """A config from a dict (unknown keys are refused with the list of known ones)."""
        if isinstance(config, cls):
            return copy.copy(config)
        config = dict(config or {})
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        bad = set(config) - known
        if bad:
            raise TrainingError(f"Unknown training options {sorted(bad)}; known options: {sorted(known)}.")
        cfg = cls(**config)
        cfg._validate()
        return cfg

    def _validate(self) -> None:
        """Raise TrainingError on a value out of range."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class HeadConfig(JsonConfig):
    """Hyper-parameters of a head trained on embeddings (JSON-able; stored with every run).

    Attributes
    ----------
    kind : "linear" (logistic regression) or "mlp" (one hidden layer, GELU, dropout).
    hidden, dropout : MLP width and dropout.
    epochs : maximum passes over the training set.
    lr, weight_decay : AdamW learning rate (cosine-annealed to 0) and decoupled weight decay. 3e-3: at 1e-2 the
        validation loss of a linear head on 1,280-d EfficientNet-Lite0 features peaked after one epoch and
        early stopping kept it (0.81 vs 0.86 accuracy on real Fashion-MNIST; docs/performance.md).
    batch_size : mini-batch size; 0 = full batch.
    class_weight : weight the loss by inverse class frequency (single-label) or by the negative/positive
        ratio per class (multi-label, capped at 10), so minority classes are not ignored.
    label_smoothing : epsilon of label smoothing (targets ``(1 - eps) y + eps / K``, or ``eps / 2`` per cell).
    val_fraction : share of labelled samples held out for early stopping and thresholds when no
        validation set is given (seeded, per-sample hash, stable as the dataset grows).
    seed : seeds torch and the split.
    device : "auto", "cpu", "cuda" or "mps" (see :func:`pick_device`).
    patience : stop after this many epochs without a lower validation loss and keep the best
        weights; 0 = train all epochs.
    standardize : subtract the training mean and divide by the training std inside the head.
    elr : early-learning regularisation (Liu et al. 2020, NeurIPS): a running target
        ``t <- beta t + (1 - beta) p`` per sample and the penalty ``lambda * log(1 - <p, t>)``, which
        keeps the model near its early (clean) predictions and resists memorising noisy labels.
        Single-label only. ``elr_lambda`` and ``elr_beta`` are the paper's CIFAR-10 defaults.
    unknown_weight : multi-label only. "auto": UNKNOWN cells are masked out (never negatives) for every
        class that has at least one REJECTED cell per four POSITIVE ones among the training rows;
        for the other classes (typically single-positive data imported from folders, where nobody
        rejected anything) an UNKNOWN cell of an image that carries another positive label is a
        *weak assumed negative* of weight ``1 / (K - 1)`` ("WAN", Cole et al. 2021, "Multi-label
        learning from single positive labels"). A float forces that weight for every class; 0.0 is
        strict masking everywhere.
    """

    kind: str = "linear"
    hidden: int = 512
    dropout: float = 0.1
    epochs: int = 100
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024
    class_weight: bool = True
    label_smoothing: float = 0.0
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    patience: int = 10
    standardize: bool = True
    elr: bool = False
    elr_lambda: float = 3.0
    elr_beta: float = 0.7
    unknown_weight: str | float = "auto"

    def _validate(self) -> None:
        if self.kind not in ("linear", "mlp"):
            raise TrainingError(f"Head kind must be 'linear' or 'mlp', not {self.kind!r}.")


# ---------------------------------------------------------------------- the module
def _build_head(in_dim: int, n_out: int, cfg: HeadConfig) -> "torch.nn.Module":
    import torch
    from torch import nn

    class Head(nn.Module):
        """Standardisation buffers followed by a linear layer or a one-hidden-layer MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(in_dim))
            self.register_buffer("scale", torch.ones(in_dim))
            if cfg.kind == "mlp":
                self.net = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                         nn.Linear(cfg.hidden, n_out))
            else:
                self.net = nn.Sequential(nn.Linear(in_dim, n_out))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.net((x - self.mean) / self.scale)

    return Head()


@dataclass
class TrainedHead:
    """A trained head and what it learned (scikit-learn style ``name_`` fitted state).

    Attributes
    ----------
    module : the torch module (on ``device``), in eval mode.
    task : "single" (softmax) or "multi" (sigmoid).
    config : HeadConfig used.
    in_dim, n_classes : input and output sizes.
    thresholds_ : (K,) float32 per-class decision thresholds (multi-label; 0.5 otherwise unused).
    curves_ : one dict per epoch: epoch, train_loss, val_loss, val_metric (accuracy or known-cell accuracy).
    best_epoch_ : epoch whose weights were kept (early stopping).
    device : where the module lives.
    cancelled : True when training stopped on a cancel (the best weights so far).
    seconds : training wall time.
    """

    module: Any
    task: str
    config: HeadConfig
    in_dim: int
    n_classes: int
    thresholds_: np.ndarray
    curves_: list[dict[str, Any]] = field(default_factory=list)
    best_epoch_: int = 0
    device: str = "cpu"
    cancelled: bool = False
    seconds: float = 0.0

    def predict_proba(self, X: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """(N, D) float32 embeddings -> (N, K) float32 probabilities (softmax or per-class sigmoid)."""
        import torch

        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.in_dim:
            raise TrainingError(f"The head expects (N, {self.in_dim}) embeddings, got {X.shape}; retrain the head "
                                "after re-embedding with another encoder.")
        out = np.empty((len(X), self.n_classes), np.float32)
        self.module.eval()
        with torch.no_grad():
            for s in range(0, len(X), batch_size):
                logits = self.module(torch.from_numpy(np.array(X[s:s + batch_size])).to(self.device))
                p = torch.softmax(logits, 1) if self.task == "single" else torch.sigmoid(logits)
                out[s:s + batch_size] = p.float().cpu().numpy()
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Single-label: (N,) int64 argmax. Multi-label: (N, K) bool, probability >= per-class threshold."""
        p = self.predict_proba(X)
        return p.argmax(1).astype(np.int64) if self.task == "single" else p >= self.thresholds_[None, :]

    def to(self, device: str) -> "TrainedHead":
        self.module.to(device)
        self.device = device
        return self


# ---------------------------------------------------------------------- training
def hash_unit(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) float64 in [0, 1): a deterministic per-id hash (splitmix64), stable as other samples come and go."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _multilabel_weights(Y: np.ndarray, cfg: HeadConfig, K: int, *, weak: np.ndarray | None = None,
                        class_weight: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float32 cell weights and (K,) bool "weak negatives used" for a multi-label set.

    ``weak`` reuses the training set's per-class decision (for the validation set)."""
    pos = Y == POSITIVE
    neg = Y == REJECTED
    w = (pos | neg).astype(np.float32)
    if weak is not None:
        gamma = np.where(weak, 1.0 / max(K - 1, 1) if cfg.unknown_weight == "auto" else float(cfg.unknown_weight),
                         0.0).astype(np.float32)
    elif cfg.unknown_weight == "auto":
        weak = 4 * neg.sum(0) < pos.sum(0)
        gamma = np.where(weak, 1.0 / max(K - 1, 1), 0.0).astype(np.float32)
    else:
        gamma = np.full(K, float(cfg.unknown_weight), np.float32)
        weak = gamma > 0
    has_pos = pos.any(1, keepdims=True)
    unknown_weak = (Y == UNKNOWN) & has_pos
    w = w + unknown_weak * gamma[None, :]
    if cfg.class_weight if class_weight is None else class_weight:
        # rebalance positives against all negatives (known + weak) per class, capped
        pw = (w * pos).sum(0)
        nw = (w * ~pos).sum(0)
        ratio = np.clip(_ratio(nw, pw), 1.0, 10.0).astype(np.float32)
        w = np.where(pos, w * ratio[None, :], w)
    return w.astype(np.float32), weak


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.ones_like(a, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _class_weights(y: np.ndarray, K: int, enabled: bool) -> np.ndarray:
    """(K,) float64 single-label loss weights: inverse class frequency over the present classes, or ones."""
    if not enabled:
        return np.ones(K)
    counts = np.bincount(y, minlength=K).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (max((counts > 0).sum(), 1) * np.maximum(counts, 1)), 0.0)


def _masked_bce(logits: "torch.Tensor", y: "torch.Tensor", w: "torch.Tensor",
                smoothing: float = 0.0) -> "torch.Tensor":
    """Multi-label loss: (B, K) logits, targets and cell weights ``w`` (0 = masked); per-cell BCE,
    label-smoothed targets ``y (1 - e) + e / 2``."""
    import torch.nn.functional as F

    if smoothing:
        y = y * (1 - smoothing) + smoothing / 2
    cell = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (cell * w).sum() / w.sum().clamp_min(1e-6)


def _val_metric(task: str, logits: "torch.Tensor", y: "torch.Tensor", w: "torch.Tensor | None") -> float:
    """Single-label accuracy, or multi-label accuracy over the known (weighted) cells at threshold 0.5."""
    if task == "single":
        return float((logits.argmax(1) == y).float().mean())
    ok = ((logits >= 0).float() == y).float()
    known = (w > 0).float()
    return float((ok * known).sum() / known.sum().clamp_min(1))


EpochFn = Callable[[list[dict[str, Any]]], None]
"""``on_epoch(curves)``: called after every epoch with the per-epoch records so far."""


def train_head(X: np.ndarray, Y: np.ndarray, *, task: str = "single", config: HeadConfig | dict | None = None,
               X_val: np.ndarray | None = None, Y_val: np.ndarray | None = None,
               progress: ProgressFn | None = None, n_classes: int | None = None,
               on_epoch: EpochFn | None = None) -> TrainedHead:
    """Train a linear or MLP head on embeddings.

    Parameters
    ----------
    X : (N, D) float32 embeddings of the labelled training samples.
    Y : single-label: (N,) int class index (rows with -1 are dropped). Multi-label: (N, K) int8 with
        POSITIVE=1 / UNKNOWN=0 / REJECTED=-1: sigmoid BCE on known cells, UNKNOWN cells masked out
        (or weak negatives, see ``HeadConfig.unknown_weight``), REJECTED cells negatives.
    task : "single" or "multi".
    config : HeadConfig or dict of its fields.
    X_val, Y_val : validation set for early stopping and (multi-label) threshold tuning. When absent,
        ``config.val_fraction`` of the rows is held out (seeded); 0 disables validation.
    progress : ``progress(fraction, message)`` after each epoch; it may raise ``Cancelled``, in which
        case :class:`TrainingCancelled` (a ``Cancelled``) is raised carrying the best head so far.
    n_classes : K for single-label (default ``max(Y) + 1``).
    on_epoch : ``on_epoch(curves)`` after each epoch (live curves; see :class:`LiveCurves`).

    Returns
    -------
    TrainedHead, with per-epoch ``curves_`` and (multi-label) validation-tuned ``thresholds_``.
    """
    import torch
    import torch.nn.functional as F

    cfg = HeadConfig.from_any(config)
    progress = progress or null_progress
    if task not in ("single", "multi"):
        raise TrainingError(f"task must be 'single' or 'multi', not {task!r}.")
    if cfg.elr and task == "multi":
        raise TrainingError("Early-learning regularisation is implemented for single-label tasks; set elr=False.")
    X = np.asarray(X, np.float32)
    Y = np.asarray(Y)
    if X.ndim != 2 or len(X) != len(Y):
        raise TrainingError(f"X must be (N, D) and Y have N rows; got X {X.shape}, Y {Y.shape}.")
    if task == "single":
        Y = Y.astype(np.int64).ravel()
        K = int(n_classes if n_classes is not None else (Y.max() + 1 if len(Y) else 0))
        keep = Y >= 0
        X, Y = X[keep], Y[keep]
        if X_val is not None:
            Y_val = np.asarray(Y_val, np.int64).ravel()
            kv = Y_val >= 0
            X_val, Y_val = np.asarray(X_val, np.float32)[kv], Y_val[kv]
    else:
        if Y.ndim != 2:
            raise TrainingError("Multi-label Y must be (N, K) with 1 / 0 / -1 cells.")
        K = Y.shape[1]
        keep = (Y != UNKNOWN).any(1)
        X, Y = X[keep], Y[keep].astype(np.int8)
        if X_val is not None:
            Y_val = np.asarray(Y_val, np.int8)
            kv = (Y_val != UNKNOWN).any(1)
            X_val, Y_val = np.asarray(X_val, np.float32)[kv], Y_val[kv]
    if len(X) == 0 or K == 0:
        raise TrainingError("No labelled samples to train on: label some images first (or import labels).")
    if X_val is None and cfg.val_fraction > 0 and len(X) >= 10:
        is_val = hash_unit(np.arange(len(X)), cfg.seed) < cfg.val_fraction
        if is_val.all() or not is_val.any():
            is_val[:] = False
        X_val, Y_val = X[is_val], Y[is_val]
        X, Y = X[~is_val], Y[~is_val]
    has_val = X_val is not None and len(X_val) > 0

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    N, D = X.shape
    module = _build_head(D, K, cfg)
    if cfg.standardize:
        mu = X.mean(0)
        # one isotropic scale (not per dimension): keeps the embedding geometry, so low-variance
        # (noise) directions are not blown up, which matters most with few labels
        sd = np.full(X.shape[1], max(float(np.sqrt(X.var(0).mean())), 1e-12))
        module.mean.copy_(torch.from_numpy(mu))
        module.scale.copy_(torch.from_numpy(sd.astype(np.float32)))
    module.to(device)
    xt = torch.from_numpy(X).to(device)
    xv = torch.from_numpy(np.asarray(X_val, np.float32)).to(device) if has_val else None

    weak = np.zeros(K, bool)
    if task == "single":
        yt = torch.from_numpy(Y).to(device)
        yv = torch.from_numpy(np.asarray(Y_val, np.int64)).to(device) if has_val else None
        cw_t = torch.tensor(_class_weights(Y, K, cfg.class_weight), dtype=torch.float32, device=device)
        elr_t = torch.zeros((N, K), dtype=torch.float32, device=device) if cfg.elr else None
    else:
        w_np, weak = _multilabel_weights(Y, cfg, K)
        yt = torch.from_numpy((Y == POSITIVE).astype(np.float32)).to(device)
        wt = torch.from_numpy(w_np).to(device)
        if has_val:
            wv_np, _ = _multilabel_weights(np.asarray(Y_val), cfg, K, weak=weak, class_weight=False)
            yv = torch.from_numpy((np.asarray(Y_val) == POSITIVE).astype(np.float32)).to(device)
            wv = torch.from_numpy(wv_np).to(device)

    def loss_fn(logits: "torch.Tensor", idx: "torch.Tensor | None", train: bool) -> "torch.Tensor":
        if task == "single":
            y = yt[idx] if train else yv
            loss = F.cross_entropy(logits, y, weight=cw_t if train else None,
                                   label_smoothing=cfg.label_smoothing if train else 0.0)
            if train and elr_t is not None:
                p = torch.softmax(logits, 1).clamp(1e-4, 1 - 1e-4)
                p_det = (p / p.sum(1, keepdim=True)).detach()
                elr_t[idx] = cfg.elr_beta * elr_t[idx] + (1 - cfg.elr_beta) * p_det
                loss = loss + cfg.elr_lambda * torch.log(1 - (elr_t[idx] * p).sum(1)).mean()
            return loss
        if train:
            return _masked_bce(logits, yt[idx], wt[idx], cfg.label_smoothing)
        return _masked_bce(logits, yv, wv)

    bs = cfg.batch_size if cfg.batch_size and cfg.batch_size < N else N
    steps_per_epoch = math.ceil(N / bs)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs * steps_per_epoch, 1))
    curves: list[dict[str, Any]] = []
    best = (math.inf, 0, None)
    t0 = time.perf_counter()
    since_best = 0

    def snapshot() -> TrainedHead:
        head = TrainedHead(module=copy.deepcopy(module).eval(), task=task, config=cfg, in_dim=D, n_classes=K,
                           thresholds_=np.full(K, 0.5, np.float32), curves_=list(curves), device=device)
        if best[2] is not None:
            head.module.load_state_dict(best[2])
            head.best_epoch_ = best[1]
        return head

    try:
        for epoch in range(1, cfg.epochs + 1):
            module.train()
            perm = torch.randperm(N, generator=gen).to(device) if bs < N else None
            total = 0.0
            for s in range(0, N, bs):
                idx = perm[s:s + bs] if perm is not None else torch.arange(N, device=device)
                loss = loss_fn(module(xt[idx]), idx, True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            rec: dict[str, Any] = {"epoch": epoch, "train_loss": total / N}
            if has_val:
                module.eval()
                with torch.no_grad():
                    lv = module(xv)
                    rec["val_loss"] = float(loss_fn(lv, None, False))
                    rec["val_metric"] = _val_metric(task, lv, yv, wv if task == "multi" else None)
            curves.append(rec)
            if on_epoch is not None:
                on_epoch(curves)
            score = rec.get("val_loss", rec["train_loss"])
            if score < best[0] - 1e-6:
                best = (score, epoch, {k: v.detach().clone() for k, v in module.state_dict().items()})
                since_best = 0
            else:
                since_best += 1
            msg = f"epoch {epoch}/{cfg.epochs} loss {rec['train_loss']:.4f}"
            if "val_metric" in rec:
                msg += f" val {rec['val_metric']:.3f}"
            stop = has_val and cfg.patience and since_best >= cfg.patience
            progress(1.0 if stop else epoch / cfg.epochs, msg)
            if stop:
                log.info("early stop at epoch %d (best %d)", epoch, best[1])
                break
    except Cancelled as exc:
        head = snapshot() if best[2] is not None else None
        if head is not None:
            head.cancelled = True
            head.seconds = time.perf_counter() - t0
        raise TrainingCancelled(head) from exc

    head = snapshot()
    head.seconds = time.perf_counter() - t0
    if task == "multi":
        from curation.evaluate import tune_thresholds

        if has_val:
            head.thresholds_ = tune_thresholds(np.asarray(Y_val), head.predict_proba(np.asarray(X_val)),
                                               weights=wv_np)
        head.weak_negatives_ = weak
    log.info("trained %s head (%s, %d x %d -> %d) in %.2fs on %s, best epoch %d", cfg.kind, task, N, D, K,
             head.seconds, device, head.best_epoch_)
    del xt, xv
    _free(device)
    return head


def _free(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------- checkpoints
def _write_safetensors(path: Any, tensors: dict[str, "torch.Tensor"], key: str, obj: dict[str, Any]) -> None:
    """Write ``tensors`` (name -> contiguous CPU tensor) with ``obj`` as JSON under metadata entry ``key``,
    atomically (a temporary file, then a rename): a reader never sees half a checkpoint."""
    from safetensors.torch import save_file

    tmp = Path(f"{path}.tmp")
    save_file(tensors, str(tmp), metadata={key: json.dumps(obj)})
    os.replace(tmp, path)


def _read_safetensors(path: Any, key: str, *,
                      skip_prefix: str = "") -> tuple[dict[str, Any], dict[str, "torch.Tensor"]]:
    """A safetensors file's JSON metadata entry and its tensors, without unpickling.

    Parameters
    ----------
    path : the file.
    key : the metadata entry that holds the JSON dict (``"config"`` for heads, ``"state"`` for training states).
    skip_prefix : tensors whose names start with it are not read (``TOWER_PREFIX``: a head without its tower).

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


def save_head(head: TrainedHead, path: Any, *, extra: dict[str, Any] | None = None,
              tensors: dict[str, "torch.Tensor"] | None = None) -> dict[str, Any]:
    """Write the head's tensors with safetensors (atomically); its config (JSON) rides in the file's metadata.

    ``tensors`` adds other tensors under names that start with ``TOWER_PREFIX`` (a fine-tune's tuned
    tower); :func:`load_head_file` leaves them out. Returns the JSON config (also what the artifact's
    meta record stores)."""
    import torch

    out = {k: v.detach().float().cpu().contiguous() for k, v in head.module.state_dict().items()}
    out["thresholds"] = torch.from_numpy(np.asarray(head.thresholds_, np.float32).copy())
    for k, v in (tensors or {}).items():
        if not k.startswith(TOWER_PREFIX):
            raise TrainingError(f"Extra checkpoint tensor {k!r} must be named {TOWER_PREFIX}<name>.")
        out[k] = v.detach().cpu().contiguous()
    meta = {"head": head.config.to_dict(), "task": head.task, "in_dim": head.in_dim, "n_classes": head.n_classes,
            "best_epoch": head.best_epoch_, "cancelled": head.cancelled, **(extra or {})}
    _write_safetensors(path, out, "config", meta)
    return meta


def load_head_file(path: Any, *, device: str = "cpu") -> TrainedHead:
    """Rebuild a :class:`TrainedHead` from a safetensors checkpoint (never unpickles; ``tower.*`` tensors are
    not read)."""
    meta, tensors = _read_safetensors(path, "config", skip_prefix=TOWER_PREFIX)
    if not meta:
        raise TrainingError(f"{path} has no head config in its metadata; it is not a curation checkpoint.")
    thresholds = tensors.pop("thresholds").numpy()
    cfg = HeadConfig.from_any(meta["head"])
    module = _build_head(int(meta["in_dim"]), int(meta["n_classes"]), cfg)
    module.load_state_dict(tensors)
    module.to(device).eval()
    return TrainedHead(module=module, task=meta["task"], config=cfg, in_dim=int(meta["in_dim"]),
                       n_classes=int(meta["n_classes"]), thresholds_=thresholds, best_epoch_=int(meta["best_epoch"]),
                       device=device, cancelled=bool(meta.get("cancelled", False)))


# ---------------------------------------------------------------------- pinned slice
def pinned(ws: "Workspace") -> np.ndarray:
    """(M,) int64 ascending ids of the must-not-fail samples (kept in the store's meta as JSON)."""
    return _id_set(ws.store.meta("pinned"))


def _id_set(raw: str | None) -> np.ndarray:
    return np.array(sorted(set(json.loads(raw))) if raw else [], np.int64)


def _edit_pinned(ws: "Workspace", ids: Sequence[int] | np.ndarray,
                 combine: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """``combine(current, ids)`` applied to the slice in one store transaction (concurrent edits never lose one)."""
    ids = np.asarray(ids, np.int64).ravel()

    def update(old: str | None) -> str:
        return json.dumps(combine(_id_set(old), ids).astype(np.int64).tolist())

    return _id_set(ws.store.update_meta("pinned", update))


def pin(ws: "Workspace", ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Add samples to the must-not-fail slice; every later run reports its accuracy on them."""
    return _edit_pinned(ws, ids, np.union1d)


def unpin(ws: "Workspace", ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Remove samples from the must-not-fail slice."""
    return _edit_pinned(ws, ids, np.setdiff1d)


# ---------------------------------------------------------------------- runs
def split_labelled(ids: np.ndarray, splits: np.ndarray, labelled: np.ndarray, *, val_fraction: float = 0.2,
                   seed: int = 0) -> tuple[np.ndarray, str]:
    """Assign each sample to "train", "val", "test" or "" (unlabelled / unused).

    Parameters
    ----------
    ids : (N,) int64 sample ids.
    splits : (N,) str, the store's split column ("train", "val", "test" or "").
    labelled : (N,) bool.

    Returns
    -------
    (N,) object array of split names, and the source: "store" when some labelled sample is marked
    "val" (store splits are used as they are; unmarked labelled samples train), else "hash": labelled
    non-test samples go to val when ``hash_unit(id, seed) < val_fraction`` (deterministic, per id, so a
    sample stays on its side when the dataset grows), the rest to train.
    """
    splits = np.asarray(splits, object)
    out = np.where(labelled, splits, "").astype(object)
    if (out == "val").any():
        out[labelled & (out == "")] = "train"
        return out, "store"
    free = labelled & (out != "test")
    to_val = free & (hash_unit(ids, seed) < val_fraction)
    out[free] = "train"
    out[to_val] = "val"
    return out, "hash"


def _correct(task: str, Y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) bool: single-label argmax == label; multi-label top-1 is one of the positive labels."""
    if task == "single":
        return probs.argmax(1) == Y
    from curation.evaluate import top1_correct

    return top1_correct(Y, probs)


def _evaluate(task: str, Y: np.ndarray, probs: np.ndarray, names: list[str], head: TrainedHead) -> dict[str, Any]:
    from curation.evaluate import classification_report, multilabel_report, report_to_json

    if task == "single":
        rep = classification_report(Y, probs, names)
    else:
        rep = multilabel_report(Y, probs, names, thresholds=head.thresholds_)
    return report_to_json(rep)


@dataclass
class RunData:
    """What a run trains and is judged on: its label snapshot replayed and its split, aligned with ``ids``.

    Attributes
    ----------
    task : "single" or "multi".
    names : K class names (column k of ``Y`` / of the run's probabilities).
    snapshot : the last label event the run saw.
    ids : (N,) int64 sample ids, ascending.
    Y : single-label (N,) int64 class index (-1 = unlabelled); multi-label (N, K) int8 cells 1 / 0 / -1.
    labelled : (N,) bool.
    split : (N,) object, "train" / "val" / "test" / "" (see :func:`split_labelled`).
    split_source : "store" or "hash".
    """

    task: str
    names: list[str]
    snapshot: int
    ids: np.ndarray
    Y: np.ndarray
    labelled: np.ndarray
    split: np.ndarray
    split_source: str

    def mask(self, name: str) -> np.ndarray:
        """(N,) bool rows of one split."""
        return self.split == name

    def subset(self, keep: np.ndarray) -> "RunData":
        """The rows where ``keep`` (N,) bool is true (e.g. without unreadable images)."""
        return RunData(self.task, self.names, self.snapshot, self.ids[keep], self.Y[keep], self.labelled[keep],
                       self.split[keep], self.split_source)

    def base_metrics(self) -> dict[str, Any]:
        """The split summary every run record carries, also while training or after a cancel."""
        va, te = self.mask("val"), self.mask("test")
        return {"task": self.task, "classes": self.names, "split_source": self.split_source,
                "n_train": int(self.mask("train").sum()), "n_val": int(va.sum()), "n_test": int(te.sum()),
                "n_unlabelled": int((~self.labelled).sum()), "val_ids": self.ids[va].tolist(),
                "test_ids": self.ids[te].tolist()}


def run_data(ws: "Workspace", ids: np.ndarray, *, val_fraction: float, seed: int,
             snapshot: int | None = None) -> RunData:
    """Labels of ``ids`` replayed up to ``snapshot`` (default: the newest event) and their split."""
    store = ws.store
    snapshot = store.last_event_id() if snapshot is None else int(snapshot)
    ids = np.asarray(ids, np.int64)
    M = store.label_matrix(ids, upto_event=snapshot)
    if store.task == "single":
        Y = single_from_matrix(M)
        labelled = Y >= 0
    else:
        Y = M
        labelled = (M != UNKNOWN).any(1)
    split_col = store.samples()["split"].reindex(ids).fillna("").to_numpy(object)
    split, source = split_labelled(ids, split_col, labelled, val_fraction=val_fraction, seed=seed)
    return RunData(store.task, store.class_names(), snapshot, ids, Y, labelled, split, source)


def run_metrics(ws: "Workspace", data: RunData, probs: np.ndarray, head: TrainedHead) -> dict[str, Any]:
    """A finished run's metrics from its predictions ``probs`` (N, K) on ``data.ids`` (see :func:`run_training`)."""
    task, names, Y = data.task, data.names, data.Y
    va, te = data.mask("val"), data.mask("test")
    metrics = data.base_metrics()
    metrics["val"] = _evaluate(task, Y[va], probs[va], names, head) if va.any() else {}
    metrics["test"] = _evaluate(task, Y[te], probs[te], names, head) if te.any() else {}
    at = np.isin(data.ids, pinned(ws)) & data.labelled
    ok = _correct(task, Y[at], probs[at]) if at.any() else np.zeros(0, bool)
    metrics["pinned"] = {"n": int(at.sum()), "accuracy": float(ok.mean()) if at.any() else None,
                         "failed_ids": data.ids[at][~ok].tolist(), "n_in_train": int((at & data.mask("train")).sum())}
    # headline (val, else test) scalars and per-class table also at top level, for the CLI and tables
    headline_split = "val" if metrics["val"] else "test" if metrics["test"] else ""
    if headline_split:
        rep = metrics[headline_split]
        metrics.update({k: v for k, v in rep.items() if isinstance(v, (int, float)) or v is None})
        metrics["per_class"] = rep["per_class"]
    metrics["headline_split"] = headline_split
    metrics["pinned_accuracy"] = metrics["pinned"]["accuracy"]
    metrics["curves"] = head.curves_
    metrics["best_epoch"] = int(head.best_epoch_)
    metrics["seconds_train"] = float(head.seconds)
    if task == "multi":
        metrics["thresholds"] = np.asarray(head.thresholds_, float).tolist()
        metrics["weak_negative_classes"] = [n for n, w in zip(names, head.weak_negatives_) if w]
    return metrics


def save_run_checkpoint(ws: "Workspace", run_id: int, head: TrainedHead, *, extra: dict[str, Any],
                        tensors: dict[str, "torch.Tensor"] | None = None) -> str:
    """Write ``checkpoints/run-<id>.safetensors`` (head, plus ``tower.*`` tensors when given); returns the
    artifact name the run record keeps."""
    key = f"run-{int(run_id)}"
    path = ws.artifacts.path(CHECKPOINT_KIND, key, "safetensors")
    meta = save_head(head, path, extra=extra, tensors=tensors)
    ws.artifacts.register_file(CHECKPOINT_KIND, key, "safetensors", config=meta)
    return f"{CHECKPOINT_KIND}/{key}"


def finish_run(ws: "Workspace", run_id: int, data: RunData, probs: np.ndarray, head: TrainedHead, *,
               duration: float, checkpoint_extra: dict[str, Any], tensors: dict[str, "torch.Tensor"] | None = None,
               metrics_extra: dict[str, Any] | None = None) -> None:
    """Evaluate; save the predictions (``ids``, ``probs`` of every row of ``data``) and the checkpoint; mark it done."""
    metrics = {**run_metrics(ws, data, probs, head), **(metrics_extra or {})}
    ws.artifacts.save_arrays(PREDICTIONS_KIND, f"run-{int(run_id)}", {"ids": data.ids, "probs": probs},
                             config={"run_id": int(run_id), "task": data.task, "classes": data.names,
                                     "thresholds": np.asarray(head.thresholds_, float).tolist()})
    artifact = save_run_checkpoint(ws, run_id, head, extra=checkpoint_extra, tensors=tensors)
    ws.store.update_run(run_id, status="done", duration=duration, metrics=metrics, artifact=artifact)


class LiveCurves:
    """``on_epoch`` callback that writes a running run's per-epoch curves to its record, so pages can plot
    them while it trains: the first epoch at once, then at most every ``interval`` seconds.

    The record's metrics hold ``curves`` (the epoch records so far) and ``epochs`` (the planned count)
    until the run ends and its full metrics replace them."""

    def __init__(self, store: Any, run_id: int, *, epochs: int, interval: float = 1.0) -> None:
        self.store, self.run_id, self.epochs, self.interval = store, int(run_id), int(epochs), float(interval)
        self._last: float | None = None

    def __call__(self, curves: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self.store.update_run(self.run_id, status="running",
                              metrics={"curves": list(curves), "epochs": self.epochs})


def run_training(ws: "Workspace", config: HeadConfig | dict | None = None, *, emb: Any = None,
                 progress: ProgressFn | None = None) -> int:
    """Train a head on the workspace's embeddings and labels, evaluate it, and record the run.

    Steps: snapshot ``last_event_id``; labels replayed up to it; split (store's, else seeded hash
    80/20, see :func:`split_labelled`); run record (kind "head"); train, writing the curves to the
    run record as it goes (:class:`LiveCurves`); evaluate on val and test; predict every embedded
    sample (labelled or not) -> artifact ``predictions/run-<id>`` (``ids``, ``probs``); checkpoint ->
    ``checkpoints/run-<id>.safetensors``; metrics, duration, status.

    Parameters
    ----------
    ws : the workspace.
    config : HeadConfig or a dict of its fields (the job's params).
    emb : embeddings (``ids`` (N,) int64 ascending, ``vectors`` (N, D) float32, ``encoder_id``);
        default ``curation.embed.load_embeddings(ws)``.
    progress : ``progress(fraction, message)``; raising ``Cancelled`` marks the run "cancelled",
        keeps the best checkpoint so far, and re-raises (a :class:`TrainingCancelled` with ``run_id``).

    Returns
    -------
    The run id. Run metrics (JSON): ``task, classes, split_source, n_train, n_val, n_test, n_unlabelled,
    val`` / ``test`` (``report_to_json`` of the report; ``{}`` when the split is empty), the scalar
    metrics and ``per_class`` records of the headline report (val, else test; named by
    ``headline_split``) repeated at top level, ``pinned`` (n, accuracy, failed_ids, n_in_train) and
    ``pinned_accuracy``, ``curves``, ``best_epoch``, ``seconds_train``, ``val_ids``, ``test_ids``,
    and for multi-label ``thresholds`` and ``weak_negative_classes``.
    """
    t0 = time.perf_counter()
    cfg = HeadConfig.from_any(config)
    progress = progress or null_progress
    if emb is None:
        from curation.embed import load_embeddings

        emb = load_embeddings(ws)
        if emb is None:
            raise TrainingError(f"No embeddings for {ws.root}: embed the dataset first: "
                                f"`python -m curation embed {ws.root}`.")
    X = np.asarray(emb.vectors, np.float32)
    data = run_data(ws, emb.ids, val_fraction=cfg.val_fraction, seed=cfg.seed)
    device = pick_device(cfg.device)
    encoder = str(getattr(emb, "encoder_id", ""))
    run_id = ws.store.add_run(RUN_KIND, cfg.to_dict(), last_event_id=data.snapshot, encoder=encoder, device=device)
    ckpt_extra = {"run_id": run_id, "classes": data.names, "encoder": encoder, "last_event_id": data.snapshot}
    tr, va = data.mask("train"), data.mask("val")
    try:
        if not tr.any():
            raise TrainingError("No labelled training samples: label some images (or import labels) before training.")
        progress(0.0, f"training {cfg.kind} head on {int(tr.sum())} samples ({device})")
        head = train_head(X[tr], data.Y[tr], task=data.task, config=cfg, X_val=X[va] if va.any() else None,
                          Y_val=data.Y[va] if va.any() else None, n_classes=len(data.names),
                          progress=lambda f, m: progress(0.9 * f, m),
                          on_epoch=LiveCurves(ws.store, run_id, epochs=cfg.epochs))
        progress(0.9, "predicting every sample")
        finish_run(ws, run_id, data, head.predict_proba(X), head, duration=time.perf_counter() - t0,
                   checkpoint_extra=ckpt_extra)
        progress(1.0, f"run {run_id} done")
        log.info("run %d done in %.2fs", run_id, time.perf_counter() - t0)
        return run_id
    except TrainingCancelled as exc:
        exc.run_id = run_id
        metrics = data.base_metrics()
        artifact = ""
        if exc.head is not None:
            artifact = save_run_checkpoint(ws, run_id, exc.head, extra=ckpt_extra)
            metrics["curves"] = exc.head.curves_
            metrics["best_epoch"] = int(exc.head.best_epoch_)
        ws.store.update_run(run_id, status="cancelled", duration=time.perf_counter() - t0, metrics=metrics,
                            artifact=artifact)
        log.info("run %d cancelled", run_id)
        raise
    except BaseException as exc:
        ws.store.update_run(run_id, status="cancelled" if isinstance(exc, Cancelled) else "failed",
                            duration=time.perf_counter() - t0,
                            metrics={**data.base_metrics(), "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        _free(device)


def load_predictions(ws: "Workspace", run_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids (N,) int64, probs (N, K) float32) predicted by a run for every embedded sample, or None."""
    key = f"run-{int(run_id)}"
    ids = ws.artifacts.load_array(PREDICTIONS_KIND, key, name="ids")
    probs = ws.artifacts.load_array(PREDICTIONS_KIND, key, name="probs")
    if ids is None or probs is None:
        return None
    return ids, probs


def load_head(ws: "Workspace", run_id: int, *, device: str = "cpu") -> TrainedHead:
    """The head a run saved (safetensors, checked against its recorded sha256), on ``device``."""
    key = f"run-{int(run_id)}"
    if not ws.artifacts.exists(CHECKPOINT_KIND, key):
        raise TrainingError(f"Run {run_id} has no checkpoint (it failed or was cancelled before the first epoch); "
                            "train again.")
    ws.artifacts.verify(CHECKPOINT_KIND, key)  # a tampered or truncated file is refused, not loaded
    return load_head_file(ws.artifacts.path(CHECKPOINT_KIND, key, "safetensors"), device=device)


def latest_run(ws: "Workspace", status: str | None = "done", *, kind: str | None = RUN_KIND) -> dict[str, Any] | None:
    """The newest run with this status (None = any) and kind (None = any), as ``store.run`` returns it."""
    run_id = ws.store.newest_run_id(status=status, kinds=None if kind is None else [kind])
    return None if run_id is None else {**ws.store.run(run_id), "id": run_id}


def compare_runs(ws: "Workspace", run_a: int, run_b: int) -> dict[str, Any]:
    """What changed from run A to run B.

    Both runs are judged on their shared validation samples against the labels of B's snapshot (so a
    flip reflects the model, not a relabel; label changes are listed separately).

    Returns
    -------
    dict with
    ``overall`` : DataFrame indexed by metric: a, b, delta (= b - a), from each run's own val report;
    ``per_class`` : DataFrame indexed by class: f1_a, f1_b, f1_delta, precision_delta, recall_delta;
    ``shared_val_ids`` : (M,) int64; ``became_right`` / ``became_wrong`` : (·,) int64 sample ids whose
    correctness flipped from A to B; ``accuracy_a`` / ``accuracy_b`` on the shared samples;
    ``label_events`` : DataFrame of ``store.events`` between the two snapshots;
    ``relabelled_ids`` : (·,) int64 samples whose labels differ between the snapshots.
    """
    ra, rb = ws.store.run(run_a), ws.store.run(run_b)
    ma, mb = ra["metrics"], rb["metrics"]
    va, vb = ma.get("val") or {}, mb.get("val") or {}
    keys = [k for k in va if k in vb and isinstance(va[k], (int, float)) and isinstance(vb[k], (int, float))
            and not isinstance(va[k], bool) and k not in ("k",)]
    overall = pd.DataFrame({"a": [va[k] for k in keys], "b": [vb[k] for k in keys]},
                           index=pd.Index(keys, name="metric"), dtype=float)
    overall["delta"] = overall["b"] - overall["a"]
    pa = pd.DataFrame(va.get("per_class") or []).set_index("class") if va.get("per_class") else pd.DataFrame()
    pb = pd.DataFrame(vb.get("per_class") or []).set_index("class") if vb.get("per_class") else pd.DataFrame()
    per_class = pd.DataFrame(index=pd.Index(sorted(set(pa.index) | set(pb.index)), name="class"))
    for col in ("f1", "precision", "recall"):
        if col in pa and col in pb:
            a = pa[col].reindex(per_class.index).astype(float)
            b = pb[col].reindex(per_class.index).astype(float)
            if col == "f1":
                per_class["f1_a"], per_class["f1_b"] = a, b
            per_class[f"{col}_delta"] = b - a
    shared = np.intersect1d(np.asarray(ma.get("val_ids", []), np.int64), np.asarray(mb.get("val_ids", []), np.int64))
    task = mb.get("task", ws.store.task)
    became_right = became_wrong = np.zeros(0, np.int64)
    acc_a = acc_b = None
    preds_a, preds_b = load_predictions(ws, run_a), load_predictions(ws, run_b)
    if len(shared) and preds_a is not None and preds_b is not None:
        M = ws.store.label_matrix(shared, upto_event=int(rb["last_event_id"]))
        names_b = mb.get("classes", ws.store.class_names())

        def probs_on(pred: tuple[np.ndarray, np.ndarray], names: list[str]) -> np.ndarray:
            ids, probs = pred
            pos = np.searchsorted(ids, shared)
            pos = np.clip(pos, 0, len(ids) - 1)
            if not (ids[pos] == shared).all():
                raise TrainingError("A run's predictions miss some of its validation samples; retrain it.")
            p = np.asarray(probs)[pos]
            # align columns with B's classes (classes added after A get probability 0)
            out = np.zeros((len(shared), len(names_b)), np.float32)
            col = {n: j for j, n in enumerate(names)}
            for j, n in enumerate(names_b):
                if n in col:
                    out[:, j] = p[:, col[n]]
            return out

        if task == "single":
            Y = single_from_matrix(M[:, :len(names_b)])
        else:
            Y = M[:, :len(names_b)]
        ok_rows = (Y >= 0) if task == "single" else (Y == POSITIVE).any(1)
        ca = _correct(task, Y, probs_on(preds_a, ma.get("classes", names_b))) & ok_rows
        cb = _correct(task, Y, probs_on(preds_b, names_b)) & ok_rows
        became_right = shared[ok_rows & ~ca & cb]
        became_wrong = shared[ok_rows & ca & ~cb]
        if ok_rows.any():
            acc_a, acc_b = float(ca[ok_rows].mean()), float(cb[ok_rows].mean())
    lo, hi = sorted((int(ra["last_event_id"]), int(rb["last_event_id"])))
    events = ws.store.events(after_event=lo, upto_event=hi)
    all_ids = ws.store.sample_ids()
    diff = (ws.store.label_matrix(all_ids, upto_event=lo) != ws.store.label_matrix(all_ids, upto_event=hi)).any(1)
    return {"run_a": int(run_a), "run_b": int(run_b), "overall": overall, "per_class": per_class,
            "shared_val_ids": shared, "became_right": became_right.astype(np.int64),
            "became_wrong": became_wrong.astype(np.int64), "accuracy_a": acc_a, "accuracy_b": acc_b,
            "label_events": events, "relabelled_ids": all_ids[diff]}
