"""`latentcat serve`: the explorer driven in a real headless browser (Chromium) on the tiny build.

The server runs in a thread on a free port; pages are loaded with
``chromium --headless --dump-dom`` and read back from the DOM the browser built; the map's
mouse gestures (hover, wheel, shift-drag) are sent through the DevTools protocol
(tests/cdp.py); uploads, images, JSON and redirects are checked with urllib.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import latentcat
from latentcat.serve import make_server
from latentcat.serve.mapview import HEIGHT, WIDTH

DATALINK = Path(__file__).parent / "data" / "gaia_dr3" / "epoch_photometry_datalink_8_sources.vot.xml"
DATALINK_SOURCE = 1302439147363430272
MAX_UPLOAD = 1024 * 1024
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Dom(HTMLParser):
    """What a test needs of a page: its elements with their attributes, and the text inside each id."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag not in VOID:
            self._open.append((tag, attrs.get("id")))
            if attrs.get("id"):
                self.text.setdefault(attrs["id"], "")

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for _, ident in self._open:
            if ident:
                self.text[ident] += data

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def neighbour_ids(self) -> list[int]:
        return [int(a["data-source-id"]) for a in self.find("tr") if "data-source-id" in a]


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


def browse(url: str, profile: Path) -> Dom:
    """The DOM Chromium builds for a page (headless, its own profile folder)."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<html" in proc.stdout, proc.stderr[-2000:]
    return Dom(proc.stdout)


def fetch(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def multipart(fields: dict, files: dict) -> tuple[bytes, dict]:
    """A multipart/form-data body as a browser sends it."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def one_message(markup: str) -> str:
    """The page's one message (and no traceback)."""
    dom = Dom(markup)
    messages = dom.find("p", id="message")
    assert len(messages) == 1, markup[:3000]
    assert "Traceback" not in markup and 'File "' not in markup
    return dom.text["message"]


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
def server(tiny_build, stage, catalogue_digest):
    srv = make_server(tiny_build.catalogue, port=0, stage=stage, max_upload=MAX_UPLOAD)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def cat(tiny_build):
    with latentcat.open(tiny_build.catalogue) as c:
        yield c


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chromium_profile")


@pytest.fixture(scope="module")
def query_id(cat) -> int:
    """A source on the map with all three blocks."""
    return cat.sql("SELECT source_id FROM embeddings JOIN map USING (source_id) WHERE z IS NOT NULL "
                   "ORDER BY source_id LIMIT 1")["source_id"][0].as_py()


def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")


def test_source_page_in_the_browser_shows_the_source_and_its_neighbours(server, cat, query_id, profile):
    dom = browse(f"{server.url}?source_id={query_id}&k=7", profile)
    assert dom.text["source-id"].strip() == str(query_id)
    assert "message" not in dom.text
    expected = cat.similar(query_id, k=7).column("source_id").to_pylist()
    assert dom.neighbour_ids() == expected
    # the neighbours' links, the source's figures and its place on the map
    links = dom.find("a", **{"class": "neighbour"})
    assert [int(a.get("href").split("source_id=")[1].split("&")[0]) for a in links] == expected
    assert dom.find("img", id="source-figure") and dom.find("img", id="lightcurve")
    (map_input,) = dom.find("input", type="image")
    assert f"source_id={query_id}" in map_input["src"] and map_input["name"] == "at"
    metadata = dom.text["metadata"]
    assert "phot_g_mean_mag" in metadata and "outlier rank" in metadata
    for src in (map_input["src"], dom.find("img", id="source-figure")[0]["src"],
                dom.find("img", id="lightcurve")[0]["src"], dom.find("img", **{"class": "thumb"})[0]["src"]):
        status, headers, body = fetch(urllib.parse.urljoin(server.url, src))
        assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG\r\n\x1a\n")


def test_following_a_neighbour_link_opens_its_page(server, cat, query_id, profile):
    dom = browse(f"{server.url}?source_id={query_id}&k=5&modality=all", profile)
    link = dom.find("a", **{"class": "neighbour"})[2]
    neighbour = int(link["href"].split("source_id=")[1].split("&")[0])
    page = browse(urllib.parse.urljoin(server.url, link["href"]), profile)
    assert page.text["source-id"].strip() == str(neighbour)
    # the link kept k and the modality: the neighbour's own neighbours, the same way
    assert page.neighbour_ids() == cat.similar(neighbour, k=5, modality="all").column("source_id").to_pylist()


def test_filter_and_modality_give_what_similar_gives(server, cat, query_id):
    where = "phot_g_mean_mag < 19 AND period > 0.1"
    url = f"{server.url}?" + urllib.parse.urlencode({"source_id": query_id, "k": 6, "modality": "fold", "where": where})
    status, _, body = fetch(url)
    assert status == 200
    expected = cat.similar(query_id, k=6, modality="fold", where=where).column("source_id").to_pylist()
    assert Dom(body.decode()).neighbour_ids() == expected and expected


def test_a_bad_id_shows_one_message_in_the_browser(server, profile):
    dom = browse(f"{server.url}?source_id=12ab%3Cb%3E", profile)
    assert "is not a Gaia source_id" in dom.text["message"]
    assert "<b>" in dom.text["message"]  # shown as text, not made markup
    assert not dom.find("b")
    assert "Traceback" not in "".join(dom.text.values())


@pytest.mark.parametrize("params, status, words", [
    ({"source_id": "123"}, 404, "source_id 123 is not in this catalogue"),
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
def test_every_bad_input_is_one_message(server, query_id, params, status, words):
    params = {k: v.format(sid=query_id) for k, v in params.items()}
    got, headers, body = fetch(f"{server.url}?{urllib.parse.urlencode(params)}")
    assert got == status
    assert words in one_message(body.decode())
    assert headers["Content-Type"].startswith("text/html")


def test_other_routes_answer_bad_requests_with_a_message(server):
    for path, status, words in [("/nothing", 404, "no page at /nothing"),
                                ("/plot/source.png?source_id=123", 404, "not in this catalogue"),
                                ("/map.png?view=3,2,1,0", 400, "bad view"),
                                ("/click?at.x=5000&at.y=2", 400, "outside the"),
                                ("/latent?fold=1,2", 400, "give 5 finite numbers"),
                                ("/outliers?method=secret", 400, "unknown ranking")]:
        got, _, body = fetch(urllib.parse.urljoin(server.url, path))
        assert got == status, path
        assert words in one_message(body.decode()), path


def test_requests_for_other_hosts_are_refused(server):
    got, _, body = fetch(server.url, headers={"Host": "attacker.example"})
    assert got == 400 and "localhost" in one_message(body.decode())


def test_served_to_the_network_it_needs_its_access_token(tiny_build, catalogue_digest):
    import http.client

    srv = make_server(tiny_build.catalogue, host="0.0.0.0", port=0)  # noqa: S104 - the case under test
    try:
        assert srv.token is not None and len(srv.token) >= 30 and srv.login_url.endswith(f"/?token={srv.token}")
        port = srv.server_address[1]
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()

        def ask(path: str, headers: dict | None = None) -> tuple[int, dict, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("GET", path, headers=headers or {})
                reply = conn.getresponse()
                return reply.status, dict(reply.getheaders()), reply.read().decode()
            finally:
                conn.close()

        for path, headers in [("/outliers?n=3", None), ("/outliers?n=3&token=wrong", None),
                              ("/outliers?n=3", {"Cookie": "latentcat_token=wrong"}), ("/discover.csv", None)]:
            status, _, body = ask(path, headers)
            assert status == 403 and "access token" in one_message(body), path
        status, headers, _ = ask(f"/outliers?n=3&token={srv.token}")
        assert status == 303 and headers["Location"] == "/outliers?n=3"  # the token leaves the address
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"latentcat_token={srv.token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, _, body = ask("/outliers?n=3", {"Cookie": cookie.split(";")[0]})
        assert status == 200 and "Top 3 outliers" in body
        status, _, body = ask("/outliers?n=3", {"Authorization": f"Bearer {srv.token}"})
        assert status == 200
    finally:
        srv.shutdown()
        srv.server_close()
    # on loopback no token is made, unless one is given
    srv = make_server(tiny_build.catalogue, port=0)
    assert srv.token is None and srv.login_url == srv.url
    srv.server_close()
    assert hashlib.sha256((tiny_build.catalogue / "catalog.duckdb").read_bytes()).hexdigest() == catalogue_digest


def test_pages_escape_and_forbid_scripts(server, query_id):
    where = "best_class_name = '<script>alert(1)</script>'"
    got, headers, body = fetch(f"{server.url}?" + urllib.parse.urlencode({"source_id": query_id, "where": where}))
    text = body.decode()
    # the only script is the explorer's own file: nothing inline, nothing from elsewhere
    assert re.findall(r"<script[^>]*>", text) == ['<script src="/static/map.js" defer>'] and "&lt;script&gt;" in text
    policy = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";") if d.strip())
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"


def _staged_csv(stage: Path, tmp_path: Path) -> tuple[int, Path]:
    """A time,mag,mag_err CSV of the staged G light curve with the most epochs."""
    rows = pq.read_table(stage / "light_curves.parquet", columns=["source_id", "n_g", "g_time", "g_mag", "g_mag_err"])
    row = rows.take([int(np.argmax(rows.column("n_g").to_numpy()))]).to_pylist()[0]
    path = tmp_path / "my star.csv"
    path.write_text("time,mag,mag_err\n" + "".join(f"{t!r},{m!r},{e!r}\n" for t, m, e in
                                                     zip(row["g_time"], row["g_mag"], row["g_mag_err"])))
    return row["source_id"], path


def test_uploaded_light_curves_get_the_neighbours_similar_from_file_gives(server, cat, stage, profile, tmp_path):
    from latentcat.query.by_example import similar_to_file

    form = browse(f"{server.url}upload", profile)
    (upload_form,) = form.find("form", id="upload-form")
    assert upload_form["method"] == "post" and upload_form["enctype"] == "multipart/form-data"
    assert form.find("input", type="file", name="file")

    source_id, csv = _staged_csv(stage, tmp_path)
    for path, fields in [(csv, {"k": "6", "time_format": "gaia"}),
                         (DATALINK, {"k": "4", "modality": "all", "file_source_id": str(DATALINK_SOURCE)})]:
        body, headers = multipart(fields, {"file": (path.name, path.read_bytes())})
        status, _, page = fetch(f"{server.url}upload", body, headers)
        dom = Dom(page.decode())
        assert status == 200 and "message" not in dom.text, page.decode()[:3000]
        expected, info = similar_to_file(cat, path, k=int(fields["k"]), modality=fields.get("modality", "space"),
                                         source_id=fields.get("file_source_id") and int(fields["file_source_id"]))
        assert dom.neighbour_ids() == expected.column("source_id").to_pylist()
        assert f"{info['period']:.5g}" in dom.text["query-info"] and str(info["n_obs"]) in dom.text["query-info"]
        assert dom.find("img", id="upload-figure")[0]["src"].startswith("data:image/png;base64,")
    # the staged curve of a catalogue source finds that source first
    body, headers = multipart({"k": "3"}, {"file": (csv.name, csv.read_bytes())})
    assert Dom(fetch(f"{server.url}upload", body, headers)[2].decode()).neighbour_ids()[0] == source_id


@pytest.mark.parametrize("fields, data, status, words", [
    ({"k": "5"}, b"a,b\n1,2\n", 400, "needs exactly the columns time,mag,mag_err"),
    ({"k": "5"}, b"time,mag,mag_err\n1,15,0.01\n2,15.1,0.01\n", 400, "the catalogue's features need at least"),
    ({"k": "5"}, b"", 400, "choose a light-curve file"),
    ({"k": "5", "bp_rp": "red"}, b"time,mag,mag_err\n1,2,3\n", 400, "is not a number"),
    ({"k": "0"}, b"time,mag,mag_err\n1,2,3\n", 400, "k must be between 1 and 100"),
    ({"k": "5"}, b"\x00" * (MAX_UPLOAD + 70_000), 413, "at most 1 MiB"),
])
def test_bad_uploads_are_one_message(server, fields, data, status, words):
    body, headers = multipart(fields, {"file": ("bad.csv", data)})
    got, _, page = fetch(f"{server.url}upload", body, headers)
    assert got == status
    assert words in one_message(page.decode())


def test_a_map_view_is_a_png_and_a_click_opens_the_nearest_source(server, query_id):
    explorer = server.explorer
    full = explorer.map.full.fitted()
    status, headers, png = fetch(f"{server.url}map.png?colour=period&view={full.param()}")
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (WIDTH, HEIGHT)
    zoomed = full.zoomed(4, explorer.map.position(query_id))
    assert fetch(f"{server.url}map.png?view={zoomed.param()}")[2] != fetch(f"{server.url}map.png")[2]
    # a click on the source's pixel opens its page; "zoom" keeps the click's map position at the centre
    x, y = explorer.map.position(query_id)
    px, py = zoomed.fitted().pixel_of(x, y)
    at = {"at.x": int(px), "at.y": int(py), "view": zoomed.param()}
    _, _, page = fetch(f"{server.url}click?{urllib.parse.urlencode(at)}")
    assert Dom(page.decode()).text["source-id"].strip() == str(query_id)
    request = urllib.request.Request(f"{server.url}click?{urllib.parse.urlencode({**at, 'click': 'zoom'})}")
    with urllib.request.urlopen(request) as response:
        view = urllib.parse.parse_qs(urllib.parse.urlsplit(response.url).query)["view"][0]
    x0, x1, y0, y1 = map(float, view.split(","))
    assert abs((x0 + x1) / 2 - x) < (x1 - x0) / 20 and abs((y0 + y1) / 2 - y) < (y1 - y0) / 20
    assert x1 - x0 < (zoomed.x1 - zoomed.x0) / 2


def test_points_under_the_cursor_are_named_and_open_their_page(server, cat, query_id, profile, monkeypatch):
    explorer = server.explorer
    zoomed = explorer.map.full.zoomed(3, explorer.map.position(query_id)).fitted()
    dom = browse(f"{server.url}?view={zoomed.param()}&colour=class", profile)
    points = {int(a["href"].split("source_id=")[1].split("&")[0]): a for a in dom.find("a", **{"class": "point"})}
    in_view = explorer.map.ids[explorer.map.in_view(zoomed)].tolist()
    assert 0 < len(in_view) < explorer.map.n and sorted(points) == sorted(in_view)
    label = cat.sql("SELECT best_class_name FROM labels WHERE source_id = ?", [query_id])["best_class_name"]
    assert points[query_id]["title"] == f"source_id {query_id} · {label[0].as_py() if len(label) else 'unlabelled'}"
    # over the source's pixel (the image has a 1-pixel border, the dot is 10 pixels wide)
    left, top = map(int, re.search(r"left:\s*(-?\d+)px;\s*top:\s*(-?\d+)px", points[query_id]["style"]).groups())
    px, py = zoomed.pixel_of(*explorer.map.position(query_id))
    assert abs(left + 4 - px) <= 1 and abs(top + 4 - py) <= 1
    page = browse(urllib.parse.urljoin(server.url, points[query_id]["href"]), profile)
    assert page.text["source-id"].strip() == str(query_id)
    # coloured by a number, the tooltip gives the number; a view of more points than the limit names none
    _, _, html = fetch(f"{server.url}?view={zoomed.param()}&colour=g_mag")
    g = cat.sql("SELECT phot_g_mean_mag FROM sources WHERE source_id = ?", [query_id])["phot_g_mean_mag"][0].as_py()
    assert f'title="source_id {query_id} · G magnitude {g:.4g}"' in html.decode()
    monkeypatch.setattr("latentcat.serve.mapview.NAMED_MAX", len(in_view) - 1)
    _, _, html = fetch(f"{server.url}?view={zoomed.param()}")
    assert 'class="point"' not in html.decode() and "to have the points under the cursor named" in html.decode()


def test_home_page_in_the_browser_has_the_clickable_map(server, profile):
    dom = browse(server.url, profile)
    (map_input,) = dom.find("input", type="image", name="at")
    assert map_input["src"].startswith("/map.png")
    assert dom.find("form", id="mapform")[0]["action"] == "/click"
    assert {a["value"] for a in dom.find("input", type="radio", name="click")} == {"open", "zoom", "centre"}
    options = {o["value"] for o in dom.find("option")}
    assert {"class", "period", "g_mag", "ra", "parallax"} <= options


def test_outliers_and_class_pages(server, cat):
    top = cat.sql("SELECT source_id FROM outlier_scores WHERE method = 'isolation_forest:space' ORDER BY rank LIMIT 5")
    _, _, page = fetch(f"{server.url}outliers?n=5")
    dom = Dom(page.decode())
    ids = [int(a["href"].split("source_id=")[1]) for a in dom.find("a", **{"class": "source"})]
    assert ids == top.column("source_id").to_pylist()
    assert len(dom.find("img", **{"class": "thumb"})) == 5

    model, name, n = cat.sql("SELECT model_id, class, count(*) AS n FROM predictions GROUP BY ALL "
                             "ORDER BY n DESC LIMIT 1").to_pylist()[0].values()
    _, _, page = fetch(f"{server.url}classes")
    assert name in Dom(page.decode()).text["classes"]
    _, _, page = fetch(f"{server.url}classes?" + urllib.parse.urlencode({"model": model, "class": name}))
    dom = Dom(page.decode())
    expected = cat.sql("SELECT source_id FROM predictions WHERE model_id = $m AND class = $c "
                       "ORDER BY probability DESC, source_id LIMIT 20", {"m": model, "c": name})
    assert [int(a["href"].split("source_id=")[1]) for a in dom.find("a", **{"class": "source"})] == \
        expected.column("source_id").to_pylist()
    assert f"{n:,} sources predicted" in page.decode()


def _answer(server, fields: dict, cookie: str) -> tuple[int, dict, bytes]:
    return fetch(f"{server.url}discover", urllib.parse.urlencode(fields).encode(),
                 {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})


def test_discovery_pages_follow_each_browsers_session_and_download_its_answers(server, cat):
    mirror = cat.discover()  # the same session, answered the same way here
    _, headers, page = fetch(f"{server.url}discover")
    cookie = headers["Set-Cookie"].split(";")[0]  # the browser's session key
    assert cookie.startswith("latentcat_session=") and "HttpOnly" in headers["Set-Cookie"]
    get = lambda path: fetch(f"{server.url}{path}", headers={"Cookie": cookie})  # noqa: E731
    first = int(Dom(page.decode()).find("div", id="next")[0]["data-source-id"])
    assert first == mirror.next()
    status, _, page = _answer(server, {"source_id": first, "answer": "yes", "back": "discover"}, cookie)
    mirror.label(first, True)
    dom = Dom(page.decode())  # the redirect leads back to the page, with the next source
    assert status == 200 and str(first) in dom.text["answers"] and "1 interesting" in dom.text["counts"]
    second = int(dom.find("div", id="next")[0]["data-source-id"])
    assert second == mirror.next() and second != first
    # the outliers page answers too, and comes back to the same ranking
    _, _, page = get("outliers?n=5")
    dom = Dom(page.decode())
    assert len(dom.find("form", action="/discover")) == 5
    row = [int(a["href"].split("source_id=")[1]) for a in dom.find("a", **{"class": "source"})][1]
    status, _, page = _answer(server, {"source_id": row, "answer": "no", "back": "outliers",
                                       "method": "isolation_forest:space", "n": 5}, cookie)
    mirror.label(row, False)
    assert status == 200 and "Top 5 outliers" in page.decode() and "not interesting" in page.decode()
    _answer(server, {"source_id": second, "answer": "skip"}, cookie)
    mirror.skip(second)
    _, _, page = get("discover")
    assert int(Dom(page.decode()).find("div", id="next")[0]["data-source-id"]) == mirror.next()
    status, headers, data = get("discover.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert data.decode() == mirror.to_csv()
    # another browser has a session of its own: none of those answers, the forest's first source next
    _, headers, page = fetch(f"{server.url}discover")
    other = headers["Set-Cookie"].split(";")[0]
    assert other != cookie and int(Dom(page.decode()).find("div", id="next")[0]["data-source-id"]) == first
    assert fetch(f"{server.url}discover.csv", headers={"Cookie": other})[2].decode() == "source_id,interesting\n"
    # bad answers are one message each, and change nothing
    for fields, code, words in [({"source_id": first, "answer": "maybe"}, 400, "unknown answer"),
                                ({"source_id": "x1", "answer": "yes"}, 400, "is not a Gaia source_id"),
                                ({"source_id": 7, "answer": "yes"}, 404, "not in this catalogue"),
                                ({"source_id": first, "answer": "yes", "back": "https://elsewhere"}, 400, "unknown back")]:
        status, _, page = _answer(server, fields, cookie)
        assert status == code and words in one_message(page.decode())
    status, _, page = fetch(f"{server.url}discover", b"source_id=1&answer=yes",
                            {"Content-Type": "text/plain", "Cookie": cookie})
    assert status == 415
    assert get("discover.csv")[2].decode() == mirror.to_csv()


def _box_ids(cat, box: tuple[float, float, float, float]) -> list[int]:
    x0, x1, y0, y1 = box
    return cat.sql("SELECT source_id FROM map WHERE x >= $x0 AND x < $x1 AND y >= $y0 AND y < $y1 ORDER BY source_id",
                   {"x0": x0, "x1": x1, "y0": y0, "y1": y1}).column("source_id").to_pylist()


def test_a_box_of_the_map_lists_downloads_and_ranks_more_like_these(server, cat):
    xy = cat.sql("SELECT median(x) AS x, median(y) AS y FROM map").to_pylist()[0]
    box = (xy["x"] - 1.5, xy["x"] + 1.5, xy["y"] - 1.5, xy["y"] + 1.5)
    param = ",".join(f"{v:.6g}" for v in box)
    want = _box_ids(cat, tuple(float(v) for v in param.split(",")))
    assert 5 <= len(want) <= 200
    _, _, page = fetch(f"{server.url}selection?box={param}")
    dom = Dom(page.decode())
    listed = [int(a["href"].split("source_id=")[1]) for a in dom.find("a", **{"class": "source"})]
    assert listed == want[:50] and f"{len(want):,} sources in the box" in dom.text["summary"]
    status, headers, data = fetch(f"{server.url}selection.parquet?box={param}")
    assert status == 200 and 'filename="selection.parquet"' in headers["Content-Disposition"]
    table = pq.read_table(pa.BufferReader(data))
    assert table.column("source_id").to_pylist() == want
    assert table.column_names == cat.sql("SELECT * FROM source_meta LIMIT 0").column_names
    status, _, data = fetch(f"{server.url}selection.csv?box={param}")
    assert status == 200 and data.decode().count("\n") == len(want) + 1
    # more like these: Catalog.like of the same members, with its self-check
    _, _, page = fetch(f"{server.url}like?box={param}")
    dom = Dom(page.decode())
    ranked = [int(a["href"].split("source_id=")[1]) for a in dom.find("a", **{"class": "source"})]
    expected = cat.like(want, top=100, with_meta=False)
    assert ranked == expected.column("source_id").to_pylist() and not set(ranked) & set(want)
    assert "held out" in dom.text["self-check"] and f"{len(want):,} members compared" in dom.text["like-info"]
    # the hover name: the source nearest a pixel, as a click would open
    sid = want[0]
    view = cat.sql("SELECT min(x) AS x0, max(x) AS x1, min(y) AS y0, max(y) AS y1 FROM map").to_pylist()[0]
    view = ",".join(f"{v:.6g}" for v in (view["x0"] - 1, view["x1"] + 1, view["y0"] - 1, view["y1"] + 1))
    x, y = cat.sql(f"SELECT x, y FROM map WHERE source_id = {sid}").to_pylist()[0].values()
    from latentcat.serve.mapview import View

    px, py = View.parse(view).fitted().pixel_of(x, y)
    status, headers, data = fetch(f"{server.url}api/nearest?view={view}&px={float(px) - 0.5}&py={float(py) - 0.5}")
    found = json.loads(data)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert found["page"] == f"/?source_id={found['source_id']}" and int(found["source_id"]) in _box_ids(
        cat, (x - 1, x + 1, y - 1, y + 1))
    assert json.loads(fetch(f"{server.url}api/nearest?view={view}&px=-500&py=-500")[2]) == {}
    for path, words in [("selection", "needs its box"), ("selection?box=1,0,0,1", "x1 must exceed x0"),
                        ("like?box=abc", "give four numbers"), ("api/nearest?px=a&py=1", "give the pixel")]:
        status, _, body = fetch(f"{server.url}{path}")
        assert status == 400 and words in one_message(body.decode()), path


def test_in_the_browser_hover_names_wheel_zooms_and_a_box_leads_to_more_like_these(server, cat, profile):
    from cdp import SHIFT, Browser

    with Browser(chromium(), profile / "cdp") as page:
        page.open(server.url)
        rect = json.loads(page.evaluate("JSON.stringify(document.querySelector('input.map').getBoundingClientRect())"))
        x0, y0 = rect["x"], rect["y"]
        start = page.evaluate("document.getElementById('mapbox').dataset.view")
        # hover: the nearest source named, with its thumbnail
        view = [float(v) for v in start.split(",")]
        xy = cat.sql("SELECT source_id, x, y FROM map ORDER BY source_id LIMIT 1").to_pylist()[0]
        from latentcat.serve.mapview import View

        px, py = View(*view).pixel_of(xy["x"], xy["y"])
        page.mouse("mouseMoved", x0 + 1 + float(px), y0 + 1 + float(py))
        named = page.wait_for("!document.getElementById('maptip').hidden && document.getElementById('maptip').dataset.sourceId")
        assert int(named) in cat.sql("SELECT source_id FROM map").column("source_id").to_pylist()
        # a plain click opens a source within the click radius, as the form does without the script
        cx, cy = x0 + 1 + float(px), y0 + 1 + float(py)
        page.mouse("mousePressed", cx, cy)
        page.mouse("mouseReleased", cx, cy)
        opened = page.wait_for("location.search.includes('source_id=') && document.readyState === 'complete' && "
                               "new URLSearchParams(location.search).get('source_id')")
        ox, oy = cat.sql(f"SELECT x, y FROM map WHERE source_id = {int(opened)}").to_pylist()[0].values()
        opx, opy = View(*view).pixel_of(ox, oy)
        assert np.hypot(float(opx) - float(px), float(opy) - float(py)) <= 13
        page.open(server.url)
        # the wheel zooms in around the cursor: a view 1.5 times smaller, in the address too
        page.mouse("mouseWheel", x0 + 441, y0 + 301, deltaX=0, deltaY=-120)
        zoomed = page.wait_for(f"document.getElementById('mapbox').dataset.view !== {json.dumps(start)} && "
                               "document.getElementById('mapbox').dataset.view")
        a, b = (float(v) for v in zoomed.split(",")[:2])
        assert abs((b - a) * 1.5 - (view[1] - view[0])) < 1e-3 * (view[1] - view[0])
        assert "view=" in page.evaluate("location.search")
        # shift-drag selects a box: its sources listed, then "more like these"
        page.drag((x0 + 300, y0 + 200), (x0 + 600, y0 + 420), modifiers=SHIFT)
        title = page.wait_for("location.pathname === '/selection' && document.readyState === 'complete' && "
                              "document.querySelector('h1').textContent")
        box = dict(urllib.parse.parse_qsl(page.evaluate("location.search.slice(1)")))["box"]
        want = _box_ids(cat, tuple(float(v) for v in box.split(",")))
        assert title == f"Selection: {len(want):,} sources"
        page.evaluate("document.getElementById('like').click()")
        check = page.wait_for("location.pathname === '/like' && document.readyState === 'complete' && "
                              "document.getElementById('self-check').textContent")
        assert check.startswith("Self-check:")
        ranked = page.evaluate("[...document.querySelectorAll('#liked a.source')].map(a => a.textContent)")
        assert len(want) <= 2000  # the tiny build: every selected source is a member
        assert [int(r) for r in ranked] == cat.like(want, top=100, with_meta=False).column("source_id").to_pylist()


def test_latent_traversal_starts_at_the_sources_codes_and_decodes(server, cat, query_id):
    _, _, page = fetch(f"{server.url}latent?source_id={query_id}")
    dom = Dom(page.decode())
    codes = cat.codes(query_id)
    for block in ("xp", "dmdt", "fold"):
        sliders = [dom.find("input", type="range", name=f"{block}{d}")[0] for d in range(5)]
        np.testing.assert_allclose([float(s["value"]) for s in sliders], codes[block], rtol=1e-3, atol=1e-3)
    image = dom.find("img", id="decoded")[0]["src"]
    status, headers, png = fetch(urllib.parse.urljoin(server.url, image))
    assert status == 200 and png.startswith(b"\x89PNG")
    moved = {"source_id": query_id, **{f"fold{d}": f"{v:.4g}" for d, v in enumerate(codes["fold"])}, "fold4": "1.5"}
    _, _, page = fetch(f"{server.url}latent?{urllib.parse.urlencode(moved)}")
    assert float(Dom(page.decode()).find("input", name="fold4")[0]["value"]) == 1.5


def test_the_catalogue_is_never_written(tiny_build, catalogue_digest, server):
    # after every request above (module order), the file is byte for byte what it was
    assert hashlib.sha256((tiny_build.catalogue / "catalog.duckdb").read_bytes()).hexdigest() == catalogue_digest


def test_the_cli_serves_a_catalogue(tiny_build):
    proc = subprocess.Popen([sys.executable, "-m", "latentcat.cli", "serve", "--catalog", str(tiny_build.catalogue),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + proc.stderr.read()
        status, _, body = fetch(url.group(0))
        assert status == 200 and b'name="at"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run([sys.executable, "-m", "latentcat.cli", "serve", "--catalog", str(tiny_build.catalogue / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_discovery_answers_are_saved_to_a_file_and_resumed(tiny_build, tmp_path, catalogue_digest):
    from latentcat.analysis.discover import read_answers
    from latentcat.errors import LatentcatError
    from latentcat.serve.app import Explorer

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    path = tmp_path / "answers.csv"
    explorer = Explorer(tiny_build.catalogue, answers=path)
    try:
        first = explorer.discovery.next()
        got = explorer.respond("POST", "/discover", form, f"source_id={first}&answer=yes".encode())
        assert got.status == 303 and read_answers(path) == {first: True}
        second = explorer.discovery.next()
        explorer.respond("POST", "/discover", form, f"source_id={second}&answer=no".encode())
        assert read_answers(path) == {first: True, second: False}
        assert "saved to answers.csv" in explorer.respond("GET", "/discover").body.decode()
    finally:
        explorer.close()
    again = Explorer(tiny_build.catalogue, answers=path)  # a new explorer resumes the session
    try:
        assert again.discovery.answers == {first: True, second: False}
        assert again.discovery.next() not in (first, second)
    finally:
        again.close()
    path.write_text("source_id,interesting\n1,yes\n")
    with pytest.raises(LatentcatError, match="source_id 1 is not in the catalogue"):
        Explorer(tiny_build.catalogue, answers=path)
    assert hashlib.sha256((tiny_build.catalogue / "catalog.duckdb").read_bytes()).hexdigest() == catalogue_digest
