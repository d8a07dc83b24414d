"""Fetching from the Gaia archive, with the archive's HTTP side replayed from saved responses.

Everything above the HTTP connection is astroquery's real code (GaiaClass, TapPlus, TapConn,
Job): it builds the DataLink and UWS requests and parses the replies. Only the connection
factory under TapConn is replaced, by ``SavedArchive``, which answers the archive's
endpoints with the real responses saved in tests/data/archive_responses/.
"""

from __future__ import annotations

import http.client
import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latentcat.errors import InputError, LatentcatError
from latentcat.gaia.fetch import fetch, read_source_ids
from latentcat.gaia.ingest import ingest

RESPONSES = Path(__file__).parent / "data" / "archive_responses"
EPOCH_IDS = [4158840442172717440, 1302439147363430272, 6011392186336443392, 4180052117402761216,
             5829546092853939712, 1387247743387653632, 2038598839702672640, 4607839243856979968]
XP_ID = 5937083312263887616
HOST = "gea.esac.esa.int"


class _Response:
    """The parts of http.client.HTTPResponse that astroquery uses."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.status = status
        self.reason = http.client.responses[status]
        self._body = io.BytesIO(body)
        self._headers = list((headers or {}).items())

    def read(self, size: int | None = -1) -> bytes:
        return self._body.read(-1 if size is None else size)

    def getheaders(self):
        return self._headers

    def close(self):
        pass


class SavedArchive:
    """Stands in for astroquery's ConnectionHandler: every HTTP request lands here.

    ``faults`` maps an endpoint kind ("datalink", "tap") to a list of actions for its next
    requests: an exception instance to raise, or "truncate" to send half the response.
    """

    def __init__(self, faults: dict | None = None):
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.datalink: list[dict] = []  # the form fields of each DataLink request
        self.queries: list[str] = []    # the ADQL of each TAP job
        self._jobs: dict[str, str] = {}

    # ConnectionHandler interface
    def get_connection(self, *, ishttps=False, cookie=None, verbose=False):
        return _Connection(self)

    def get_connection_secure(self, verbose=False):
        return _Connection(self)

    def answer(self, method: str, url: str, body) -> _Response:
        path = urlsplit(url).path
        form = {k: v[0] for k, v in parse_qs(body.decode() if isinstance(body, bytes) else body or "").items()}
        if method == "POST" and path == "/data-server/data":
            self.datalink.append(form)
            payload = (RESPONSES / f"datalink_{form['RETRIEVAL_TYPE']}.zip").read_bytes()
            return self._maybe_fault("datalink", _Response(200, payload, {"Content-Type": "application/zip"}))
        if method == "POST" and path == "/tap-server/tap/async":
            job = str(len(self._jobs) + 1)
            self._jobs[job] = form["QUERY"]
            self.queries.append(form["QUERY"])
            return _Response(303, b"", {"Location": f"https://{HOST}/tap-server/tap/async/{job}"})
        m = re.fullmatch(r"/tap-server/tap/async/(\d+)/(phase|results/result)", path)
        if method == "GET" and m:
            if m.group(2) == "phase":
                return _Response(200, b"COMPLETED")
            table = re.search(r"FROM gaiadr3\.(\w+)", self._jobs[m.group(1)]).group(1)
            payload = (RESPONSES / f"tap_{table}.vot").read_bytes()
            return self._maybe_fault("tap", _Response(200, payload, {"Content-Type": "application/x-votable+xml"}))
        return _Response(404, b"not found")

    def _maybe_fault(self, kind: str, response: _Response) -> _Response:
        pending = self.faults.get(kind)
        if not pending:
            return response
        action = pending.pop(0)
        if action is None:
            return response
        if action == "truncate":
            data = response.read()
            return _Response(200, data[: len(data) // 2], dict(response.getheaders()))
        raise action

    def ids_per_request(self, retrieval_type: str) -> list[list[int]]:
        return [[int(i) for i in f["ID"].split(",")] for f in self.datalink
                if f["RETRIEVAL_TYPE"] == retrieval_type]


class _Connection:
    def __init__(self, archive: SavedArchive):
        self.archive, self.host, self.port = archive, HOST, 443

    def request(self, method, url, body=None, headers=None):
        self._response = self.archive.answer(method, url, body)

    def getresponse(self):
        return self._response


def gaia_client(archive: SavedArchive):
    """A GaiaClass wired as astroquery wires it, with its connections opened by ``archive``."""
    from astroquery.gaia import GaiaClass
    from astroquery.utils.tap.conn.tapconn import TapConn
    from astroquery.utils.tap.core import TapPlus

    contexts = dict(tap_context="tap", upload_context="Upload", table_edit_context="TableTool",
                    data_context="data", datalink_context="datalink")
    tap = TapConn(True, HOST, server_context="tap-server", port=443, sslport=443,
                  connhandler=archive, **contexts)
    data = TapConn(True, HOST, server_context="data-server", port=443, sslport=443,
                   connhandler=archive, **contexts)
    datalink = TapPlus(url=f"https://{HOST}/", server_context="data-server", connhandler=data,
                       **contexts)
    return GaiaClass(tap_plus_conn_handler=tap, datalink_handler=datalink,
                     show_server_messages=False)


def write_ids(path: Path, ids) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def in_list(query: str) -> list[int]:
    return [int(i) for i in re.search(r"IN \(([\d,]+)\)", query).group(1).split(",")]


# --------------------------------------------------------------------------- id files


def test_id_text_file_with_comments_and_bad_line(tmp_path):
    good = tmp_path / "ids.txt"
    good.write_text("# my RR Lyrae\nsource_id\n4158840442172717440\n\n  1302439147363430272  \n")
    assert read_source_ids(good).tolist() == [4158840442172717440, 1302439147363430272]
    for bad_value in ("abc", "-5", "1.5e18", "0", "9223372036854775808"):  # last: 2**63
        bad = tmp_path / "bad.txt"
        bad.write_text(f"4158840442172717440\n\n{bad_value}\n")
        with pytest.raises(InputError, match=r"bad\.txt: line 3: .* is not a Gaia source_id"):
            read_source_ids(bad)
    biggest = tmp_path / "max.txt"
    biggest.write_text("9223372036854775807\n")
    assert read_source_ids(biggest).tolist() == [2**63 - 1]


def test_id_tables_csv_ecsv_parquet(tmp_path):
    csv = tmp_path / "ids.csv"
    csv.write_text("ra,source_id\n1.0,4158840442172717440\n2.0,1302439147363430272\n")
    assert read_source_ids(csv).tolist() == EPOCH_IDS[:2]
    csv.write_text("ra,source_id\n1.0,4158840442172717440\n2.0,x12\n")
    with pytest.raises(InputError, match=r"ids\.csv: data row 2: 'x12'"):
        read_source_ids(csv)
    pq.write_table(pa.table({"source_id": pa.array(EPOCH_IDS, pa.int64())}), tmp_path / "ids.parquet")
    assert read_source_ids(tmp_path / "ids.parquet").tolist() == EPOCH_IDS
    pq.write_table(pa.table({"sid": [1]}), tmp_path / "other.parquet")
    with pytest.raises(InputError, match=r"other\.parquet: no source_id column"):
        read_source_ids(tmp_path / "other.parquet")
    from astropy.table import Table

    Table({"source_id": np.array(EPOCH_IDS, dtype=np.int64)}).write(tmp_path / "ids.ecsv")
    assert read_source_ids(tmp_path / "ids.ecsv").tolist() == EPOCH_IDS


# --------------------------------------------------------------------------- fetch


def test_fetch_saves_the_archive_responses(tmp_path):
    archive = SavedArchive()
    ids = write_ids(tmp_path / "ids.txt", EPOCH_IDS + [XP_ID, EPOCH_IDS[0]])  # one duplicate
    report = fetch(tmp_path / "out", ids_file=ids, gaia=gaia_client(archive), backoff_s=0)

    chunk = tmp_path / "out" / "chunk-00000"
    assert sorted(p.name for p in chunk.iterdir()) == [
        "COMPLETE", "datalink_EPOCH_PHOTOMETRY.zip", "datalink_XP_CONTINUOUS.zip",
        "gaia_source.vot", "ids.txt", "vari_classifier_result.vot"]
    for name in ("datalink_EPOCH_PHOTOMETRY.zip", "datalink_XP_CONTINUOUS.zip"):
        assert (chunk / name).read_bytes() == (RESPONSES / name).read_bytes()
    for name in ("gaia_source", "vari_classifier_result"):
        assert (chunk / f"{name}.vot").read_bytes() == (RESPONSES / f"tap_{name}.vot").read_bytes()
    wanted = EPOCH_IDS + [XP_ID]
    assert np.loadtxt(chunk / "ids.txt", dtype=np.int64).tolist() == wanted
    assert not (tmp_path / "out" / ".partial").exists()

    # What astroquery put on the wire: one DataLink request per product, two ADQL jobs.
    assert [f["RETRIEVAL_TYPE"] for f in archive.datalink] == ["EPOCH_PHOTOMETRY", "XP_CONTINUOUS"]
    for form in archive.datalink:
        assert form["RELEASE"] == "Gaia DR3"
        assert form["DATA_STRUCTURE"] == "INDIVIDUAL"
        assert form["FORMAT"] == "votable"
        assert [int(i) for i in form["ID"].split(",")] == wanted
    assert [re.search(r"FROM (\S+)", q).group(1) for q in archive.queries] == [
        "gaiadr3.gaia_source", "gaiadr3.vari_classifier_result"]
    assert all(in_list(q) == wanted for q in archive.queries)

    marker = json.loads((chunk / "COMPLETE").read_text())
    assert marker["rows"] == {"gaia_source": 8, "vari_classifier_result": 8}
    assert report["ids_read"] == 10 and report["duplicate_ids"] == 1 and report["ids_fetched"] == 9
    assert report["chunks_fetched"] == ["chunk-00000"] and report["retries"] == 0


def test_chunks_hold_at_most_5000_ids(tmp_path):
    ids = np.random.default_rng(3).integers(1, 2**62, size=12_001)
    archive = SavedArchive()
    report = fetch(tmp_path / "out", ids_file=write_ids(tmp_path / "ids.txt", ids),
                   gaia=gaia_client(archive), backoff_s=0)

    expected = [ids[:5000].tolist(), ids[5000:10000].tolist(), ids[10000:].tolist()]
    for rt in ("EPOCH_PHOTOMETRY", "XP_CONTINUOUS"):
        assert archive.ids_per_request(rt) == expected
    assert [in_list(q) for q in archive.queries] == [e for e in expected for _ in range(2)]
    assert report["chunks"] == 3
    assert np.loadtxt(tmp_path / "out" / "chunk-00002" / "ids.txt", dtype=np.int64, ndmin=1).tolist() == expected[2]


def test_chunk_size_over_the_datalink_limit_is_refused(tmp_path):
    archive = SavedArchive()
    ids = write_ids(tmp_path / "ids.txt", EPOCH_IDS)
    with pytest.raises(LatentcatError, match="chunk_size 5001 .* 1 to 5000 ids"):
        fetch(tmp_path / "out", ids_file=ids, chunk_size=5001, gaia=gaia_client(archive))
    assert archive.datalink == [] and archive.queries == []


def test_network_errors_are_retried(tmp_path):
    archive = SavedArchive(faults={"datalink": [ConnectionResetError("reset by peer"), "truncate"],
                                   "tap": ["truncate"]})
    ids = write_ids(tmp_path / "ids.txt", EPOCH_IDS)
    report = fetch(tmp_path / "out", ids_file=ids, gaia=gaia_client(archive), backoff_s=0)

    assert report["retries"] == 3
    # EPOCH_PHOTOMETRY asked three times (reset, truncated, good), XP_CONTINUOUS once.
    assert [f["RETRIEVAL_TYPE"] for f in archive.datalink] == ["EPOCH_PHOTOMETRY"] * 3 + ["XP_CONTINUOUS"]
    assert len(archive.queries) == 3
    chunk = tmp_path / "out" / "chunk-00000"
    assert (chunk / "datalink_EPOCH_PHOTOMETRY.zip").read_bytes() == \
        (RESPONSES / "datalink_EPOCH_PHOTOMETRY.zip").read_bytes()
    assert (chunk / "gaia_source.vot").read_bytes() == (RESPONSES / "tap_gaia_source.vot").read_bytes()


def test_gives_up_after_the_last_attempt(tmp_path):
    archive = SavedArchive(faults={"datalink": [ConnectionResetError("reset")] * 2})
    ids = write_ids(tmp_path / "ids.txt", EPOCH_IDS)
    with pytest.raises(LatentcatError, match=r"chunk 0 .*DataLink EPOCH_PHOTOMETRY: failed after 2 attempt"):
        fetch(tmp_path / "out", ids_file=ids, retries=2, gaia=gaia_client(archive), backoff_s=0)
    assert not (tmp_path / "out" / "chunk-00000").exists()
    assert not (tmp_path / "out" / ".partial").exists()  # nothing half-written left behind


def test_rerun_after_a_crash_skips_finished_chunks(tmp_path):
    ids = write_ids(tmp_path / "ids.txt", EPOCH_IDS)  # 3 chunks of 3, 3, 2
    out = tmp_path / "out"
    # The second chunk's XP request dies with something that is not a network error.
    crashing = SavedArchive(faults={"datalink": [None, None, None, RuntimeError("power cut")]})
    with pytest.raises(RuntimeError, match="power cut"):
        fetch(out, ids_file=ids, chunk_size=3, gaia=gaia_client(crashing), backoff_s=0)
    assert (out / "chunk-00000" / "COMPLETE").is_file()
    assert not (out / "chunk-00001").exists()

    archive = SavedArchive()
    report = fetch(out, ids_file=ids, chunk_size=3, gaia=gaia_client(archive), backoff_s=0)
    assert report["chunks_skipped"] == ["chunk-00000"]
    assert report["chunks_fetched"] == ["chunk-00001", "chunk-00002"]
    assert archive.ids_per_request("EPOCH_PHOTOMETRY") == [EPOCH_IDS[3:6], EPOCH_IDS[6:]]
    assert all(in_list(q)[0] != EPOCH_IDS[0] for q in archive.queries)

    # Nothing left to do; but other ids in the first chunk's place are fetched again.
    again = SavedArchive()
    assert fetch(out, ids_file=ids, chunk_size=3, gaia=gaia_client(again))["chunks_fetched"] == []
    assert again.datalink == [] and again.queries == []
    changed = write_ids(tmp_path / "changed.txt", [XP_ID] + EPOCH_IDS[1:])
    report = fetch(out, ids_file=changed, chunk_size=3, gaia=gaia_client(again))
    assert report["chunks_fetched"] == ["chunk-00000"]
    assert np.loadtxt(out / "chunk-00000" / "ids.txt", dtype=np.int64).tolist()[0] == XP_ID


def test_ids_from_an_adql_query(tmp_path):
    archive = SavedArchive()
    query = "SELECT source_id FROM gaiadr3.vari_classifier_result WHERE best_class_name = 'SOLAR_LIKE'"
    report = fetch(tmp_path / "out", adql=query, gaia=gaia_client(archive), backoff_s=0)
    assert archive.queries[0] == query  # passed through unchanged
    # The saved result of that job lists the 8 sources; their ids drive the downloads.
    assert archive.ids_per_request("EPOCH_PHOTOMETRY") == [EPOCH_IDS]
    assert report["ids_fetched"] == 8
    # A rerun reuses the saved query result instead of running the job again.
    rerun = SavedArchive()
    fetch(tmp_path / "out", adql=query, gaia=gaia_client(rerun))
    assert rerun.queries == [] and rerun.datalink == []


def test_fetched_folder_goes_through_ingest(tmp_path):
    ids = write_ids(tmp_path / "ids.txt", EPOCH_IDS + [XP_ID])
    fetch(tmp_path / "out", ids_file=ids, chunk_size=5, gaia=gaia_client(SavedArchive()), backoff_s=0)
    ingest([tmp_path / "out"], tmp_path / "stage")

    stage = tmp_path / "stage"
    lc = pq.read_table(stage / "light_curves.parquet")
    # Both chunks were served the same 8-source bundle: each source appears once after merging.
    assert sorted(lc.column("source_id").to_pylist()) == sorted(EPOCH_IDS)
    assert all(n > 0 for n in lc.column("n_g").to_pylist())
    xp = pq.read_table(stage / "xp.parquet")
    assert xp.column("source_id").to_pylist() == [XP_ID]
    assert len(xp.column("bp_flux")[0].as_py()) == 55
    labels = pq.read_table(stage / "labels.parquet").to_pydict()
    by_id = dict(zip(labels["source_id"], labels["best_class_name"]))
    assert by_id[6011392186336443392] == "YSO"
    assert sum(v == "SOLAR_LIKE" for v in by_id.values()) == 7
    sources = pq.read_table(stage / "sources.parquet")
    assert {"ra", "dec", "phot_g_mean_mag"} <= set(sources.column_names)
