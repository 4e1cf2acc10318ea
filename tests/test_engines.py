"""The engine switch and the Ray engine's pure parts (no cluster: see test_ray_engine.py for the real one)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest


def test_check_engine_lists_the_valid_ones():
    from curation.runtime.engines import check_engine

    assert check_engine(None) == "local" and check_engine("ray") == "ray"
    with pytest.raises(ValueError, match="Unknown engine .*local, ray"):
        check_engine("spark")


def test_without_ray_the_switch_says_how_to_install_it(monkeypatch):
    from curation.runtime.engines import EngineError, ray_available, require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    assert not ray_available()
    with pytest.raises(EngineError, match=r"pip install 'ray\[data\]"):
        require_ray()


def test_embed_job_refuses_an_unknown_engine(tmp_path):
    from curation.data.workspace import Workspace
    from curation.runtime.tasks import JOBS

    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(ValueError, match="Unknown engine"):
        JOBS["embed"](ws, {"engine": "spark"}, lambda *a: None)


def test_cli_takes_engine_and_address():
    from curation.cli import build_parser

    a = build_parser().parse_args(["embed", "ws", "--engine", "ray", "--address", "10.0.0.1:6379"])
    assert (a.engine, a.address) == ("ray", "10.0.0.1:6379")
    assert build_parser().parse_args(["pipeline", "ws"]).engine == "local"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pipeline", "ws", "--engine", "spark"])


def test_embed_function_per_engine():
    from curation.features.embed import embed_workspace
    from curation.runtime.ray_jobs import embed_function, embed_on_ray

    assert embed_function("local") is embed_workspace
    fn = embed_function("ray", "10.0.0.1:6379")
    assert fn.func is embed_on_ray and fn.keywords == {"address": "10.0.0.1:6379"}


def test_configured_address(monkeypatch):
    from curation.runtime.engines import ADDRESS_ENV, configured_address

    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert configured_address() is None
    monkeypatch.setenv(ADDRESS_ENV, " 10.0.0.1:6379 ")
    assert configured_address() == "10.0.0.1:6379"


@pytest.mark.slow
def test_fold_map_hook_runs_every_fold_through_the_given_map():
    from curation.labels.oof import _map_here, fold_map, out_of_fold_probs, out_of_fold_probs_multi

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    y[:10] = -1
    calls = []

    def recording(folds, Xs, target, fold, **options):
        calls.append((list(folds), options["kind"]))
        return _map_here(calls[-1][0], Xs, target, fold, **options)

    plain = out_of_fold_probs(X, y, n_classes=3, folds=4)
    with fold_map(recording):
        hooked = out_of_fold_probs(X, y, n_classes=3, folds=4)
        Y = np.where(np.eye(3, dtype=np.int8)[np.maximum(y, 0)] > 0, 1, -1).astype(np.int8)
        Y[y < 0] = 0
        multi = out_of_fold_probs_multi(X, Y, folds=4)
    assert calls == [([0, 1, 2, 3], "softmax"), ([0, 1, 2, 3], "sigmoid")]
    np.testing.assert_array_equal(plain, hooked)
    np.testing.assert_allclose(plain.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(multi, out_of_fold_probs_multi(X, Y, folds=4))
    assert out_of_fold_probs(X, y, n_classes=3, folds=4) is not None and len(calls) == 2  # hook gone after the block


def test_exclude_self_by_position_for_a_shard():
    from curation.features.neighbors import exclude_self

    idx = np.array([[5, 1, 2], [7, 6, 3]])            # rows 5 and 6 of a graph: row 6 is not its own first hit
    sims = np.array([[1.0, 0.9, 0.8], [1.0, 1.0, 0.7]], np.float32)
    i, s = exclude_self(idx, sims, np.array([5, 6]))
    np.testing.assert_array_equal(i, [[1, 2], [7, 3]])
    np.testing.assert_allclose(s, [[0.9, 0.8], [1.0, 0.7]], rtol=1e-6)
    i, _ = exclude_self(np.array([[1, 2, 3]]), sims[:1], np.array([9]))  # self not returned: drop the last
    np.testing.assert_array_equal(i, [[1, 2]])


def test_recall_at_k():
    from curation.features.neighbors import knn
    from curation.runtime.ray_jobs import recall_at_k

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, _ = knn(x, k=5)
    assert recall_at_k(x, idx, k=5, sample=50) == 1.0
    assert recall_at_k(x, rng.integers(0, 200, (200, 5)), k=5, sample=50) < 0.2


def test_ray_chunk_writer_sorts_ids_and_keeps_failures(tmp_path):
    from curation.features.embed import write_chunk
    from curation.runtime.ray_jobs import _write

    parts = [{"id": np.array([9, 3]), "path": np.array(["b", "a"]), "reason": np.array(["", ""]),
              "vector": np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)},
             {"id": np.array([5]), "path": np.array(["c"]), "reason": np.array(["OSError: broken"]),
              "vector": np.zeros((1, 2), np.float32)}]
    _write(write_chunk, tmp_path, 4, parts, 2)
    np.testing.assert_array_equal(np.load(tmp_path / "chunk-000004.ids.npy"), [3, 9])
    np.testing.assert_array_equal(np.load(tmp_path / "chunk-000004.vec.npy"), [[1, 0], [0, 1]])
    failed = json.loads((tmp_path / "chunk-000004.failed.json").read_text())
    assert [{k: f[k] for k in ("id", "path", "reason")} for f in failed] == [
        {"id": 5, "path": "c", "reason": "OSError: broken"}]
    assert all("time" in f for f in failed)  # failures are recorded with their time (and file signature)


def test_embedder_maps_a_decoded_batch(tmp_path):
    from PIL import Image

    from curation.features.embedder import Embedder, decode_batch
    from curation.features.encoders import get_encoder, register_tiny_openclip

    enc = get_encoder(register_tiny_openclip(), device="cpu")
    good = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    batch = {"id": np.array([1, 2]), "path": np.array([str(good), str(tmp_path / "missing.png")])}
    dec = decode_batch(batch, transform=enc.transform, size=enc.transform.size, allowed=[str(tmp_path)])
    assert dec["pixels"].shape == (2, 3, 32, 32) and dec["reason"][0] == "" and dec["reason"][1]
    out = Embedder(enc.name, device="cpu", fingerprint=enc.fingerprint)(dec)
    assert out["vector"].shape == (2, enc.dim) and "pixels" not in out
    np.testing.assert_allclose(np.linalg.norm(out["vector"][0]), 1.0, atol=1e-5)
    assert not out["vector"][1].any()
    with pytest.raises(Exception, match="weights"):
        Embedder(enc.name, device="cpu", fingerprint="0" * 16)
