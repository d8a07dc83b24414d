"""Fixtures shared by several test modules: the catalogues that cost a build are made once per run.

Tests that change a catalogue work on a copy of it.
"""

import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

# the pure helpers that write synthetic catalogue inputs (tests/catalog_fixtures.py, also used
# by the benchmarks) import as a plain module
sys.path.insert(0, str(Path(__file__).parent))

# one torch thread: on a shared 2-core machine, two threads that compete with other work run
# several times slower than one
torch.set_num_threads(1)

# The tiny build of tests/test_build.py, with one epoch per model: the codes need not be
# good, only produced by the catalogue's own trained encoders.
TINY = """
seed = 3
[inputs]
paths = ["sim/archive"]
[features]
shard_size = 100
workers = 1
[models]
device = "cpu"
progress = false
[models.xp]
max_epochs = 1
[models.dmdt]
max_epochs = 1
[models.fold]
width = 16
max_epochs = 1
"""


class TinyBuild(NamedTuple):
    catalogue: Path
    """The catalogue folder written by `latentcat build`."""
    archive: Path
    """The simulated archive files it was built from."""


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> TinyBuild:
    """A whole `latentcat build` of 240 simulated sources (TINY), made once per run."""
    from latentcat.build import build
    from latentcat.config import load_build_config
    from latentcat.gaia.simulate import simulate_survey

    root = tmp_path_factory.mktemp("tiny_build")
    simulate_survey(n=240, seed=3, out=root / "sim")
    (root / "tiny.toml").write_text(TINY)
    build(load_build_config(root / "tiny.toml"), out=root / "cat")
    return TinyBuild(catalogue=root / "cat", archive=root / "sim" / "archive")


@pytest.fixture(scope="session")
def query_catalog(tmp_path_factory) -> Path:
    """A catalogue of 400 synthetic sources (tests/catalog_fixtures.py, seed 5) written by
    `latentcat.catalog.store.write_catalog`, for the query, hostile-input and DuckDB-shell
    tests, which only read it."""
    from catalog_fixtures import write_inputs
    from latentcat.catalog import store

    inputs = write_inputs(tmp_path_factory.mktemp("query_inputs"), n=400, seed=5)
    path = tmp_path_factory.mktemp("query_catalog") / "catalog"
    store.write_catalog(path, build_info={"seed": 5}, **inputs)
    return path
