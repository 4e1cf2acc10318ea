"""Classifier heads on cached embeddings: device choice, the head module, training, and its checkpoint file."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from curation.core.progress import Cancelled, ProgressFn, null_progress
from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN

if TYPE_CHECKING:  # pragma: no cover
    import torch


from curation.data.tensors import read_safetensors, write_safetensors
from curation.features.tuned import TOWER_PREFIX

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot start or failed; the message says what to do."""


class TrainingCancelled(Cancelled):
    """Raised by :func:`train_head` when its progress callback cancelled it.

    Attributes
    ----------
    head : TrainedHead | None, the best weights seen before the cancel (None before the first epoch).
    run_id : int | None, set by :func:`run_training` to the run that was marked cancelled.
    """

    def __init__(self, head: TrainedHead | None = None, run_id: int | None = None) -> None:
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
    def from_any(cls, config: JsonConfig | dict[str, Any] | None) -> Any:
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
        for the other classes (typically data imported from folders or tag lists, where nobody
        rejected anything) an UNKNOWN cell of an image that carries another positive label is a
        *weak negative* of weight ``1 - prior_k`` (:func:`unknown_weights`; positive-unlabelled learning:
        the label prior bounds the chance that an unknown cell is a missing positive). Without it a
        head sees no negatives and calls every class positive (Evaluate then showed precision 1.0 on
        every class). A float forces that weight for every class; 0.0 is strict masking everywhere.
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
def build_head(in_dim: int, n_out: int, cfg: HeadConfig) -> torch.nn.Module:
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

        def forward(self, x: torch.Tensor) -> torch.Tensor:
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

    def to(self, device: str) -> TrainedHead:
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


def unknown_weights(Y: np.ndarray) -> np.ndarray:
    """(K,) float32 weight of an UNKNOWN cell as a negative, per class: ``1 - prior_k``.

    ``prior_k`` is the share of labelled rows (rows with a positive) that carry class k: an upper bound on the
    chance that an unknown cell of class k is a missing positive. Unknown cells of rows without any positive
    are never training cells (an unlabelled image says nothing); callers mask them.
    """
    Y = np.asarray(Y)
    has = (Y == POSITIVE).any(1)
    if not has.any():
        return np.ones(Y.shape[1], np.float32)
    return (1.0 - (Y[has] == POSITIVE).mean(0)).astype(np.float32)


def pu_cell_weights(Y: np.ndarray) -> np.ndarray:
    """(N, K) float32 positive-unlabelled cell weights: 1 for positive and rejected cells, :func:`unknown_weights`
    for unknown cells of rows with a positive, 0 for rows without one."""
    Y = np.asarray(Y)
    w = (Y != UNKNOWN).astype(np.float32)
    weak = (Y == UNKNOWN) & (Y == POSITIVE).any(1, keepdims=True)
    return np.where(weak, unknown_weights(Y)[None, :], w).astype(np.float32)


def multilabel_weights(Y: np.ndarray, cfg: HeadConfig, K: int, *, weak: np.ndarray | None = None,
                        class_weight: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float32 cell weights and (K,) bool "weak negatives used" for a multi-label set.

    ``weak`` reuses the training set's per-class decision (for the validation set)."""
    pos = Y == POSITIVE
    neg = Y == REJECTED
    w = (pos | neg).astype(np.float32)
    if weak is not None:
        gamma = np.where(weak, unknown_weights(Y) if cfg.unknown_weight == "auto" else float(cfg.unknown_weight),
                         0.0).astype(np.float32)
    elif cfg.unknown_weight == "auto":
        weak = 4 * neg.sum(0) < pos.sum(0)
        gamma = np.where(weak, unknown_weights(Y), 0.0).astype(np.float32)
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


def class_weights(y: np.ndarray, K: int, enabled: bool) -> np.ndarray:
    """(K,) float64 single-label loss weights: inverse class frequency over the present classes, or ones."""
    if not enabled:
        return np.ones(K)
    counts = np.bincount(y, minlength=K).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (max((counts > 0).sum(), 1) * np.maximum(counts, 1)), 0.0)


def masked_bce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                smoothing: float = 0.0) -> torch.Tensor:
    """Multi-label loss: (B, K) logits, targets and cell weights ``w`` (0 = masked); per-cell BCE,
    label-smoothed targets ``y (1 - e) + e / 2``."""
    import torch.nn.functional as F

    if smoothing:
        y = y * (1 - smoothing) + smoothing / 2
    cell = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (cell * w).sum() / w.sum().clamp_min(1e-6)


def val_metric(task: str, logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> float:
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
    module = build_head(D, K, cfg)
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
        cw_t = torch.tensor(class_weights(Y, K, cfg.class_weight), dtype=torch.float32, device=device)
        elr_t = torch.zeros((N, K), dtype=torch.float32, device=device) if cfg.elr else None
    else:
        w_np, weak = multilabel_weights(Y, cfg, K)
        yt = torch.from_numpy((Y == POSITIVE).astype(np.float32)).to(device)
        wt = torch.from_numpy(w_np).to(device)
        if has_val:
            wv_np, _ = multilabel_weights(np.asarray(Y_val), cfg, K, weak=weak, class_weight=False)
            yv = torch.from_numpy((np.asarray(Y_val) == POSITIVE).astype(np.float32)).to(device)
            wv = torch.from_numpy(wv_np).to(device)

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor | None, train: bool) -> torch.Tensor:
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
            return masked_bce(logits, yt[idx], wt[idx], cfg.label_smoothing)
        return masked_bce(logits, yv, wv)

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
                    rec["val_metric"] = val_metric(task, lv, yv, wv if task == "multi" else None)
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
        from curation.models.evaluate import tune_thresholds

        if has_val:
            head.thresholds_ = tune_thresholds(np.asarray(Y_val), head.predict_proba(np.asarray(X_val)),
                                               weights=wv_np)
        head.weak_negatives_ = weak
    log.info("trained %s head (%s, %d x %d -> %d) in %.2fs on %s, best epoch %d", cfg.kind, task, N, D, K,
             head.seconds, device, head.best_epoch_)
    del xt, xv
    free_device_memory(device)
    return head


def free_device_memory(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------- checkpoints
def save_head(head: TrainedHead, path: Any, *, extra: dict[str, Any] | None = None,
              tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
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
    write_safetensors(path, out, "config", meta)
    return meta


def load_head_file(path: Any, *, device: str = "cpu") -> TrainedHead:
    """Rebuild a :class:`TrainedHead` from a safetensors checkpoint (never unpickles; ``tower.*`` tensors are
    not read)."""
    meta, tensors = read_safetensors(path, "config", skip_prefix=TOWER_PREFIX)
    if not meta:
        raise TrainingError(f"{path} has no head config in its metadata; it is not a curation checkpoint.")
    thresholds = tensors.pop("thresholds").numpy()
    cfg = HeadConfig.from_any(meta["head"])
    module = build_head(int(meta["in_dim"]), int(meta["n_classes"]), cfg)
    module.load_state_dict(tensors)
    module.to(device).eval()
    return TrainedHead(module=module, task=meta["task"], config=cfg, in_dim=int(meta["in_dim"]),
                       n_classes=int(meta["n_classes"]), thresholds_=thresholds, best_epoch_=int(meta["best_epoch"]),
                       device=device, cancelled=bool(meta.get("cancelled", False)))

