#!/usr/bin/env bash
# GPU figures the docs still lack, in one prepared run (under 8 minutes on one CUDA GPU):
#   * embedding with OpenCLIP ViT-B-32 (random weights, no download) from JPEG files on disk (decode + resize +
#     forward, the product's embed_workspace) vs forward-only on ready tensors, each with AMP (fp16 autocast) on/off;
#   * head training on 1,000,000 x 512 float32 embeddings (the product's train_head);
#   * a fine-tune (the product's run_finetune) with AMP vs fp32;
#   * peak GPU memory of each step.
# Writes OUT/gpu.json (figures) beside OUT/gpu.log (everything printed).
#
# Usage (from the repo root):
#   benchmarks/gpu.sh [OUT]              on a CUDA GPU; OUT defaults to ./gpu-figures
#   benchmarks/gpu.sh --dry-run [OUT]    tiny sizes on the CPU with the tiny test model (what the tests run)
# Sizes can be overridden: GPU_IMAGES (JPEGs, default 4096), GPU_HEAD_N (default 1000000), GPU_FT_IMAGES (1024),
# GPU_MODEL (default ViT-B-32).
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-gpu-figures}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"

export GPU_DRY="$DRY" GPU_OUT="$OUT" PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export CURATION_OFFLINE=1 HF_HUB_OFFLINE=1
cd "$HERE"
"$PY" - <<'PYEOF' 2>&1 | tee "$OUT/gpu.log"
import json, os, platform, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

dry = os.environ["GPU_DRY"] == "1"
out = Path(os.environ["GPU_OUT"])
cuda = torch.cuda.is_available() and not dry
device = "cuda" if cuda else "cpu"
n_img = int(os.environ.get("GPU_IMAGES", 16 if dry else 4096))
n_head = int(os.environ.get("GPU_HEAD_N", 3000 if dry else 1_000_000))
n_ft = int(os.environ.get("GPU_FT_IMAGES", 16 if dry else 1024))
arch = os.environ.get("GPU_MODEL", "ViT-B-32")
if dry:
    from curation.features.encoders import TINY_TEST, register_tiny_openclip
    register_tiny_openclip()
    encoder_name = TINY_TEST
else:
    encoder_name = f"openclip:{arch}:random"
fig = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)", "dry_run": dry,
       "torch": torch.__version__, "python": platform.python_version(), "encoder": encoder_name,
       "n_images": n_img, "n_head": n_head, "n_finetune_images": n_ft}
print(json.dumps(fig), flush=True)


def peak_reset():
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mb():
    if cuda:
        torch.cuda.synchronize()
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def save():
    text = json.dumps(fig, indent=1)
    tmp = out / ".gpu.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "gpu.json")


def autocast(on):
    if on and cuda:
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


# ---- JPEG files on disk (real Fashion-MNIST photos when installed, else seeded noise), ingested with labels
from PIL import Image
from curation.data.ingest import ingest
from curation.data.workspace import Workspace

tmp = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
rng = np.random.default_rng(0)
try:
    from curation.data.demo import load_fashion
    imgs, labels = load_fashion()
    imgs, labels = imgs[:max(n_img, n_ft)], labels[:max(n_img, n_ft)]
    source = "fashion-mnist"
except Exception:  # noqa: BLE001 - not installed: noise images, still JPEG files
    imgs = rng.integers(0, 255, (max(n_img, n_ft), 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, len(imgs))
    source = "noise"
t = time.perf_counter()
for i, (im, y) in enumerate(zip(imgs, labels)):
    d = tmp / "images" / f"c{int(y)}"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(im)).convert("RGB").resize((224, 224)).save(d / f"{i:06d}.jpg", quality=90)
fig["jpeg_source"] = source
fig["jpeg_write_s"] = round(time.perf_counter() - t, 2)
ws = Workspace.create(tmp / "ws")
ingest(ws, tmp / "images")
save()

# ---- embedding: from JPEG files (embed_workspace) vs forward-only, AMP off/on
from curation.features.embed import embed_workspace
from curation.features.encoders import get_encoder

enc = get_encoder(encoder_name, device=device)
for amp in (False, True):
    tag = "amp" if amp else "fp32"
    if amp and not cuda:
        continue
    ws_e = Workspace.create(tmp / f"ws-embed-{tag}")
    ingest(ws_e, tmp / "images")
    peak_reset()
    t = time.perf_counter()
    with autocast(amp):
        emb = embed_workspace(ws_e, enc, batch_size=8 if dry else 256)
    if cuda:
        torch.cuda.synchronize()
    s = time.perf_counter() - t
    fig[f"embed_jpeg_{tag}_images_per_s"] = round(len(emb.ids) / s, 1)
    fig[f"embed_jpeg_{tag}_peak_mb"] = peak_mb()
    print(f"embed from JPEG ({tag}): {len(emb.ids)} images in {s:.1f} s", flush=True)
    save()

model = enc.model if hasattr(enc, "model") else None
batch = 8 if dry else 256
if model is not None:
    model = model.to(device).eval()
    visual = model.visual if hasattr(model, "visual") else model
    size = getattr(visual, "image_size", 224) or 224
    size = size[0] if isinstance(size, (tuple, list)) else size
    x = torch.randn(batch, 3, int(size), int(size), device=device)
    for amp in (False, True):
        if amp and not cuda:
            continue
        tag = "amp" if amp else "fp32"
        peak_reset()
        with torch.no_grad(), autocast(amp):
            visual(x)  # warm-up
            if cuda:
                torch.cuda.synchronize()
            reps = 2 if dry else 20
            t = time.perf_counter()
            for _ in range(reps):
                visual(x)
            if cuda:
                torch.cuda.synchronize()
        s = time.perf_counter() - t
        fig[f"forward_{tag}_images_per_s"] = round(reps * batch / s, 1)
        fig[f"forward_{tag}_peak_mb"] = peak_mb()
        print(f"forward only ({tag}): {reps * batch / s:.0f} images/s", flush=True)
        save()

# ---- head training on n_head x 512 embeddings
from curation.models.heads import train_head

k = 10
centres = rng.normal(size=(k, 512)).astype(np.float32)
y = rng.integers(0, k, n_head)
X = centres[y] + rng.normal(size=(n_head, 512)).astype(np.float32) * 2.0
X /= np.linalg.norm(X, axis=1, keepdims=True)
peak_reset()
t = time.perf_counter()
head = train_head(X, y, task="single", n_classes=k, config={"epochs": 2 if dry else 10, "device": device, "batch_size": 4096})
s = time.perf_counter() - t
fig["head_train_s"] = round(s, 2)
fig["head_epochs"] = 2 if dry else 10
fig["head_peak_mb"] = peak_mb()
print(f"head on {n_head} x 512: {s:.1f} s", flush=True)
del X, y
save()

# ---- fine-tune: AMP vs fp32
from curation.models.finetune import run_finetune

for amp in ("fp16", "off"):
    if amp != "off" and not cuda:
        continue
    ws_f = Workspace.create(tmp / f"ws-ft-{amp}")
    ingest(ws_f, tmp / "images")
    peak_reset()
    t = time.perf_counter()
    run_id = run_finetune(ws_f, {"encoder": encoder_name, "epochs": 1, "amp": amp, "device": device,
                                 "batch_size": 8 if dry else 64, "unfreeze_blocks": 2, "num_workers": 0 if dry else -1,
                                 "patience": 1})
    s = time.perf_counter() - t
    metrics = ws_f.store.run(run_id)["metrics"]
    tag = "amp" if amp != "off" else "fp32"
    fig[f"finetune_{tag}_s"] = round(s, 2)
    fig[f"finetune_{tag}_images_per_s"] = metrics.get("images_per_s")
    fig[f"finetune_{tag}_peak_mb"] = peak_mb()
    print(f"fine-tune ({tag}): {s:.1f} s, {metrics.get('images_per_s')} images/s", flush=True)
    save()

fig["done"] = True
save()
print(json.dumps(fig, indent=1))
PYEOF
