"""`latentcat build`: a whole catalogue from one configuration, atomically, resumable after a crash."""

from pathlib import Path

import pytest

import latentcat
from latentcat import build as build_module
from latentcat.config import load_build_config
from latentcat.errors import InputError

TINY = """
seed = 3
[inputs]
simulate_n = 240
[features]
shard_size = 100
workers = 1
[models]
device = "cpu"
progress = false
[models.xp]
max_epochs = 2
[models.dmdt]
max_epochs = 2
[models.fold]
width = 16
max_epochs = 1
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


def test_crashed_build_resumes_and_catalogue_appears_only_when_complete(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "cat"
    from latentcat.models import trainer

    real_train = trainer.train

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during training")

    monkeypatch.setattr(trainer, "train", crash)
    with pytest.raises(KeyboardInterrupt):
        build_module.build(load_build_config(tiny_config), out=out)
    assert not out.exists(), "a half-built catalogue must not appear"
    partial = out.with_name("cat.partial")
    assert (partial / "features").is_dir()
    shard_times = {p.name: p.stat().st_mtime_ns for p in (partial / "features").glob("features-*.parquet")}
    assert shard_times

    monkeypatch.setattr(trainer, "train", real_train)
    # what a build killed while writing the catalogue leaves: the catalogue stage starts again
    (partial / "embeddings_hats" / "dataset").mkdir(parents=True)
    (partial / "embeddings_hats" / "properties").write_text("half written")
    report = build_module.build(load_build_config(tiny_config), out=out, resume=True)
    assert not partial.exists()
    # the finished stages were not run again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "features").glob("features-*.parquet")} == shard_times
    assert report["stages"]["train"]["models"]["fold"]["epochs"] == 1

    with latentcat.open(out) as cat:
        counts = cat.sql("SELECT (SELECT count(*) FROM sources) AS s, (SELECT count(*) FROM embeddings) AS e").to_pylist()[0]
        assert counts == {"s": 240, "e": 240}
        info = cat.info()
        assert info["build_info"]["seed"] == 3
        assert len(info["build_info"]["inputs"]) == 4  # the four simulated archive files, with checksums
        assert all(len(v["sha256"]) == 64 for v in info["build_info"]["inputs"].values())
        analysed = cat.sql(
            "SELECT (SELECT count(DISTINCT source_id) FROM predictions) AS p,"
            " (SELECT count(*) FROM outlier_scores WHERE method LIKE 'isolation_forest%') AS o,"
            " (SELECT count(*) FROM map) AS m,"
            " (SELECT count(*) FROM map JOIN space AS s USING (source_id)"
            "  WHERE NOT list_has_all(string_split(s.parts, '+'), string_split(map.blocks, '+'))) AS invented,"
            " (SELECT count(*) FROM embeddings WHERE NOT has_xp) AS without_xp"
        ).to_pylist()[0]
        labelled = {r["c"]: r["n"] for r in cat.sql(
            "SELECT best_class_name AS c, count(*) AS n FROM labels JOIN space USING (source_id) GROUP BY 1"
        ).to_pylist()}
    # every source is classified, ranked and on the map, XP or not, on parts it has
    assert analysed["p"] == 240 and analysed["o"] == 240 and analysed["m"] == 240
    assert analysed["without_xp"] > 0 and analysed["invented"] == 0
    assert info["build_info"]["embeddings_hats"]["rows"] == 240
    assert "half written" not in (out / "embeddings_hats" / "properties").read_text()
    # the classifier is cross-validated on every labelled source with a code (classes with too
    # few kept out), and it learned: its macro F1 is twice that of guessing each class at its
    # share of the labels (1 / number of classes), and the long-period variables (slow, red and
    # of large amplitude in the simulation) are found with an F1 three times their share
    classifier = report["stages"]["analyse"]["classifier"]
    per_class = {r["class"]: r for r in classifier["per_class"]}
    support = {c: r["support"] for c, r in per_class.items()}
    assert support | classifier["left_out"] == labelled
    assert classifier["macro_f1"] == pytest.approx(sum(r["f1"] for r in per_class.values()) / len(per_class))
    assert classifier["macro_f1"] > 2 / len(per_class)
    assert per_class["LPV"]["f1"] > 3 * support["LPV"] / sum(support.values())
    for figure in ("confusion.png", "map.png"):
        assert (out / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "models" / "fold" / "model.pt").exists()
    stored = report["stages"]["analyse"]["stored_models"]  # fitted models kept for `latentcat add`
    assert stored["map"] and len(stored["classifiers"]) == 1 and len(stored["outliers"]) == 2
    assert (out / "analysis" / "manifest.json").exists()
    assert (out / "truth.parquet").exists()


def test_config_with_unknown_table_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[inptus]\nsimulate_n = 10\n")
    with pytest.raises(InputError, match="bad.toml: unknown table or key 'inptus'"):
        load_build_config(bad)


def test_shipped_configs_load():
    root = Path(__file__).parents[1] / "build"
    for name in ("demo.toml", "dr3.toml"):
        cfg = load_build_config(root / name)
        assert cfg.train.xp.beta == 1e-3 and cfg.train.dmdt.beta == 1e-5 and cfg.train.fold.beta == 1e-4


@pytest.mark.parametrize(
    "text, message",
    [
        ('[inputs]\npaths = "../dr3"\n', "inputs.paths must be list"),
        ("[features]\nworker = 2\n", "unknown key features.worker"),
        ('seed = "x"\n', "seed must be an integer"),
        ('[inputs]\nkeep_variability_rejected = "false"\n', "inputs.keep_variability_rejected must be bool"),
        ('[models]\ndevice = "gpu"\n', "models.device = 'gpu'; choose one of"),
        ('[compute]\nscheduler = "slurm"\n', "compute.scheduler = 'slurm'"),
        ("[models.fold]\nwidht = 3\n", "unknown key fold.widht"),
    ],
)
def test_bad_config_values_are_caught_before_any_stage_runs(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(InputError, match=message):
        load_build_config(bad)


def _killed_in_training(config: Path, out: Path, monkeypatch) -> None:
    """Run a build that is killed when it starts training (ingest and features are done)."""
    from latentcat.models import trainer

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during training")

    monkeypatch.setattr(trainer, "train", crash)
    with pytest.raises(KeyboardInterrupt):
        build_module.build(load_build_config(config), out=out)


def test_resume_with_a_changed_configuration_is_refused(tiny_config, tmp_path, monkeypatch):
    from latentcat.errors import LatentcatError

    out = tmp_path / "cat"
    _killed_in_training(tiny_config, out, monkeypatch)
    changed = tmp_path / "changed.toml"
    changed.write_text(tiny_config.read_text().replace("seed = 3", "seed = 4"))
    with pytest.raises(LatentcatError, match="configuration changed since this build started"):
        build_module.build(load_build_config(changed), out=out, resume=True)


def test_resume_after_an_input_changed_is_refused(tmp_path, monkeypatch):
    from latentcat.errors import LatentcatError
    from latentcat.gaia.simulate import simulate_survey

    simulate_survey(n=60, seed=2, out=tmp_path / "sim")
    config = tmp_path / "paths.toml"
    config.write_text(TINY.replace("simulate_n = 240", 'paths = ["sim/archive"]'))
    out = tmp_path / "cat"
    _killed_in_training(config, out, monkeypatch)
    labels = tmp_path / "sim" / "archive" / "vari_classifier_result.csv"
    labels.write_text(labels.read_text().replace("RR", "ECL", 1))  # one label changed since
    with pytest.raises(LatentcatError, match=r"input .*vari_classifier_result.csv changed .* since this build started"):
        build_module.build(load_build_config(config), out=out, resume=True)
