"""The catalogue's stored 2-D map as PNG views of any x/y window.

Each view is a 2-D histogram of the points inside the window, binned straight onto the
image's pixels (a sparse view uses bins of a few pixels, so a lone source stays visible) and
coloured by `latentcat.plots.raster`, the rules `latentcat map` follows too: by a category
(the mean colour of a pixel's sources, weighted by count), a number (the mean value of a
pixel's sources on the viridis scale) or the density, with an opacity that grows with the log
of the pixel's count: a view of millions of points costs a few vectorised passes over them.
The marks (a cross on the source, rings on its neighbours) are drawn by Pillow.

A view is square in data units per pixel: the window asked for is widened along its short
side to the image's shape, so the pixel under a click maps back to one map position
(`View.data_at`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from latentcat.errors import LatentcatError
from latentcat.plots import raster

WIDTH, HEIGHT = 880, 600
"""Pixels of a map view."""

NAMED_MAX = 500
"""Most points in a view that its page names under the cursor (a link with a tooltip each)."""

HIGHLIGHT_RGB = (0, 0, 0)
RING_RGB = (214, 39, 40)

# The colourings a map can have: key -> (label, SQL giving source_id and value, categorical?).
# The SQL is fixed here; a page only names a key of this table (or of the numeric source_meta
# columns the catalogue itself lists, see `MapData.colourings`).
FIXED_COLOURINGS = {
    "class": ("DR3 class (labels)", "SELECT source_id, best_class_name AS value FROM labels", True),
    "predicted": ("predicted class (latest classifier)",
                  "SELECT source_id, arg_max(class, probability) AS value FROM predictions GROUP BY 1", True),
    "period": ("log10 period (d)", "SELECT source_id, log10(period) AS value FROM features WHERE period > 0", False),
    "g_mag": ("G magnitude", "SELECT source_id, phot_g_mean_mag AS value FROM sources", False),
    "bp_rp": ("BP - RP colour (mag)", "SELECT source_id, bp_rp AS value FROM sources", False),
    "outlier": ("outlier score (isolation forest)",
                "SELECT source_id, score AS value FROM outlier_scores WHERE method = 'isolation_forest:space'", False),
    "density": ("sources per pixel", None, False),
}
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL",
                 "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


@dataclass(frozen=True)
class View:
    """A window of the map: x from x0 to x1, y from y0 to y1 (map units)."""

    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def parse(cls, text: str) -> View:
        """``"x0,x1,y0,y1"`` as a View; anything else is a one-line error."""
        parts = str(text).split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4 or not all(math.isfinite(v) and abs(v) < 1e12 for v in values):
            raise LatentcatError(f"bad view {text!r}: give four numbers x0,x1,y0,y1")
        x0, x1, y0, y1 = values
        if not (x1 > x0 and y1 > y0) or min(x1 - x0, y1 - y0) < 1e-9:
            raise LatentcatError(f"bad view {text!r}: x1 must exceed x0 and y1 exceed y0")
        return cls(x0, x1, y0, y1)

    def param(self) -> str:
        """The view as it is written in a URL."""
        return ",".join(f"{v:.6g}" for v in (self.x0, self.x1, self.y0, self.y1))

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def fitted(self, width: int = WIDTH, height: int = HEIGHT) -> View:
        """The window widened along its short side so that a map unit spans as many pixels in x as in y."""
        scale = max((self.x1 - self.x0) / width, (self.y1 - self.y0) / height)
        cx, cy = self.centre
        return View(cx - scale * width / 2, cx + scale * width / 2, cy - scale * height / 2, cy + scale * height / 2)

    def zoomed(self, factor: float, centre: tuple[float, float] | None = None) -> View:
        """The window ``factor`` times smaller (factor < 1: larger), around ``centre`` or its own."""
        cx, cy = centre or self.centre
        hw, hh = (self.x1 - self.x0) / (2 * factor), (self.y1 - self.y0) / (2 * factor)
        return View(cx - hw, cx + hw, cy - hh, cy + hh)

    def panned(self, fx: float, fy: float) -> View:
        """The window moved by ``fx`` of its width to the right and ``fy`` of its height up."""
        dx, dy = fx * (self.x1 - self.x0), fy * (self.y1 - self.y0)
        return View(self.x0 + dx, self.x1 + dx, self.y0 + dy, self.y1 + dy)

    def data_at(self, px: float, py: float, width: int = WIDTH, height: int = HEIGHT) -> tuple[float, float]:
        """The map position under pixel (px, py) of this (fitted) view; py counts down from the top."""
        return (self.x0 + (px + 0.5) / width * (self.x1 - self.x0),
                self.y1 - (py + 0.5) / height * (self.y1 - self.y0))

    def pixel_of(self, x, y, width: int = WIDTH, height: int = HEIGHT):
        """Pixel column and row (row 0 at the top) of map positions, as floats."""
        return ((np.asarray(x) - self.x0) / (self.x1 - self.x0) * width,
                (self.y1 - np.asarray(y)) / (self.y1 - self.y0) * height)


MAX_LASSO_POINTS = 200
"""Most corners a lasso may have (the map script simplifies a drawn one to fewer)."""


@dataclass(frozen=True)
class Selection:
    """Sources chosen on the map: a box (``box=x0,x1,y0,y1``) or a lasso, a closed polygon
    (``lasso=x1,y1,x2,y2,...``, 3 to `MAX_LASSO_POINTS` corners), in map units."""

    kind: str                       # "box" or "lasso"
    bounds: View                    # the box, or the lasso's bounding box
    corners: tuple[tuple[float, float], ...] = ()

    @classmethod
    def parse(cls, params) -> Selection:
        """The selection in a request's parameters; anything else is a one-line error."""
        if str(params.get("lasso", "")).strip():
            text = str(params["lasso"])
            try:
                values = [float(v) for v in text.split(",")]
            except ValueError:
                values = []
            n = len(values) // 2
            if len(values) % 2 or not 3 <= n <= MAX_LASSO_POINTS or not all(math.isfinite(v) and abs(v) < 1e12
                                                                          for v in values):
                raise LatentcatError(f"bad lasso {text[:60]!r}...: give 3 to {MAX_LASSO_POINTS} corners as "
                                     "x1,y1,x2,y2,... in map units")
            corners = tuple(zip(values[0::2], values[1::2]))
            xs, ys = values[0::2], values[1::2]
            if max(xs) - min(xs) < 1e-9 or max(ys) - min(ys) < 1e-9:
                raise LatentcatError("bad lasso: it encloses no area")
            return cls("lasso", View(min(xs), max(xs), min(ys), max(ys)), corners)
        if str(params.get("box", "")).strip():
            return cls("box", View.parse(params["box"]))
        raise LatentcatError("a selection needs its box (box=x0,x1,y0,y1) or lasso (lasso=x1,y1,x2,y2,...) in map "
                             "units: shift-drag or alt-drag on the map")

    def params(self) -> dict[str, str]:
        """The selection as URL parameters."""
        if self.kind == "box":
            return {"box": self.bounds.param()}
        return {"lasso": ",".join(f"{v:.6g}" for corner in self.corners for v in corner)}


@dataclass
class Colouring:
    """What a map is coloured by, aligned with `MapData`'s rows."""

    key: str
    label: str
    categorical: bool
    codes: np.ndarray | None = None      # categorical: category number per point
    names: list[str] | None = None       # categorical: names, largest first
    counts: list[int] | None = None      # categorical: sources per category in the whole map
    colours: np.ndarray | None = None    # categorical: (n_categories, 3) float RGB in 0..1
    values: np.ndarray | None = None     # numeric: value per point (NaN where missing)
    lo: float = 0.0
    hi: float = 1.0

    def legend(self) -> list[tuple[str, str, int | None]]:
        """(name, #rrggbb, count) per category; for numbers, the low and high ends of the scale."""
        if self.categorical:
            return [(name, "#%02x%02x%02x" % tuple(int(round(c * 255)) for c in rgb), n)
                    for name, rgb, n in zip(self.names, self.colours, self.counts)]
        return []

    def gradient(self) -> list[str]:
        """The numeric scale's colours, low to high, as #rrggbb stops."""
        return ["#%02x%02x%02x" % tuple(int(c) for c in raster.VIRIDIS[i]) for i in np.linspace(0, 255, 9).astype(int)]


class MapData:
    """The stored map of an open catalogue, held in memory, drawn view by view.

    Parameters
    ----------
    cat : latentcat.query.catalog.Catalog
    """

    def __init__(self, cat):
        self._cat = cat
        table = cat.map()
        ids = table.column("source_id").to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order]
        self.x = table.column("x").to_numpy().astype(np.float32)[order]
        self.y = table.column("y").to_numpy().astype(np.float32)[order]
        self.n = int(self.ids.size)
        self._colourings: dict[str, Colouring] = {}
        self._lock = threading.Lock()
        if self.n:
            full = View(float(self.x.min()), float(self.x.max()), float(self.y.min()), float(self.y.max()))
            pad_x, pad_y = max(full.x1 - full.x0, 1e-6) * 0.03, max(full.y1 - full.y0, 1e-6) * 0.03
            self.full = View(full.x0 - pad_x, full.x1 + pad_x, full.y0 - pad_y, full.y1 + pad_y).fitted()
        else:
            self.full = View(-1.0, 1.0, -1.0, 1.0).fitted()
        self.options = self._options(cat)

    @staticmethod
    def _options(cat) -> dict[str, tuple[str, str | None, bool]]:
        """The colourings this catalogue offers: the fixed ones whose tables have rows, then
        every numeric source_meta column, each by its own name."""
        counts = cat.info()["counts"]
        options = {}
        for key, (label, sql, categorical) in FIXED_COLOURINGS.items():
            if key == "predicted" and not counts.get("predictions"):
                continue
            if key == "outlier" and not cat.sql(
                    "SELECT count(*) AS n FROM outlier_scores WHERE method = 'isolation_forest:space'"
            ).column("n")[0].as_py():
                continue
            options[key] = (label, sql, categorical)
        columns = cat.sql("SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'source_meta' AND table_catalog = current_database() "
                          "ORDER BY ordinal_position").to_pylist()
        for col in columns:
            name, kind = col["column_name"], str(col["data_type"]).split("(")[0].upper()
            if name == "source_id" or kind not in NUMERIC_TYPES or name in options:
                continue
            quoted = '"' + name.replace('"', '""') + '"'  # a name the catalogue gave, quoted
            options[name] = (name, f"SELECT source_id, CAST({quoted} AS DOUBLE) AS value FROM source_meta", False)
        return options

    def position(self, source_id: int) -> tuple[float, float] | None:
        """The map position of a source, or None when it is not on the map."""
        i = int(np.searchsorted(self.ids, source_id))
        if i < self.n and self.ids[i] == source_id:
            return float(self.x[i]), float(self.y[i])
        return None

    def colouring(self, key: str) -> Colouring:
        """The colouring named ``key`` (one of `options`), read from the catalogue once."""
        if key not in self.options:
            raise LatentcatError(f"unknown colour {key!r}: choose one of {', '.join(self.options)}")
        with self._lock:
            if key not in self._colourings:
                self._colourings[key] = self._read_colouring(key)
            return self._colourings[key]

    def _aligned(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Row of each value in the map (-1 where it is not on the map), and the values' positions."""
        ids = table.column("source_id").to_numpy().astype(np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), max(self.n - 1, 0))
        hit = (self.ids[pos] == ids) if self.n else np.zeros(ids.size, bool)
        return pos[hit], np.flatnonzero(hit)

    def _read_colouring(self, key: str) -> Colouring:
        label, sql, categorical = self.options[key]
        if sql is None:
            return Colouring(key, label, False)
        table = self._cat.sql(sql)
        rows, taken = self._aligned(table)
        values = table.column("value").take(pa.array(taken, pa.int64()))
        if categorical:
            strings = np.full(self.n, None, dtype=object)
            strings[rows] = pc.cast(values, pa.string()).to_numpy(zero_copy_only=False)
            codes, names, counts, colours = raster.categories(pa.array(strings, pa.string()))
            return Colouring(key, label, True, codes=codes, names=names, counts=counts, colours=colours)
        numbers = np.full(self.n, np.nan, np.float32)
        numbers[rows] = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
        ok = np.isfinite(numbers)
        lo, hi = (np.percentile(numbers[ok], [1, 99]) if ok.any() else (0.0, 1.0))
        return Colouring(key, label, False, values=numbers, lo=float(lo), hi=float(hi) if hi > lo else float(lo) + 1)

    def in_view(self, view: View) -> np.ndarray:
        """Row numbers of the points inside a view."""
        return np.flatnonzero((self.x >= view.x0) & (self.x < view.x1) & (self.y >= view.y0) & (self.y < view.y1))

    def select(self, selection: Selection) -> np.ndarray:
        """Row numbers of the points inside a box or a lasso (matplotlib's point-in-polygon
        test, on the points of the lasso's bounding box only)."""
        rows = self.in_view(selection.bounds)
        if selection.kind == "box" or rows.size == 0:
            return rows
        from matplotlib.path import Path as Polygon

        inside = Polygon(np.asarray(selection.corners)).contains_points(np.column_stack([self.x[rows], self.y[rows]]))
        return rows[inside]

    def nearest(self, view: View, px: float, py: float, radius_px: float = 12.0,
                width: int = WIDTH, height: int = HEIGHT) -> int | None:
        """The source_id of the point nearest pixel (px, py) of a fitted view, within ``radius_px``."""
        rows = self.in_view(view)
        if rows.size == 0:
            return None
        cx, cy = view.pixel_of(self.x[rows], self.y[rows], width, height)
        d2 = (cx - (px + 0.5)) ** 2 + (cy - (py + 0.5)) ** 2
        best = int(np.argmin(d2))
        return int(self.ids[rows[best]]) if d2[best] <= radius_px ** 2 else None

    def named(self, view: View, rows: np.ndarray, colour: str = "class", width: int = WIDTH,
              height: int = HEIGHT) -> list[tuple[int, float, float, str]]:
        """The points of a fitted view (``rows``: its `in_view`) as (source_id, pixel x, pixel y,
        label) when it holds at most `NAMED_MAX` of them, else none: the label is the ``colour``
        value (class name, or the number, "no value" where missing)."""
        if rows.size == 0 or rows.size > NAMED_MAX:
            return []
        cx, cy = view.pixel_of(self.x[rows], self.y[rows], width, height)
        colouring = self.colouring(colour)
        if colouring.categorical:
            labels = [colouring.names[c] for c in colouring.codes[rows]]
        elif colouring.values is not None:
            labels = [f"{colouring.label} {v:.4g}" if math.isfinite(v) else f"{colouring.label}: no value"
                      for v in colouring.values[rows].tolist()]
        else:
            labels = [""] * rows.size
        return [(int(sid), float(x), float(y), label)
                for sid, x, y, label in zip(self.ids[rows].tolist(), cx.tolist(), cy.tolist(), labels)]

    def render(self, view: View, colour: str = "class", mark: int | None = None, rings=(),
               width: int = WIDTH, height: int = HEIGHT) -> bytes:
        """A fitted view as PNG bytes: the points coloured by ``colour``, a cross on ``mark``
        and a ring on each source of ``rings`` (source_ids), where they lie in the view."""
        colouring = self.colouring(colour)
        rows = self.in_view(view)
        block = int(np.clip(np.sqrt(width * height / max(rows.size, 1)) / 2, 1, 4))
        nx, ny = -(-width // block), -(-height // block)
        col, row = view.pixel_of(self.x[rows], self.y[rows], nx, ny)
        pixel = np.clip(row.astype(np.int64), 0, ny - 1) * nx + np.clip(col.astype(np.int64), 0, nx - 1)
        if colouring.categorical:
            rgb, alpha = raster.rasterise(pixel, nx * ny, codes=colouring.codes[rows], colours=colouring.colours)
        elif colouring.values is not None:
            rgb, alpha = raster.rasterise(pixel, nx * ny, values=colouring.values[rows], lo=colouring.lo, hi=colouring.hi)
        else:  # density
            rgb, alpha = raster.rasterise(pixel, nx * ny)
        image = 1.0 - alpha[:, None] * (1.0 - rgb)  # over a white background
        image = (image * 255 + 0.5).astype(np.uint8).reshape(ny, nx, 3)
        if block > 1:
            image = np.repeat(np.repeat(image, block, axis=0), block, axis=1)[:height, :width]
        picture = Image.fromarray(np.ascontiguousarray(image), "RGB")
        pen = ImageDraw.Draw(picture)
        for sid in rings:
            self._mark(pen, view, sid, ring=True, size=(width, height))
        if mark is not None:
            self._mark(pen, view, mark, ring=False, size=(width, height))
        return raster.png_bytes(np.asarray(picture))

    def _mark(self, pen, view: View, source_id: int, ring: bool, size: tuple[int, int]) -> None:
        """A ring or a cross (with a white outline) at a source's place, if it is in the view."""
        where = self.position(int(source_id))
        if where is None:
            return
        px, py = view.pixel_of(where[0], where[1], *size)
        cx, cy = float(px), float(py)
        if not (0 <= cx < size[0] and 0 <= cy < size[1]):
            return
        if ring:
            pen.ellipse((cx - 8, cy - 8, cx + 8, cy + 8), outline=(255, 255, 255), width=4)
            pen.ellipse((cx - 7, cy - 7, cx + 7, cy + 7), outline=RING_RGB, width=2)
        else:
            for colour, reach, thick in (((255, 255, 255), 9, 5), (HIGHLIGHT_RGB, 7, 3)):
                pen.line((cx - reach, cy - reach, cx + reach, cy + reach), fill=colour, width=thick)
                pen.line((cx - reach, cy + reach, cx + reach, cy - reach), fill=colour, width=thick)
