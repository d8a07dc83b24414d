"""The feature stage on a real dask.distributed LocalCluster: same shards, resume, errors."""

import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import distributed  # noqa: E402  (a declared dependency)

from latentcat import compute  # noqa: E402
from latentcat.errors import InputError  # noqa: E402
from latentcat.features.extract import extract_features, shard_name  # noqa: E402
from latentcat.gaia.ingest import ingest  # noqa: E402
from latentcat.gaia.simulate import simulate_survey  # noqa: E402

SHARD_SIZE = 60  # 300 sources -> 5 shards


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """300 simulated sources, ingested, with their features computed in this process."""
    root = tmp_path_factory.mktemp("dask_survey")
    simulate_survey(n=300, seed=23, out=root)
    ingest([root / "archive"], root / "stage")
    report = extract_features(root / "stage", root / "reference", shard_size=SHARD_SIZE)
    assert report["n_shards"] == 5 and report["scheduler"] == "processes"
    return root


@pytest.fixture(scope="module")
def cluster():
    """A running two-worker cluster, reached by its address like a remote one."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        yield local.scheduler_address, client


def _assert_same_shards(a: Path, b: Path, n_shards: int) -> None:
    for k in range(n_shards):
        ta, tb = pq.read_table(a / shard_name(k)), pq.read_table(b / shard_name(k))
        assert ta.num_rows > 0
        assert ta.equals(tb), f"shard {k} differs"


def test_local_cluster_writes_the_same_shards_as_one_process(survey):
    out = survey / "dask_local"
    report = extract_features(survey / "stage", out, shard_size=SHARD_SIZE, n_workers=2, scheduler="dask")
    assert report["scheduler"] == "dask"
    assert report["shards_written"] == 5 and report["shards_skipped"] == 0
    assert sorted(p.name for p in out.glob("features-*")) == [shard_name(k) for k in range(5)]  # no temporary left
    _assert_same_shards(survey / "reference", out, 5)


def test_one_task_per_shard_on_a_running_cluster_and_resume(survey, cluster):
    address, client = cluster
    out = survey / "dask_remote"
    with distributed.get_task_stream(client) as stream:
        report = extract_features(survey / "stage", out, shard_size=SHARD_SIZE, scheduler="dask", address=address)
    tasks = [t for t in stream.data if "_write_shard" in str(t["key"])]
    assert len(tasks) == 5 and report["shards_written"] == 5
    # the tasks ran in the worker processes, not in this one
    assert {t["worker"] for t in tasks} <= set(client.scheduler_info()["workers"])
    _assert_same_shards(survey / "reference", out, 5)

    (out / shard_name(3)).unlink()
    with distributed.get_task_stream(client) as stream:
        report = extract_features(survey / "stage", out, shard_size=SHARD_SIZE, scheduler="dask", address=address)
    assert report["shards_written"] == 1 and report["shards_skipped"] == 4
    assert len([t for t in stream.data if "_write_shard" in str(t["key"])]) == 1
    _assert_same_shards(survey / "reference", out, 5)


def test_a_worker_input_error_is_the_same_one_line_error(survey, cluster, tmp_path):
    address, _ = cluster
    stage = tmp_path / "stage"
    shutil.copytree(survey / "stage", stage)
    lc = pq.read_table(stage / "light_curves.parquet")
    rows = lc.to_pylist()
    bad = rows[200]  # in the fourth shard
    bad["g_mag_err"][3] = -0.01
    pq.write_table(pa.Table.from_pylist(rows, schema=lc.schema), stage / "light_curves.parquet")

    with pytest.raises(InputError) as local:
        extract_features(stage, tmp_path / "local", shard_size=SHARD_SIZE)
    with pytest.raises(InputError) as remote:
        extract_features(stage, tmp_path / "remote", shard_size=SHARD_SIZE, scheduler="dask", address=address)
    with pytest.raises(InputError) as pool:
        extract_features(stage, tmp_path / "pool", shard_size=SHARD_SIZE, n_workers=2)
    message = str(remote.value)
    assert message == str(local.value) == str(pool.value)
    assert "\n" not in message and "g_mag_err" in message and str(bad["source_id"]) in message
    for err in (remote.value, pool.value):  # no remote traceback chained to the one line
        assert err.__cause__ is None and err.__suppress_context__


def test_bad_compute_settings_are_refused_before_any_shard_is_touched(survey, tmp_path):
    out = tmp_path / "features"
    extract_features(survey / "stage", out, shard_size=SHARD_SIZE)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(InputError, match="scheduler must be one of"):
        extract_features(survey / "stage", out, shard_size=SHARD_SIZE, resume=False, scheduler="slurm")
    with pytest.raises(InputError, match="needs scheduler"):
        extract_features(survey / "stage", out, shard_size=SHARD_SIZE, resume=False, address="tcp://127.0.0.1:8786")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_an_unreachable_scheduler_is_one_clear_line(survey, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(compute, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(InputError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}") as err:
        extract_features(survey / "stage", tmp_path / "f", shard_size=SHARD_SIZE, scheduler="dask",
                         address=f"tcp://127.0.0.1:{port}")
    assert "\n" not in str(err.value)


def test_a_worker_that_cannot_see_the_folders_says_so(survey, tmp_path):
    # what a task meets on a host where stage_dir or out is not mounted
    from latentcat.features.extract import _write_shard

    missing = tmp_path / "not_mounted"
    with pytest.raises(InputError, match="not_mounted/stage: no such folder on worker host .*every worker reaches"):
        _write_shard(str(missing / "stage"), str(tmp_path / shard_name(0)), 0, 2**62, 10)
    with pytest.raises(InputError, match="not_mounted: no such folder on worker host"):
        _write_shard(str(survey / "stage"), str(missing / shard_name(0)), 0, 2**62, 10)
    assert not missing.exists() and not (tmp_path / shard_name(0)).exists()
