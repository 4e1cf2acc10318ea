"""The Ray engine on a real local cluster (a head and a worker node on 127.0.0.1): embed, kNN, OOF vs local."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_DIR

pytestmark = pytest.mark.slow

N_IMAGES = 300
CHUNK = 64
K = 10


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node process on 127.0.0.1, 1 CPU each."""
    from curation.runtime.engines import EngineError, local_cluster, ray_available

    if not ray_available():
        pytest.skip("Ray is not installed: pip install -r requirements.txt")
    cm = local_cluster(2, cpus_per_node=1)
    try:
        lc = cm.__enter__()
    except EngineError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"a local Ray cluster cannot start here: {exc}")
    yield lc
    cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def two_workspaces(tmp_path_factory):
    """The same 300 Fashion-MNIST images twice (same seed): one for the local path, one for Ray."""
    from curation.data.demo import build_demo

    if not FASHION_DIR.exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("ray")
    return (build_demo(root / "local", n=N_IMAGES, seed=3, source="fashion-mnist"),
            build_demo(root / "ray", n=N_IMAGES, seed=3, source="fashion-mnist"))


def _embedder_pids() -> list[int]:
    """Process ids of this machine's Ray actors running the Embedder (started by this test's cluster)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"Embedder" in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def test_embed_knn_oof_on_ray_equal_local(cluster, two_workspaces):
    from curation.core.progress import Cancelled
    from curation.data.store import single_from_matrix
    from curation.features.embed import embed_workspace, load_embeddings, store_key_of
    from curation.features.encoders import get_encoder, register_tiny_openclip
    from curation.features.neighbors import knn_graph
    from curation.labels.oof import out_of_fold_probs
    from curation.runtime.ray_jobs import RayEmbedRunner, knn_graph_on_ray, oof_on_ray
    from curation.runtime.tasks import JOBS

    ws_l, ws_r = two_workspaces
    name = register_tiny_openclip()
    assert cluster.nodes == 2

    # local path
    emb_l = embed_workspace(ws_l, name, chunk_size=CHUNK, device="cpu")

    # Ray: a cancel after the first chunk keeps the chunks written so far ...
    seen = []

    def cancel_after_first_chunk(fraction: float, message: str = "") -> None:
        seen.append(message)
        if fraction > 0 and "on Ray" in message:  # the first batch back: some chunks are written
            raise Cancelled()

    with pytest.raises(Cancelled):
        JOBS["embed"](ws_r, {"encoder": name, "chunk_size": CHUNK, "engine": "ray", "address": cluster.address},
                      cancel_after_first_chunk)
    d = Path(ws_r.artifacts.root) / "embeddings" / store_key_of(get_encoder(name, device="cpu"))
    done_before = sorted(d.glob("chunk-*.ids.npy"))
    n_chunks = -(-N_IMAGES // CHUNK)
    assert 1 <= len(done_before) < n_chunks

    # ... and the resumed run, with one encoder actor killed mid-run, finishes on both nodes
    killed = []

    def kill_one_actor(fraction: float, message: str = "") -> None:
        if not killed and fraction > 0:
            pids = _embedder_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    runner = RayEmbedRunner(workers=2)
    emb_r = embed_workspace(ws_r, name, chunk_size=CHUNK, device="cpu", progress=kill_one_actor, runner=runner)
    assert len(sorted(d.glob("chunk-*.ids.npy"))) == n_chunks
    assert killed, "no Embedder actor process was found to kill"
    assert runner.stats["actors"] == 2           # a pool of two encoder actors (which one gets a block is Ray's call)
    assert runner.stats["workers"] >= 1
    np.testing.assert_array_equal(emb_l.ids, emb_r.ids)
    diff = float(np.abs(np.asarray(emb_l.vectors) - np.asarray(emb_r.vectors)).max())
    assert diff < 1e-4, diff
    assert load_embeddings(ws_r).key == emb_r.key and "ray:cpu" in emb_r.device.split("+")

    # kNN graph: sharded on Ray, saved under the local graph's artifact key
    idx_l, sims_l = knn_graph(ws_l, emb_l, k=K)
    rep = knn_graph_on_ray(ws_r, emb_r, k=K, shards=4, address=cluster.address)
    assert rep["shards"] == 4 and not rep["cached"]
    assert rep["recall"] >= 0.99, rep
    idx_r, sims_r = knn_graph(ws_r, emb_r, k=K)           # the local loader finds the Ray graph by key
    assert idx_r.shape == idx_l.shape == (N_IMAGES, K)
    same = float((idx_l == idx_r).mean())
    print(f"vectors max |diff| {diff:.2e}; graph identical entries {same:.4f}; recall@{K} {rep['recall']:.4f}; "
          f"{runner.stats['workers']} actor processes returned batches")
    assert same >= 0.98, same
    np.testing.assert_allclose(sims_l, sims_r, atol=1e-4)

    # out-of-fold probabilities: one Ray task per fold, equal to the local loop
    X = np.asarray(emb_l.vectors, np.float32)
    y = single_from_matrix(ws_l.store.label_matrix(emb_l.ids))
    assert (y >= 0).sum() > 100
    p_local = out_of_fold_probs(X, y, n_classes=int(y.max()) + 1, folds=5)
    with oof_on_ray(cluster.address) as fm:
        p_ray = out_of_fold_probs(X, y, n_classes=int(y.max()) + 1, folds=5)
    assert fm.seconds > 0
    np.testing.assert_allclose(p_local, p_ray, atol=1e-4)
    assert (p_local.argmax(1) == p_ray.argmax(1)).all()

    # the whole pipeline job with engine=ray: embedding reused, both kNN graphs and the label fit on Ray
    out = JOBS["pipeline"](ws_r, {"encoder": name, "chunk_size": CHUNK, "engine": "ray", "address": cluster.address,
                                  "map": {"method": "pca"}}, lambda *a: None)
    assert out["engine"] == "ray" and out["embed"]["engine"] == "ray"
    assert [r["recall"] >= 0.99 for r in out["knn"]] == [True, True]
    assert out["issues"]["n"] == N_IMAGES and out["suggest"]["n"] > 0
