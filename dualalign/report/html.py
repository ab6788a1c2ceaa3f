"""The run's report as one static HTML page: no script, no server, no file outside the run.

The page links to files of the output folder by relative paths (overviews, crops, GeoJSON,
CSV), so the folder can be moved or zipped and the page still opens from disk.
"""

import html
import os
from typing import Sequence

from ..utils.atomic import atomic_write_text
from ..utils.visualize import class_colour

__all__ = ["render_report", "write_report"]

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td.name, th.name { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #000;
  vertical-align: middle; margin-right: 0.3em; }
section.slide { border-top: 2px solid #888; margin-top: 2em; padding-top: 0.5em; }
img.overview { max-width: 100%; width: 900px; border: 1px solid #aaa; }
.gallery { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 1em; }
figure { margin: 0; text-align: center; font-size: 0.85em; }
figure img { height: 128px; width: auto; border: 1px solid #aaa; image-rendering: pixelated; }
.note { color: #555; font-size: 0.9em; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _swatch(class_id: int) -> str:
    r, g, b = class_colour(class_id)
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def _format_triage(value) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.3f}"


def render_report(run: dict, class_names: Sequence[str], slides: Sequence[dict]) -> str:
    """The report page.

    Args:
        run (dict): ``title``, ``created`` (date text), ``config_file``, ``weights``,
            ``score_thresh``, ``triage`` (the rule in words), ``links`` (list of
            ``(label, relative href)``) and ``errors`` (list of ``{"slide", "error"}``).
        class_names (list[str]): names by class id (table columns, gallery order).
        slides (list[dict]): per input: ``name``, ``slide`` (path), ``kind``, ``width``,
            ``height``, ``counts`` (name -> int), ``total``, ``triage``, ``overlay`` and
            ``geojson`` (relative hrefs or None), ``gallery`` (class name -> list of
            ``{"src", "score"}``, best first).

    Returns:
        str: the HTML document; slides are listed by decreasing triage score.
    """
    order = sorted(range(len(slides)), key=lambda i: -float(slides[i]["triage"]))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',  # no favicon request from a file:// page
        f"<title>{_e(run['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(run['title'])}</h1>",
        '<p class="note">',
        f"Created {_e(run['created'])}. Config <code>{_e(run['config_file'])}</code>, weights "
        f"<code>{_e(run['weights'])}</code>; detections with score &gt;= "
        f"{_e(run['score_thresh'])}.<br>",
        f"Triage score: {_e(run['triage'])}. Slides are sorted by it, highest first.",
        "</p>",
    ]
    if run.get("links"):
        links = " &middot; ".join(f'<a href="{_e(h)}">{_e(label)}</a>' for label, h in run["links"])
        out.append(f"<p>Files: {links}</p>")
    out.append(_summary_table(class_names, slides, order))
    if run.get("errors"):
        out.append("<h2>Inputs that failed</h2><ul>")
        out += [f"<li><code>{_e(e['slide'])}</code>: {_e(e['error'])}</li>" for e in run["errors"]]
        out.append("</ul>")
    for k, i in enumerate(order):
        out.append(_slide_section(f"s{k}", class_names, slides[i]))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _summary_table(class_names, slides, order) -> str:
    head = "".join(f"<th>{_swatch(c)}{_e(n)}</th>" for c, n in enumerate(class_names))
    rows = [
        '<table><tr><th class="name">slide</th><th>triage</th>'
        f"{head}<th>total</th><th>size (px)</th><th>files</th></tr>"
    ]
    for k, i in enumerate(order):
        s = slides[i]
        cells = "".join(f"<td>{s['counts'].get(n, 0)}</td>" for n in class_names)
        files = " ".join(
            f'<a href="{_e(s[key])}">{label}</a>'
            for key, label in (("geojson", "GeoJSON"), ("overlay", "overview"))
            if s.get(key)
        )
        rows.append(
            f'<tr><td class="name"><a href="#s{k}">{_e(s["name"])}</a></td>'
            f"<td>{_format_triage(s['triage'])}</td>{cells}<td>{s['total']}</td>"
            f"<td>{s['width']} x {s['height']}</td><td>{files}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _slide_section(anchor: str, class_names, s: dict) -> str:
    out = [
        f'<section class="slide" id="{anchor}">',
        f"<h2>{_e(s['name'])}</h2>",
        f'<p class="note"><code>{_e(s["slide"])}</code> ({_e(s["kind"])}, {s["width"]} x '
        f"{s['height']} px): {s['total']} detections, triage score "
        f"{_format_triage(s['triage'])}.</p>",
    ]
    if s.get("overlay"):
        alt = f"overview of {os.path.basename(str(s['slide']))}"
        out.append(
            f'<a href="{_e(s["overlay"])}"><img class="overview" src="{_e(s["overlay"])}" '
            f'alt="{_e(alt)}"></a>'
        )
    for c, name in enumerate(class_names):
        entries = (s.get("gallery") or {}).get(name) or []
        count = s["counts"].get(name, 0)
        shown = f"top {len(entries)} of {count}" if entries else "no detection"
        out.append(f"<h3>{_swatch(c)}{_e(name)} <small>({shown})</small></h3>")
        if entries:
            out.append('<div class="gallery">')
            out += [
                f'<figure><img src="{_e(e["src"])}" alt="{_e(name)} {e["score"]:.3f}">'
                f"<figcaption>{e['score']:.3f}</figcaption></figure>"
                for e in entries
            ]
            out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def write_report(path: str, run: dict, class_names: Sequence[str], slides: Sequence[dict]):
    """Write ``render_report(run, class_names, slides)`` to ``path`` atomically."""
    atomic_write_text(path, render_report(run, class_names, slides))
