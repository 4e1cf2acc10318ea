"""benchmarks/gpu.sh runs end to end as a CPU dry run (tiny model, tiny sizes) and writes its JSON beside its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_writes_figures(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_IMAGES": "12", "GPU_FT_IMAGES": "12", "GPU_HEAD_N": "2000"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fig = json.loads((tmp_path / "out" / "gpu.json").read_text())
    log = (tmp_path / "out" / "gpu.log").read_text()
    assert fig["done"] and fig["dry_run"] and fig["n_images"] == 12 and fig["n_head"] == 2000
    for key in ("embed_jpeg_fp32_images_per_s", "forward_fp32_images_per_s", "head_train_s", "finetune_fp32_s"):
        assert isinstance(fig[key], (int, float)) and fig[key] > 0, key
    assert "embed from JPEG (fp32): 12 images" in log and "fine-tune (fp32)" in log
