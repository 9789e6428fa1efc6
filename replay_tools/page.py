"""Write a gathered report to a directory: index.html, one PNG per plot, report.json.

index.html embeds its PNGs (base64) so the one file opens from disk, from the operator API (which may
need a bearer token, which an <img> cannot send) or as an attachment; the PNG files beside it are
the same images, linked from each figure, for slides and chat.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from replay_tools.plots import PLOTS, plot_pngs
from spec.files import atomic_write_bytes

INDEX = "index.html"
REPORT_JSON = "report.json"
MAX_ROWS = 48  # per table on the page; report.json has them all
_TIME_KEYS = ("start", "at", "time", "last_at", "first_step_at", "last_step_at", "generated_at", "last_acted_at")
_SKIP = ("title", "recorded", "why", "definition", "series")

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 960px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
.not-recorded { color: #a33; font-weight: 600; } .definition { color: #555; font-size: 12px; }
img { max-width: 100%; } .muted { color: #777; }
"""


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key in _TIME_KEYS and isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(key if key in _TIME_KEYS else k, v)}" for k, v in value.items()) or "–"
    return str(value)


def _table(rows: list[dict[str, Any]], key: str) -> str:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    shown = rows[-MAX_ROWS:]  # the newest
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c, r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in shown)
    more = f'<p class="muted">{len(rows) - len(shown)} older rows in {REPORT_JSON}</p>' if len(rows) > len(shown) else ""
    return f"<h3>{html.escape(key)}</h3><table><tr>{head}</tr>{body}</table>{more}"


def _section(name: str, sec: dict[str, Any], png: bytes | None) -> str:
    parts = [f'<section id="{name}"><h2>{html.escape(sec["title"])}</h2>']
    if not sec.get("recorded"):
        parts.append(f'<p class="not-recorded">not recorded: {html.escape(sec.get("why", ""))}</p>')
    if png is not None:
        data = base64.b64encode(png).decode()
        parts.append(f'<figure><img alt="{html.escape(sec["title"])}" src="data:image/png;base64,{data}">'
                     f'<figcaption><a href="{name}.png">{name}.png</a></figcaption></figure>')
    scalars = {k: v for k, v in sec.items() if k not in _SKIP and not isinstance(v, list)}
    nested = {k: v for k, v in scalars.items() if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values())}
    if scalars:
        parts.append("<table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(k, v))}</td></tr>"
            for k, v in scalars.items() if k not in nested) + "</table>")
    for k, v in nested.items():
        parts.append(_table([{"": name, **row} for name, row in v.items()], k))
    for k, v in sec.items():
        if isinstance(v, list) and v and k not in _SKIP:
            parts.append(_table(v, k))
    if sec.get("definition"):
        parts.append(f'<p class="definition">{html.escape(sec["definition"])}</p>')
    return "\n".join(parts) + "</section>"


def render_html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    overview = report["overview"]
    sections = "\n".join(_section(n, s, pngs.get(n)) for n, s in report["sections"].items())
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(k, v))}</td></tr>" for k, v in overview.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Morning report</title><style>{STYLE}</style></head>
<body>
<h1>Morning report</h1>
<p class="muted">store {html.escape(report["store"])} · made {_fmt("generated_at", report["generated_at"])}
· figures for machines: <a href="{REPORT_JSON}">{REPORT_JSON}</a></p>
<table>{rows}</table>
{sections}
</body></html>
"""


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write index.html, the PNGs and report.json into `out_dir`; returns the index.html path.
    Each file is replaced atomically, so a reader (the API) never sees half a report file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = plot_pngs(report["sections"])
    for name in PLOTS:  # a plot an earlier report in this dir had, and this one has not, must go
        if name in pngs:
            atomic_write_bytes(out_dir / f"{name}.png", pngs[name])
        else:
            (out_dir / f"{name}.png").unlink(missing_ok=True)
    report = {**report, "plots": {name: f"{name}.png" for name in pngs}}
    atomic_write_bytes(out_dir / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False).encode())
    index = out_dir / INDEX
    atomic_write_bytes(index, render_html(report, pngs).encode())  # last: it marks the report complete
    return index
