"""The workspace at a glance: counts, encoder, and which pipeline results exist."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.core.vocab import POSITIVE
from curation.data.workspace import Workspace
from curation.ui import loaders

OFFLINE_NOTICE = ("The encoder in use ({name}) has no text tower, so zero-shot suggestions and text search are "
                  "off; suggestions come from neighbours, clusters and trained models. To get them, make the "
                  "OpenCLIP weights available (a local checkpoint file or the Hugging Face cache) and re-embed.")


@dataclass
class Summary:
    """Counts and pipeline state of a workspace."""

    samples: int
    classes: int
    labelled: int
    unlabelled: int
    task: str
    encoder: str | None
    device: str | None
    has_text: bool | None
    embedded: int
    has_map: bool
    has_clusters: bool


def summarize(ws: Workspace) -> Summary:
    """Read the summary (labels fresh from the store; arrays through the cached loaders)."""
    ids = ws.store.sample_ids()
    m = ws.store.label_matrix(ids)
    labelled = int((m == POSITIVE).any(axis=1).sum()) if m.size else 0
    emb = loaders.embeddings(ws)
    has_map = has_clusters = False
    if emb is not None:
        has_map = loaders.coords(ws) is not None
        try:
            has_clusters = loaders.clusters(ws) is not None
        except ImportError:
            has_clusters = False
    return Summary(samples=len(ids), classes=len(ws.store.class_names()), labelled=labelled,
                   unlabelled=len(ids) - labelled, task=ws.store.task,
                   encoder=getattr(emb, "encoder_name", None), device=getattr(emb, "device", None),
                   has_text=getattr(emb, "has_text", None),
                   embedded=int(np.isin(ids, emb.ids).sum()) if emb is not None else 0,
                   has_map=has_map, has_clusters=has_clusters)
