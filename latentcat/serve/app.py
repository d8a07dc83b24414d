"""The explorer's pages: what each one shows, read from one read-only Catalog.

`Explorer` holds the open catalogue, its map and the discovery sessions; each ``page_*`` or
image method takes a request's parameters (a dict of strings, already length-checked) and
returns a Starlette response: HTML from the Jinja2 templates in ``templates/`` (every value
escaped), PNG drawn by matplotlib or Pillow, CSV, Parquet or JSON. `latentcat.serve.web` puts
them behind routes, the access rules and the error pages.

Routes (all GET unless said; the URL holds the whole state, so a view can be shared):

    /                       the map; with ?source_id=ID the source page (curves, metadata, neighbours)
    /map.png                a map view (view=x0,x1,y0,y1, colour=..., source_id marks a source)
    /click                  a click on the map (at.x, at.y): open the nearest source, zoom or centre there
    /plot/source.png        a source's fold, XP spectrum and dm-dt map (latentcat.plots.plot_similar)
    /plot/thumb.png         the same three, small, for tables (drawn by Pillow)
    /plot/lightcurve.png    its raw G epochs and their fold at the period (needs a staging folder)
    /upload                 the light-curve form; POST: the neighbours of the uploaded file
    /outliers               the top outliers of a ranking, with thumbnails and answer buttons
    /discover               the discovery session: the next source to judge, the answers so far;
                            POST: an answer (source_id, answer=yes/no/skip), then back to the page
    /discover.csv           the answers as a CSV file (source_id,interesting)
    /selection              the sources in a box (box=x0,x1,y0,y1) or a lasso (lasso=x,y,x,y,...)
                            of the map, in map units: paged, with downloads and "more like these"
    /selection.csv, .parquet  their source_meta rows (at most `MAX_SELECTION_ROWS`)
    /like                   "more like these": `Catalog.like` of the selection, with its self-check
    /api/nearest            JSON: the source nearest a pixel of a map view (view, px, py), for the
                            map script's hover names
    /static/...             the map script (wheel zoom, drag pan, box and lasso selection, hover
                            names: the pages work without it) and the style sheet
    /classes                the classifier's classes; ?class=C&model=M: its sources by probability
    /latent                 latent traversal: a source's codes, changed by hand, decoded by the VAEs

Safety: the Catalog is opened read-only through `latentcat.open` (no file or network access for
its SQL); the only text a page passes to it is the neighbour filter, given to
``Catalog.similar(where=...)``, which parses it as one expression; every other parameter is a
number or one of a fixed list (a source_id goes into SQL as an integer literal, as in the
Catalog's own queries, once it has parsed as a whole number); k is at most
`latentcat.limits.MAX_PAGE_ROWS`; a bad input is one message on the page (`PageError`).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, Undefined, select_autoescape
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

import latentcat
from latentcat import __version__
from latentcat.errors import LatentcatError, one_line
from latentcat.layout import FEATURES_DIR
from latentcat.limits import MAX_LIKE_MEMBERS, MAX_PAGE_ROWS, MAX_SELECTION_ROWS, MAX_UPLOAD_BYTES, SERVE_TIMEOUT
from latentcat.serve.figures import THUMB_HEIGHT, THUMB_WIDTH, thumbnail_png
from latentcat.serve.mapview import HEIGHT, NAMED_MAX, WIDTH, MapData, Selection, View
from latentcat.serve.sessions import Sessions
from latentcat.serve.state import (CLICKS, MAX_WHERE, MODALITIES, TIME_FORMATS, PageError, State, choice, parse_k,
                                   parse_page, parse_source_id, parse_state)

CLICK_RADIUS = 12
"""Pixels around a click in which the nearest source is looked for."""

# the feature columns (docs/schemas.md) a thumbnail and the source figure (latentcat.plots.plot_similar) draw
THUMB_COLUMNS = ("fold_phase", "fold_mag", "xp_flux", "dmdt", "lc_reason", "xp_reason")
FIGURE_COLUMNS = (*THUMB_COLUMNS, "fold_err", "xp_flux_error", "xp_scale", "period", "g_mean")

SOURCE_COLUMNS = [("link", "source_id"), ("best_class_name", "DR3 class"), ("phot_g_mean_mag", "G"),
                  ("bp_rp", "BP-RP"), ("period", "period (d)"), ("g_amplitude", "amplitude"),
                  ("thumb", "fold | XP | dm-dt")]
"""The columns of a table of sources (selections, like, discovery)."""
NEIGHBOUR_COLUMNS = [("rank", "rank"), ("link", "source_id"), ("distance", "distance"),
                     ("best_class_name", "DR3 class"), ("phot_g_mean_mag", "G"), ("bp_rp", "BP-RP"),
                     ("period", "period (d)"), ("g_amplitude", "amplitude"), ("n_obs", "G epochs"),
                     ("thumb", "fold | XP | dm-dt")]

SELECTION_PAGE = 50
"""Sources per page of a map selection."""

ANSWER_WORDS = {True: "interesting", False: "not interesting", None: "skipped"}
"""How a discovery answer is shown."""

IMAGE_CACHE = {"Cache-Control": "private, max-age=600"}


def url(path: str, params=None) -> str:
    """``path`` with URL-encoded parameters (those not None or empty)."""
    query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None and v != ""])
    return path + ("?" + query if query else "")


def fmt(value) -> str:
    """A value for a table cell: floats to 5 significant digits, ids in full, a dash for none."""
    if value is None or isinstance(value, Undefined) or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers=IMAGE_CACHE)


@lru_cache(maxsize=1)
def _loader() -> PackageLoader:
    return PackageLoader("latentcat.serve", "templates")


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
    answers : path, optional
        A discovery answers file, resumed from and saved to after every answer, shared by
        everyone the explorer serves (else each browser has a session of its own).
    sessions_dir : path, optional
        Where the browsers' discovery sessions are kept (a private temporary folder by
        default); explorer processes serving together (``--workers``) share one.
    """

    def __init__(self, catalog, stage=None, max_upload: int = MAX_UPLOAD_BYTES, timeout: float = SERVE_TIMEOUT,
                 answers=None, sessions_dir=None):
        self.cat = latentcat.open(catalog, timeout=timeout, threads=1)  # a slow request holds one core, not all
        try:
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
            self.features = None
            if shards:
                import pyarrow.dataset as ds

                self.features = ds.dataset([str(p) for p in shards], format="parquet")
            self.images: OrderedDict = OrderedDict()  # drawn PNGs, the least recently used dropped first
            self.images_lock = threading.Lock()
            self.draw_lock = threading.Lock()        # matplotlib's rc_context is process-wide
            self._encode_lock = threading.Lock()     # one upload encodes at a time
            self.decoder_lock = threading.Lock()
            self.decoders = None                     # the trained VAEs, loaded on the first latent traversal
            self.latent_ranges = None                # per block: 1st percentile, median, 99th percentile
            self.sessions = Sessions(self.cat.discover, answers=answers, folder=sessions_dir)
            self._similar = lru_cache(maxsize=256)(self._similar)  # the catalogue is a snapshot: never stale
            self.templates = self._environment()
        except BaseException:
            self.cat.close()
            raise

    def close(self) -> None:
        self.sessions.close()
        self.cat.close()

    def _environment(self) -> Environment:
        env = Environment(loader=_loader(), autoescape=select_autoescape(["html"], default=True),
                          undefined=StrictUndefined if os.environ.get("LATENTCAT_STRICT_TEMPLATES") else Undefined,
                          lstrip_blocks=True)
        env.filters["fmt"] = fmt
        env.filters["n"] = lambda v: f"{int(v):,}"
        env.globals.update(url=url, catalogue=self.name, version=__version__, has_features=self.features is not None,
                           thumb_width=THUMB_WIDTH, thumb_height=THUMB_HEIGHT, max_rows=MAX_PAGE_ROWS,
                           max_where=MAX_WHERE, modalities=MODALITIES, time_formats=TIME_FORMATS)
        env.globals["m"] = env.get_template("macros.html").module
        return env

    def render(self, template: str, title: str, status: int = 200, message: str | None = None,
               state: State | None = None, **context) -> HTMLResponse:
        """A page: ``template`` (in templates/) with the header, ``message`` and ``context``."""
        text = self.templates.get_template(template).render(title=title, message=message, state=state or State(),
                                                            **context)
        return HTMLResponse(text, status_code=status)

    def message_page(self, message: str, status: int) -> HTMLResponse:
        """A page that shows one message (the answer to a bad request on any route)."""
        return self.render("message.html", "latentcat", status, message)

    def _image(self, key, draw) -> Response:
        """A PNG from the cache of drawn images (1,024 kept), drawn on a miss."""
        with self.images_lock:
            if key in self.images:
                self.images.move_to_end(key)
                return png(self.images[key])
        data = draw()
        with self.images_lock:
            self.images[key] = data
            while len(self.images) > 1024:
                self.images.popitem(last=False)
        return png(data)

    # ------------------------------------------------------------------ the map

    def _checked_state(self, params) -> State:
        """The state in a URL, or a PageError naming its first problem."""
        state, problem = parse_state(params, self.map.options)
        if problem:
            raise PageError(problem)
        return state

    @staticmethod
    def _pixel(params, names: tuple[str, str], missing: str) -> tuple[float, float]:
        """A pixel of a map view given as two numbers in the URL, or a PageError."""
        try:
            return float(params.get(names[0], "")), float(params.get(names[1], ""))
        except ValueError:
            raise PageError(missing) from None

    def _view(self, state: State) -> View:
        return (state.view or self.map.full).fitted(WIDTH, HEIGHT)

    def _neighbour_table(self, state: State):
        """Catalog.similar for the state's source, k, modality and filter: a source page and
        its map image (which rings the neighbours) ask for the same one, so the last 256 are kept."""
        return self._similar(state.source_id, state.k, state.modality, state.where or None)

    def _similar(self, source_id: int, k: int, modality: str, where: str | None):
        return self.cat.similar(source_id, k=k, modality=modality, where=where)

    def map_png(self, params) -> Response:
        state = self._checked_state(params)
        rings = ()
        if state.source_id is not None:
            try:
                rings = tuple(self._neighbour_table(state).column("source_id").to_pylist())
            except LatentcatError:
                rings = ()
        view = self._view(state)
        key = ("map", view, state.colour, state.source_id, rings)
        return self._image(key, lambda: self.map.render(view, state.colour, state.source_id, rings))

    def map_context(self, state: State) -> dict:
        """What templates/map.html draws: the view, its controls, the points named and the legend."""
        if self.map.n == 0:
            return {"n": 0}
        view = self._view(state)

        def link(v: View) -> str:
            return url("/", state.params(view=v))

        controls = [
            ("zoom in", link(view.zoomed(2))), ("zoom out", link(view.zoomed(0.5))),
            ("left", link(view.panned(-0.4, 0))), ("right", link(view.panned(0.4, 0))),
            ("up", link(view.panned(0, 0.4))), ("down", link(view.panned(0, -0.4))),
            ("whole map", url("/", {k: v for k, v in state.params().items() if k != "view"})),
        ]
        pos = self.map.position(state.source_id) if state.source_id is not None else None
        if pos is not None:
            span = view if state.view else self.map.full.zoomed(4)
            half_w, half_h = (span.x1 - span.x0) / 2, (span.y1 - span.y0) / 2
            controls.append(("centre on this source", link(View(pos[0] - half_w, pos[0] + half_w,
                                                                pos[1] - half_h, pos[1] + half_h))))
        colouring = self.map.colouring(state.colour)
        in_view = self.map.in_view(view)
        points = [{"href": url("/", state.params(source_id=sid, view=view)), "px": px, "py": py,
                   "title": f"source_id {sid}" + (f" \u00b7 {label}" if label else "")}
                  for sid, px, py, label in self.map.named(view, in_view, state.colour)]
        return {
            "n": self.map.n, "view": view.param(), "x0": view.x0, "x1": view.x1, "y0": view.y0, "y1": view.y1,
            "width": WIDTH, "height": HEIGHT, "controls": controls, "points": points, "in_view": int(in_view.size),
            "named_max": NAMED_MAX, "clicks": CLICKS, "form_params": state.params(view=view),
            "image": url("/map.png", state.params(view=view)),
            "options": [(k, label) for k, (label, _, _) in self.map.options.items()],
            "legend": colouring.legend() if colouring.categorical else None,
            "scale": colouring if colouring.values is not None else None, "gradient": colouring.gradient(),
        }

    def click(self, params) -> Response:
        state = self._checked_state(params)
        px, py = self._pixel(params, ("at.x", "at.y"), "a map click needs its position (at.x, at.y) in pixels")
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
        return RedirectResponse(url("/", target), status_code=303)

    # ------------------------------------------------------------------ main and source pages

    def page_main(self, params) -> Response:
        state, problem = parse_state(params, self.map.options)
        response = self.main(state, problem)
        if problem and response.status_code == 200:
            response.status_code = 400
        return response

    def main(self, state: State, message: str | None, status: int = 200) -> Response:
        if state.source_id is None:
            return self.render("home.html", "map", status, message, state, map=self.map_context(state),
                               n_sources=self.counts.get("sources", 0))
        return self.source_page(state, message)

    def _exists(self, source_id: int) -> bool:
        rows = self.cat.sql(f"SELECT count(*) AS n FROM sources WHERE source_id = {int(source_id)}")
        return bool(rows.column("n")[0].as_py())

    def source_page(self, state: State, message: str | None) -> Response:
        sid = state.source_id
        if not self._exists(sid):
            return self.main(replace(state, source_id=None), message or f"source_id {sid} is not in this catalogue", 404)
        meta = (self.cat.sql(f"SELECT * FROM source_meta WHERE source_id = {sid}").to_pylist()
                or self.cat.sql(f"SELECT * FROM sources WHERE source_id = {sid}").to_pylist())[0]
        predictions = self.cat.sql("SELECT class, probability, model_id FROM predictions "
                                   f"WHERE source_id = {sid} ORDER BY model_id").to_pylist()
        ranks = self.cat.sql(f"SELECT method, score, rank FROM outlier_scores WHERE source_id = {sid} "
                             "ORDER BY method").to_pylist()
        neighbours, problem = self.neighbour_rows(state)
        label = meta.get("best_class_name") or (predictions[0]["class"] + " (predicted)" if predictions else "unlabelled")
        return self.render("source.html", f"source {sid}", 200, message or problem, state, meta=meta,
                           predictions=predictions, ranks=ranks, label=label, neighbours=neighbours,
                           neighbour_columns=NEIGHBOUR_COLUMNS, has_light_curves=self.light_curves is not None,
                           map=self.map_context(state))

    def neighbour_rows(self, state: State, table=None) -> tuple[list[dict] | None, str | None]:
        """The neighbours of the state's source (or ``table``'s) as table rows, each linking to
        its own page with the same k, modality and filter; a failed search (a bad filter, no
        code) is None and its one-line message."""
        if table is None:
            try:
                table = self._neighbour_table(state)
            except LatentcatError as err:
                return None, one_line(err)
        rows = table.to_pylist()
        for r in rows:
            r["link_class"] = "neighbour"
            r["href"] = url("/", state.params(source_id=r["source_id"]))
        return rows, None

    # ------------------------------------------------------------------ images of a source

    def thumb_png(self, params) -> Response:
        sid = self._source_param(params)
        return self._image(("thumb", sid), lambda: thumbnail_png(self.feature_row(sid, THUMB_COLUMNS)))

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
        return self._image(("source", sid), lambda: self._draw_source(sid))

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
        return self._image(("lc", sid), lambda: self._draw_light_curve(sid))

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

    def page_upload(self, params) -> Response:
        state, problem = parse_state(params, self.map.options)
        return self._upload_page(state, problem, 400 if problem else 200)

    def _upload_page(self, state: State, message: str | None, status: int = 200, **result) -> Response:
        return self.render("upload.html", "my light curve", status, message, state,
                           max_upload_mib=self.max_upload / 2**20, **{"facts": None, **result})

    def upload(self, form: dict[str, str], file: tuple[str, bytes] | None) -> Response:
        """POST /upload: the neighbours of an uploaded light curve. ``form``: the text fields;
        ``file``: (its name as sent, its bytes)."""
        from latentcat.query.by_example import similar_to_file

        state, problem = parse_state({k: form[k] for k in ("k", "modality", "where") if k in form}, self.map.options)
        if problem:
            return self._upload_page(state, problem, 400)
        if file is None or not file[1]:
            return self._upload_page(state, "choose a light-curve file to upload", 400)
        filename, data = file
        time_format = form.get("time_format", "gaia")
        try:
            choice("time format", time_format, TIME_FORMATS)
            bp_rp = float(form["bp_rp"]) if form.get("bp_rp", "").strip() else None
            if bp_rp is not None and not math.isfinite(bp_rp):
                raise ValueError
            file_sid = parse_source_id(form["file_source_id"]) if form.get("file_source_id", "").strip() else None
        except PageError as err:
            return self._upload_page(state, str(err), 400)
        except ValueError:
            return self._upload_page(state, f"BP-RP {form.get('bp_rp', '')[:20]!r} is not a number (mag)", 400)
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
                return self._upload_page(state, one_line(err).replace(str(path), filename[:80]), 400)
        figure = None
        if info["light_curve"] is not None:
            from latentcat.serve.figures import light_curve_png

            period = info.get("period") if info.get("period_reliable") else None
            with self.draw_lock:
                figure = base64.b64encode(light_curve_png(*info["light_curve"], period=period,
                                                          title=filename[:60])).decode("ascii")
        facts = [("file", filename[:120]), ("G epochs used", info.get("n_obs")), ("clipped", info.get("n_clipped")),
                 ("period (d)", info.get("period")), ("period reliable", info.get("period_reliable")),
                 ("period false-alarm probability", info.get("period_fap")),
                 ("amplitude (G, mag)", info.get("amplitude")), ("time span (d)", info.get("time_span")),
                 ("compared on", info.get("blocks"))]
        neighbours, _ = self.neighbour_rows(state, table)
        return self._upload_page(state, None, 200, facts=facts, filename=filename[:120], figure=figure,
                                 notes=[str(n).replace(str(path), filename[:80]) for n in info.get("notes", [])],
                                 neighbours=neighbours, neighbour_columns=NEIGHBOUR_COLUMNS)

    # ------------------------------------------------------------------ outliers and classes

    def page_outliers(self, params, session_key: str | None = None) -> Response:
        methods = self.cat.sql("SELECT DISTINCT method FROM outlier_scores ORDER BY method").column("method").to_pylist()
        if not methods:
            return self.render("outliers.html", "outliers", method=None)
        default = "isolation_forest:space" if "isolation_forest:space" in methods else methods[0]
        method = choice("ranking", params.get("method", default), methods)
        n = parse_k(params.get("n", "20"))
        rows = self.cat.sql(
            "SELECT o.rank, o.source_id, o.score, l.best_class_name, s.phot_g_mean_mag, f.period, f.g_amplitude "
            "FROM outlier_scores o LEFT JOIN labels l USING (source_id) LEFT JOIN sources s USING (source_id) "
            "LEFT JOIN features f USING (source_id) WHERE o.method = $m ORDER BY o.rank LIMIT $n",
            {"m": method, "n": n}).to_pylist()
        answers = self.sessions.answers(session_key)
        for r in rows:
            r["given"] = ANSWER_WORDS[answers[r["source_id"]]] if r["source_id"] in answers else ""
            r["back"] = {"back": "outliers", "method": method, "n": n}
        columns = [("rank", "rank"), ("link", "source_id"), ("score", "score"), ("best_class_name", "DR3 class"),
                   ("phot_g_mean_mag", "G"), ("period", "period (d)"), ("g_amplitude", "amplitude"),
                   ("thumb", "fold | XP | dm-dt"), ("buttons", "interesting?")]
        return self.render("outliers.html", "outliers", method=method, methods=[(m, m) for m in methods], n=n,
                           rows=rows, columns=columns)

    def page_classes(self, params) -> Response:
        models = self.cat.sql("SELECT model_id, count(*) AS n FROM predictions GROUP BY 1 ORDER BY 1").to_pylist()
        if not models:
            return self.render("classes.html", "classes", model=None)
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
                r["href"] = url("/classes", {"model": model, "class": r["class"]})
                r["labelled_so"] = r["labelled_so"] - r["labelled_other"]
            columns = [("class_link", "predicted class"), ("n", "sources"), ("mean_probability", "mean probability"),
                       ("labelled_so", "DR3 label agrees"), ("labelled_other", "DR3 label differs")]
            return self.render("classes.html", "classes", model=model, models=ids, name=None, rows=rows,
                               columns=columns)
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
        columns = [("link", "source_id"), ("probability", "probability"), ("best_class_name", "DR3 class"),
                   ("phot_g_mean_mag", "G"), ("period", "period (d)"), ("thumb", "fold | XP | dm-dt")]
        return self.render("classes.html", f"class {name}", model=model, name=name, total=total, page=page,
                           per_page=per_page, first=(page - 1) * per_page + 1, rows=rows, columns=columns)

    # ------------------------------------------------------------------ map selections

    def _selected(self, params) -> tuple[Selection, np.ndarray]:
        """The selection in the URL (a box or a lasso, map units) and its source_ids, ascending."""
        selection = Selection.parse(params)
        return selection, self.map.ids[self.map.select(selection)]

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
        """Table rows (metadata) of ``ids``, with ``extra[i]`` merged into row i."""
        meta = self._meta_of(ids)
        return [{**meta.get(sid, {}), "source_id": sid, **(extra[i] if extra else {})}
                for i, sid in enumerate(int(s) for s in ids)]

    def page_selection(self, params) -> Response:
        selection, ids = self._selected(params)
        total = int(ids.size)
        keep = selection.params()
        context = {"shape": selection.kind, "back": url("/", {"view": selection.bounds.fitted().param()}), "keep": keep}
        if not total:
            return self.render("selection.html", "selection", total=0, **context)
        pages_n = -(-total // SELECTION_PAGE)
        page = parse_page(params.get("page", "1"), pages_n)
        shown = ids[(page - 1) * SELECTION_PAGE: page * SELECTION_PAGE]
        return self.render("selection.html", "selection", total=total, bounds=selection.bounds, page=page,
                           pager=range(max(1, page - 5), min(pages_n, page + 5) + 1), max_like=MAX_LIKE_MEMBERS,
                           max_download=MAX_SELECTION_ROWS, columns=SOURCE_COLUMNS, rows=self._source_rows(shown),
                           **context)

    def selection_file(self, params, kind: str) -> Response:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        selection, ids = self._selected(params)
        if ids.size > MAX_SELECTION_ROWS:
            raise PageError(f"the {selection.kind} holds {ids.size:,} sources; a download takes at most "
                            f"{MAX_SELECTION_ROWS:,}: select fewer", 413)
        table = self.cat.sql("SELECT m.* FROM (SELECT unnest($ids::BIGINT[]) AS source_id) AS q "
                             "JOIN source_meta m USING (source_id) ORDER BY source_id", {"ids": ids.tolist()})
        buf = io.BytesIO()
        if kind == "csv":
            pacsv.write_csv(table, buf)
            media = "text/csv; charset=utf-8"
        else:
            pq.write_table(table, buf)
            media = "application/vnd.apache.parquet"
        return Response(buf.getvalue(), media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="selection.{kind}"'})

    def page_like(self, params) -> Response:
        selection, ids = self._selected(params)
        if not ids.size:
            raise PageError(f"no source in the {selection.kind}: nothing to rank by")
        members = ids if ids.size <= MAX_LIKE_MEMBERS else ids[np.linspace(0, ids.size - 1, MAX_LIKE_MEMBERS).astype(int)]
        table = self.cat.like(members.tolist(), top=MAX_PAGE_ROWS, with_meta=False)
        info = json.loads(table.schema.metadata[b"like_info"])
        extra = [{"rank": r, "score": s, "nearest_member": m}
                 for r, s, m in zip(table.column("rank").to_pylist(), table.column("score").to_pylist(),
                                    table.column("nearest_member").to_pylist())]
        columns = [("rank", "rank"), ("link", "source_id"), ("score", "mean distance"), ("nearest", "nearest member"),
                   *SOURCE_COLUMNS[1:]]
        return self.render("like.html", "more like these", selected=int(ids.size), info=info, check=info["self_check"],
                           back=url("/selection", selection.params()), columns=columns,
                           rows=self._source_rows(table.column("source_id").to_pylist(), extra))

    def api_nearest(self, params) -> Response:
        """JSON: the source nearest pixel (px, py) of a map view, within `CLICK_RADIUS` pixels
        (``{}`` when none); its source_id as a string (JavaScript numbers hold 53 bits)."""
        state = self._checked_state({k: params[k] for k in ("view", "colour") if k in params})
        px, py = self._pixel(params, ("px", "py"), "give the pixel as px and py")
        sid = None
        if math.isfinite(px) and math.isfinite(py):
            sid = self.map.nearest(self._view(state), px, py, CLICK_RADIUS)
        found = {}
        if sid is not None:
            meta = self._meta_of([sid]).get(sid, {})
            found = {"source_id": str(sid), "class": meta.get("best_class_name"), "g": meta.get("phot_g_mean_mag"),
                     "period": meta.get("period"), "page": url("/", {"source_id": sid}),
                     "thumb": url("/plot/thumb.png", {"source_id": sid})}
        return JSONResponse(found)

    # ------------------------------------------------------------------ discovery

    def page_discover(self, session_key: str) -> Response:
        with self.sessions.use(session_key) as session:
            sid = session.next()
            answers = dict(session.answers)
            counts, parts, n_ranked = session.counts, session.parts, session.n_ranked
        order = list(answers)[::-1][:MAX_PAGE_ROWS]  # the latest first
        given = self._source_rows(order, [{"answer": ANSWER_WORDS[answers[s]]} for s in order])
        shown = self._source_rows([sid])[0] if sid is not None else None
        answers_file = self.sessions.answers_path.name if self.sessions.answers_path is not None else None
        return self.render("discover.html", "discovery", next=shown, given=given, counts=counts, parts=parts,
                           n_ranked=n_ranked, columns=SOURCE_COLUMNS, answers_file=answers_file)

    def answer(self, form: dict[str, str], session_key: str) -> Response:
        """POST /discover: record one answer, then go back to the page it came from."""
        sid = parse_source_id(form.get("source_id", ""))
        answer = choice("answer", form.get("answer", ""), ["yes", "no", "skip"])
        back = choice("back", form.get("back", "discover"), ["discover", "outliers"])
        if not self._exists(sid):
            raise PageError(f"source_id {sid} is not in this catalogue", 404)
        with self.sessions.use(session_key, write=True) as session:
            if answer == "skip":
                session.skip(sid)
            else:
                session.label(sid, answer == "yes")
        target = "/discover"
        if back == "outliers":
            target = url("/outliers", {"method": str(form.get("method", ""))[:100], "n": parse_k(form.get("n", "20"))})
        return RedirectResponse(target, status_code=303)

    def answers_csv(self, session_key: str) -> Response:
        with self.sessions.use(session_key) as session:
            text = session.to_csv()
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="discoveries.csv"'})

    # ------------------------------------------------------------------ latent traversal

    def page_latent(self, params) -> Response:
        from latentcat.serve.traverse import latent_page

        return latent_page(self, params)

    def latent_png(self, params) -> Response:
        from latentcat.serve.traverse import latent_png

        return latent_png(self, params)
