"""One self-contained HTML page: inline CSS, Plotly's JavaScript inlined once, images as
``data:`` URIs. It opens from disk with no server and no network.

Everything shown that comes from the data (paths, labels, error messages) is escaped:
a manifest is not trusted, and a file name is not markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import plotly.graph_objects as go

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;
background:#f6f7f9}
header{background:#1d232b;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header .sub{color:#b8c0cc;font-size:13px;margin-top:4px}
main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;margin:16px 0;
padding:12px 18px}
section h2{font-size:17px;margin:4px 0 10px}
section h3{font-size:15px;margin:14px 0 8px}
h3.chart-title{font-size:14px;font-weight:600;color:#2a3f5f;margin:4px 0 0 6px}
.banner{background:#b3261e;color:#fff;font-weight:600;padding:10px 16px;border-radius:6px;
margin:16px 0;font-size:15px}
.note{color:#57606a;font-size:13px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;font-size:14px}
.kv div:nth-child(odd){color:#57606a}
.counts{display:flex;gap:14px;flex-wrap:wrap}
.count{border:1px solid #e1e4e8;border-radius:6px;padding:8px 16px;min-width:90px}
.count b{display:block;font-size:24px}
.count.ok b{color:#1a7f37}.count.error b{color:#b3261e}
table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border-bottom:1px solid #eaecef;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}
@media (max-width:960px){.grid{grid-template-columns:minmax(0,1fr)}}
.sheet{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:14px}
figure{margin:0;width:224px;font-size:11px}figure img{display:block;border-radius:3px}
figure .missing{width:224px;height:126px;background:#eaecef;display:flex;
align-items:center;justify-content:center;color:#57606a}
figcaption{margin-top:2px;word-break:break-all}
figure.strip{flex:1 1 320px;max-width:560px}figure.strip img{width:100%;height:64px}
.band{position:relative;height:15px;background:#eef0f3;margin-top:1px;overflow:hidden}
.band span{position:absolute;top:0;bottom:0;overflow:hidden;white-space:nowrap;
text-overflow:clip;font-size:10px;line-height:15px;padding-left:2px;box-sizing:border-box;
border-left:1px solid #fff}
.band.speech{height:5px}.band.speech span{background:#1a7f37;border:0}
.axis{display:flex;justify-content:space-between;color:#57606a;font-size:10px}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


class Page:
    """A report page under construction: sections in order, then :meth:`render`."""

    def __init__(self, title: str, subtitle: str):
        self.title, self.subtitle = title, subtitle
        self.parts: list[str] = []
        self._charts = 0

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def section(self, title: str, *body: str, key: str = "") -> None:
        attr = f' id="{esc(key)}"' if key else ""
        self.parts.append(f"<section{attr}><h2>{esc(title)}</h2>{''.join(body)}</section>")

    def chart(self, fig: go.Figure, name: str) -> str:
        """The figure as a ``<div class="chart">`` (Plotly draws it when the page loads).

        Its title is taken out of the figure and set above it in HTML: there it wraps on a
        narrow page, where Plotly's one-line title is cut at the figure's edge, and the
        modebar (the toolbar Plotly shows over the figure's top right corner on hover)
        cannot cover it."""
        self._charts += 1
        title = fig.layout.title.text or ""
        fig.update_layout(title_text=None)
        div = fig.to_html(full_html=False, include_plotlyjs=False,
                          div_id=f"chart-{self._charts}",
                          config={"displaylogo": False, "responsive": True})
        return (f'<div class="chart" data-chart="{esc(name)}"><h3 class="chart-title">'
                f"{esc(title)}</h3>{div}</div>")

    def render(self) -> str:
        from plotly.offline import get_plotlyjs

        made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{esc(self.title)}</title><style>{_CSS}</style>"
                f"<script>{get_plotlyjs()}</script></head><body><header>"
                f"<h1>{esc(self.title)}</h1><div class='sub'>{esc(self.subtitle)} · made "
                f"{made} by vidbatch report</div></header><main>{''.join(self.parts)}"
                "</main></body></html>")


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    return "<div class='kv'>" + "".join(f"<div>{esc(k)}</div><div>{esc(v)}</div>"
                                        for k, v in pairs if v is not None) + "</div>"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]],
          numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped, except those already marked up as
    :class:`Markup`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f"<td{' class=num' if i in numeric else ''}>"
        f"{c if isinstance(c, Markup) else esc(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup(str):
    """Markup built here from escaped parts, placed as is."""


def figure_card(uri: str | None, caption_lines: Sequence[str], title: str) -> str:
    """A thumbnail (or a grey placeholder when the video could not be read) with a
    caption."""
    image = (f"<img src='{uri}' alt='{esc(title)}' title='{esc(title)}'>" if uri else
             f"<div class='missing' title='{esc(title)}'>not readable</div>")
    caption = "<br>".join(esc(c) for c in caption_lines)
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"
