"""Embedding failures: recorded per sample (reason, time), retried when the file changes or on request, listed
by doctor; an all-failing workspace gives a clear error and recovers once the files come back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curation.data.workspace import Workspace
from curation.features import embed as E
from curation.features import encoders as ENC
from curation.runtime.doctor import doctor
from tests.test_embed import TINY, _register, _write_images

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny() -> ENC.Encoder:
    return ENC.get_encoder(TINY, device="cpu")


def _make(tmp_path: Path, n: int = 9) -> tuple[Workspace, Path, list[str]]:
    folder = tmp_path / "imgs"
    names = _write_images(folder, n)
    ws = Workspace.create(tmp_path / "ws")
    _register(ws, folder, names)
    return ws, folder, names


def test_all_images_gone_gives_clear_error_then_recovers(tmp_path: Path, tiny: ENC.Encoder) -> None:
    ws, folder, _ = _make(tmp_path)
    shutil.move(folder, tmp_path / "away")
    with pytest.raises(E.EmbeddingError, match="None of the 9 images could be embedded.*file not found"):
        E.embed_workspace(ws, tiny, num_workers=0)
    assert E.load_embeddings(ws, tiny) is None  # nothing to load, and no crash either
    failed = E.embedding_failures(ws, tiny)
    assert len(failed) == 9 and set(failed.columns) >= {"path", "reason", "time", "attempts", "changed"}
    assert failed["time"].notna().all() and not failed["changed"].any()
    rep = doctor(ws)
    assert any("9 images could not be embedded" in p for p in rep.problems) and rep.failures is not None
    assert "file not found" in rep.summary()
    shutil.move(tmp_path / "away", folder)  # the files come back: the next embed retries them by itself
    assert E.embedding_failures(ws, tiny)["changed"].all()
    emb = E.embed_workspace(ws, tiny, num_workers=0)
    assert len(emb) == 9 and len(emb.skipped) == 0 and len(E.embedding_failures(ws, tiny)) == 0


def test_fifo_in_place_of_the_only_image(tmp_path: Path, tiny: ENC.Encoder) -> None:
    ws, folder, names = _make(tmp_path, 1)
    img = folder / names[0]
    shutil.move(img, tmp_path / "kept.png")
    os.mkfifo(img)
    with pytest.raises(E.EmbeddingError, match="not a regular file"):
        E.embed_workspace(ws, tiny, num_workers=0)
    img.unlink()
    shutil.move(tmp_path / "kept.png", img)
    assert len(E.embed_workspace(ws, tiny, num_workers=0)) == 1


def test_fixed_images_are_re_embedded_and_counts_are_truthful(tmp_path: Path, tiny: ENC.Encoder) -> None:
    ws, folder, names = _make(tmp_path)
    broken = names[:5]
    for n in broken:
        shutil.move(folder / n, tmp_path / n)
        (folder / n).write_bytes(b"not an image")
    messages: list[str] = []
    emb = E.embed_workspace(ws, tiny, num_workers=0, progress=lambda f, m: messages.append(m))
    assert len(emb) == 4 and len(emb.skipped) == 5
    assert "embedded 4 of 9 images" in messages[-1] and "5 could not be read" in messages[-1]
    assert not any("embedded 9/9" in m for m in messages)
    # nothing changed: the next run does not pretend, and does not retry
    messages.clear()
    emb = E.embed_workspace(ws, tiny, num_workers=0, progress=lambda f, m: messages.append(m))
    assert len(emb) == 4 and "5 could not be read" in messages[-1] and "already embedded (" not in messages[-1]
    assert (E.embedding_failures(ws, tiny)["attempts"] == 1).all()
    # an explicit retry tries them all again (still broken: attempts count up)
    emb = E.embed_workspace(ws, tiny, num_workers=0, retry_failed=True)
    assert len(emb) == 4 and (E.embedding_failures(ws, tiny)["attempts"] == 2).all()
    # two files fixed: only those are retried, and embedded
    for n in broken[:2]:
        shutil.copy(tmp_path / n, folder / n)
    emb = E.embed_workspace(ws, tiny, num_workers=0)
    assert len(emb) == 6 and len(emb.skipped) == 3
    fixed_ids = ws.store.samples().index[ws.store.samples()["path"].isin(broken[:2])].to_numpy()
    assert np.all(emb.rows(fixed_ids) >= 0)
    # the vectors of retried images equal those of a clean workspace
    clean = Workspace.create(tmp_path / "clean")
    _register(clean, tmp_path, broken[:2])
    ref = E.embed_workspace(clean, tiny, num_workers=0)
    np.testing.assert_allclose(emb.vectors[emb.rows(fixed_ids)], ref.vectors, atol=1e-5)


def test_cli_retry_failed_and_doctor_listing(tmp_path: Path, tiny: ENC.Encoder) -> None:
    ws, folder, names = _make(tmp_path, 3)
    (folder / names[0]).write_bytes(b"broken")
    E.embed_workspace(ws, tiny, num_workers=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "curation", "doctor", str(ws.root)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 1 and "1 images could not be embedded" in r.stdout and names[0] in r.stdout
    r = subprocess.run([sys.executable, "-m", "curation", "embed", "--help"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert "--retry-failed" in r.stdout


def test_home_lists_failures_and_retries_them(tmp_path: Path, tiny: ENC.Encoder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import open_page

    ws, folder, names = _make(tmp_path, 3)
    (folder / names[0]).write_bytes(b"broken")
    E.embed_workspace(ws, tiny, num_workers=0)
    monkeypatch.setenv("CURATION_WORKSPACE", str(ws.root))
    submitted: list[tuple[str, dict]] = []
    from curation.ui import jobpanel

    monkeypatch.setattr(jobpanel, "submit", lambda w, kind, params=None: submitted.append((kind, params)))
    at = open_page(no_errors=True)
    assert any("1 images could not be embedded" in w.value for w in at.warning), [w.value for w in at.warning]
    table = next(df for df in at.dataframe if "reason" in df.value.columns).value
    assert table["file"].str.endswith(names[0]).all() and table["reason"].str.len().gt(0).all()
    next(b for b in at.button if b.label == "Retry them all").click().run()
    assert submitted == [("embed", {"retry_failed": True})]
