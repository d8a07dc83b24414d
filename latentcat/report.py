"""The catalogue report: one self-contained HTML file.

Everything is inside the file: images as base64 ``data:`` URIs, the style sheet inline, no
scripts and no links to anything on the network, so the report opens from disk, by e-mail or
on an offline machine exactly as it was written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from latentcat import __version__
from latentcat.atomic import write_file
from latentcat.errors import InputError
from latentcat.plots.catalog_figures import plot_catalog_map
from latentcat.plots.figure import figure_png
from latentcat.plots.rows import read_feature_rows
from latentcat.plots.similar import plot_similar

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THUMBNAIL_KEY = "thumbnail"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1150px; margin: 1.5em auto; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2166ac; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2166ac; }
table { border-collapse: collapse; font-size: .88em; margin: .6em 0; }
th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }
th { background: #f0f4f8; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { width: 16em; }
img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
img.thumb { width: 100%; max-width: 1100px; }
tr.below td { border-bottom: 2px solid #bbb; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.pair > div { flex: 1 1 420px; }
p.note { color: #666; font-size: .85em; }
"""


def _png_bytes(image, what: str) -> bytes:
    """PNG bytes from bytes, a path to a PNG file or a matplotlib Figure."""
    if isinstance(image, Figure):
        return figure_png(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"{path}: cannot read the {what} image: {err.strerror}") from err
        if not data.startswith(PNG_SIGNATURE):
            raise InputError(f"{path}: the {what} image is not a PNG file")
        return data
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data.startswith(PNG_SIGNATURE):
            raise InputError(f"report: the {what} image is not PNG data")
        return data
    raise InputError(f"report: the {what} image must be PNG bytes, a PNG path or a Figure, got {type(image).__name__}")


def _img(image, what: str, css_class: str = "") -> str:
    """An <img> element with the PNG embedded as a data URI."""
    encoded = base64.b64encode(_png_bytes(image, what)).decode("ascii")
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} alt="{html.escape(what)}" src="data:image/png;base64,{encoded}">'


def _records(rows, what: str) -> list[dict]:
    """Rows given as a pyarrow Table or a sequence of mappings -> list of dicts."""
    if rows is None:
        return []
    if isinstance(rows, (pa.Table, pa.RecordBatch)):
        return rows.to_pylist()
    if isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
        return [dict(r) for r in rows]
    raise InputError(f"report: {what} must be a pyarrow Table or a sequence of mappings, got {type(rows).__name__}")


def _cell(value) -> str:
    """A table cell: numbers right-aligned (floats to 4 significant digits, ids in full)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return '<td class="num">&ndash;</td>'
    if isinstance(value, (bool, np.bool_)):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, np.integer)):
        return f'<td class="num">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        return f'<td class="num">{float(value):.4g}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(records: list[dict], css_class: str = "", below: dict[int, str] | None = None) -> str:
    """An HTML table of records; ``below[i]`` is raw HTML shown full width under row i."""
    if not records:
        return '<p class="note">(none)</p>'
    columns = [c for c in records[0] if c != THUMBNAIL_KEY]
    for rec in records[1:]:
        columns += [c for c in rec if c not in columns and c != THUMBNAIL_KEY]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for i, rec in enumerate(records):
        body.append(f"<tr>{''.join(_cell(rec.get(c)) for c in columns)}</tr>")
        if below and i in below:
            body.append(f'<tr class="below"><td colspan="{len(columns)}">{below[i]}</td></tr>')
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report(out_html: Path, summary: Mapping, map_png, classifier_table=None, confusion_png=None,
                 outliers=None, title: str = "latentcat catalogue report",
                 figures: Mapping[str, object] | None = None) -> Path:
    """Write the catalogue report as one self-contained HTML file.

    Parameters
    ----------
    out_html : Path
        The file to write (parent folders are created; the file is replaced atomically).
    summary : mapping
        Headline facts shown as a two-column table (e.g. sources, classes, versions, seed).
    map_png : bytes, path or Figure
        The latent map (e.g. from :func:`latentcat.plots.plot_map`).
    classifier_table : pyarrow.Table or sequence of mappings, optional
        Per-class classifier scores (e.g. class, support, precision, recall, F1).
    confusion_png : bytes, path or Figure, optional
        The confusion matrix (e.g. from :func:`latentcat.plots.plot_confusion`).
    outliers : pyarrow.Table or sequence of mappings, optional
        The top-ranked outliers, one row each; a ``"thumbnail"`` field (PNG bytes, path or
        Figure, e.g. :func:`latentcat.plots.plot_similar` of the source alone) is shown
        full width under the row's other fields.
    title : str
        The page title and heading.
    figures : mapping of str to image, optional
        Further figures (title -> PNG), each in its own section at the end.

    Returns
    -------
    Path
        ``out_html``.

    Raises
    ------
    InputError
        An image that is not PNG data or cannot be read, or rows of the wrong type.
    """
    out_html = Path(out_html)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        '<table class="summary"><tbody>'
        + "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in dict(summary).items())
        + "</tbody></table>",
        "<h2>Latent map</h2>",
        _img(map_png, "latent map"),
    ]
    if classifier_table is not None or confusion_png is not None:
        parts.append("<h2>Classifier</h2><div class=\"pair\">")
        if classifier_table is not None:
            parts.append(f"<div>{_table(_records(classifier_table, 'classifier_table'))}</div>")
        if confusion_png is not None:
            parts.append(f"<div>{_img(confusion_png, 'confusion matrix')}</div>")
        parts.append("</div>")
    if outliers is not None:
        records = _records(outliers, "outliers")
        thumbs = {i: _img(r[THUMBNAIL_KEY], f"outlier {r.get('source_id', i + 1)}", "thumb")
                  for i, r in enumerate(records) if r.get(THUMBNAIL_KEY) is not None}
        parts.append("<h2>Outliers</h2>")
        parts.append(_table(records, below=thumbs))
    for name, image in (figures or {}).items():
        parts.append(f"<h2>{html.escape(str(name))}</h2>{_img(image, str(name))}")
    parts.append(f'<p class="note">Written by latentcat {html.escape(__version__)}.</p></body></html>')

    out_html.parent.mkdir(parents=True, exist_ok=True)
    write_file(out_html, lambda tmp: tmp.write_text("\n".join(parts), encoding="utf-8"))
    return out_html


def write_catalog_report(cat, out_html: Path, top_outliers: int = 8) -> Path:
    """One self-contained HTML page: summary, map, classifier scores and the top outliers."""
    info = cat.info()
    build = info.get("build_info", {})
    summary = {
        "catalogue": str(cat.path),
        **{f"{k} rows": v for k, v in info.get("counts", {}).items()},
        "built": build.get("built_at", "?"),
        "seed": build.get("seed", "?"),
        "latentcat": build.get("versions", {}).get("latentcat", "?"),
    }
    map_png = figure_png(plot_catalog_map(cat)) if cat.map().num_rows else None
    # cross-validated scores of the build's classifier, and of the same classifier on the
    # classic light-curve numbers alone: what the latents add
    fitted = build.get("analyse", {}).get("classifier", {})
    classifier = fitted.get("per_class", [])
    if fitted.get("macro_f1") is not None:
        summary["classifier macro F1 (cross-validated)"] = round(fitted["macro_f1"], 3)
    if fitted.get("classic_numbers"):
        c = fitted["classic_numbers"]
        summary[f"on the {c['n']} labelled sources with light curves"] = (
            f"{c['macro_f1']:.3f}; the same classifier on the classic light-curve numbers alone {c['baseline_macro_f1']:.3f}")
    outliers = cat.sql(
        "SELECT o.rank, o.source_id, round(o.score, 4) AS score, l.best_class_name, s.phot_g_mean_mag "
        "FROM outlier_scores o LEFT JOIN labels l USING (source_id) LEFT JOIN sources s USING (source_id) "
        "WHERE o.method = 'isolation_forest:space' ORDER BY o.rank LIMIT $n", {"n": top_outliers}).to_pylist()
    if outliers:
        rows = read_feature_rows(cat.path / "features", [r["source_id"] for r in outliers])
        for i, r in enumerate(outliers):
            r["thumbnail"] = figure_png(plot_similar(rows.slice(i, 1), [], meta={r["source_id"]: {
                "class": r["best_class_name"], "g_mag": r["phot_g_mean_mag"]}}))
    confusion = cat.path / "figures" / "confusion.png"
    return write_report(out_html, summary, map_png, classifier_table=classifier or None,
                        confusion_png=confusion if confusion.exists() else None, outliers=outliers or None)
