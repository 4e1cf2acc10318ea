"""The Clusters page through AppTest, its pure helpers, and the ``clusters`` job's parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest
from test_ui import CLASSES, embedded, workspace  # noqa: F401 (fixtures)

from curation.core.progress import null_progress
from curation.core.vocab import POSITIVE
from curation.data.workspace import Workspace
from curation.ui import clusterview, state, widgets

PAGE = "pages/2_Clusters.py"


@pytest.fixture
def clustered(embedded: Workspace) -> Workspace:  # noqa: F811
    """The embedded 60-image workspace (3 planted classes) with its clustering computed (automatic k)."""
    from curation.features.embed import load_embeddings
    from curation.structure.cluster import compute_clusters

    compute_clusters(embedded, load_embeddings(embedded))
    return embedded


def _page() -> AppTest:
    return open_page(PAGE)


# ---------------------------------------------------------------------- pure helpers
def test_job_params_sort_targets_and_escape():
    assert clusterview.job_params("auto") == {"method": "auto", "k": None}
    assert clusterview.job_params("k", 12) == {"method": "auto", "k": 12}
    assert clusterview.job_params("hdbscan", 12) == {"method": "hdbscan", "k": None}
    with pytest.raises(ValueError, match="k ≥ 2"):
        clusterview.job_params("k", 1)
    t = pd.DataFrame({"size": [5, 9, 7], "purity": [0.9, np.nan, 0.5], "issue_rate": [0.1, 0.3, 0.3]},
                     index=pd.Index([0, 1, 2], name="cluster"))
    assert clusterview.sort_clusters(t, "size").index.tolist() == [1, 2, 0]
    assert clusterview.sort_clusters(t, "purity").index.tolist() == [2, 0, 1]
    assert clusterview.sort_clusters(t, "issue_rate").index.tolist() == [1, 2, 0]
    assert clusterview.targets(np.array([4, 2, 9]), [9]).tolist() == [2, 4]
    assert widgets.md_escape("**<b>x</b>** [a](b)") == r"\*\*\<b\>x\<\/b\>\*\* \[a\]\(b\)"
    curve = pd.DataFrame({"silhouette": [0.2, 0.3, 0.25], "se": [0.01, 0.02, 0.01]}, index=pd.Index([5, 6, 7], name="k"))
    fig = clusterview.silhouette_figure(curve, 6)
    assert list(fig.data[0].x) == [5, 6, 7] and fig.layout.shapes[0].x0 == 6
    assert "k = 6 is the largest k within one standard error" in clusterview.silhouette_note(curve, 6)


def test_clusters_job_passes_method_and_k(embedded: Workspace):  # noqa: F811
    from curation.features.embed import load_embeddings
    from curation.runtime.tasks import JOBS
    from curation.structure.cluster import load_clustering

    res = JOBS["clusters"](embedded, {"method": "auto", "k": 4}, null_progress)
    assert res == {"n_clusters": 4, "noise": 0}
    emb = load_embeddings(embedded)
    assert load_clustering(embedded, emb).k == 4
    res = JOBS["clusters"](embedded, {"method": "hdbscan", "k": None}, null_progress)
    assert load_clustering(embedded, emb).method == "hdbscan" and res["n_clusters"] >= 1


# ---------------------------------------------------------------------- the page
def test_page_without_clusters_offers_recompute(embedded: Workspace):  # noqa: F811
    at = _page()
    assert not at.error, [e.value for e in at.error]
    assert any("No clusters yet" in i.value for i in at.info)
    assert any(b.key == "clusters_recompute" for b in at.button)


def test_page_shows_cards_and_the_silhouette_curve(clustered: Workspace):
    at = _page()
    assert not at.error, [e.value for e in at.error]
    from curation.features.embed import load_embeddings
    from curation.structure.cluster import load_clustering

    n = int(load_clustering(clustered, load_embeddings(clustered)).labels.max()) + 1
    opens = sorted(int(b.key.rsplit("_", 1)[1]) for b in at.button if b.key and b.key.startswith("clusters_open_"))
    assert opens == list(range(n))
    assert any("images · purity" in c.value for c in at.caption)
    assert any("within one standard error" in c.value for c in at.caption)
    at.segmented_control(key="clusters_sort").set_value("purity").run()
    assert not at.exception


def test_label_a_cluster_with_exceptions_is_one_batch_and_undoes(clustered: Workspace):
    from curation.features.embed import load_embeddings
    from curation.structure.cluster import load_clustering

    ws = clustered
    members = load_clustering(ws, load_embeddings(ws)).members(0)
    before = ws.store.label_matrix(members).copy()
    n_batches = len(ws.store.batches())
    at = _page()
    at.session_state[clusterview.K_OPEN] = 0
    at.run()
    at.selectbox(key="cl0_class").set_value("triangle")
    at.checkbox(key=f"cl0_x{int(members[0])}").check().run()
    at.checkbox(key=f"cl0_x{int(members[3])}").check().run()
    assert at.session_state["cl0_except"] == {int(members[0]), int(members[3])}
    at.button(key="cl0_apply").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    batches = ws.store.batches()
    assert len(batches) == n_batches + 1 and batches.iloc[0]["source"] == "bulk"
    k = CLASSES.index("triangle")
    after = ws.store.label_matrix(members)
    labelled = np.setdiff1d(members, members[[0, 3]])
    assert (after[np.isin(members, labelled), k] == POSITIVE).all()
    np.testing.assert_array_equal(after[[0, 3]], before[[0, 3]])  # the exceptions are untouched
    assert set(ws.store.events(int(batches.index[0]))["sample_id"]) <= set(labelled.tolist())
    assert at.session_state[state.K_LAST_BATCH] == int(batches.index[0])
    assert at.session_state["cl0_except"] == set() and not at.checkbox(key=f"cl0_x{int(members[0])}").value
    at.button(key="cl0_undo").click().run()
    assert ws.store.batches().iloc[0]["source"] == "undo"
    np.testing.assert_array_equal(ws.store.label_matrix(members), before)


def test_split_and_pockets_render(clustered: Workspace):
    at = _page()
    at.session_state[clusterview.K_OPEN] = 0
    at.run()
    at.button(key=f"{clusterview.K_SPLIT}_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("sub-clusters" in c.value for c in at.caption)
    assert any(b.key == "cl0_sub0_apply" for b in at.button)
    at.button(key=f"{clusterview.K_POCKETS}_go").click().run()
    assert not at.exception and not at.error
    assert any("No pocket stands out" in i.value for i in at.info)  # too small to search


def test_label_only_the_rest_of_a_cluster(clustered: Workspace):
    """"Leave out images that already carry another label" labels the unlabelled (and already-target) images only."""
    from curation.features.embed import load_embeddings
    from curation.structure.cluster import load_clustering

    ws = clustered
    members = load_clustering(ws, load_embeddings(ws)).members(0)
    before = ws.store.label_matrix(members).copy()
    k = CLASSES.index("triangle")
    other = (before == POSITIVE).any(1) & (before[:, k] != POSITIVE)
    assert other.any() and (~other).any()
    np.testing.assert_array_equal(clusterview.labelled_otherwise(ws, members, "triangle"), members[other])
    at = _page()
    at.session_state[clusterview.K_OPEN] = 0
    at.run()
    at.selectbox(key="cl0_class").set_value("triangle")
    at.checkbox(key="cl0_keep").check().run()
    at.button(key="cl0_apply").click().run()
    assert not at.exception and not at.error
    after = ws.store.label_matrix(members)
    np.testing.assert_array_equal(after[other], before[other])
    assert (after[~other, k] == POSITIVE).all()
