"""The explorer: pages and images answered from one read-only Catalog.

`Explorer.respond` turns a request (method, path with query, headers, body) into a `Response`;
`latentcat.serve.make_server` puts it behind the standard library's ThreadingHTTPServer.

Routes (all GET unless said; the URL holds the whole state, so a view can be shared):

    /                       the map; with ?source_id=ID the source page (curves, metadata, neighbours)
    /map.png                a map view (view=x0,x1,y0,y1, colour=..., source_id marks a source)
    /click                  a click on the map (at.x, at.y): open the nearest source, zoom or centre there
    /plot/source.png        a source's fold, XP spectrum and dm-dt map (latentcat.plots.plot_similar)
    /plot/thumb.png         the same three, small, for tables (drawn with numpy; a page draws its own first)
    /plot/lightcurve.png    its raw G epochs and their fold at the period (needs a staging folder)
    /upload                 the light-curve form; POST: the neighbours of the uploaded file
    /outliers               the top outliers of a ranking, with thumbnails and answer buttons
    /discover               the discovery session: the next source to judge, the answers so far;
                            POST: an answer (source_id, answer=yes/no/skip), then back to the page
    /discover.csv           the answers as a CSV file (source_id,interesting); with ``answers`` they are
                            also saved to that file after every answer, and resumed from it
    /selection              the sources in a box of the map (box=x0,x1,y0,y1 in map units), paged,
                            with downloads and "more like these"
    /selection.csv, .parquet  their source_meta rows (at most `MAX_SELECTION_ROWS`)
    /like                   "more like these": `Catalog.like` of the selection (box=...), with its self-check
    /api/nearest            JSON: the source nearest a pixel of a map view (view, px, py), for the
                            map script's hover names
    /static/map.js          the map script: wheel to zoom, drag to pan, shift-drag to select a box,
                            hover to name a source (the pages work without it)
    /classes                the classifier's classes; ?class=C&model=M: its sources by probability
    /latent                 latent traversal: a source's codes, changed by hand, decoded by the VAEs

Safety: the Catalog is opened read-only through `latentcat.open` (no file or network access for
its SQL); the only text a page passes to it is the neighbour filter, given to
``Catalog.similar(where=...)``, which parses it as one expression; every other parameter is a
number or one of a fixed list (a source_id goes into SQL as an integer literal, as in the
Catalog's own queries, once it has parsed as a whole number); k is at most `latentcat.limits.MAX_PAGE_ROWS`; uploads at most ``max_upload`` bytes; a bad
input is one message on the page, and any other failure a one-line page (the traceback goes to
the server's log only).
"""

from __future__ import annotations

import math
import re
import secrets
import sys
import tempfile
import threading
import traceback
from collections import OrderedDict
from dataclasses import replace
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

import latentcat
from latentcat.errors import LatentcatError, one_line
from latentcat.layout import FEATURES_DIR
from latentcat.limits import MAX_LIKE_MEMBERS, MAX_PAGE_ROWS, MAX_SELECTION_ROWS, MAX_UPLOAD_BYTES, SERVE_TIMEOUT
from latentcat.serve import pages
from latentcat.serve.figures import THUMB_HEIGHT, THUMB_WIDTH, thumbnail_png
from latentcat.serve.mapview import HEIGHT, NAMED_MAX, WIDTH, MapData, View
from latentcat.serve.pages import Raw, esc, fmt, href
from latentcat.serve.state import (CLICKS, MAX_WHERE, MODALITIES, TIME_FORMATS, PageError, Response, State, choice,
                                   cookie, parse_k, parse_page, parse_source_id, parse_state, set_cookie)


MAX_QUERY = 4096
"""Longest query string accepted (characters)."""

CLICK_RADIUS = 12
"""Pixels around a click in which the nearest source is looked for."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# the feature columns (docs/schemas.md) a thumbnail and the source figure (latentcat.plots.plot_similar) draw
THUMB_COLUMNS = ("fold_phase", "fold_mag", "xp_flux", "dmdt", "lc_reason", "xp_reason")
FIGURE_COLUMNS = (*THUMB_COLUMNS, "fold_err", "xp_flux_error", "xp_scale", "period", "g_mean")
NEIGHBOUR_COLUMNS = (("rank", "rank"), ("link", "source_id"), ("distance", "distance"),
                     ("best_class_name", "DR3 class"), ("phot_g_mean_mag", "G"), ("bp_rp", "BP-RP"),
                     ("period", "period (d)"), ("g_amplitude", "amplitude"), ("n_obs", "G epochs"),
                     ("thumb", "fold | XP | dm-dt"))

SESSION_COOKIE = "latentcat_session"
"""The cookie that keys a browser's discovery session."""

MAX_SESSIONS = 16
"""Discovery sessions an explorer keeps in memory (the least recently used is dropped first);
each holds two floats per source beside the shared vectors."""

MAP_SCRIPT = (Path(__file__).parent / "static" / "map.js").read_bytes()
"""The map's script, served at /static/map.js."""

SELECTION_PAGE = 50
"""Sources per page of a map selection."""

ANSWER_WORDS = {True: "interesting", False: "not interesting", None: "skipped"}
"""How a discovery answer is shown."""


class _LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def has(self, key) -> bool:
        with self.lock:
            return key in self.data

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value


class Explorer:
    """The explorer of one catalogue, opened read-only.

    Parameters
    ----------
    catalog : path
        The catalogue folder.
    stage : path, optional
        A staging folder written by `latentcat ingest` (its light_curves.parquet) for the raw
        G epochs, which the catalogue itself does not keep.
    max_upload : int
        Largest uploaded file, in bytes.
    timeout : float
        Seconds a neighbour filter (or any query a page runs) may take before it is stopped
        and the page says so.
    """

    def __init__(self, catalog, stage=None, max_upload: int = MAX_UPLOAD_BYTES, timeout: float = SERVE_TIMEOUT,
                 answers=None):
        self.cat = latentcat.open(catalog, timeout=timeout, threads=1)  # a slow request holds one core, not all
        self.answers_path = Path(answers) if answers is not None else None
        self.name = self.cat.path.name
        self.map = MapData(self.cat)
        self.max_upload = int(max_upload)
        self.light_curves = None
        if stage is not None:
            path = Path(stage)
            path = path / "light_curves.parquet" if path.is_dir() else path
            if not path.is_file():
                raise LatentcatError(f"{stage}: no light_curves.parquet (a staging folder written by `latentcat ingest`)")
            self.light_curves = path
        self.counts = self.cat.info()["counts"]  # a snapshot, as the Catalog is
        shards = sorted((self.cat.path / FEATURES_DIR).glob("features-*.parquet"))
        self.has_features = bool(shards)
        self.features = None
        if shards:
            import pyarrow.dataset as ds

            self.features = ds.dataset([str(p) for p in shards], format="parquet")
        self.images = _LRU(1024)
        self._neighbours = _LRU(256)
        self.draw_lock = threading.Lock()     # matplotlib's rc_context is process-wide
        self._encode_lock = threading.Lock()   # one upload encodes at a time
        self.decoder_lock = threading.Lock()
        self.decoders = None                   # the trained VAEs, loaded on the first latent traversal
        self.latent_ranges = None              # per block: 1st percentile, median, 99th percentile
        self.discovery_lock = threading.Lock()
        self.discovery = None                  # the shared session (--answers), or the template of the others
        self.sessions = OrderedDict()          # browser's session key -> its own discovery session
        if self.answers_path is not None:      # a bad answers file stops the start, in one line
            try:
                self._session()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        self.cat.close()

    # ------------------------------------------------------------------ dispatch

    def respond(self, method: str, target: str, headers=None, body: bytes = b"") -> Response:
        """The answer to one request; never raises."""
        try:
            parts = urlsplit(target)
            if len(parts.query) > MAX_QUERY:
                raise PageError(f"the URL's query is {len(parts.query)} characters long; at most {MAX_QUERY}", 414)
            params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            route = {
                ("GET", "/"): self.page_main,
                ("GET", "/map.png"): self.map_png,
                ("GET", "/click"): self.click,
                ("GET", "/plot/source.png"): self.source_png,
                ("GET", "/plot/thumb.png"): self.thumb_png,
                ("GET", "/plot/lightcurve.png"): self.light_curve_png,
                ("GET", "/upload"): self.page_upload,
                ("POST", "/upload"): lambda p: self.upload(p, headers or {}, body),
                ("GET", "/outliers"): lambda p: self.page_outliers(p, headers or {}),
                ("GET", "/discover"): lambda p: self.page_discover(p, headers or {}),
                ("POST", "/discover"): lambda p: self.answer(headers or {}, body),
                ("GET", "/discover.csv"): lambda p: self.answers_csv(p, headers or {}),
                ("GET", "/selection"): self.page_selection,
                ("GET", "/selection.csv"): lambda p: self.selection_file(p, "csv"),
                ("GET", "/selection.parquet"): lambda p: self.selection_file(p, "parquet"),
                ("GET", "/like"): self.page_like,
                ("GET", "/api/nearest"): self.api_nearest,
                ("GET", "/static/map.js"): lambda p: Response(200, "text/javascript; charset=utf-8", MAP_SCRIPT,
                                                                {"Cache-Control": "private, max-age=600"}),
                ("GET", "/classes"): self.page_classes,
                ("GET", "/latent"): self.page_latent,
                ("GET", "/latent.png"): self.latent_png,
            }.get((method, parts.path))
            if route is None:
                if parts.path in ("/", "/map.png", "/click", "/upload", "/outliers", "/classes", "/latent",
                                  "/discover", "/discover.csv"):
                    raise PageError(f"{method} is not accepted at {parts.path}", 405)
                raise PageError(f"no page at {parts.path}", 404)
            return route(params)
        except LatentcatError as err:
            status = err.status if isinstance(err, PageError) else 400
            return self.message_page(one_line(err), status)
        except Exception as err:  # noqa: BLE001 - a page, never a traceback
            print(f"latentcat serve: {method} {target[:200]}: internal error", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return self.message_page(f"internal error ({type(err).__name__}); the server's log has the details", 500)

    def message_page(self, message: str, status: int) -> Response:
        """A page that shows one message (the answer to a bad request on any route)."""
        return Response(status, "text/html; charset=utf-8",
                        self._page("latentcat", "", message, State()).encode())

    def _page(self, title: str, body: str, message: str | None, state: State) -> str:
        fields = pages.hidden(state.params(), skip=("source_id",))
        search = str(state.source_id) if state.source_id is not None else ""
        return pages.layout(title, body, self.name, message, search, fields)

    def html(self, title: str, body: str, message: str | None, state: State, status: int = 200) -> Response:
        return Response(status, "text/html; charset=utf-8", self._page(title, body, message, state).encode())

    @staticmethod
    def _png(data: bytes) -> Response:
        return Response(200, "image/png", data, {"Cache-Control": "private, max-age=600"})

    # ------------------------------------------------------------------ the map

    def _view(self, state: State) -> View:
        return (state.view or self.map.full).fitted(WIDTH, HEIGHT)

    def _neighbour_table(self, state: State):
        """Catalog.similar for the state's source, k, modality and filter (cached)."""
        key = (state.source_id, state.k, state.modality, state.where)
        return self._neighbours.get(key, lambda: self.cat.similar(
            state.source_id, k=state.k, modality=state.modality, where=state.where or None))

    def map_png(self, params) -> Response:
        state, problem = parse_state(params, self.map.options)
        if problem:
            raise PageError(problem)
        rings = ()
        if state.source_id is not None:
            try:
                rings = tuple(self._neighbour_table(state).column("source_id").to_pylist())
            except LatentcatError:
                rings = ()
        view = self._view(state)
        key = ("map", view, state.colour, state.source_id, rings)
        return self._png(self.images.get(key, lambda: self.map.render(view, state.colour, state.source_id, rings)))

    def map_section(self, state: State) -> str:
        """The map view with its controls, colour choice and legend."""
        if self.map.n == 0:
            return '<p class="note">This catalogue has no 2-D map (build it with [analyse] map = true).</p>'
        view = self._view(state)
        link = lambda v: href("/", state.params(view=v))  # noqa: E731
        controls = [
            ("zoom in", link(view.zoomed(2))), ("zoom out", link(view.zoomed(0.5))),
            ("left", link(view.panned(-0.4, 0))), ("right", link(view.panned(0.4, 0))),
            ("up", link(view.panned(0, 0.4))), ("down", link(view.panned(0, -0.4))),
            ("whole map", href("/", {k: v for k, v in state.params().items() if k != "view"})),
        ]
        if state.source_id is not None and self.map.position(state.source_id) is not None:
            pos = self.map.position(state.source_id)
            span = view if state.view else self.map.full.zoomed(4)
            centred = View(pos[0] - (span.x1 - span.x0) / 2, pos[0] + (span.x1 - span.x0) / 2,
                           pos[1] - (span.y1 - span.y0) / 2, pos[1] + (span.y1 - span.y0) / 2)
            controls.append(("centre on this source", link(centred)))
        buttons = "".join(f'<a href="{url}">{esc(label)}</a>' for label, url in controls)
        colouring = self.map.colouring(state.colour)
        if colouring.categorical:
            legend = "".join(f'<div><span class="swatch" style="background:{esc(rgb)}"></span>{esc(name)} '
                             f'({n:,})</div>' for name, rgb, n in colouring.legend())
        elif colouring.values is None:
            legend = (f'<div>few <span class="gradient" style="background:linear-gradient(to right,'
                      f'{",".join(colouring.gradient())})"></span> many sources per pixel</div>')
        else:
            legend = (f'<div>{esc(colouring.label)}: {esc(f"{colouring.lo:.4g}")} '
                      f'<span class="gradient" style="background:linear-gradient(to right,'
                      f'{",".join(colouring.gradient())})"></span> {esc(f"{colouring.hi:.4g}")}'
                      f' (mean per pixel; grey: no value)</div>')
        options = [(k, label) for k, (label, _, _) in self.map.options.items()]
        colour_form = (f'<form method="get" action="/" class="inline">{pages.hidden(state.params(), skip=("colour",))}'
                       f'<label>colour by {pages.select("colour", options, state.colour)}</label>'
                       '<button type="submit">Apply</button></form>')
        radios = "".join(f'<label><input type="radio" name="click" value="{esc(v)}"'
                         f'{" checked" if v == state.click else ""}> {esc(label)}</label> ' for v, label in CLICKS)
        image = href("/map.png", state.params(view=view))
        in_view = self.map.in_view(view)
        # few enough points to name: each a link over its pixel, its name the tooltip (no script)
        points = "".join(
            f'<a class="point" href="{href("/", state.params(source_id=sid, view=view))}" '
            f'title="{esc(f"source_id {sid}" + (f" · {label}" if label else ""))}" '
            f'style="left:{px - 4:.0f}px;top:{py - 4:.0f}px"></a>'
            for sid, px, py, label in self.map.named(view, in_view, state.colour))
        naming = (" Hover a point for its name; a click on it opens it." if points else
                  f" Zoom in to {NAMED_MAX} sources or fewer to have the points under the cursor named.")
        naming += (" With the page's script: the wheel zooms, a drag pans, a shift-drag selects the sources in a "
                   "box (then \"more like these\"), and hovering names the nearest source.")
        return (
            f'<div class="columns map"><div><div class="controls">{buttons}</div>'
            f'<form method="get" action="/click" id="mapform">{pages.hidden(state.params(view=view), skip=("click",))}'
            f'<div class="mapbox" id="mapbox" data-view="{esc(view.param())}" data-colour="{esc(state.colour)}">'
            f'<input class="map" type="image" name="at" src="{image}" width="{WIDTH}" '
            f'height="{HEIGHT}" alt="the catalogue map: click a point">{points}</div>'
            f'<div>a click on the map: {radios}</div></form>'
            f'<p class="note">{in_view.size:,} of {self.map.n:,} sources in this view; x {view.x0:.3g} to {view.x1:.3g}, '
            f'y {view.y0:.3g} to {view.y1:.3g}.{naming}'
            + (" The cross marks the source, the red rings its neighbours." if state.source_id is not None else "")
            + f'</p></div><div>{colour_form}<div class="legend">{legend}</div></div></div>'
        )

    def click(self, params) -> Response:
        state, problem = parse_state(params, self.map.options)
        if problem:
            raise PageError(problem)
        try:
            px, py = float(params.get("at.x", "")), float(params.get("at.y", ""))
        except ValueError:
            raise PageError("a map click needs its position (at.x, at.y) in pixels") from None
        if not (0 <= px <= WIDTH and 0 <= py <= HEIGHT):
            raise PageError(f"the click ({px:g}, {py:g}) is outside the {WIDTH} x {HEIGHT} map")
        view = self._view(state)
        if state.click == "open":
            sid = self.map.nearest(view, px, py, CLICK_RADIUS)
            if sid is None:
                return self.main(state, f"no source within {CLICK_RADIUS} pixels of the click: click on a point, "
                                        "or choose 'zoom in here'")
            target = state.params(source_id=sid, view=view)
        else:
            centre = view.data_at(px, py)
            target = state.params(view=view.zoomed(3 if state.click == "zoom" else 1, centre))
        return Response(303, "text/plain; charset=utf-8", b"", {"Location": pages.url("/", target)})

    # ------------------------------------------------------------------ main and source pages

    def page_main(self, params) -> Response:
        state, problem = parse_state(params, self.map.options)
        response = self.main(state, problem)
        if problem and response.status == 200:
            response.status = 400
        return response

    def main(self, state: State, message: str | None) -> Response:
        if state.source_id is None:
            return self.html("map", self.home_body(state), message, state)
        return self.source_page(state, message)

    def home_body(self, state: State) -> str:
        counts = self.counts
        return (f"<h1>{esc(self.name)}: {counts.get('sources', 0):,} sources</h1>"
                '<p class="note">Click a point to open the source nearest the click (or choose to zoom in there), '
                "type a source_id above, upload your own light curve, or browse the outliers and classes.</p>"
                + self.map_section(state))

    def _exists(self, source_id: int) -> bool:
        rows = self.cat.sql(f"SELECT count(*) AS n FROM sources WHERE source_id = {int(source_id)}")
        return bool(rows.column("n")[0].as_py())

    def source_page(self, state: State, message: str | None) -> Response:
        sid = state.source_id
        if not self._exists(sid):
            missing = f"source_id {sid} is not in this catalogue"
            return self.html("unknown source", self.home_body(replace(state, source_id=None)),
                              message or missing, replace(state, source_id=None), 404)
        meta = self.cat.sql(f"SELECT * FROM source_meta WHERE source_id = {sid}").to_pylist()
        if not meta:
            meta = self.cat.sql(f"SELECT * FROM sources WHERE source_id = {sid}").to_pylist()
        meta = meta[0]
        predictions = self.cat.sql("SELECT class, probability, model_id FROM predictions "
                                   f"WHERE source_id = {sid} ORDER BY model_id").to_pylist()
        ranks = self.cat.sql(f"SELECT method, score, rank FROM outlier_scores WHERE source_id = {sid} "
                             "ORDER BY method").to_pylist()
        neighbours_html, problem = self.neighbours_section(state)
        message = message or problem
        label = meta.get("best_class_name") or (predictions[0]["class"] + " (predicted)" if predictions else "unlabelled")
        figures = [f'<img class="figure" id="source-figure" src="{href("/plot/source.png", {"source_id": sid})}" '
                   f'alt="fold, XP spectrum and dm-dt map of {sid}">' if self.has_features else
                   '<p class="note">This catalogue folder has no features/ shards: no fold, spectrum or dm-dt map '
                   "to draw.</p>"]
        if self.light_curves is not None:
            figures.insert(0, f'<img class="figure" id="lightcurve" src="{href("/plot/lightcurve.png", {"source_id": sid})}" '
                              f'alt="raw G light curve of {sid}">')
        else:
            figures.append('<p class="note">The catalogue keeps each source\'s fold, dm-dt map and spectrum, not its raw '
                           "epochs: start the explorer with --stage STAGE_DIR (a `latentcat ingest` folder) to see them.</p>")
        meta_rows = "".join(f"<tr><th>{esc(k)}</th>{pages.cell(v)}</tr>" for k, v in meta.items())
        extra = "".join(f"<tr><th>predicted ({esc(p['model_id'])})</th><td>{esc(p['class'])}, probability "
                        f"{fmt(p['probability'])}</td></tr>" for p in predictions)
        extra += "".join(f"<tr><th>outlier rank ({esc(r['method'])})</th><td>{fmt(r['rank'])} "
                         f"(score {fmt(r['score'])})</td></tr>" for r in ranks)
        latent = href("/latent", {"source_id": sid})
        body = (
            f'<h1>source_id <span id="source-id">{sid}</span></h1>'
            f"<p>{esc(label)}, G = {fmt(meta.get('phot_g_mean_mag'))}, period {fmt(meta.get('period'))} d "
            f'&middot; <a href="{latent}">traverse its latent codes</a></p>'
            + "".join(figures)
            + neighbours_html
            + "<h2>On the map</h2>" + self.map_section(state)
            + f'<h2>Metadata</h2><table class="meta" id="metadata"><tbody>{meta_rows}{extra}</tbody></table>'
        )
        return self.html(f"source {sid}", body, message, state)

    def neighbours_section(self, state: State) -> tuple[str, str | None]:
        """The neighbour form and table; a failure (bad filter, no code) is the message instead."""
        form = (
            '<form method="get" action="/" class="inline" id="neighbour-form">'
            f'{pages.hidden(state.params(), skip=("k", "modality", "where"))}'
            f'<label>k <input type="number" name="k" min="1" max="{MAX_PAGE_ROWS}" value="{state.k}"></label>'
            f'<label>compare {pages.select("modality", MODALITIES, state.modality)}</label>'
            f'<label>filter <input type="text" name="where" size="40" maxlength="{MAX_WHERE}" '
            f'value="{esc(state.where)}" placeholder="phot_g_mean_mag &lt; 16"></label>'
            '<button type="submit">Find neighbours</button></form>'
            '<p class="note">The filter is one SQL condition on the source_meta columns (e.g. '
            "best_class_name = 'RR' AND period &gt; 0.3), applied before the top-k cut.</p>"
        )
        try:
            table = self._neighbour_table(state)
        except LatentcatError as err:
            return f"<h2>Neighbours</h2>{form}", one_line(err)
        return f"<h2>{table.num_rows} nearest neighbours</h2>{form}" + self.neighbour_rows(table, state), None

    def neighbour_rows(self, table, state: State) -> str:
        """The neighbours as a table: each id a link to its own page, with its thumbnail."""
        rows = []
        for r in table.to_pylist():
            sid = r["source_id"]
            r["link"] = Raw(f'<a class="neighbour" href="{href("/", state.params(source_id=sid))}">{sid}</a>')
            r["thumb"] = self.thumbnail(sid)
            rows.append(r)
        def attrs(row) -> str:
            return f' data-source-id="{int(row["source_id"])}"'

        return f'<div id="neighbours">{pages.table(NEIGHBOUR_COLUMNS, rows, attrs)}</div>'

    # ------------------------------------------------------------------ images of a source

    def thumbnail(self, sid: int) -> Raw:
        """A table cell's thumbnail of a source (its fold, XP and dm-dt), if the catalogue has features."""
        if not self.has_features:
            return Raw("&ndash;")
        return Raw(f'<img class="thumb" loading="lazy" alt="thumbnail of {int(sid)}" width="{THUMB_WIDTH}" '
                   f'height="{THUMB_HEIGHT}" src="{href("/plot/thumb.png", {"source_id": int(sid)})}">')

    def thumb_png(self, params) -> Response:
        sid = self._source_param(params)

        def draw() -> bytes:
            return thumbnail_png(self.feature_row(sid, THUMB_COLUMNS))

        return self._png(self.images.get(("thumb", sid), draw))

    def feature_row(self, sid: int, columns) -> dict:
        """One source's row of the feature shards, only ``columns``: a read touches the row
        group that can hold the source (a build writes shards sorted by source_id), and only
        the columns a figure draws."""
        if self.features is None:
            raise PageError("this catalogue folder has no features/ shards to draw from", 404)
        import pyarrow as pa
        import pyarrow.dataset as ds

        table = self.features.to_table(columns=["source_id", *columns],
                                       filter=ds.field("source_id") == pa.scalar(int(sid), pa.int64()))
        if table.num_rows == 0:
            raise PageError(f"source_id {sid} has no row in the feature shards", 404)
        return table.slice(0, 1).to_pylist()[0]

    def _source_param(self, params) -> int:
        if "source_id" not in params:
            raise PageError("give a source_id")
        sid = parse_source_id(params["source_id"])
        if not self._exists(sid):
            raise PageError(f"source_id {sid} is not in this catalogue", 404)
        return sid

    def source_png(self, params) -> Response:
        sid = self._source_param(params)
        return self._png(self.images.get(("source", sid), lambda: self._draw_source(sid)))

    def _draw_source(self, sid: int) -> bytes:
        from latentcat.plots import figure_png, plot_similar

        row = self.feature_row(sid, FIGURE_COLUMNS)
        meta = self.cat.sql("SELECT l.best_class_name, s.phot_g_mean_mag FROM sources s LEFT JOIN labels l "
                            f"USING (source_id) WHERE s.source_id = {int(sid)}").to_pylist()[0]
        with self.draw_lock:
            fig = plot_similar([row], [], meta={sid: {"class": meta["best_class_name"], "g_mag": meta["phot_g_mean_mag"]}})
            return figure_png(fig)

    def light_curve_png(self, params) -> Response:
        sid = self._source_param(params)
        if self.light_curves is None:
            raise PageError("no raw light curves: start the explorer with --stage STAGE_DIR", 404)
        return self._png(self.images.get(("lc", sid), lambda: self._draw_light_curve(sid)))

    def _draw_light_curve(self, sid: int) -> bytes:
        import pyarrow as pa
        import pyarrow.dataset as ds

        from latentcat.serve.figures import light_curve_png

        table = ds.dataset(str(self.light_curves), format="parquet").to_table(
            columns=["source_id", "g_time", "g_mag", "g_mag_err"], filter=ds.field("source_id") == pa.scalar(sid, pa.int64()))
        if table.num_rows == 0 or not table.column("g_time")[0].as_py():
            raise PageError(f"source_id {sid} has no G epochs in {self.light_curves}", 404)
        row = table.to_pylist()[0]
        period = self.cat.sql(f"SELECT period, period_reliable FROM features WHERE source_id = {sid}").to_pylist()
        p = period[0]["period"] if period and period[0]["period_reliable"] else None
        with self.draw_lock:
            return light_curve_png(row["g_time"], row["g_mag"], row["g_mag_err"], p, title=f"source_id {sid}")

    # ------------------------------------------------------------------ my light curve

    def upload_form(self, state: State) -> str:
        return (
            "<h1>My light curve</h1>"
            "<p>Upload a CSV with the columns <code>time,mag,mag_err</code> (Gaia G magnitudes) or a Gaia DataLink "
            "epoch-photometry / XP_CONTINUOUS file (VOTable, ECSV, CSV, FITS or a zip of them). It goes through the "
            "catalogue's own feature extraction and trained encoders, as <code>latentcat similar --from-file</code> does, "
            f"and its nearest catalogue sources are listed. At most {self.max_upload / 1024 / 1024:.3g} MiB.</p>"
            '<form method="post" action="/upload" enctype="multipart/form-data" id="upload-form">'
            '<fieldset><legend>file</legend><input type="file" name="file" required> '
            f'<label>times {pages.select("time_format", TIME_FORMATS, "gaia")}</label> '
            '<label>source_id in the file (DataLink with several) <input type="text" name="file_source_id" size="22"></label>'
            '<label>BP-RP colour (optional) <input type="text" name="bp_rp" size="6"></label></fieldset>'
            f'<fieldset><legend>neighbours</legend><label>k <input type="number" name="k" min="1" max="{MAX_PAGE_ROWS}" '
            f'value="{state.k}"></label> <label>compare {pages.select("modality", MODALITIES, state.modality)}</label> '
            f'<label>filter <input type="text" name="where" size="40" maxlength="{MAX_WHERE}" value="{esc(state.where)}">'
            "</label></fieldset>"
            '<button type="submit">Find similar sources</button></form>'
            '<p class="note">Times: gaia is BJD(TCB) - 2455197.5; bjd, jd and mjd are converted by offset only, '
            "with no barycentric correction: give barycentric times.</p>"
        )

    def page_upload(self, params) -> Response:
        state, problem = parse_state(params, self.map.options)
        return self.html("my light curve", self.upload_form(state), problem, state)

    def _form_fields(self, headers, body: bytes) -> dict:
        """The fields of a multipart/form-data body: name -> str, or (filename, bytes) for a file."""
        ctype = headers.get("Content-Type", "") if hasattr(headers, "get") else ""
        if not ctype.lower().startswith("multipart/form-data") or "boundary=" not in ctype:
            raise PageError("send the form as multipart/form-data (the upload form does)", 415)
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
        if not message.is_multipart():
            raise PageError("the upload is not a readable multipart form", 400)
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                fields[str(name)] = (str(filename), payload)
            else:
                fields[str(name)] = payload.decode("utf-8", "replace")
        return fields

    def upload(self, params, headers, body: bytes) -> Response:
        from latentcat.query.by_example import similar_to_file

        fields = self._form_fields(headers, body)
        form = {k: v for k, v in fields.items() if isinstance(v, str)}
        state, problem = parse_state({k: form[k] for k in ("k", "modality", "where") if k in form}, self.map.options)

        def again(message: str, status: int = 400) -> Response:
            return self.html("my light curve", self.upload_form(state), message, state, status)

        if problem:
            return again(problem)
        upload = fields.get("file")
        if not isinstance(upload, tuple) or not upload[1]:
            return again("choose a light-curve file to upload")
        filename, data = upload
        time_format = form.get("time_format", "gaia")
        try:
            choice("time format", time_format, TIME_FORMATS)
            bp_rp = float(form["bp_rp"]) if form.get("bp_rp", "").strip() else None
            if bp_rp is not None and not math.isfinite(bp_rp):
                raise ValueError
        except PageError as err:
            return again(str(err))
        except ValueError:
            return again(f"BP-RP {form.get('bp_rp', '')[:20]!r} is not a number (mag)")
        try:
            file_sid = parse_source_id(form["file_source_id"]) if form.get("file_source_id", "").strip() else None
        except PageError as err:
            return again(str(err))
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename.replace("\\", "/")).name).lstrip(".")[-80:] or "upload.csv"
        with tempfile.TemporaryDirectory(prefix="latentcat-serve-") as tmp:
            path = Path(tmp) / safe
            path.write_bytes(data)
            try:
                with self._encode_lock:
                    table, info = similar_to_file(self.cat, path, k=state.k, modality=state.modality,
                                                  where=state.where or None, time_format=time_format,
                                                  source_id=file_sid, bp_rp=bp_rp)
            except LatentcatError as err:
                return again(one_line(err).replace(str(path), filename[:80]))
        figure = ""
        if info["light_curve"] is not None:
            from latentcat.serve.figures import light_curve_png

            period = info.get("period") if info.get("period_reliable") else None
            with self.draw_lock:
                png = light_curve_png(*info["light_curve"], period=period, title=filename[:60])
            import base64

            figure = (f'<img class="figure" id="upload-figure" alt="the uploaded light curve" '
                      f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
        facts = {"file": filename[:120], "G epochs used": info.get("n_obs"), "clipped": info.get("n_clipped"),
                 "period (d)": info.get("period"), "period reliable": info.get("period_reliable"),
                 "period false-alarm probability": info.get("period_fap"), "amplitude (G, mag)": info.get("amplitude"),
                 "time span (d)": info.get("time_span"), "compared on": info.get("blocks")}
        notes = "".join(f"<li>{esc(str(n).replace(str(path), filename[:80]))}</li>" for n in info.get("notes", []))
        body = (
            f'<h1>Sources like {esc(filename[:120])}</h1>'
            f'<table class="meta" id="query-info"><tbody>'
            + "".join(f"<tr><th>{esc(k)}</th>{pages.cell(v)}</tr>" for k, v in facts.items())
            + f"</tbody></table><ul>{notes}</ul>{figure}"
            + f"<h2>{table.num_rows} nearest neighbours</h2>" + self.neighbour_rows(table, state)
            + '<h2>Another file</h2>' + self.upload_form(state)
        )
        return self.html("my light curve", body, None, state)

    # ------------------------------------------------------------------ outliers and classes

    def page_outliers(self, params, headers=None) -> Response:
        methods = self.cat.sql("SELECT DISTINCT method FROM outlier_scores ORDER BY method").column("method").to_pylist()
        state = State()
        if not methods:
            return self.html("outliers", "<h1>Outliers</h1><p class=\"note\">No outlier ranking in this catalogue "
                              "(latentcat outliers writes one).</p>", None, state)
        default = "isolation_forest:space" if "isolation_forest:space" in methods else methods[0]
        method = choice("ranking", params.get("method", default), methods)
        n = parse_k(params.get("n", "20"))
        rows = self.cat.sql(
            "SELECT o.rank, o.source_id, o.score, l.best_class_name, s.phot_g_mean_mag, f.period, f.g_amplitude "
            "FROM outlier_scores o LEFT JOIN labels l USING (source_id) LEFT JOIN sources s USING (source_id) "
            "LEFT JOIN features f USING (source_id) WHERE o.method = $m ORDER BY o.rank LIMIT $n",
            {"m": method, "n": n}).to_pylist()
        answers = self._answers(self.session_key(headers or {})[0])
        for r in rows:
            r["link"] = Raw(f'<a class="source" href="{href("/", {"source_id": r["source_id"]})}">{r["source_id"]}</a>')
            r["thumb"] = self.thumbnail(r["source_id"])
            r["answer"] = self.answer_buttons(r["source_id"], answers, {"back": "outliers", "method": method, "n": n})
        form = (f'<form method="get" action="/outliers" class="inline"><label>ranking '
                f'{pages.select("method", [(m, m) for m in methods], method)}</label>'
                f'<label>top <input type="number" name="n" min="1" max="{MAX_PAGE_ROWS}" value="{n}"></label>'
                '<button type="submit">Show</button></form>')
        columns = (("rank", "rank"), ("link", "source_id"), ("score", "score"), ("best_class_name", "DR3 class"),
                   ("phot_g_mean_mag", "G"), ("period", "period (d)"), ("g_amplitude", "amplitude"),
                   ("thumb", "fold | XP | dm-dt"), ("answer", "interesting?"))
        body = (f"<h1>Top {len(rows)} outliers ({esc(method)})</h1>{form}"
                '<p class="note">Your answers teach the <a href="/discover">discovery session</a> which sources '
                "to show you next.</p>"
                f'<div id="outliers">{pages.table(columns, rows)}</div>')
        return self.html("outliers", body, None, state)

    # ------------------------------------------------------------------ map selections

    SOURCE_COLUMNS = (("link", "source_id"), ("best_class_name", "DR3 class"), ("phot_g_mean_mag", "G"),
                      ("bp_rp", "BP-RP"), ("period", "period (d)"), ("g_amplitude", "amplitude"),
                      ("thumb", "fold | XP | dm-dt"))

    def _selected(self, params) -> tuple[View, np.ndarray]:
        """The box of a selection (``box=x0,x1,y0,y1``, map units) and its source_ids, ascending."""
        if not str(params.get("box", "")).strip():
            raise PageError("a selection needs its box (box=x0,x1,y0,y1 in map units): shift-drag on the map")
        box = View.parse(params["box"])
        return box, self.map.ids[self.map.in_view(box)]

    def _meta_of(self, ids) -> dict:
        """source_id -> the columns a selection or like table shows."""
        if not len(ids):
            return {}
        rows = self.cat.sql(
            "SELECT s.source_id, l.best_class_name, s.phot_g_mean_mag, s.bp_rp, f.period, f.g_amplitude "
            "FROM (SELECT unnest($ids::BIGINT[]) AS source_id) AS q JOIN sources s USING (source_id) "
            "LEFT JOIN labels l USING (source_id) LEFT JOIN features f USING (source_id)",
            {"ids": [int(i) for i in ids]}).to_pylist()
        return {r["source_id"]: r for r in rows}

    def _source_rows(self, ids, extra=None) -> list[dict]:
        """Table rows (link, metadata, thumbnail) of ``ids``, with ``extra[i]`` merged into row i."""
        meta = self._meta_of(ids)
        rows = []
        for i, sid in enumerate(int(s) for s in ids):
            r = dict(meta.get(sid, {}))
            r["link"] = Raw(f'<a class="source" href="{href("/", {"source_id": sid})}">{sid}</a>')
            r["thumb"] = self.thumbnail(sid)
            rows.append({**r, **(extra[i] if extra else {})})
        return rows

    def page_selection(self, params) -> Response:
        box, ids = self._selected(params)
        state = State()
        total = int(ids.size)
        back = f'<a href="{href("/", {"view": box.param()})}">Show the box on the map</a>'
        if not total:
            return self.html("selection", f'<h1>Selection</h1><p id="summary">No source in the box. {back}</p>',
                             None, state)
        pages_n = -(-total // SELECTION_PAGE)
        page = parse_page(params.get("page", "1"), pages_n)
        shown = ids[(page - 1) * SELECTION_PAGE: page * SELECTION_PAGE]
        keep = {"box": box.param()}
        pager = " ".join(f'<a href="{href("/selection", {**keep, "page": p})}">{p}</a>' if p != page else f"<b>{p}</b>"
                         for p in range(max(1, page - 5), min(pages_n, page + 5) + 1))
        sample = f" (an even sample of {MAX_LIKE_MEMBERS:,} of them)" if total > MAX_LIKE_MEMBERS else ""
        body = (
            f"<h1>Selection: {total:,} sources</h1>"
            f'<p id="summary">{total:,} sources in the box x {box.x0:.4g} to {box.x1:.4g}, y {box.y0:.4g} to '
            f"{box.y1:.4g} of the map. {back}.</p>"
            f'<p><a class="button" id="like" href="{href("/like", keep)}">More like these</a>: every other source '
            f"ranked by its mean distance to its 5 nearest members{sample} in the search space, with a self-check. "
            f'Download: <a id="csv" href="{href("/selection.csv", keep)}">CSV</a>, '
            f'<a id="parquet" href="{href("/selection.parquet", keep)}">Parquet</a> '
            f"(the source_meta columns; at most {MAX_SELECTION_ROWS:,} rows).</p>"
            f"<p>page {pager}</p>"
            f'<div id="selection">{pages.table(self.SOURCE_COLUMNS, self._source_rows(shown))}</div>'
        )
        return self.html("selection", body, None, state)

    def selection_file(self, params, kind: str) -> Response:
        import io

        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        _, ids = self._selected(params)
        if ids.size > MAX_SELECTION_ROWS:
            raise PageError(f"the box holds {ids.size:,} sources; a download takes at most {MAX_SELECTION_ROWS:,}: "
                            "select a smaller box", 413)
        table = self.cat.sql("SELECT m.* FROM (SELECT unnest($ids::BIGINT[]) AS source_id) AS q "
                             "JOIN source_meta m USING (source_id) ORDER BY source_id", {"ids": ids.tolist()})
        buf = io.BytesIO()
        if kind == "csv":
            pacsv.write_csv(table, buf)
            ctype = "text/csv; charset=utf-8"
        else:
            pq.write_table(table, buf)
            ctype = "application/vnd.apache.parquet"
        return Response(200, ctype, buf.getvalue(), {"Content-Disposition": f'attachment; filename="selection.{kind}"'})

    def page_like(self, params) -> Response:
        import json

        box, ids = self._selected(params)
        if not ids.size:
            raise PageError(f"no source in the box {box.param()}: nothing to rank by")
        members = ids if ids.size <= MAX_LIKE_MEMBERS else ids[np.linspace(0, ids.size - 1, MAX_LIKE_MEMBERS).astype(int)]
        table = self.cat.like(members.tolist(), top=MAX_PAGE_ROWS, with_meta=False)
        info = json.loads(table.schema.metadata[b"like_info"])
        extra = [{"rank": r, "score": s, "nearest": Raw(f'<a href="{href("/", {"source_id": m})}">{m}</a>')}
                 for r, s, m in zip(table.column("rank").to_pylist(), table.column("score").to_pylist(),
                                    table.column("nearest_member").to_pylist())]
        check = info["self_check"]
        checked = ("needs two members or more" if check is None else
                   f"of {check['held_out']} members held out, {check['recall']:.0%} rank in the top 1% "
                   f"({check['top_1pct']:,} of {check['ranked']:,} sources; chance 1%), median rank {check['median_rank']:g}")
        columns = (("rank", "rank"), ("link", "source_id"), ("score", "mean distance"), ("nearest", "nearest member"),
                   *self.SOURCE_COLUMNS[1:])
        sampled = f" ({ids.size:,} selected: an even sample by source_id)" if ids.size > MAX_LIKE_MEMBERS else ""
        body = (
            f"<h1>More like these {ids.size:,} sources</h1>"
            f'<p id="like-info">{info["used"]:,} of {info["members"]:,} members compared on {esc(info["blocks"])}'
            f'{sampled}; {info["ranked"]:,} sources ranked by {esc(info["rule"])}.</p>'
            f'<p id="self-check">Self-check: {esc(checked)}.</p>'
            f'<p><a href="{href("/selection", {"box": box.param()})}">Back to the selection</a></p>'
            f'<div id="liked">{pages.table(columns, self._source_rows(table.column("source_id").to_pylist(), extra))}</div>'
        )
        return self.html("more like these", body, None, State())

    def api_nearest(self, params) -> Response:
        """JSON: the source nearest pixel (px, py) of a map view, within `CLICK_RADIUS` pixels
        (``{}`` when none); its source_id as a string (JavaScript numbers hold 53 bits)."""
        import json

        state, problem = parse_state({k: params[k] for k in ("view", "colour") if k in params}, self.map.options)
        if problem:
            raise PageError(problem)
        try:
            px, py = float(params.get("px", "")), float(params.get("py", ""))
        except ValueError:
            raise PageError("give the pixel as px and py") from None
        sid = None
        if math.isfinite(px) and math.isfinite(py):
            sid = self.map.nearest(self._view(state), px, py, CLICK_RADIUS)
        found = {}
        if sid is not None:
            meta = self._meta_of([sid]).get(sid, {})
            found = {"source_id": str(sid), "class": meta.get("best_class_name"), "g": meta.get("phot_g_mean_mag"),
                     "period": meta.get("period"), "page": href("/", {"source_id": sid}),
                     "thumb": href("/plot/thumb.png", {"source_id": sid})}
        return Response(200, "application/json", json.dumps(found).encode())

    # ------------------------------------------------------------------ discovery

    def _session(self, key: str | None = None):
        """The discovery session (`Catalog.discover`) of a browser's session key; call with
        ``discovery_lock`` held. With an answers file there is one session, resumed from it and
        shared by everyone; otherwise each browser gets its own (the `MAX_SESSIONS` most recent
        kept in memory), sharing the vectors."""
        if self.discovery is None:
            path = self.answers_path
            self.discovery = self.cat.discover(labels=path if path is not None and path.exists() else None)
        if self.answers_path is not None or key is None:
            return self.discovery
        session = self.sessions.pop(key, None) or self.discovery.fresh()
        self.sessions[key] = session  # the most recent last
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    @staticmethod
    def session_key(headers) -> tuple[str, dict]:
        """A browser's discovery session key (its cookie), and the header that sets a new one."""
        key = cookie(headers, SESSION_COOKIE)
        if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", key):
            return key, {}
        key = secrets.token_urlsafe(18)
        return key, set_cookie(SESSION_COOKIE, key)

    def _answers(self, key: str) -> dict:
        """A copy of a browser's answers (empty before its session starts)."""
        with self.discovery_lock:
            if self.answers_path is not None:
                return dict(self.discovery.answers) if self.discovery is not None else {}
            session = self.sessions.get(key)
            return dict(session.answers) if session is not None else {}

    @staticmethod
    def answer_buttons(sid: int, answers: dict, back: dict, skip: bool = False) -> Raw:
        """The answer so far and the interesting / not interesting (and ``skip``) buttons of a source."""
        given = ANSWER_WORDS[answers[sid]] if sid in answers else ""
        return Raw(f'<form method="post" action="/discover" class="inline answer">{pages.hidden({"source_id": sid, **back})}'
                   '<button type="submit" name="answer" value="yes">interesting</button>'
                   '<button type="submit" name="answer" value="no">not interesting</button>'
                   + ('<button type="submit" name="answer" value="skip">skip</button>' if skip else "")
                   + f'<span class="given">{esc(given)}</span></form>')

    def page_discover(self, params, headers=None) -> Response:
        key, cookie = self.session_key(headers or {})
        with self.discovery_lock:
            session = self._session(key)
            sid = session.next()
            answers = dict(session.answers)
            counts, parts, n_ranked = session.counts, session.parts, session.n_ranked
        state = State()
        kept = (f"They are saved to {self.answers_path.name} after every answer (latentcat serve --answers), never "
                "in the catalogue." if self.answers_path is not None else
                "They are kept in this explorer's memory only (latentcat serve --answers FILE saves them), never in "
                "the catalogue.")
        order = list(answers)[::-1][:MAX_PAGE_ROWS]  # the latest first
        columns = self.SOURCE_COLUMNS
        if sid is None:
            shown = "<p>Every source has been shown.</p>"
        else:
            shown = (f'<div id="next" data-source-id="{sid}">{pages.table(columns, self._source_rows([sid]))}'
                     f'{self.answer_buttons(sid, answers, {"back": "discover"}, skip=True)}</div>')
        given = self._source_rows(order, [{"answer": ANSWER_WORDS[answers[s]]} for s in order])
        body = (
            "<h1>Discovery</h1>"
            f'<p>{n_ranked:,} sources on {esc(parts)}, shown one at a time: the isolation forest\'s most unusual first, '
            "then moved by your answers (up near sources you called interesting, down near the others; "
            "<code>latentcat discover</code> and <code>Catalog.discover</code> do the same).</p>"
            f"<h2>Next</h2>{shown}"
            f'<h2>Your answers</h2><p id="counts">{counts["interesting"]} interesting, {counts["not_interesting"]} '
            f'not interesting, {counts["skipped"]} skipped. <a href="/discover.csv" id="download">Download them (CSV)</a>; '
            f"<code>latentcat discover --labels FILE</code> resumes from that file. {esc(kept)}</p>"
            f'<div id="answers">{pages.table((("answer", "answer"), *columns), given)}</div>'
        )
        response = self.html("discovery", body, None, state)
        response.headers.update(cookie)
        return response

    def answer(self, headers, body: bytes) -> Response:
        """POST /discover: record one answer, then go back to the page it came from."""
        ctype = headers.get("Content-Type", "") if hasattr(headers, "get") else ""
        if not ctype.lower().startswith("application/x-www-form-urlencoded"):
            raise PageError("send the answer as a form (application/x-www-form-urlencoded)", 415)
        if len(body) > MAX_QUERY:
            raise PageError(f"an answer is at most {MAX_QUERY} bytes", 413)
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        sid = parse_source_id(form.get("source_id", ""))
        answer = choice("answer", form.get("answer", ""), ["yes", "no", "skip"])
        back = choice("back", form.get("back", "discover"), ["discover", "outliers"])
        if not self._exists(sid):
            raise PageError(f"source_id {sid} is not in this catalogue", 404)
        key, cookie = self.session_key(headers)
        with self.discovery_lock:
            session = self._session(key)
            if answer == "skip":
                session.skip(sid)
            else:
                session.label(sid, answer == "yes")
            if self.answers_path is not None:
                session.save(self.answers_path)
        target = "/discover"
        if back == "outliers":
            target = pages.url("/outliers", {"method": str(form.get("method", ""))[:100], "n": parse_k(form.get("n", "20"))})
        return Response(303, "text/plain; charset=utf-8", b"", {"Location": target, **cookie})

    def answers_csv(self, params, headers=None) -> Response:
        key, _ = self.session_key(headers or {})
        with self.discovery_lock:
            text = self._session(key).to_csv()
        return Response(200, "text/csv; charset=utf-8", text.encode(),
                        {"Content-Disposition": 'attachment; filename="discoveries.csv"'})

    def page_classes(self, params) -> Response:
        state = State()
        models = self.cat.sql("SELECT model_id, count(*) AS n FROM predictions GROUP BY 1 ORDER BY 1").to_pylist()
        if not models:
            return self.html("classes", "<h1>Classes</h1><p class=\"note\">No predictions in this catalogue "
                              "(latentcat classify writes them).</p>", None, state)
        ids = [m["model_id"] for m in models]
        model = choice("model", params.get("model", ids[-1]), ids)
        if "class" not in params:
            rows = self.cat.sql(
                "SELECT p.class, count(*) AS n, avg(p.probability) AS mean_probability, "
                "count(l.source_id) AS labelled_so, "
                "count(*) FILTER (WHERE l.best_class_name IS NOT NULL AND l.best_class_name <> p.class) AS labelled_other "
                "FROM predictions p LEFT JOIN labels l USING (source_id) WHERE p.model_id = $m "
                "GROUP BY 1 ORDER BY n DESC, p.class", {"m": model}).to_pylist()
            for r in rows:
                r["link"] = Raw(f'<a class="class" href="{href("/classes", {"model": model, "class": r["class"]})}">'
                                f'{esc(r["class"])}</a>')
                r["labelled_so"] = r["labelled_so"] - r["labelled_other"]
            columns = (("link", "predicted class"), ("n", "sources"), ("mean_probability", "mean probability"),
                       ("labelled_so", "DR3 label agrees"), ("labelled_other", "DR3 label differs"))
            choose = "".join(f'<a href="{href("/classes", {"model": m})}">{esc(m)}</a> ' for m in ids)
            body = (f"<h1>Classes predicted by {esc(model)}</h1><p>models: {choose}</p>"
                    f'<div id="classes">{pages.table(columns, rows)}</div>')
            return self.html("classes", body, None, state)
        name = str(params["class"])[:200]
        per_page = 20
        total = self.cat.sql("SELECT count(*) AS n FROM predictions WHERE model_id = $m AND class = $c",
                             {"m": model, "c": name}).column("n")[0].as_py()
        if not total:
            raise PageError(f"model {model} predicts no source as {name!r}", 404)
        page = parse_page(params.get("page", "1"), -(-total // per_page))
        rows = self.cat.sql(
            "SELECT p.source_id, p.probability, l.best_class_name, s.phot_g_mean_mag, f.period "
            "FROM predictions p LEFT JOIN labels l USING (source_id) LEFT JOIN sources s USING (source_id) "
            "LEFT JOIN features f USING (source_id) WHERE p.model_id = $m AND p.class = $c "
            "ORDER BY p.probability DESC, p.source_id LIMIT $n OFFSET $o",
            {"m": model, "c": name, "n": per_page, "o": (page - 1) * per_page}).to_pylist()
        for r in rows:
            r["link"] = Raw(f'<a class="source" href="{href("/", {"source_id": r["source_id"]})}">{r["source_id"]}</a>')
            r["thumb"] = self.thumbnail(r["source_id"])
        columns = (("link", "source_id"), ("probability", "probability"), ("best_class_name", "DR3 class"),
                   ("phot_g_mean_mag", "G"), ("period", "period (d)"), ("thumb", "fold | XP | dm-dt"))
        pager = []
        if page > 1:
            pager.append(f'<a href="{href("/classes", {"model": model, "class": name, "page": page - 1})}">previous</a>')
        if page * per_page < total:
            pager.append(f'<a href="{href("/classes", {"model": model, "class": name, "page": page + 1})}">next</a>')
        first = (page - 1) * per_page + 1
        body = (f"<h1>{esc(name)}: {total:,} sources predicted by {esc(model)}</h1>"
                f'<p><a href="{href("/classes", {"model": model})}">all classes</a> &middot; sources {first:,} to '
                f'{first + len(rows) - 1:,}, by probability &middot; {" ".join(pager)}</p>'
                f'<div id="class-sources">{pages.table(columns, rows)}</div>')
        return self.html(f"class {name}", body, None, state)

    # ------------------------------------------------------------------ latent traversal

    def page_latent(self, params) -> Response:
        from latentcat.serve.traverse import latent_page

        return latent_page(self, params)

    def latent_png(self, params) -> Response:
        from latentcat.serve.traverse import latent_png

        return latent_png(self, params)
