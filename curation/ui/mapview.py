"""The map: one ``go.Scattergl`` trace with colour arrays and sample ids as ``customdata``, and its panels."""

from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from curation.data.workspace import Workspace
from curation.ui.text import clean, plain

COLOUR_MODES = ("label", "suggestion", "confidence", "label issue", "outlier", "cluster", "split")
SCALES = {"confidence": ("confidence", "Viridis"),
          "label issue": ("label score (low = likely wrong)", "RdYlGn"),
          "outlier": ("outlier score (low = unusual)", "RdYlGn")}
"""Continuous colour modes: colour-bar title and plotly colour scale (issue scores: red = worse)."""
ISSUE_COLUMNS = {"label issue": "label_score", "outlier": "outlier_score"}
"""Colour modes read from ``curation.labels.issues`` scores (in [0, 1], lower = worse)."""
LAYOUTS = {"umap": "UMAP", "pca": "PCA"}
MOUSE = {"lasso": "select", "pan": "click to preview"}
"""What a drag does (plotly ``dragmode``). Streamlit turns point clicks into selections only outside
lasso/box mode, so previewing a point by click needs the pan mode."""
RUN_MODES = {"fast": "fast (parallel)", "reproducible": "reproducible (seeded)"}
"""How a UMAP map job runs: parallel on every core, or seeded on one thread (the same map every time)."""
PREVIEW_SIZE = 480
MAX_POINTS = 2_000_000
"""Most points drawn at once: every point of a million-image map is drawn (docs/performance.md, browser draw
time); only beyond this is the map density-sampled."""
HOVER_LIMIT = 50_000
"""Above this many points the hover shows only the sample id: per-point hover text is most of the bytes sent to
the browser (the labels and suggestion of a point are one click away, in the preview panel)."""
MISSING_COLOUR = "#c8ccd4"
CONTEXT_COLOUR = "#dde1e7"
"""Points outside the current filter, drawn as faint context."""
OUTLINE_COLOUR = "#59606b"
_BAND = 0.05  # share of a continuous colour scale painted grey for missing values
PALETTE = [*qualitative.D3, *qualitative.Alphabet, *qualitative.Dark24]


def fixed_colours(ws: Workspace) -> dict[str, str]:
    """{class name: its fixed colour} from the workspace (``curation.data.classes``): a class keeps its colour
    whatever happens to the labels."""
    from curation.data.classes import colour_map

    return colour_map(ws.store)


def _natural(cat: str) -> tuple:
    text = str(cat)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def category_colours(values: Sequence[str], *, missing: str = "(unlabelled)",
                     fixed: dict[str, str] | None = None) -> dict[str, str]:
    """A colour per category that does not depend on counts: a class's fixed colour (``fixed``), grey for
    ``missing`` and "(none)", and for other categories (clusters, splits, label combinations) palette colours
    handed out in natural name order. The dict is ordered most frequent first (the legend's order)."""
    fixed = fixed or {}
    counts = pd.Series(list(values), dtype=object).value_counts()
    taken = set(fixed.values())
    free = [c for c in PALETTE if c not in taken] or list(PALETTE)
    others = sorted((c for c in counts.index if c not in fixed and c not in (missing, "(none)")), key=_natural)
    given = {cat: free[i % len(free)] for i, cat in enumerate(others)}
    out = {}
    for cat in sorted(counts.index, key=lambda c: (-counts[c], str(c))):
        out[cat] = MISSING_COLOUR if cat in (missing, "(none)") else fixed.get(cat, given.get(cat))
    return out


def legend_frame(values: Sequence[str], colours: dict[str, str]) -> pd.DataFrame:
    """Category, colour and count of the categories among ``values``, for a colour key drawn next to the map."""
    counts = pd.Series(list(values), dtype=object).value_counts()
    shown = [c for c in colours if counts.get(c, 0) > 0]
    return pd.DataFrame({"category": shown, "colour": [colours[c] for c in shown],
                         "points": [int(counts[c]) for c in shown]})


def legend_style(legend: pd.DataFrame) -> pd.io.formats.style.Styler:
    """The colour key styled for ``st.dataframe``: each colour cell painted in its colour, text hidden."""
    return (legend.style.apply(lambda col: [f"background-color: {c}" for c in col], subset=["colour"])
            .format({"colour": lambda _: ""}))


def _scale_with_missing(name: str) -> list[list]:
    """A plotly colour scale whose bottom ``_BAND`` is grey (missing values) and the rest is ``name``."""
    from plotly.colors import get_colorscale

    stops = [[_BAND + (1 - _BAND) * float(pos), colour] for pos, colour in get_colorscale(name)]
    return [[0.0, MISSING_COLOUR], [_BAND, MISSING_COLOUR], *stops]


def _discrete_scale(colours: Sequence[str]) -> list[list]:
    """A stepped colour scale: code ``i`` (with cmin -0.5, cmax K - 0.5) gets ``colours[i]``."""
    k = max(len(colours), 1)
    return [stop for i, c in enumerate(colours) for stop in ([i / k, c], [(i + 1) / k, c])] or [[0, MISSING_COLOUR],
                                                                                                  [1, MISSING_COLOUR]]


def map_figure(xy: np.ndarray, ids: np.ndarray, *, categories: Sequence[str] | None = None,
               colours: dict[str, str] | None = None, values: np.ndarray | None = None,
               value_name: str = "", colorscale: str = "Viridis", faded: np.ndarray | None = None,
               hover: Sequence[str] | None = None, hint: str = "click to preview", dragmode: str = "lasso",
               height: int = 640, revision: str = "map") -> go.Figure:
    """One WebGL scatter trace of the map.

    Every per-point array is numeric numpy (categories become codes on a stepped colour scale):
    plotly validates lists of colour strings one by one (15 s for 100k points) but ships numpy
    arrays as binary.

    Parameters
    ----------
    xy : (N, 2) float coordinates.
    ids : (N,) int64 sample ids, written as ``customdata`` (selections read them back).
    categories, colours : a category per point and its colour (categorical colouring), or
    values : (N,) float in [0, 1] for a continuous ``colorscale`` (e.g. confidence), NaN drawn grey.
    faded : (N,) bool, context points (outside the current filter): small, faint and grey, while the
        filter's points are outlined.
    hover : (N,) per-point hover text (escape user text before); the hover shows ``#id · text`` and ``hint``.
    dragmode : a key of MOUSE.
    revision : plotly ``uirevision``: zoom and pan survive reruns until it changes (e.g. another layout).
    """
    xy = np.asarray(xy)
    marker: dict = {"size": 5, "opacity": 0.85}
    f = np.zeros(len(xy), bool) if faded is None else np.asarray(faded, bool)
    if f.any():  # context: small, faint, context-grey; the filter's points: full size, outlined
        marker.update(size=np.where(f, 3, 6).astype(np.int8), opacity=np.where(f, 0.3, 0.95).astype(np.float32),
                      line={"width": np.where(f, 0.0, 0.4).astype(np.float32), "color": OUTLINE_COLOUR})
    if values is not None:
        v = np.asarray(values, float)
        low = -_BAND / (1 - _BAND)  # NaN -> ``low`` lands on the grey band, 0 on the scale's first colour
        marker.update(color=np.where(np.isnan(v) | f, low, np.clip(v, 0.0, 1.0)).astype(np.float32),
                      colorscale=_scale_with_missing(colorscale), cmin=low, cmax=1.0,
                      colorbar={"title": {"text": value_name}, "thickness": 12, "tickvals": [0, 0.5, 1]})
    elif categories is not None and colours is not None:
        palette = [*colours.values(), MISSING_COLOUR, CONTEXT_COLOUR]
        code = {c: i for i, c in enumerate(colours)}
        codes = pd.Series(categories, dtype=object).map(code).fillna(len(colours)).to_numpy(np.int16)
        marker.update(color=np.where(f, len(palette) - 1, codes).astype(np.int16),
                      colorscale=_discrete_scale(palette), cmin=-0.5, cmax=len(palette) - 0.5, showscale=False)
    tail = f"<br><i>{escape(hint)}</i>" if hint else ""
    if hover is not None and len(xy) > HOVER_LIMIT:
        hover = None  # the id only: hover text would be most of the bytes
    trace = go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=np.asarray(ids, np.int64),
                         hovertext=np.asarray(list(hover), dtype=object) if hover is not None else None,
                         hovertemplate=("#%{customdata} · %{hovertext}" if hover is not None else "#%{customdata}")
                         + tail + "<extra></extra>",
                         marker=marker, showlegend=False)
    fig = go.Figure(trace)
    fig.update_layout(dragmode=dragmode, height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"},
                      plot_bgcolor="white", clickmode="event+select", uirevision=revision)
    return fig


def colour_by(mode: str, ids: np.ndarray, *, label_text: Sequence[str], sugg: pd.DataFrame | None = None,
              splits: pd.Series | None = None, clusters: pd.Series | None = None,
              issues: pd.DataFrame | None = None) -> tuple[list[str] | None, np.ndarray | None]:
    """What to colour each point by: ``(categories, None)`` or ``(None, continuous values)``.

    Parameters
    ----------
    mode : one of COLOUR_MODES.
    ids : (N,) sample ids of the drawn points; ``label_text`` follows them.
    sugg, splits, clusters : indexed by sample id (missing entries become "(none)" / NaN).
    issues : ``curation.labels.issues`` scores indexed by sample id (for the ISSUE_COLUMNS modes).
    """
    ids = np.asarray(ids, np.int64)
    if mode == "label":
        return list(label_text), None
    if mode == "confidence" or mode in ISSUE_COLUMNS:
        frame, column = (sugg, "confidence") if mode == "confidence" else (issues, ISSUE_COLUMNS[mode])
        if frame is None:
            return None, np.full(len(ids), np.nan)
        return None, frame[column].reindex(ids).to_numpy(float)
    source = {"suggestion": None if sugg is None else sugg["class_name"], "split": splits,
              "cluster": clusters}.get(mode, "unknown")
    if isinstance(source, str):
        raise ValueError(f"Unknown colour mode {mode!r}; use one of {COLOUR_MODES}.")
    if source is None:
        return ["(none)"] * len(ids), None
    values = source.reindex(ids)
    return [("(none)" if pd.isna(v) or v == "" else str(v)) for v in values], None


def hover_text(ids: np.ndarray, label_text: Sequence[str], sugg: pd.DataFrame | None = None) -> list[str]:
    """Per-point hover text: the labels, and the suggestion with its confidence when there is one.

    :func:`map_figure` adds the sample id and the "click to preview" hint (plotly hover cannot show
    images; a click opens the preview panel). User text is HTML-escaped: plotly interprets a few tags.

    Parameters
    ----------
    ids : (N,) sample ids of the points.
    label_text : (N,) their label text.
    sugg : suggestions indexed by sample id (class_name, confidence).
    """
    out = [escape(clean(t)) for t in label_text]
    if sugg is None:
        return out
    s = sugg.reindex(np.asarray(ids, np.int64))
    names, conf = s["class_name"].tolist(), s["confidence"].to_numpy(float)
    return [f"{line}<br>suggests {escape(clean(n))} ({c:.2f})" if isinstance(n, str) else line
            for line, n, c in zip(out, names, conf)]


def layout_caption(config: dict, n: int) -> str:
    """One line saying which layout is drawn and how it was made."""
    if config.get("method") != "umap":
        return f"PCA of {n:,} samples (the top two principal components)."
    how = RUN_MODES["reproducible" if config.get("reproducible", True) else "fast"]
    limit = config.get("sample_limit")
    fit = f"fitted on {limit:,} samples, the rest placed and refined" if limit else "fitted on every sample"
    return f"UMAP of {n:,} samples, {how}, {fit}."


def drawn_caption(n: int, drawn: int, matched: int, matched_drawn: int, *, filtered: bool) -> str:
    """Say how many points are drawn and why (filter, density-preserving sample), or "" when all are."""
    if not filtered:
        if drawn == n:
            return ""
        return (f"Showing a density-preserving sample of {drawn:,} of {n:,} points (dense regions thinned in "
                "proportion, sparse ones kept); selections act on the points shown.")
    if matched_drawn < matched:
        return (f"The filter matches {matched:,} points, more than a browser draws comfortably: showing a "
                f"density-preserving sample of {matched_drawn:,} of them; selections act on the points shown.")
    context = drawn - matched_drawn
    rest = n - matched
    sample = "" if context == rest else f" (a density-preserving sample of the other {rest:,})"
    return (f"Showing all {matched:,} points of the filter, plus {context:,} others as faded context{sample}; "
            "selections act on the filtered points only.")


def point_panel(ws: Workspace, sample_id: int, *, labels: str, sugg: pd.DataFrame | None = None,
                issues: pd.DataFrame | None = None, clusters: pd.Series | None = None,
                splits: pd.Series | None = None) -> None:
    """The clicked point: its image, large, and what is known about it (labels, suggestion, scores)."""
    from curation.data.images import thumbnail_path

    sid = int(sample_id)
    st.markdown(f"**Sample {sid}**")
    try:
        st.image(str(thumbnail_path(ws, sid, size=PREVIEW_SIZE)), width="stretch")
    except Exception as exc:  # a vanished or broken file must not break the page
        st.caption(f"The image cannot be shown: {plain(exc)}")
    facts = {"labels": labels}
    if sugg is not None and sid in sugg.index and isinstance(sugg.at[sid, "class_name"], str):
        facts["suggestion"] = f"{sugg.at[sid, 'class_name']} ({float(sugg.at[sid, 'confidence']):.2f})"
    if issues is not None and sid in issues.index:
        facts.update({"label score": f"{float(issues.at[sid, 'label_score']):.2f}",
                      "outlier score": f"{float(issues.at[sid, 'outlier_score']):.2f}"})
    if clusters is not None and sid in clusters.index:
        facts["cluster"] = str(clusters.at[sid])
    if splits is not None and sid in splits.index and isinstance(splits.at[sid], str) and splits.at[sid]:
        facts["split"] = splits.at[sid]
    st.dataframe(pd.DataFrame({"about": list(facts), "value": list(facts.values())}), hide_index=True,
                 width="stretch")
