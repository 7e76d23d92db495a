"""The report's charts, drawn with Plotly from already-aggregated data (bins and counts,
never raw rows), so a chart over a million rows embeds a few hundred numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from pipeline.report.rows import Bins

HEIGHT = 300
# The top margin is the strip the modebar (Plotly's toolbar, shown on hover) is drawn in, so
# that it covers no data; the page draws the title above the figure (Page.chart).
_LAYOUT = {"height": HEIGHT, "margin": {"l": 60, "r": 20, "t": 32, "b": 50},
           "template": "plotly_white", "font": {"size": 12}}


def _figure(title: str, x: str, y: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title={"text": title, "x": 0.01}, xaxis_title=x, yaxis_title=y,
                      **{**_LAYOUT, **layout})
    return fig


def _count_axis(counts: Sequence[float]) -> dict:
    """An axis of counts: whole numbers only (Plotly ticks 0, 0.5, 1, ... up to 2)."""
    return {"rangemode": "tozero", "tickformat": ",d",
            **({"dtick": 1} if max(counts, default=0) <= 5 else {})}


def histogram(bins: Bins, title: str, x: str, y: str = "videos") -> go.Figure:
    """Bars of ``bins`` (already counted), each spanning its edges."""
    edges = np.asarray(bins.edges)
    fig = _figure(title, x, y, bargap=0.05)
    fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=bins.counts, width=np.diff(edges),
                hovertemplate="%{x:.3g}: %{y}<extra></extra>")
    fig.update_yaxes(**_count_axis(bins.counts))
    return fig


def bars(labels: Sequence[str], counts: Sequence[int], title: str, x: str,
         y: str = "videos", horizontal: bool = True) -> go.Figure:
    """Counts per category, largest first (top to bottom when ``horizontal``)."""
    fig = _figure(title, y if horizontal else x, x if horizontal else y,
                  height=max(170, 24 * len(labels) + 110) if horizontal else HEIGHT)
    if horizontal:
        fig.add_bar(x=list(counts)[::-1], y=list(labels)[::-1], orientation="h",
                    hovertemplate="%{y}: %{x}<extra></extra>")
        fig.update_xaxes(**_count_axis(counts))
    else:
        fig.add_bar(x=list(labels), y=list(counts), hovertemplate="%{x}: %{y}<extra></extra>")
        fig.update_yaxes(**_count_axis(counts))
    return fig


def line(x: Sequence[float], series: dict[str, Sequence[float | None]], title: str,
         xtitle: str, ytitle: str, mode: str = "lines+markers") -> go.Figure:
    fig = _figure(title, xtitle, ytitle)
    for name, ys in series.items():
        fig.add_scatter(x=list(x), y=list(ys), mode=mode, name=name)
    return fig


def scatter_map(xy: np.ndarray, groups: Sequence[str], hover: Sequence[str],
                title: str) -> go.Figure:
    """2-D points coloured by group (one trace each, so the legend toggles them), with
    ``hover`` text per point."""
    # the legend is the key to the colours, even with one label (Plotly hides a lone one's)
    fig = _figure(title, "component 1", "component 2", height=480, showlegend=True)
    groups, hover = np.asarray(groups, dtype=object), np.asarray(hover, dtype=object)
    names, counts = np.unique(groups.astype(str), return_counts=True)
    for name in names[np.argsort(-counts)]:
        pick = groups.astype(str) == name
        fig.add_scattergl(x=xy[pick, 0], y=xy[pick, 1], mode="markers", name=name,
                          marker={"size": 6, "opacity": 0.8}, text=hover[pick],
                          hovertemplate="%{text}<extra></extra>")
    return fig


def heatmap(matrix: Sequence[Sequence[int]], names: Sequence[str], title: str) -> go.Figure:
    """A confusion matrix: rows the true class, columns the predicted one."""
    size = max(HEIGHT, 28 * len(names) + 140)
    fig = _figure(title, "predicted class", "true class", height=size)
    fig.add_heatmap(z=matrix, x=list(names), y=list(names), colorscale="Blues",
                    texttemplate="%{z}", hovertemplate="true %{y}, predicted %{x}: "
                    "%{z}<extra></extra>")
    fig.update_yaxes(autorange="reversed")
    return fig


def rate(x: Sequence[float], y: Sequence[float], title: str, xtitle: str,
         ytitle: str) -> go.Figure:
    """A rate over time: a line from zero up (the rate is an average over a window, so
    points would suggest single measurements)."""
    fig = _figure(title, xtitle, ytitle)
    fig.add_scatter(x=list(x), y=list(y), mode="lines", name=ytitle,
                    hovertemplate=f"%{{x:.1f}} s: %{{y:.3g}} {ytitle}<extra></extra>")
    fig.update_yaxes(range=[0, 1.15 * max(y, default=0) or 1])  # the line clear of the top
    return fig
