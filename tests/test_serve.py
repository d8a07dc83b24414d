"""`latentcat serve` on the tiny build: routes, pages and JSON through Starlette's in-process test
client; the map's gestures (hover, wheel, box, lasso, "more like these", a download) in a real
headless Chromium driven through the DevTools protocol (tests/cdp.py), against the explorer
served by uvicorn in a thread. The browser tests skip, saying why, where no Chromium is installed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup
from PIL import Image
from starlette.testclient import TestClient

import latentcat
from latentcat.serve import Explorer, create_app, make_server
from latentcat.serve.mapview import HEIGHT, WIDTH, View

DATALINK = Path(__file__).parent / "data" / "gaia_dr3" / "epoch_photometry_datalink_8_sources.vot.xml"
DATALINK_SOURCE = 1302439147363430272
MAX_UPLOAD = 1024 * 1024
LOCAL = "http://127.0.0.1"


def chromium() -> str:
    """The system's Chromium. Without one these tests skip, saying why, unless
    LATENTCAT_REQUIRE_BROWSER=1 (set by .ci/run, which installs it) makes them fail."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "these tests drive the explorer in Chromium: install it (apt-get install -y chromium)"
        if os.environ.get("LATENTCAT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def ids_of(page: BeautifulSoup, selector: str) -> list[int]:
    """The source_ids that the links matching ``selector`` open."""
    return [int(urllib.parse.parse_qs(urllib.parse.urlsplit(a["href"]).query)["source_id"][0])
            for a in page.select(selector)]


def neighbour_ids(page: BeautifulSoup) -> list[int]:
    return [int(tr["data-source-id"]) for tr in page.select("#neighbours tr[data-source-id]")]


def one_message(response) -> str:
    """The page's one message (and no traceback)."""
    page = soup(response)
    assert len(page.select("p#message")) == 1, response.text[:3000]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return page.select_one("p#message").get_text()


@pytest.fixture(scope="module")
def stage(tiny_build, tmp_path_factory) -> Path:
    """The tiny build's archive staged again (the raw light curves the catalogue does not keep)."""
    from latentcat.gaia.ingest import ingest

    out = tmp_path_factory.mktemp("serve_stage") / "stage"
    ingest([tiny_build.archive], out)
    return out


@pytest.fixture(scope="module")
def catalogue_digest(tiny_build) -> str:
    return hashlib.sha256((tiny_build.catalogue / "catalog.duckdb").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def explorer(tiny_build, stage, catalogue_digest):
    explorer = Explorer(tiny_build.catalogue, stage=stage, max_upload=MAX_UPLOAD)
    yield explorer
    explorer.close()


@pytest.fixture(scope="module")
def app(explorer):
    return create_app(explorer)


@pytest.fixture
def client(app):
    """A browser of its own (its own cookies) on the explorer."""
    return TestClient(app, base_url=LOCAL, raise_server_exceptions=os.environ.get("LATENTCAT_RAISE") == "1")


@pytest.fixture(scope="module")
def cat(tiny_build):
    with latentcat.open(tiny_build.catalogue) as c:
        yield c


@pytest.fixture(scope="module")
def query_id(cat) -> int:
    """A source on the map with all three blocks."""
    return cat.sql("SELECT source_id FROM embeddings JOIN map USING (source_id) WHERE z IS NOT NULL "
                   "ORDER BY source_id LIMIT 1")["source_id"][0].as_py()


def test_source_page_shows_the_source_its_figures_and_its_neighbours(client, cat, query_id):
    page = soup(client.get(f"/?source_id={query_id}&k=7"))
    assert page.select_one("#source-id").get_text() == str(query_id) and not page.select("#message")
    expected = cat.similar(query_id, k=7).column("source_id").to_pylist()
    assert neighbour_ids(page) == expected and ids_of(page, "a.neighbour") == expected
    (map_input,) = page.select("input[type=image]")
    assert f"source_id={query_id}" in map_input["src"] and map_input["name"] == "at"
    metadata = page.select_one("#metadata").get_text()
    assert "phot_g_mean_mag" in metadata and "outlier rank" in metadata
    for src in (map_input["src"], page.select_one("#source-figure")["src"], page.select_one("#lightcurve")["src"],
                page.select_one("img.thumb")["src"]):
        image = client.get(src)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).format == "PNG"


def test_a_neighbour_link_keeps_k_and_the_modality(client, cat, query_id):
    page = soup(client.get(f"/?source_id={query_id}&k=5&modality=all"))
    link = page.select("a.neighbour")[2]
    neighbour = ids_of(page, "a.neighbour")[2]
    opened = soup(client.get(link["href"]))
    assert opened.select_one("#source-id").get_text() == str(neighbour)
    assert neighbour_ids(opened) == cat.similar(neighbour, k=5, modality="all").column("source_id").to_pylist()


def test_filter_and_modality_give_what_similar_gives(client, cat, query_id):
    where = "phot_g_mean_mag < 19 AND period > 0.1"
    response = client.get("/", params={"source_id": query_id, "k": 6, "modality": "fold", "where": where})
    assert response.status_code == 200
    expected = cat.similar(query_id, k=6, modality="fold", where=where).column("source_id").to_pylist()
    assert neighbour_ids(soup(response)) == expected and expected


@pytest.mark.parametrize("params, status, words", [
    ({"source_id": "123"}, 404, "source_id 123 is not in this catalogue"),
    ({"source_id": "12ab<b>"}, 400, "is not a Gaia source_id"),
    ({"source_id": "99999999999999999999"}, 400, "is not a Gaia source_id"),
    ({"source_id": "{sid}", "where": "1=1); COPY sources TO '/tmp/x.csv'; --"}, 200, "bad where filter"),
    ({"source_id": "{sid}", "where": "no_such_column > 3"}, 200, "bad where filter"),
    ({"source_id": "{sid}", "where": "x" * 600}, 400, "at most 500"),
    ({"source_id": "{sid}", "k": "101"}, 400, "k must be between 1 and 100"),
    ({"source_id": "{sid}", "k": "ten"}, 400, "not a whole number"),
    ({"source_id": "{sid}", "modality": "everything"}, 400, "unknown modality"),
    ({"colour": "secret_column"}, 400, "unknown colour"),
    ({"view": "0,1,nan,2"}, 400, "bad view"),
])
def test_every_bad_input_is_one_message(client, query_id, params, status, words):
    response = client.get("/", params={k: v.format(sid=query_id) for k, v in params.items()})
    assert response.status_code == status
    assert words in one_message(response)
    assert response.headers["content-type"].startswith("text/html")


def test_other_routes_answer_bad_requests_with_a_message(client):
    for method, path, status, words in [("GET", "/nothing", 404, "no page at /nothing"),
                                        ("POST", "/", 405, "POST is not accepted at /"),
                                        ("GET", "/plot/source.png?source_id=123", 404, "not in this catalogue"),
                                        ("GET", "/map.png?view=3,2,1,0", 400, "bad view"),
                                        ("GET", "/click?at.x=5000&at.y=2", 400, "outside the"),
                                        ("GET", "/latent?fold=1,2", 400, "give 5 finite numbers"),
                                        ("GET", "/outliers?method=secret", 400, "unknown ranking"),
                                        ("GET", "/?where=" + "x" * 5000, 414, "at most 4096")]:
        response = client.request(method, path)
        assert response.status_code == status, path
        assert words in one_message(response), path


def test_pages_escape_and_forbid_every_script_but_the_explorers(client, query_id):
    response = client.get("/", params={"source_id": query_id, "where": "best_class_name = '<script>alert(1)</script>'"})
    text = response.text
    assert re.findall(r"<script[^>]*>", text) == ['<script src="/static/map.js" defer>'] and "&lt;script&gt;" in text
    policy = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";") if d.strip())
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
    script = client.get("/static/map.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"] and "lasso" in script.text


def test_requests_for_other_hosts_are_refused(app):
    response = TestClient(app, base_url="http://attacker.example").get("/")
    assert response.status_code == 400 and "localhost" in one_message(response)


def test_served_to_the_network_it_needs_its_access_token(explorer):
    app = create_app(explorer, token="a-long-enough-token-of-this-explorer", loopback_only=False)
    token = "a-long-enough-token-of-this-explorer"
    anyone = TestClient(app, base_url="http://192.0.2.7:8765", follow_redirects=False)
    for path, headers in [("/outliers?n=3", None), ("/outliers?n=3&token=wrong", None),
                          ("/outliers?n=3", {"Cookie": "latentcat_token=wrong"}), ("/discover.csv", None)]:
        response = anyone.get(path, headers=headers)
        assert response.status_code == 403 and "access token" in one_message(response), path
        anyone.cookies.clear()
    response = anyone.get(f"/outliers?n=3&token={token}")
    assert response.status_code == 303 and response.headers["location"] == "/outliers?n=3"  # the token leaves the address
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"latentcat_token={token};") and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert anyone.get("/outliers?n=3").status_code == 200  # the cookie is enough now
    bearer = TestClient(app, base_url="http://192.0.2.7:8765")
    assert bearer.get("/outliers?n=3", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_make_server_makes_a_token_off_loopback_only(tiny_build):
    server = make_server(tiny_build.catalogue, host="0.0.0.0", port=0)  # noqa: S104 - the case under test
    try:
        assert server.token is not None and len(server.token) >= 30
        assert server.login_url.endswith(f"/?token={server.token}")
    finally:
        server.server_close()
    server = make_server(tiny_build.catalogue, port=0)
    try:
        assert server.token is None and server.login_url == server.url and server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()


def _staged_csv(stage: Path, tmp_path: Path) -> tuple[int, Path]:
    """A time,mag,mag_err CSV of the staged G light curve with the most epochs."""
    rows = pq.read_table(stage / "light_curves.parquet", columns=["source_id", "n_g", "g_time", "g_mag", "g_mag_err"])
    row = rows.take([int(np.argmax(rows.column("n_g").to_numpy()))]).to_pylist()[0]
    path = tmp_path / "my star.csv"
    path.write_text("time,mag,mag_err\n" + "".join(f"{t!r},{m!r},{e!r}\n" for t, m, e in
                                                     zip(row["g_time"], row["g_mag"], row["g_mag_err"])))
    return row["source_id"], path


def test_uploaded_light_curves_get_the_neighbours_similar_from_file_gives(client, cat, stage, tmp_path):
    from latentcat.query.by_example import similar_to_file

    form = soup(client.get("/upload")).select_one("form#upload-form")
    assert form["method"] == "post" and form["enctype"] == "multipart/form-data" and form.select("input[type=file]")
    source_id, csv = _staged_csv(stage, tmp_path)
    for path, fields in [(csv, {"k": "6", "time_format": "gaia"}),
                         (DATALINK, {"k": "4", "modality": "all", "file_source_id": str(DATALINK_SOURCE)})]:
        response = client.post("/upload", data=fields, files={"file": (path.name, path.read_bytes())})
        page = soup(response)
        assert response.status_code == 200 and not page.select("#message"), response.text[:3000]
        expected, info = similar_to_file(cat, path, k=int(fields["k"]), modality=fields.get("modality", "space"),
                                         source_id=fields.get("file_source_id") and int(fields["file_source_id"]))
        assert neighbour_ids(page) == expected.column("source_id").to_pylist()
        facts = page.select_one("#query-info").get_text()
        assert f"{info['period']:.5g}" in facts and str(info["n_obs"]) in facts
        assert page.select_one("#upload-figure")["src"].startswith("data:image/png;base64,")
    # the staged curve of a catalogue source finds that source first
    response = client.post("/upload", data={"k": "3"}, files={"file": (csv.name, csv.read_bytes())})
    assert neighbour_ids(soup(response))[0] == source_id


@pytest.mark.parametrize("fields, data, status, words", [
    ({"k": "5"}, b"a,b\n1,2\n", 400, "needs exactly the columns time,mag,mag_err"),
    ({"k": "5"}, b"time,mag,mag_err\n1,15,0.01\n2,15.1,0.01\n", 400, "the catalogue's features need at least"),
    ({"k": "5"}, b"", 400, "choose a light-curve file"),
    ({"k": "5", "bp_rp": "red"}, b"time,mag,mag_err\n1,2,3\n", 400, "is not a number"),
    ({"k": "0"}, b"time,mag,mag_err\n1,2,3\n", 400, "k must be between 1 and 100"),
    ({"k": "5"}, b"\x00" * (MAX_UPLOAD + 70_000), 413, "at most 1 MiB"),
    ({"k": "5"}, b"\x00" * (MAX_UPLOAD + 100), 413, "at most 1 MiB"),
], ids=["columns", "too-few", "empty", "bp-rp", "k", "form-too-large", "file-too-large"])
def test_bad_uploads_are_one_message(client, fields, data, status, words):
    response = client.post("/upload", data=fields, files={"file": ("bad.csv", data)})
    assert response.status_code == status
    assert words in one_message(response)


def test_an_upload_must_be_a_form(client):
    response = client.post("/upload", content=b"time,mag,mag_err\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415 and "multipart/form-data" in one_message(response)


def test_a_map_view_is_a_png_and_a_click_opens_the_nearest_source(client, explorer, query_id):
    full = explorer.map.full.fitted()
    response = client.get(f"/map.png?colour=period&view={full.param()}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (WIDTH, HEIGHT)
    zoomed = full.zoomed(4, explorer.map.position(query_id))
    assert client.get(f"/map.png?view={zoomed.param()}").content != client.get("/map.png").content
    # the source marked with a cross: black pixels at its place, none there without the mark
    x, y = explorer.map.position(query_id)
    px, py = (int(v) for v in zoomed.fitted().pixel_of(x, y))
    marked = np.asarray(Image.open(io.BytesIO(client.get(f"/map.png?view={zoomed.param()}&source_id={query_id}").content)))
    assert (marked[py - 3:py + 4, px - 3:px + 4].sum(axis=2) == 0).sum() >= 5
    # a click on the source's pixel opens its page; "zoom" keeps the click's map position at the centre
    at = {"at.x": px, "at.y": py, "view": zoomed.param()}
    opened = client.get("/click", params=at)
    assert soup(opened).select_one("#source-id").get_text() == str(query_id)
    zoom = client.get("/click", params={**at, "click": "zoom"}, follow_redirects=False)
    assert zoom.status_code == 303
    view = View.parse(urllib.parse.parse_qs(urllib.parse.urlsplit(zoom.headers["location"]).query)["view"][0])
    assert abs(view.centre[0] - x) < (view.x1 - view.x0) / 20 and abs(view.centre[1] - y) < (view.y1 - view.y0) / 20
    assert view.x1 - view.x0 < (zoomed.x1 - zoomed.x0) / 2


def test_points_in_a_small_view_are_named_and_open_their_page(client, explorer, cat, query_id, monkeypatch):
    zoomed = explorer.map.full.zoomed(3, explorer.map.position(query_id)).fitted()
    page = soup(client.get(f"/?view={zoomed.param()}&colour=class"))
    points = dict(zip(ids_of(page, "a.point"), page.select("a.point")))
    in_view = explorer.map.ids[explorer.map.in_view(zoomed)].tolist()
    assert 0 < len(in_view) < explorer.map.n and sorted(points) == sorted(in_view)
    label = cat.sql("SELECT best_class_name FROM labels WHERE source_id = ?", [query_id])["best_class_name"]
    assert points[query_id]["title"] == f"source_id {query_id} · {label[0].as_py() if len(label) else 'unlabelled'}"
    left, top = map(int, re.search(r"left:\s*(-?\d+)px;\s*top:\s*(-?\d+)px", points[query_id]["style"]).groups())
    px, py = zoomed.pixel_of(*explorer.map.position(query_id))
    assert abs(left + 4 - px) <= 1 and abs(top + 4 - py) <= 1
    assert soup(client.get(points[query_id]["href"])).select_one("#source-id").get_text() == str(query_id)
    # coloured by a number, the tooltip gives the number; a view of more points than the limit names none
    g = cat.sql("SELECT phot_g_mean_mag FROM sources WHERE source_id = ?", [query_id])["phot_g_mean_mag"][0].as_py()
    assert f'title="source_id {query_id} · G magnitude {g:.4g}"' in client.get(f"/?view={zoomed.param()}&colour=g_mag").text
    monkeypatch.setattr("latentcat.serve.mapview.NAMED_MAX", len(in_view) - 1)
    text = client.get(f"/?view={zoomed.param()}").text
    assert 'class="point"' not in text and "to have the points under the cursor named" in text


def test_home_page_has_the_clickable_map_and_its_colourings(client):
    page = soup(client.get("/"))
    (map_input,) = page.select("input[type=image][name=at]")
    assert map_input["src"].startswith("/map.png") and page.select_one("form#mapform")["action"] == "/click"
    assert {a["value"] for a in page.select("input[type=radio][name=click]")} == {"open", "zoom", "centre"}
    assert {"class", "period", "g_mag", "ra", "parallax"} <= {o["value"] for o in page.select("option")}


def test_outliers_and_class_pages(client, cat):
    top = cat.sql("SELECT source_id FROM outlier_scores WHERE method = 'isolation_forest:space' ORDER BY rank LIMIT 5")
    page = soup(client.get("/outliers?n=5"))
    assert ids_of(page, "#outliers a.source") == top.column("source_id").to_pylist()
    assert len(page.select("img.thumb")) == 5
    model, name, n = cat.sql("SELECT model_id, class, count(*) AS n FROM predictions GROUP BY ALL "
                             "ORDER BY n DESC LIMIT 1").to_pylist()[0].values()
    assert name in soup(client.get("/classes")).select_one("#classes").get_text()
    response = client.get("/classes", params={"model": model, "class": name})
    expected = cat.sql("SELECT source_id FROM predictions WHERE model_id = $m AND class = $c "
                       "ORDER BY probability DESC, source_id LIMIT 20", {"m": model, "c": name})
    assert ids_of(soup(response), "a.source") == expected.column("source_id").to_pylist()
    assert f"{n:,} sources predicted" in response.text


def _next(response) -> int:
    return int(soup(response).select_one("div#next")["data-source-id"])


def test_discovery_pages_follow_each_browsers_session_and_download_its_answers(app, cat):
    mirror = cat.discover()  # the same session, answered the same way here
    browser = TestClient(app, base_url=LOCAL)
    response = browser.get("/discover")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("latentcat_session=") and "httponly" in cookie.lower()
    first = _next(response)
    assert first == mirror.next()
    response = browser.post("/discover", data={"source_id": first, "answer": "yes", "back": "discover"})
    mirror.label(first, True)
    page = soup(response)  # the redirect leads back to the page, with the next source
    assert str(first) in page.select_one("#answers").get_text() and "1 interesting" in page.select_one("#counts").get_text()
    second = _next(response)
    assert second == mirror.next() and second != first
    # the outliers page answers too, and comes back to the same ranking
    page = soup(browser.get("/outliers?n=5"))
    assert len(page.select('form[action="/discover"]')) == 5
    row = ids_of(page, "#outliers a.source")[1]
    response = browser.post("/discover", data={"source_id": row, "answer": "no", "back": "outliers",
                                               "method": "isolation_forest:space", "n": 5})
    mirror.label(row, False)
    assert "Top 5 outliers" in response.text and "not interesting" in response.text
    browser.post("/discover", data={"source_id": second, "answer": "skip"})
    mirror.skip(second)
    assert _next(browser.get("/discover")) == mirror.next()
    download = browser.get("/discover.csv")
    assert download.headers["content-type"].startswith("text/csv") and download.text == mirror.to_csv()
    # another browser has a session of its own: none of those answers, the forest's first source next
    other = TestClient(app, base_url=LOCAL)
    assert _next(other.get("/discover")) == first and other.get("/discover.csv").text == "source_id,interesting\n"
    # bad answers are one message each, and change nothing
    for fields, code, words in [({"source_id": first, "answer": "maybe"}, 400, "unknown answer"),
                                ({"source_id": "x1", "answer": "yes"}, 400, "is not a Gaia source_id"),
                                ({"source_id": 7, "answer": "yes"}, 404, "not in this catalogue"),
                                ({"source_id": first, "answer": "yes", "back": "https://elsewhere"}, 400, "unknown back")]:
        response = browser.post("/discover", data=fields)
        assert response.status_code == code and words in one_message(response)
    response = browser.post("/discover", content=b"source_id=1&answer=yes", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    response = browser.post("/discover", content=b"source_id=1&answer=yes&" + b"x" * 5000,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert browser.get("/discover.csv").text == mirror.to_csv()


def _box_ids(cat, box: tuple[float, float, float, float]) -> list[int]:
    x0, x1, y0, y1 = box
    return cat.sql("SELECT source_id FROM map WHERE x >= $x0 AND x < $x1 AND y >= $y0 AND y < $y1 ORDER BY source_id",
                   {"x0": x0, "x1": x1, "y0": y0, "y1": y1}).column("source_id").to_pylist()


def _triangle_ids(cat, corners) -> list[int]:
    """Sources inside a triangle (same side of its three edges), from the catalogue's map table."""
    (ax, ay), (bx, by), (cx, cy) = corners
    xy = cat.sql("SELECT source_id, x, y FROM map ORDER BY source_id").to_pylist()

    def side(px, py, x0, y0, x1, y1):
        return (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)

    inside = []
    for r in xy:
        s = [side(r["x"], r["y"], ax, ay, bx, by), side(r["x"], r["y"], bx, by, cx, cy),
             side(r["x"], r["y"], cx, cy, ax, ay)]
        if all(v > 0 for v in s) or all(v < 0 for v in s):
            inside.append(r["source_id"])
    return inside


def test_a_box_of_the_map_lists_downloads_and_ranks_more_like_these(client, cat):
    xy = cat.sql("SELECT median(x) AS x, median(y) AS y FROM map").to_pylist()[0]
    param = ",".join(f"{v:.6g}" for v in (xy["x"] - 1.5, xy["x"] + 1.5, xy["y"] - 1.5, xy["y"] + 1.5))
    want = _box_ids(cat, tuple(float(v) for v in param.split(",")))
    assert 5 <= len(want) <= 200
    page = soup(client.get(f"/selection?box={param}"))
    assert ids_of(page, "#selection a.source") == want[:50]
    assert f"{len(want):,} sources in the box" in page.select_one("#summary").get_text()
    response = client.get(f"/selection.parquet?box={param}")
    assert response.status_code == 200 and 'filename="selection.parquet"' in response.headers["content-disposition"]
    table = pq.read_table(pa.BufferReader(response.content))
    assert table.column("source_id").to_pylist() == want
    assert table.column_names == cat.sql("SELECT * FROM source_meta LIMIT 0").column_names
    response = client.get(f"/selection.csv?box={param}")
    assert response.status_code == 200 and response.text.count("\n") == len(want) + 1
    # more like these: Catalog.like of the same members, with its self-check
    page = soup(client.get(page.select_one("a#like")["href"]))
    ranked = ids_of(page, "#liked a.source")
    assert ranked == cat.like(want, top=100, with_meta=False).column("source_id").to_pylist() and not set(ranked) & set(want)
    assert "held out" in page.select_one("#self-check").get_text()
    assert f"{len(want):,} members compared" in page.select_one("#like-info").get_text()
    for path, words in [("/selection", "needs its box"), ("/selection?box=1,0,0,1", "x1 must exceed x0"),
                        ("/like?box=abc", "give four numbers"), ("/selection?lasso=1,2,3", "give 3 to 200 corners"),
                        ("/selection?lasso=0,0,0,1,0,2", "encloses no area"), ("/like?lasso=0,0,1,0,2", "give 3 to"),
                        ("/api/nearest?px=a&py=1", "give the pixel")]:
        response = client.get(path)
        assert response.status_code == 400 and words in one_message(response), path


def test_a_lasso_selects_the_sources_inside_it(client, cat):
    xy = cat.sql("SELECT median(x) AS x, median(y) AS y FROM map").to_pylist()[0]
    corners = [(xy["x"] - 2.5, xy["y"] - 2.0), (xy["x"] + 2.5, xy["y"] - 1.5), (xy["x"] + 0.2, xy["y"] + 2.5)]
    param = ",".join(f"{v:.6g}" for corner in corners for v in corner)
    corners = [(float(a), float(b)) for a, b in zip(param.split(",")[0::2], param.split(",")[1::2])]
    want = _triangle_ids(cat, corners)
    assert 5 <= len(want) <= 200
    page = soup(client.get(f"/selection?lasso={param}"))
    assert f"{len(want):,} sources in the lasso" in page.select_one("#summary").get_text()
    assert ids_of(page, "#selection a.source") == want[:50]
    table = pq.read_table(pa.BufferReader(client.get(f"/selection.parquet?lasso={param}").content))
    assert table.column("source_id").to_pylist() == want
    like = soup(client.get(page.select_one("a#like")["href"]))
    assert ids_of(like, "#liked a.source") == cat.like(want, top=100, with_meta=False).column("source_id").to_pylist()


def test_hover_names_the_nearest_source(client, cat):
    sid = cat.sql("SELECT source_id FROM map ORDER BY source_id LIMIT 1").column(0)[0].as_py()
    bounds = cat.sql("SELECT min(x) AS x0, max(x) AS x1, min(y) AS y0, max(y) AS y1 FROM map").to_pylist()[0]
    view = ",".join(f"{v:.6g}" for v in (bounds["x0"] - 1, bounds["x1"] + 1, bounds["y0"] - 1, bounds["y1"] + 1))
    x, y = cat.sql(f"SELECT x, y FROM map WHERE source_id = {sid}").to_pylist()[0].values()
    px, py = View.parse(view).fitted().pixel_of(x, y)
    response = client.get(f"/api/nearest?view={view}&px={float(px) - 0.5}&py={float(py) - 0.5}")
    found = response.json()
    assert response.headers["content-type"] == "application/json"
    assert found["page"] == f"/?source_id={found['source_id']}" and int(found["source_id"]) in _box_ids(
        cat, (x - 1, x + 1, y - 1, y + 1))
    assert client.get(f"/api/nearest?view={view}&px=-500&py=-500").json() == {}


def test_latent_traversal_starts_at_the_sources_codes_and_decodes(client, cat, query_id):
    page = soup(client.get(f"/latent?source_id={query_id}"))
    codes = cat.codes(query_id)
    for block in ("xp", "dmdt", "fold"):
        sliders = [page.select_one(f"input[type=range][name={block}{d}]") for d in range(5)]
        np.testing.assert_allclose([float(s["value"]) for s in sliders], codes[block], rtol=1e-3, atol=1e-3)
    image = client.get(page.select_one("img#decoded")["src"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    moved = {"source_id": query_id, **{f"fold{d}": f"{v:.4g}" for d, v in enumerate(codes["fold"])}, "fold4": "1.5"}
    assert float(soup(client.get("/latent", params=moved)).select_one("input[name=fold4]")["value"]) == 1.5


def test_discovery_answers_are_saved_to_a_file_and_resumed(tiny_build, tmp_path, catalogue_digest):
    from latentcat.analysis.discover import read_answers
    from latentcat.errors import LatentcatError

    path = tmp_path / "answers.csv"
    explorer = Explorer(tiny_build.catalogue, answers=path)
    try:
        browser = TestClient(create_app(explorer), base_url=LOCAL, follow_redirects=False)
        first = _next(browser.get("/discover"))
        assert browser.post("/discover", data={"source_id": first, "answer": "yes"}).status_code == 303
        assert read_answers(path) == {first: True}
        # a second browser shares the file-backed session: it is shown the next source
        other = TestClient(create_app(explorer), base_url=LOCAL, follow_redirects=False)
        second = _next(other.get("/discover"))
        assert second != first
        other.post("/discover", data={"source_id": second, "answer": "no"})
        assert read_answers(path) == {first: True, second: False}
        assert "saved to answers.csv" in browser.get("/discover").text
    finally:
        explorer.close()
    again = Explorer(tiny_build.catalogue, answers=path)  # a new explorer resumes the session
    try:
        browser = TestClient(create_app(again), base_url=LOCAL)
        assert browser.get("/discover.csv").text == f"source_id,interesting\n{first},true\n{second},false\n"
        assert _next(browser.get("/discover")) not in (first, second)
    finally:
        again.close()
    path.write_text("source_id,interesting\n1,yes\n")
    with pytest.raises(LatentcatError, match="source_id 1 is not in the catalogue"):
        Explorer(tiny_build.catalogue, answers=path)
    assert hashlib.sha256((tiny_build.catalogue / "catalog.duckdb").read_bytes()).hexdigest() == catalogue_digest


def test_the_catalogue_is_never_written(tiny_build, catalogue_digest, explorer):
    # after every request above (module order), the file is byte for byte what it was
    assert hashlib.sha256((tiny_build.catalogue / "catalog.duckdb").read_bytes()).hexdigest() == catalogue_digest


# ---------------------------------------------------------------- served, and in a real browser


@pytest.fixture(scope="module")
def server(tiny_build, stage):
    """The explorer served by uvicorn on a free port, in a thread."""
    srv = make_server(tiny_build.catalogue, port=0, stage=stage, max_upload=MAX_UPLOAD)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv._server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chromium_profile")


def _map_origin(page) -> tuple[float, float]:
    rect = json.loads(page.evaluate("JSON.stringify(document.querySelector('input.map').getBoundingClientRect())"))
    return rect["x"] + 1, rect["y"] + 1  # inside the image's 1-pixel border


def test_in_the_browser_hover_names_wheel_zooms_and_a_box_leads_to_more_like_these(server, cat, profile):
    from cdp import SHIFT, Browser

    with Browser(chromium(), profile / "box") as page:
        page.open(server.url)
        x0, y0 = _map_origin(page)
        start = page.evaluate("document.getElementById('mapbox').dataset.view")
        view = View(*(float(v) for v in start.split(",")))
        # hover: the nearest source named, with its thumbnail
        xy = cat.sql("SELECT source_id, x, y FROM map ORDER BY source_id LIMIT 1").to_pylist()[0]
        px, py = (float(v) for v in view.pixel_of(xy["x"], xy["y"]))
        page.mouse("mouseMoved", x0 + px, y0 + py)
        named = page.wait_for("!document.getElementById('maptip').hidden && document.getElementById('maptip').dataset.sourceId")
        assert int(named) in cat.sql("SELECT source_id FROM map").column("source_id").to_pylist()
        # a plain click opens a source within the click radius, as the form does without the script
        page.mouse("mousePressed", x0 + px, y0 + py)
        page.mouse("mouseReleased", x0 + px, y0 + py)
        opened = page.wait_for("location.search.includes('source_id=') && document.readyState === 'complete' && "
                               "new URLSearchParams(location.search).get('source_id')")
        ox, oy = cat.sql(f"SELECT x, y FROM map WHERE source_id = {int(opened)}").to_pylist()[0].values()
        assert np.hypot(*(float(a) - b for a, b in zip(view.pixel_of(ox, oy), (px, py)))) <= 13
        page.open(server.url)
        # the wheel zooms in around the cursor: a view 1.5 times smaller, in the address too
        page.mouse("mouseWheel", x0 + 440, y0 + 300, deltaX=0, deltaY=-120)
        zoomed = page.wait_for(f"document.getElementById('mapbox').dataset.view !== {json.dumps(start)} && "
                               "document.getElementById('mapbox').dataset.view")
        a, b = (float(v) for v in zoomed.split(",")[:2])
        assert abs((b - a) * 1.5 - (view.x1 - view.x0)) < 1e-3 * (view.x1 - view.x0)
        assert "view=" in page.evaluate("location.search")
        # shift-drag selects a box: its sources listed, then "more like these"
        page.drag((x0 + 300, y0 + 200), (x0 + 600, y0 + 420), modifiers=SHIFT)
        title = page.wait_for("location.pathname === '/selection' && document.readyState === 'complete' && "
                              "document.querySelector('h1').textContent")
        box = dict(urllib.parse.parse_qsl(page.evaluate("location.search.slice(1)")))["box"]
        want = _box_ids(cat, tuple(float(v) for v in box.split(",")))
        assert title == f"Selection: {len(want):,} sources"
        # the download link gives the selection's rows, read by the page itself
        csv = page.evaluate("fetch(document.getElementById('csv').href).then(r => r.text())")
        assert csv.count("\n") == len(want) + 1 and all(str(s) in csv for s in want)
        page.evaluate("document.getElementById('like').click()")
        check = page.wait_for("location.pathname === '/like' && document.readyState === 'complete' && "
                              "document.getElementById('self-check').textContent")
        assert check.startswith("Self-check:")
        ranked = page.evaluate("[...document.querySelectorAll('#liked a.source')].map(a => a.textContent)")
        assert len(want) <= 2000  # the tiny build: every selected source is a member
        assert [int(r) for r in ranked] == cat.like(want, top=100, with_meta=False).column("source_id").to_pylist()


def test_in_the_browser_a_lasso_selects_what_it_encloses(server, cat, profile):
    from cdp import Browser

    with Browser(chromium(), profile / "lasso") as page:
        page.open(server.url)
        x0, y0 = _map_origin(page)
        page.evaluate("document.querySelector('#maptools input[value=lasso]').click()")  # the tool, not a modifier
        # a triangle drawn point by point (a lasso closes itself)
        corners = [(250, 150), (650, 250), (350, 480)]
        path = [(x0 + a[0] + f * (b[0] - a[0]), y0 + a[1] + f * (b[1] - a[1]))
                for a, b in zip(corners, corners[1:] + corners[:1]) for f in np.linspace(0, 1, 10, endpoint=False)]
        page.trace(path + [path[0]])
        title = page.wait_for("location.pathname === '/selection' && document.readyState === 'complete' && "
                              "document.querySelector('h1').textContent")
        lasso = [float(v) for v in dict(urllib.parse.parse_qsl(page.evaluate("location.search.slice(1)")))["lasso"].split(",")]
        assert len(lasso) >= 6 and len(lasso) % 2 == 0
        from latentcat.serve.mapview import Selection

        rows = server.explorer.map.select(Selection.parse({"lasso": ",".join(f"{v:.6g}" for v in lasso)}))
        assert rows.size and title == f"Selection: {rows.size:,} sources"
        # the triangle drawn: its corners in map units are among the lasso's
        view = server.explorer.map.full.fitted()  # the page opened on the whole map
        for cx, cy in corners:
            mx, my = view.data_at(cx, cy)
            assert min(np.hypot(np.array(lasso[0::2]) - mx, np.array(lasso[1::2]) - my)) < 0.01 * (view.x1 - view.x0)


def test_the_cli_serves_a_catalogue_with_workers_sharing_discovery(tiny_build):
    proc = subprocess.Popen([sys.executable, "-m", "latentcat.cli", "serve", "--catalog", str(tiny_build.catalogue),
                             "--port", "0", "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + proc.stderr.read()
        base = url.group(0)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

        def get(path: str, data: bytes | None = None) -> str:
            for _ in range(600):  # the workers start
                try:
                    with opener.open(base + path, data=data, timeout=120) as response:
                        return response.read().decode()
                except ConnectionError:
                    time.sleep(0.2)
            raise TimeoutError(base)

        assert 'name="at"' in get("")
        answered = []
        for _ in range(6):  # answers spread over both processes, each seen by the next request
            sid = int(BeautifulSoup(get("discover"), "html.parser").select_one("div#next")["data-source-id"])
            assert sid not in answered
            get("discover", urllib.parse.urlencode({"source_id": sid, "answer": "no"}).encode())
            answered.append(sid)
        assert get("discover.csv") == "source_id,interesting\n" + "".join(f"{s},false\n" for s in answered)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    bad = subprocess.run([sys.executable, "-m", "latentcat.cli", "serve", "--catalog", str(tiny_build.catalogue / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
