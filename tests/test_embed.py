"""Tests for curation.features.embed / curation.features.encoders: tiny random OpenCLIP on CPU, offline EfficientNet-Lite0."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.core.progress import Cancelled
from curation.data.workspace import Workspace
from curation.features import embed as E
from curation.features import encoders as ENC
from curation.features import imported as IMP
from curation.features import text as TXT

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION_DIR.exists(),
                                   reason="apt-get install dataset-fashion-mnist for real-image tests")

TINY = "openclip:tiny-test:random"
N_IMAGES = 40


def _write_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> list[str]:
    """n small colour PNGs; image 1 is a near copy of image 0 (the planted neighbour)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    base = None
    for i in range(n):
        h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
        if i == 1:
            arr = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        else:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            arr[: h // 2] = arr[: h // 2] // (1 + i % 4)  # some structure
        if i == 0:
            base = arr
        name = f"img_{i:03d}.png"
        Image.fromarray(arr).save(folder / name)
        names.append(name)
    return names


def _register(ws: Workspace, folder: Path, names: list[str]) -> np.ndarray:
    rows = []
    for n in names:
        p = folder / n
        data = p.read_bytes()
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - corrupt test files
            w = h = 1
        rows.append({"path": n, "sha1": hashlib.sha1(data).hexdigest(), "bytes": len(data), "width": w, "height": h})
    ids, _ = ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(rows))
    return ids


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    d = tmp_path_factory.mktemp("imgs")
    return d, _write_images(d)


@pytest.fixture(scope="session")
def tiny() -> ENC.Encoder:
    return ENC.get_encoder(TINY, device="cpu")


def _ws(root: Path, image_dir: tuple[Path, list[str]], n: int | None = None) -> Workspace:
    ws = Workspace.create(root)
    folder, names = image_dir
    _register(ws, folder, names[:n] if n else names)
    return ws


def _store_files(emb: E.Embeddings, ws: Workspace) -> dict[str, bytes]:
    d = ws.artifacts.root / "embeddings" / emb.store_key
    return {p.name: p.read_bytes() for p in sorted(d.glob("chunk-*")) if not p.name.endswith(".tmp")}


# ---------------------------------------------------------------------- registry / encoders
def test_registry_and_tiny_encoder(tiny: ENC.Encoder) -> None:
    assert ENC.OFFLINE_ENCODER in ENC.list_encoders()
    assert "openclip:ViT-B-32:laion2b_s34b_b79k" in ENC.list_encoders()
    assert tiny.dim == 32 and tiny.has_text and tiny.device == "cpu"
    assert ENC.get_encoder(TINY, device="cpu") is tiny  # cached
    other = ENC.get_encoder(TINY, device="cpu", cache=False)
    assert other.fingerprint == tiny.fingerprint and other.id == tiny.id  # seeded random weights
    img = Image.fromarray(np.full((30, 50, 3), 128, np.uint8))
    x = tiny.preprocess(img)
    assert tuple(x.shape) == (3, 32, 32) and str(x.dtype) == "torch.float32"
    v = tiny.encode_images(x[None])
    assert v.shape == (1, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    # uint8 batches (the pipeline path) give the same vectors as float batches from preprocess
    np.testing.assert_allclose(tiny.encode_images(tiny.transform(img)[None]), v, atol=1e-5)
    t = tiny.encode_text(["a cat", "a dog"])
    assert t.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)


def test_unknown_and_offline_errors(tmp_path: Path) -> None:
    with pytest.raises(ENC.EncoderError, match="Unknown encoder"):
        ENC.get_encoder("nope")
    with pytest.raises(ENC.EncoderError, match="No checkpoint file"):
        ENC.get_encoder(f"openclip:ViT-B-32:{tmp_path}/missing.pt")
    with pytest.raises(ENC.EncoderError, match="known tags"):
        ENC.get_encoder("openclip:ViT-B-32:not-a-tag")
    with pytest.raises(ENC.EncoderUnavailable, match="open_clip_pytorch_model.bin"):  # conftest sets offline
        ENC.get_encoder("openclip:ViT-B-32:laion2b_s34b_b79k")


def test_local_checkpoint(tmp_path: Path, tiny: ENC.Encoder) -> None:
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), ckpt)
    enc = ENC.get_encoder(f"openclip:tiny-test:{ckpt}", device="cpu", cache=False)
    assert enc.fingerprint == tiny.fingerprint and enc.id.startswith("openclip:tiny-test:file-")
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    np.testing.assert_array_equal(enc.encode_images(x), tiny.encode_images(x))


def test_default_encoder_offline_notice() -> None:
    enc, notice = ENC.default_encoder(device="cpu")
    assert enc.name == "efficientnet-lite0" and enc.dim == 1280 and not enc.has_text
    assert "could not be downloaded" in notice and "text search" in notice
    assert "--encoder openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin" in notice
    with pytest.raises(ENC.NoTextTower, match="OpenCLIP"):
        enc.encode_text(["a shirt"])


# ---------------------------------------------------------------------- pipeline
@pytest.mark.slow
def test_embed_shapes_cache_and_new_samples(tmp_path: Path, image_dir, tiny: ENC.Encoder) -> None:
    ws = _ws(tmp_path / "ws", image_dir, n=30)
    msgs: list[str] = []
    emb = E.embed_workspace(ws, tiny, chunk_size=8, progress=lambda f, m: msgs.append(m))
    assert emb.vectors.shape == (30, 32) and emb.vectors.dtype == np.float32
    assert np.all(np.diff(emb.ids) > 0) and emb.ids.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    assert not emb.vectors.flags.writeable
    assert emb.device == "cpu" and emb.has_text and emb.encoder_name == TINY
    assert ws.store.meta("encoder") == TINY
    assert any("img/s" in m and "ETA" in m for m in msgs)
    # the same vectors as encoding directly (preprocessing split uint8 → device normalise is exact)
    direct = tiny.encode_images(_stack([tiny.preprocess(Image.open(ws.resolve_image(i)).convert("RGB"))
                                        for i in emb.ids[:8]]))
    np.testing.assert_allclose(emb.vectors[:8], direct, atol=1e-5)

    # cache hit: nothing embedded again, the consolidated file is reused (memory map)
    msgs.clear()
    emb2 = E.embed_workspace(ws, tiny, chunk_size=8, progress=lambda f, m: msgs.append(m))
    assert any("already embedded" in m for m in msgs) and not any("img/s" in m for m in msgs)
    assert emb2.key == emb.key and isinstance(emb2.vectors, np.memmap)
    loaded = E.load_embeddings(ws)
    assert loaded is not None and loaded.key == emb.key
    np.testing.assert_array_equal(loaded.vectors, emb.vectors)

    # miss: new samples only
    folder, names = image_dir
    _register(ws, folder, names)
    msgs.clear()
    emb3 = E.embed_workspace(ws, tiny, chunk_size=8, progress=lambda f, m: msgs.append(m))
    assert any("/10 images" in m for m in msgs)
    assert len(emb3.ids) == N_IMAGES and emb3.key != emb.key
    np.testing.assert_array_equal(emb3.vectors[:30], emb.vectors)  # old vectors untouched
    # missing samples drop out of load_embeddings
    ws.store.set_missing([int(emb3.ids[0])])
    emb4 = E.load_embeddings(ws, TINY)
    assert len(emb4.ids) == N_IMAGES - 1 and emb4.ids[0] == emb3.ids[1]


def _stack(xs: list) -> "object":
    import torch

    return torch.stack(xs)


@pytest.mark.slow
def test_deterministic_and_resume_after_cancel(tmp_path: Path, image_dir, tiny: ENC.Encoder) -> None:
    clean = _ws(tmp_path / "clean", image_dir)
    ref = E.embed_workspace(clean, tiny, chunk_size=8, batch_size=3, num_workers=1)
    ref_files = _store_files(ref, clean)
    assert len([n for n in ref_files if n.endswith(".ids.npy")]) == 5

    ws = _ws(tmp_path / "killed", image_dir)
    store = ws.artifacts.root / "embeddings" / E.store_key_of(tiny)

    def cancel_after_two(frac: float, msg: str) -> None:
        if len(list(store.glob("chunk-*.ids.npy"))) >= 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        E.embed_workspace(ws, tiny, chunk_size=8, batch_size=3, num_workers=1, progress=cancel_after_two)
    assert len(list(store.glob("chunk-*.ids.npy"))) == 2
    # a torn write of the third chunk (vectors written, ids marker not) must be redone, not trusted
    (store / "chunk-000002.vec.npy").write_bytes(b"garbage")
    # resume with other settings: the persisted plan keeps batches and chunks identical
    done = E.embed_workspace(ws, tiny, chunk_size=5, batch_size=16, num_workers=0)
    assert _store_files(done, ws) == ref_files
    assert done.vectors.tobytes() == ref.vectors.tobytes()
    np.testing.assert_array_equal(done.ids, ref.ids)


def test_corrupt_images_skipped_and_reported(tmp_path: Path, image_dir, tiny: ENC.Encoder) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    good = _write_images(folder, n=5, seed=3)
    (folder / "garbage.png").write_bytes(b"this is not an image")
    png = (folder / good[0]).read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.png").write_bytes(b"")
    ws = Workspace.create(tmp_path / "ws")
    ids = _register(ws, folder, [*good, "garbage.png", "truncated.png", "empty.png"])
    (folder / good[1]).unlink()  # vanished after ingest
    emb = E.embed_workspace(ws, tiny, chunk_size=4)
    bad = ids[[1, 5, 6, 7]]
    assert len(emb.ids) == 4 and not np.isin(bad, emb.ids).any()
    assert sorted(emb.skipped.index.tolist()) == sorted(bad.tolist())
    assert emb.skipped["reason"].str.len().gt(0).all()
    assert emb.skipped.loc[ids[1], "reason"].lower().startswith(("file", "filenotfound", "no such", "missing")) \
        or "not found" in emb.skipped.loc[ids[1], "reason"].lower()
    again = E.load_embeddings(ws)
    assert len(again.skipped) == 4


# ---------------------------------------------------------------------- imported vectors
def test_import_embeddings_npy_and_parquet(tmp_path: Path, image_dir) -> None:
    ws = _ws(tmp_path / "ws", image_dir, n=10)
    ids = ws.store.sample_ids()
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(10, 6)).astype(np.float64)
    np.save(tmp_path / "v.npy", vecs)
    emb = IMP.import_embeddings(ws, tmp_path / "v.npy", name="mine")
    assert emb.encoder_name == "precomputed:mine" and not emb.has_text and emb.device == "precomputed"
    np.testing.assert_array_equal(emb.ids, ids)
    np.testing.assert_allclose(emb.vectors, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), atol=1e-6)
    assert ws.store.meta("encoder") == "precomputed:mine"
    assert E.load_embeddings(ws).key == emb.key
    assert E.embed_workspace(ws).key == emb.key  # the active precomputed encoder: nothing to run
    assert ENC.get_encoder("precomputed:mine").dim == 6

    # rows aligned by a manifest of paths, in another order, covering a subset
    _, names = image_dir
    order = [3, 1, 2]
    pd.DataFrame({"path": [names[i] for i in order]}).to_csv(tmp_path / "m.csv", index=False)
    np.save(tmp_path / "sub.npy", vecs[order])
    sub = IMP.import_embeddings(ws, tmp_path / "sub.npy", ids_or_paths=tmp_path / "m.csv", name="sub")
    np.testing.assert_array_equal(sub.ids, ids[[1, 2, 3]])
    np.testing.assert_allclose(sub.vectors[0], emb.vectors[1], atol=1e-6)

    # parquet with a list column and a path column
    pd.DataFrame({"file_name": names[:10], "emb": list(vecs)}).to_parquet(tmp_path / "v.parquet")
    pq = IMP.import_embeddings(ws, tmp_path / "v.parquet", name="pq")
    np.testing.assert_allclose(pq.vectors, emb.vectors, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.array([[0.1, np.nan], [1.0, 2.0]] * 5), "NaN"),
    (np.ones((7, 4)), "7 rows but the workspace has 10"),
    (np.ones(10), "shape \\(10,\\)"),
    (np.array([["a", "b"]] * 10), "not numbers"),
    (np.zeros((10, 3)), "all-zero"),
])
def test_import_validation_errors(tmp_path: Path, image_dir, bad: np.ndarray, match: str) -> None:
    ws = _ws(tmp_path / "ws", image_dir, n=10)
    f = tmp_path / "bad.npy"
    np.save(f, bad)
    with pytest.raises(E.EmbeddingError, match=match) as ei:
        IMP.import_embeddings(ws, f)
    assert str(f) in str(ei.value)


def test_import_errors_objects_and_paths(tmp_path: Path, image_dir) -> None:
    ws = _ws(tmp_path / "ws", image_dir, n=10)
    f = tmp_path / "obj.npy"
    np.save(f, np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
    with pytest.raises(E.EmbeddingError, match="Python objects"):
        IMP.import_embeddings(ws, f)
    np.save(tmp_path / "v.npy", np.ones((2, 3)))
    with pytest.raises(E.EmbeddingError, match="not samples of this workspace"):
        IMP.import_embeddings(ws, tmp_path / "v.npy", ids_or_paths=["nope.png", "img_000.png"])
    with pytest.raises(E.EmbeddingError, match="more than once"):
        IMP.import_embeddings(ws, tmp_path / "v.npy", ids_or_paths=["img_000.png", "img_000.png"])
    with pytest.raises(E.EmbeddingError, match="No file"):
        IMP.import_embeddings(ws, tmp_path / "missing.npy")


# ---------------------------------------------------------------------- text and search
def test_text_embeddings_ensemble_and_cache(tmp_path: Path, tiny: ENC.Encoder) -> None:
    ws = Workspace.create(tmp_path / "ws")
    names = ["shirt", "sneaker", "bag"]
    t = TXT.text_embeddings(tiny, names, ws=ws)
    assert t.shape == (3, 32) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    # the ensemble is the renormalised mean of each template's normalised embedding
    per = tiny.encode_text([tpl.format("bag") for tpl in TXT.CLIP_TEMPLATES])
    m = per.mean(0)
    np.testing.assert_allclose(t[2], m / np.linalg.norm(m), atol=1e-5)
    # single template, and a class's own prompt overriding the templates
    one = TXT.text_embeddings(tiny, names, templates=["a photo of a {}."])
    np.testing.assert_allclose(one[0], tiny.encode_text(["a photo of a shirt."])[0], atol=1e-5)
    own = TXT.text_embeddings(tiny, names, prompts=["", "a running shoe", ""])
    np.testing.assert_allclose(own[1], tiny.encode_text(["a running shoe"])[0], atol=1e-5)
    np.testing.assert_allclose(own[0], t[0], atol=1e-5)
    # cached as an artifact
    assert (ws.artifacts.list()["kind"] == "text_embeddings").sum() == 1
    np.testing.assert_array_equal(TXT.text_embeddings(tiny, names, ws=ws), t)
    ws.store.add_classes(names, prompts=["", "a running shoe", ""])
    cids, cv = TXT.class_text_embeddings(ws, tiny)
    assert len(cids) == 3
    np.testing.assert_allclose(cv, own, atol=1e-5)
    with pytest.raises(ENC.NoTextTower):
        TXT.text_embeddings("efficientnet-lite0", names)


def test_similar_images_and_text_search(tmp_path: Path, image_dir, tiny: ENC.Encoder) -> None:
    ws = _ws(tmp_path / "ws", image_dir)
    emb = E.embed_workspace(ws, tiny, chunk_size=64)
    a, b = emb.ids[0], emb.ids[1]  # image 1 is a near copy of image 0
    ids, scores = TXT.similar_images(emb, a, k=5)
    assert ids[0] == b and a not in ids and len(ids) == 5
    assert np.all(np.diff(scores) <= 1e-6)

    class Planted(ENC.Encoder):  # text tower that maps the query onto sample 7's vector
        name = id = "planted"
        dim, fingerprint, has_text, device = 32, "x", True, "cpu"

        def encode_text(self, texts):  # type: ignore[override]
            return np.repeat(np.asarray(emb.vectors[7:8]), len(texts), 0)

    hits, sims = TXT.search_text(ws, emb, "anything", k=3, encoder=Planted())
    assert hits[0] == emb.ids[7] and sims[0] == pytest.approx(1.0, abs=1e-5)
    hits2, _ = TXT.search_text(ws, emb, "a photo of noise", k=4)  # real tiny text tower runs
    assert len(hits2) == 4 and np.isin(hits2, emb.ids).all()


# ---------------------------------------------------------------------- real pretrained offline encoder
def _fashion_pngs(folder: Path, n: int) -> list[str]:
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read(16 + n * 784)
    imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 28, 28)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(folder / f"f{i}.png")
        names.append(f"f{i}.png")
    return names


@pytest.mark.slow
@needs_fashion
def test_efficientnet_lite0_offline_on_fashion(tmp_path: Path) -> None:
    folder = tmp_path / "fashion"
    names = _fashion_pngs(folder, 6)
    ws = Workspace.create(tmp_path / "ws")
    _register(ws, folder, names)
    emb = E.embed_workspace(ws, "efficientnet-lite0", device="cpu")
    assert emb.vectors.shape == (6, 1280) and emb.encoder_id == "efficientnet-lite0" and not emb.has_text
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    assert np.all(np.asarray(emb.vectors) >= -1e-6)  # pooled post-swish features are (almost) non-negative
    assert np.unique(np.round(emb.vectors, 4), axis=0).shape[0] == 6


def test_unreachable_hub_falls_back_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and no cache: the default encoder is the offline one, without the hub client's retries."""
    from curation.features import encoders

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CURATION_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert not encoders._hub_reachable()
    enc, notice = encoders.default_encoder(device="cpu")
    assert enc.name == encoders.OFFLINE_ENCODER and "could not be downloaded" in notice
