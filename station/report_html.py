"""The self-contained HTML report: one file, every image inlined as a ``data:`` URI, no script,
no external style sheet or font (it opens from a USB stick on a line PC without network)."""

from __future__ import annotations

import base64
import html
from typing import Any

from station.report import PANEL_KINDS, Panel, counts_lines

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
.warn{background:#fff3cd;border:1px solid #e0a800;padding:.5em 1em;margin:.4em 0}
.panel{border:1px solid #ddd;margin:.8em 0;padding:.5em;page-break-inside:avoid}
.panel img{margin:2px;border:1px solid #eee;vertical-align:top}
.fig{display:inline-block;text-align:center;font-size:.75em;color:#555}
.defect{color:#c62828}.pass{color:#2e7d32}.error{color:#b26a00}code{font-size:.85em}
"""


def _img(data: bytes, mime: str, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{b64}" alt="{html.escape(alt)}">'


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _panel(p: Panel) -> str:
    figs = "".join(f'<div class="fig">{_img(data, "image/jpeg", name)}<br>{name}</div>'
                   for name, data in p.images.items())
    rows = [[c["address"], c["score"], c["threshold"], c["ratio"],
             ", ".join(c["flagged_by"]) or "-", "yes" if c["truth"] else ""] for c in p.cells]
    table = _table(["cell", "score", "threshold", "score/threshold", "flagged by", "truth"],
                   rows) if rows else ""
    return (f'<div class="panel"><b>{html.escape(p.part_id)}</b> — '
            f'<span class="{html.escape(p.verdict)}">{html.escape(p.verdict)}</span>: '
            f"{html.escape(p.note)}<br><code>{html.escape(p.frame)}</code><br>{figs}{table}"
            "</div>")


def render_html(title: str, s: dict[str, Any], panels: dict[str, list[Panel]],
                plots: dict[str, bytes]) -> str:
    """The report page for the summary ``s``, its panels and its plots (PNG bytes)."""
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    out += [f'<div class="warn"><b>Warning:</b> {html.escape(w)}</div>' for w in s["warnings"]]
    out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in counts_lines(s)) + "</ul>")
    if s["errors"]:
        out.append(f"<h2>Could not be judged ({s['errors']})</h2>")
        out.append(_table(["part", "frame", "reason"],
                          [[u["part_id"], u["frame"], u["reason"]] for u in s["unjudged"]]))
        if s["unjudged_not_listed"]:
            out.append(f"<p>… and {s['unjudged_not_listed']} more.</p>")
    if s["judges"]:
        out.append("<h2>Judges</h2>")
        out.append(_table(["judge", "parts", "verdicts"],
                          [[n, j["parts"], ", ".join(f"{k} {v}" for k, v in j["verdicts"].items())]
                           for n, j in s["judges"].items()]))
    out.append("<h2>Latency (ms)</h2>")
    out.append(_table(["stage", "p50", "p95", "p99"],
                      [[k, p["p50"], p["p95"], p["p99"]] for k, p in s["latency_ms"].items()]))
    if plots:
        out.append("<h2>Score distribution</h2><p>Largest cell score / its threshold per part "
                   "(&gt; 1 means flagged), and every cell's scores against its threshold.</p>")
        out += [f"<p>{_img(png, 'image/png', name)}</p>" for name, png in plots.items()]
    for kind, heading in PANEL_KINDS.items():
        total = s["panels"][kind]["total"]
        if not total and kind == "defect":
            continue
        shown = panels[kind]
        out.append(f"<h2>{html.escape(heading)} ({total})</h2>")
        if not shown:
            out.append("<p>None.</p>")
        out += [_panel(p) for p in shown]
        if total > len(shown):
            out.append(f"<p>… and {total - len(shown)} more (the worst {len(shown)} are "
                       "shown).</p>")
    out.append("</body></html>\n")
    return "\n".join(out)
