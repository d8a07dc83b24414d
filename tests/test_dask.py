"""Ingest, features and embed on a real dask.distributed LocalCluster: same outputs, resume, errors."""

import gzip
import json
import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

import distributed  # noqa: E402  (a declared dependency)

from latentcat import compute  # noqa: E402
from latentcat.errors import InputError  # noqa: E402
from latentcat.features.extract import extract_features, shard_name  # noqa: E402
from latentcat.gaia.ingest import ingest  # noqa: E402
from latentcat.layout import STAGED_TABLES as TABLES  # noqa: E402
from latentcat.gaia.simulate import simulate_survey  # noqa: E402
from latentcat.models.config import TrainConfig  # noqa: E402
from latentcat.models.embed import embed  # noqa: E402
from latentcat.models.trainer import train  # noqa: E402

SHARD_SIZE = 60  # 300 sources -> 5 shards
DATA = Path(__file__).parent / "data" / "gaia_dr3"
REAL_INPUTS = ["epoch_photometry_datalink_8_sources.vot.xml", "epoch_photometry_8_sources_labels.csv",
               "gaia_dr3_source_id_5937083312263887616_dl_products_csv.zip",
               "gaia_dr3_source_id_5937083312263887616_dl_products_fits.zip",
               "XP_CONTINUOUS_RAW_with_missing_BP.ecsv"]


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


def _assert_ran_on_workers(tasks: list[dict], client, n: int) -> None:
    """``n`` tasks were recorded, each on one of the cluster's worker processes (none in this one)."""
    workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 2 and len(tasks) == n
    assert all(t["worker"] in workers for t in tasks)


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
    _assert_ran_on_workers(_tasks(stream, "_write_shard"), client, 5)
    assert report["shards_written"] == 5
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


def _tasks(stream, name: str) -> list[dict]:
    return [t for t in stream.data if name in str(t["key"])]


@pytest.fixture
def real_inputs(tmp_path, monkeypatch) -> Path:
    """The real DR3 fixtures in one folder, with a gzipped FITS file (decompressed to a temporary
    by the ingest) beside the zip bundles (extracted to one); the current folder is ``tmp_path``,
    which the cluster's workers do not share, so relative paths only work when made absolute."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in REAL_INPUTS:
        shutil.copy(DATA / name, inputs / name)
    (inputs / "XP_CONTINUOUS_RAW.fits.gz").write_bytes(gzip.compress((DATA / "XP_CONTINUOUS_RAW.fits").read_bytes()))
    monkeypatch.chdir(tmp_path)
    return Path("inputs")


def test_ingest_on_a_cluster_writes_the_same_staging_area(real_inputs, cluster):
    address, client = cluster
    local = ingest([real_inputs], Path("local"))
    with distributed.get_task_stream(client) as stream:
        remote = ingest([real_inputs], Path("remote"), scheduler="dask", address=address)
    # one task per file read (zip members and the gzipped FITS included; skipped products are not read)
    assert len(local["inputs"]) == 6
    _assert_ran_on_workers(_tasks(stream, "_read_one"), client, 6)
    assert remote == local
    assert sorted(p.name for p in Path("remote").iterdir()) == sorted(p.name for p in Path("local").iterdir())
    assert json.loads(Path("remote/ingest_report.json").read_text()) == local
    for table in TABLES:
        a, b = pq.read_table(Path("local") / f"{table}.parquet"), pq.read_table(Path("remote") / f"{table}.parquet")
        assert a.num_rows > 0
        assert a.equals(b), table


def test_a_bad_input_file_on_a_worker_is_the_same_one_line_error(real_inputs, cluster, tmp_path):
    address, _ = cluster
    epochs = Table.read(DATA / "epoch_photometry_datalink_8_sources.vot.xml", format="votable")[:20]
    epochs["band"] = epochs["band"].astype(str)
    epochs["time"] = [f"2016-05-{i + 1:02d}" for i in range(20)]  # found when the worker reads the rows
    epochs.write(real_inputs / "texttime.ecsv", format="ascii.ecsv")
    stage = Path("stage")
    ingest([DATA / "epoch_photometry_8_sources_labels.csv"], stage)
    before = {p.name: p.read_bytes() for p in stage.iterdir()}

    with pytest.raises(InputError) as local:
        ingest([real_inputs], stage)
    with pytest.raises(InputError) as remote:
        ingest([real_inputs], stage, scheduler="dask", address=address)
    message = str(remote.value)
    assert message == str(local.value)
    assert "\n" not in message and message.startswith("inputs/texttime.ecsv: column 'time', row 1: ")
    assert remote.value.__cause__ is None and remote.value.__suppress_context__
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == before  # no table, no temporary folder left

    with pytest.raises(InputError, match="scheduler must be one of"):
        ingest([real_inputs], Path("fresh"), scheduler="slurm")
    assert not Path("fresh").exists()


def test_a_worker_that_cannot_see_the_ingest_folders_says_so(tmp_path):
    from latentcat.gaia.ingest import _read_one
    from latentcat.gaia.formats import InputFile

    f = InputFile(DATA / "epoch_photometry_8_sources_labels.csv", "labels.csv", "csv", False, str(DATA))
    (tmp_path / "parts").mkdir()
    with pytest.raises(InputError, match="not_mounted/parts: no such folder on worker host .*every worker reaches"):
        _read_one(f, 0, {"labels"}, ["source_id"], str(tmp_path / "not_mounted" / "parts"), False, 100)
    gone = InputFile(tmp_path / "not_mounted" / "labels.csv", "labels.csv", "csv", False, str(tmp_path))
    with pytest.raises(InputError, match="labels.csv: no such file on worker host"):
        _read_one(gone, 0, {"labels"}, ["source_id"], str(tmp_path / "parts"), False, 100)


@pytest.fixture(scope="module")
def models(survey):
    """Small VAEs trained for one epoch on the survey's features: enough to compare encoders."""
    config = TrainConfig.from_dict({"seed": 3, "progress": False, "val_fraction": 0.2,
                                    "xp": {"max_epochs": 1, "width": 16, "blocks": 1},
                                    "dmdt": {"max_epochs": 1, "width": 16, "blocks": 1},
                                    "fold": {"max_epochs": 1, "width": 8, "harmonics": 4}})
    train(survey / "reference", survey / "models", config, device="cpu")
    return survey / "models"


def test_embed_on_a_cluster_gives_the_same_embeddings(survey, models, cluster):
    address, client = cluster
    local = embed(survey / "reference", models, survey / "emb_local", device="cpu", threads=1)
    with distributed.get_task_stream(client) as stream:
        remote = embed(survey / "reference", models, survey / "emb_remote", device="cpu", threads=1,
                       scheduler="dask", address=address)
    _assert_ran_on_workers(_tasks(stream, "_embed_shard"), client, 5)
    assert remote["scheduler"] == "dask" and remote["device"] == local["device"] == "cpu"
    assert {k: remote[k] for k in ("n_sources", "n_shards", "models", "sources_with")} == \
        {k: local[k] for k in ("n_sources", "n_shards", "models", "sources_with")}
    assert local["n_sources"] == 300 and local["models"] == ["dmdt", "fold", "xp"]
    names = [shard_name(k).replace("features-", "embeddings-") for k in range(5)]
    assert sorted(p.name for p in (survey / "emb_remote").iterdir()) == names  # no temporary left
    for name in names:
        a, b = pq.read_table(survey / "emb_local" / name), pq.read_table(survey / "emb_remote" / name)
        assert a.column("z_xp").null_count < a.num_rows
        assert a.equals(b), name


def test_two_local_processes_ingest_and_embed_as_one(real_inputs, survey, models, tmp_path):
    """scheduler="processes" with two workers: the same staging area and embeddings as one process."""
    one = ingest([real_inputs], Path("one"))
    two = ingest([real_inputs], Path("two"), n_workers=2)
    assert two == one
    for table in TABLES:
        a, b = pq.read_table(Path("one") / f"{table}.parquet"), pq.read_table(Path("two") / f"{table}.parquet")
        assert a.num_rows > 0 and a.equals(b), table

    (tmp_path / "emb_two").mkdir()
    stale = tmp_path / "emb_two" / "embeddings-00009.parquet"  # a shard of an earlier, larger run
    stale.write_bytes(b"old")
    one = embed(survey / "reference", models, tmp_path / "emb_one", device="cpu", threads=1)
    two = embed(survey / "reference", models, tmp_path / "emb_two", device="cpu", threads=1, n_workers=2)
    assert {k: two[k] for k in ("n_sources", "n_shards", "models", "sources_with")} == \
        {k: one[k] for k in ("n_sources", "n_shards", "models", "sources_with")}
    names = [shard_name(k).replace("features-", "embeddings-") for k in range(5)]
    assert sorted(p.name for p in (tmp_path / "emb_two").iterdir()) == names  # the stale shard is gone
    for name in names:
        a, b = pq.read_table(tmp_path / "emb_one" / name), pq.read_table(tmp_path / "emb_two" / name)
        assert a.equals(b), name


def test_a_worker_loads_the_models_once_and_names_a_missing_one(survey, models, tmp_path, monkeypatch):
    from latentcat.models import embed as embed_module
    from latentcat.models.trainer import WEIGHTS

    loads = []
    real_load = embed_module.load_model
    monkeypatch.setattr(embed_module, "load_model", lambda folder, dev: loads.append(folder) or real_load(folder, dev))
    monkeypatch.setattr(embed_module, "_MODELS", {})
    modalities = ["dmdt", "fold", "xp"]
    for k in range(2):
        shard = survey / "reference" / shard_name(k)
        embed_module._embed_shard(str(shard), str(models), str(tmp_path / f"embeddings-{k:05d}.parquet"), "cpu",
                                  256, 1, modalities)
    assert sorted(p.name for p in loads) == modalities  # loaded for the first shard, kept for the second

    partial = tmp_path / "models"
    shutil.copytree(models, partial)
    (partial / "fold" / WEIGHTS).unlink()
    with pytest.raises(InputError, match=f"^{partial / 'fold' / WEIGHTS}: no such file on worker host .*every worker"):
        embed_module._embed_shard(str(survey / "reference" / shard_name(0)), str(partial),
                                  str(tmp_path / "embeddings-00000.parquet"), "cpu", 256, 1, modalities)
