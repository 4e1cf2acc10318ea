"""The map figure: one ``go.Scattergl`` trace with colour arrays and sample ids as ``customdata``."""

from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

COLOUR_MODES = ("label", "suggestion", "confidence", "split", "cluster")
MAX_POINTS = 100_000
MISSING_COLOUR = "#c8ccd4"
PALETTE = [*qualitative.D3, *qualitative.Alphabet, *qualitative.Dark24]


def category_colours(values: Sequence[str], *, missing: str = "(unlabelled)") -> dict[str, str]:
    """A stable colour per category (sorted, most frequent first); the ``missing`` category is grey."""
    counts = pd.Series(list(values), dtype=object).value_counts()
    cats = sorted(counts.index, key=lambda c: (-counts[c], str(c)))
    colours, i = {}, 0
    for cat in cats:
        if cat == missing:
            colours[cat] = MISSING_COLOUR
        else:
            colours[cat] = PALETTE[i % len(PALETTE)]
            i += 1
    return colours


def legend_frame(values: Sequence[str], colours: dict[str, str]) -> pd.DataFrame:
    """Category, colour and count, for a colour key drawn next to the map."""
    counts = pd.Series(list(values), dtype=object).value_counts()
    return pd.DataFrame({"category": list(colours), "colour": list(colours.values()),
                         "points": [int(counts.get(c, 0)) for c in colours]})


def legend_style(legend: pd.DataFrame) -> "pd.io.formats.style.Styler":
    """The colour key styled for ``st.dataframe``: each colour cell painted in its colour, text hidden."""
    return (legend.style.apply(lambda col: [f"background-color: {c}" for c in col], subset=["colour"])
            .format({"colour": lambda _: ""}))


def map_figure(xy: np.ndarray, ids: np.ndarray, *, categories: Sequence[str] | None = None,
               colours: dict[str, str] | None = None, values: np.ndarray | None = None,
               value_name: str = "", hover: Sequence[str] | None = None, height: int = 640) -> go.Figure:
    """One WebGL scatter trace of the map.

    Parameters
    ----------
    xy : (N, 2) float coordinates.
    ids : (N,) int64 sample ids, written as ``customdata`` (selections read them back).
    categories, colours : a category per point and its colour (categorical colouring), or
    values : (N,) float for a continuous colour scale (e.g. confidence), NaN drawn grey.
    hover : (N,) text shown on hover.
    """
    xy = np.asarray(xy)
    marker: dict = {"size": 5, "opacity": 0.85}
    if values is not None:
        v = np.asarray(values, float)
        marker.update(color=np.where(np.isnan(v), -1.0, v).tolist(), colorscale="Viridis", cmin=0.0, cmax=1.0,
                      colorbar={"title": {"text": value_name}, "thickness": 12})
    elif categories is not None and colours is not None:
        marker["color"] = [colours.get(c, MISSING_COLOUR) for c in categories]
    trace = go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=np.asarray(ids, np.int64),
                         hovertext=list(hover) if hover is not None else None,
                         hovertemplate="%{hovertext}<extra></extra>" if hover is not None else None,
                         marker=marker, showlegend=False)
    fig = go.Figure(trace)
    fig.update_layout(dragmode="lasso", height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"},
                      plot_bgcolor="white", clickmode="event+select", uirevision="map")
    return fig


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    """Confusion matrix heat map (rows: true class, columns: predicted), counts written in the cells."""
    c = np.asarray(confusion)
    names = [str(n) for n in class_names]
    fig = go.Figure(go.Heatmap(z=c, x=names, y=names, colorscale="Blues", text=c, texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} samples<extra></extra>"))
    fig.update_layout(height=max(320, 28 * len(names) + 120), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": {"text": "predicted"}, "side": "bottom"},
                      yaxis={"title": {"text": "true"}, "autorange": "reversed"})
    return fig


def colour_by(mode: str, ids: np.ndarray, *, label_text: Sequence[str], sugg: pd.DataFrame | None = None,
              splits: pd.Series | None = None, clusters: pd.Series | None = None
              ) -> tuple[list[str] | None, np.ndarray | None]:
    """What to colour each point by: ``(categories, None)`` or ``(None, continuous values)``.

    Parameters
    ----------
    mode : one of COLOUR_MODES.
    ids : (N,) sample ids of the drawn points; ``label_text`` follows them.
    sugg, splits, clusters : indexed by sample id (missing entries become "(none)" / NaN).
    """
    ids = np.asarray(ids, np.int64)
    if mode == "label":
        return list(label_text), None
    if mode == "confidence":
        if sugg is None:
            return None, np.full(len(ids), np.nan)
        return None, sugg["confidence"].reindex(ids).to_numpy(float)
    source = {"suggestion": None if sugg is None else sugg["class_name"], "split": splits,
              "cluster": clusters}.get(mode, "unknown")
    if isinstance(source, str):
        raise ValueError(f"Unknown colour mode {mode!r}; use one of {COLOUR_MODES}.")
    if source is None:
        return ["(none)"] * len(ids), None
    values = source.reindex(ids)
    return [("(none)" if pd.isna(v) or v == "" else str(v)) for v in values], None


def hover_text(ids: np.ndarray, label_text: Sequence[str], sugg: pd.DataFrame | None = None) -> list[str]:
    """Hover lines: id and labels, plus the suggestion and its confidence when there is one.

    User text is HTML-escaped: plotly interprets a few tags in hover text.
    """
    out = [f"#{i} · {escape(t)}" for i, t in zip(np.asarray(ids).tolist(), label_text)]
    if sugg is None:
        return out
    s = sugg.reindex(np.asarray(ids, np.int64))
    names, conf = s["class_name"].tolist(), s["confidence"].to_numpy(float)
    return [f"{line}<br>suggests {escape(n)} ({c:.2f})" if isinstance(n, str) else line
            for line, n, c in zip(out, names, conf)]
