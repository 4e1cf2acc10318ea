"""Fine-tuning the image tower: tiny OpenCLIP on CPU, cancel / resume, tuned encoders, blocks, Train page."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from curation.cli import main
from curation.core.progress import Cancelled, null_progress
from curation.data.workspace import Workspace
from curation.features.embed import embed_workspace, load_embeddings
from curation.features.encoders import EncoderError, get_encoder, register_tiny_openclip
from curation.features.tuned import encoder_name
from curation.models.finetune import (
    FinetuneConfig,
    augment_batch,
    base_encoder_name,
    load_training_state,
    run_finetune,
    unfreeze_last,
)
from curation.models.heads import TrainingCancelled, TrainingError
from curation.models.runs import latest_run, load_head, load_predictions
from curation.runtime import jobs, tasks
from curation.ui import state

ROOT = Path(__file__).resolve().parent.parent
TINY = register_tiny_openclip()
CLASSES = ["red", "green", "blue"]
N = 24  # 16 train (2 steps of 8 a epoch) + 8 val, plus one unreadable file
FAST = {"epochs": 1, "batch_size": 8, "device": "cpu", "unfreeze_blocks": 1, "num_workers": 0, "patience": 0,
        "lr": 1e-3, "probe_init": False}  # the CLI test covers the linear-probe start


def _image_workspace(tmp_path: Path, task: str = "single") -> Workspace:
    """24 labelled 32-px images (colour = class; store split 16 train / 8 val) and one unreadable unlabelled file,
    embedded with the tiny OpenCLIP (the active encoder). Multi-label: every fourth image is also "blue"."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(N + 1):
        path = folder / f"im_{i:03d}.png"
        if i == N:
            path.write_bytes(b"not an image")
        else:
            pixels = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            pixels[..., i % 3] += 150
            Image.fromarray(pixels).save(path)
        data = path.read_bytes()
        rows.append({"path": path.name, "sha1": hashlib.sha1(data).hexdigest(), "bytes": len(data), "width": 32,
                     "height": 32, "split": "" if i == N else "val" if i >= 16 else "train"})
        extra = ["blue"] if task == "multi" and i % 4 == 0 else []
        labels.append([CLASSES[i % 3], *extra] if i < N else [])
    ws = Workspace.create(tmp_path / "ws", task=task)
    ws.store.add_classes(CLASSES)
    ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(rows), labels=labels)
    embed_workspace(ws, TINY, num_workers=0)
    return ws


@pytest.fixture
def img_ws(tmp_path: Path) -> Workspace:
    return _image_workspace(tmp_path)


def _state(ws: Workspace, run_id: int):
    return load_training_state(ws.artifacts.path("training_state", f"run-{run_id}", "safetensors"))


def test_finetune_from_the_cli_records_a_run(img_ws: Workspace) -> None:
    from safetensors import safe_open

    ws = img_ws
    snap = ws.store.last_event_id()
    assert main(["train", str(ws.root), "--finetune", "--epochs", "1", "--batch-size", "8", "--unfreeze", "1",
                 "--device", "cpu", "--workers", "0", "--lr", "1e-3", "--patience", "0"]) == 0
    run = latest_run(ws, kind="finetune")
    assert run["kind"] == "finetune" and run["status"] == "done" and run["device"] == "cpu"
    assert run["config"] == FinetuneConfig.from_any({**FAST, "probe_init": True, "encoder": TINY}).to_dict()
    assert run["last_event_id"] == snap and run["encoder"] == get_encoder(TINY, device="cpu").id
    m = run["metrics"]
    assert m["split_source"] == "store" and m["n_train"] == 16 and m["n_val"] == 8
    assert [c["epoch"] for c in m["curves"]] == [1] and m["curves"][0]["steps"] == 2
    assert m["val"]["accuracy"] is not None and len(m["per_class"]) == 3 and m["amp"] == "off"
    ids = ws.store.sample_ids()
    assert m["n_skipped"] == 1 and m["skipped_ids"] == [int(ids[-1])]
    pred_ids, probs = load_predictions(ws, run["id"])
    np.testing.assert_array_equal(pred_ids, ids[:-1])
    assert probs.shape == (N, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    path = ws.artifacts.path("checkpoints", f"run-{run['id']}", "safetensors")
    with safe_open(str(path), framework="pt") as f:
        tower = [k for k in f.keys() if k.startswith("tower.")]
    assert tower and all(k.startswith(("tower.transformer.resblocks.1.", "tower.ln_post.")) or k == "tower.proj"
                         for k in tower)
    assert load_head(ws, run["id"]).predict_proba(np.eye(32, dtype=np.float32)).shape == (32, 3)
    assert not ws.artifacts.exists("training_state", f"run-{run['id']}")  # removed once done


@pytest.mark.slow
def test_cancel_keeps_the_best_checkpoint_and_resume_continues(img_ws: Workspace) -> None:
    ws = img_ws
    cfg = {**FAST, "epochs": 3}
    live = []

    def cancel_at(epoch: int):
        def progress(fraction: float, message: str) -> None:
            if message.startswith(f"epoch {epoch}/"):
                live.append(ws.store.run(int(ws.store.runs().index.max())))
                raise Cancelled()
        return progress

    with pytest.raises(TrainingCancelled) as info:
        run_finetune(ws, cfg, progress=cancel_at(2))
    rid = info.value.run_id
    assert live[0]["status"] == "running" and [c["epoch"] for c in live[0]["metrics"]["curves"]] == [1]
    run = ws.store.run(rid)
    assert run["status"] == "cancelled" and run["artifact"] == f"checkpoints/run-{rid}"
    first = run["metrics"]["curves"]
    tensors, st1 = _state(ws, rid)
    assert st1["epoch"] == 1 and float(tensors["optim.0.step"]) == 2

    with pytest.raises(TrainingCancelled):  # same options, same labels: continues the run
        run_finetune(ws, cfg, resume=True, progress=cancel_at(3))
    tensors, st2 = _state(ws, rid)
    assert st2["epoch"] == 2 and float(tensors["optim.0.step"]) == 4  # 2 restored + 2 new steps
    assert st2["curves"][0] == first[0]

    assert run_finetune(ws, None, resume=rid) == rid
    m = ws.store.run(rid)["metrics"]
    assert [c["epoch"] for c in m["curves"]] == [1, 2, 3] and m["curves"][-1]["steps"] == 6
    assert m["resumed_at"] == [2, 3]
    # the resumed run ends where an uninterrupted one does
    other = run_finetune(ws, cfg)
    np.testing.assert_allclose(load_predictions(ws, rid)[1], load_predictions(ws, other)[1], atol=1e-5)
    with pytest.raises(TrainingError, match="no training state"):
        run_finetune(ws, None, resume=rid)


def test_a_resubmitted_finetune_job_resumes_its_run(img_ws: Workspace) -> None:
    params = {**FAST, "epochs": 2}

    def cancel(fraction: float, message: str) -> None:
        if message.startswith("epoch 2/"):
            raise Cancelled()

    with pytest.raises(Cancelled) as info:
        tasks.JOBS["finetune"](img_ws, params, cancel)
    assert tasks.JOBS["finetune"](img_ws, params, null_progress) == {"run_id": info.value.run_id, "status": "done"}
    assert tasks.JOBS["finetune"](img_ws, {**params, "resume": False}, null_progress)["run_id"] != info.value.run_id


@pytest.mark.slow
def test_reembed_with_the_tuned_tower(img_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = img_ws
    base = load_embeddings(ws)
    rid = run_finetune(ws, {**FAST, "augment": False})
    with pytest.raises(EncoderError, match="workspace"):
        get_encoder(encoder_name(rid))
    for step in ("_map", "_clusters", "_suggest"):  # tested elsewhere; here: the embedding and the active encoder
        monkeypatch.setattr(tasks, step, lambda ws, params, progress: {})
    res = tasks.JOBS["reembed"](ws, {"run_id": rid}, null_progress)
    emb = load_embeddings(ws)
    assert res["embed"]["encoder"] == encoder_name(rid) == emb.encoder_name == ws.store.meta("encoder")
    assert emb.key != base.key and emb.encoder_id != base.encoder_id and not emb.has_text
    np.testing.assert_array_equal(emb.ids, base.ids)
    assert not np.allclose(emb.vectors, base.vectors)
    # the run's head applied to the tuned embeddings reproduces the run's predictions
    pred_ids, probs = load_predictions(ws, rid)
    np.testing.assert_allclose(load_head(ws, rid).predict_proba(emb.vectors[emb.rows(pred_ids)]), probs, atol=1e-4)
    assert base_encoder_name(ws) == TINY  # tuning again starts from the base tower
    assert main(["embed", str(ws.root), "--encoder", encoder_name(rid)]) == 0  # nothing new: reuses the chunks
    assert load_embeddings(ws).key == emb.key
    with pytest.raises(EncoderError, match="has no run 999"):
        get_encoder("finetuned:run-999", workspace=ws)


@pytest.mark.slow
def test_multilabel_finetune(tmp_path: Path) -> None:
    ws = _image_workspace(tmp_path, "multi")
    run = ws.store.run(run_finetune(ws, FAST))
    m = run["metrics"]
    assert run["status"] == "done" and m["task"] == "multi" and len(m["thresholds"]) == 3
    assert m["val"]["mAP"] is not None and load_predictions(ws, run["id"])[1].shape == (N, 3)


@pytest.mark.slow
def test_blocks_accessor_unfreezes_the_last_blocks() -> None:
    import torch

    tiny = get_encoder(TINY, device="cpu", cache=False)
    tuned, modules = unfreeze_last(tiny, 1)
    trainable = {n for n, p in tiny.tower().named_parameters() if p.requires_grad}
    assert trainable == {n for n in tuned if not n.startswith("transformer.resblocks.0.")}
    assert "proj" in trainable and not any(n.startswith("transformer.resblocks.0.") for n in trainable)
    assert len(modules) == 2  # resblocks.1 and ln_post (proj is a parameter)

    enc = get_encoder("efficientnet-lite0", device="cpu", cache=False)
    tuned, modules = unfreeze_last(enc, 2)
    heads = {n.split(".")[0] if not n.startswith("_blocks.") else ".".join(n.split(".")[:2]) for n in tuned}
    assert heads == {"_blocks.14", "_blocks.15", "_conv_head", "_bn1"} and len(modules) == 4
    assert "_bn1.running_mean" in tuned  # BatchNorm statistics travel with the tuned weights
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    enc.tower_features(enc.normalize(x)).sum().backward()
    grads = {n for n, p in enc.tower().named_parameters() if p.grad is not None}
    assert grads == {n for n, p in enc.tower().named_parameters() if p.requires_grad} == set(tuned) & grads
    assert unfreeze_last(enc, 0)[0] == []
    with pytest.raises(TrainingError, match="0 to 16"):
        unfreeze_last(enc, 17)


def test_augment_is_seeded_and_keeps_uint8() -> None:
    import torch

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a = augment_batch(x, generator=torch.Generator().manual_seed(1))
    b = augment_batch(x, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(TrainingError, match="Unknown training options"):
        FinetuneConfig.from_any({"unfreeze": 2})
    with pytest.raises(TrainingError, match="amp"):
        FinetuneConfig.from_any({"amp": "fp8"})


def test_train_page_submits_a_finetune_job(img_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    submitted = []
    monkeypatch.setenv(state.WORKSPACE_ENV, str(img_ws.root))
    monkeypatch.setattr(jobs, "submit", lambda ws, kind, params: submitted.append((kind, params)) or 1)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/4_Train.py").run()
    assert not at.exception, [e.message for e in at.exception]
    next(r for r in at.radio if r.key == "train_mode").set_value("finetune").run()
    next(n for n in at.number_input if n.key == "ft_unfreeze").set_value(3)
    next(n for n in at.number_input if n.key == "ft_epochs").set_value(4)
    next(c for c in at.checkbox if c.key == "ft_augment").uncheck()
    next(s for s in at.selectbox if s.key == "ft_amp").set_value("off")
    next(b for b in at.button if b.key == "FormSubmitter:finetune-Fine-tune").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert submitted == [("finetune", {"unfreeze_blocks": 3, "epochs": 4, "augment": False, "amp": "off"})]
    rid = run_finetune(img_ws, FAST)  # a finished fine-tune offers its tower for re-embedding
    at.run()
    next(b for b in at.button if b.key == "reembed").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert submitted[-1] == ("reembed", {"run_id": rid})


def test_curves_figure_and_the_run_shown() -> None:
    from curation.ui import trainview

    runs = pd.DataFrame({"status": ["done", "running", "done"], "metrics": [{"curves": [{"epoch": 1}]}, {}, {}]},
                        index=[3, 2, 1])
    assert trainview.shown_run(runs) == 2
    assert trainview.shown_run(runs.drop(2)) == 3 and trainview.shown_run(runs.iloc[:0]) is None
    fig = trainview.curves_figure([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_metric": 0.5},
                                   {"epoch": 2, "train_loss": 0.7}], epochs=5)
    assert [t.name for t in fig.data] == ["train loss", "val loss", "val accuracy"]
    assert list(fig.layout.xaxis.range) == [0.5, 5.5] and fig.data[2].yaxis == "y2"
