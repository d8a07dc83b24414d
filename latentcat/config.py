"""Build configurations: one TOML file in build/ says what to ingest, how to train and where to write.

A configuration has these tables (every key is optional; build/demo.toml and build/dr3.toml
comment each one):

``seed``
    One seed for every random step (simulation, training, index sampling, classifiers).
``[inputs]``
    ``paths`` (archive files or folders, relative to the config file),
    ``simulate_n`` (simulate a survey of this many sources instead; 0 = off),
    ``keep_variability_rejected`` (keep epochs flagged by the variability pipeline).
``[features]``
    ``shard_size``, ``workers``, ``min_epochs`` (see `latentcat.features.extract.extract_features`).
``[models]``
    The training configuration of the three VAEs (see `latentcat.models.config.TrainConfig`),
    plus ``device`` ("auto", "cpu" or "cuda").
``[analyse]``
    ``labels`` (the ``table.column`` classifiers learn from), ``classifier`` ("logreg", "rf",
    "hgb" or "" for none), ``outliers`` and ``map`` (true/false).
``[compute]``
    ``scheduler`` ("processes" or "dask": one task per feature shard, docs/dask.md), ``address``
    (a running Dask scheduler; "" starts a LocalCluster of ``[features] workers`` workers).
``[output]``
    ``catalog``: the catalogue folder to write (relative to the current directory).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentcat.errors import InputError
from latentcat.models.config import TrainConfig

_TABLES = {"seed", "inputs", "features", "models", "analyse", "compute", "output"}


@dataclass
class BuildConfig:
    """A parsed build configuration (see the module docstring for the keys)."""

    path: Path | None = None
    seed: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    analyse: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> TrainConfig:
        """The VAE training configuration of the ``[models]`` table (``device`` excluded)."""
        table = {k: v for k, v in self.models.items() if k != "device"}
        table.setdefault("seed", self.seed)
        return TrainConfig.from_dict(table, source=str(self.path or "config"))

    @property
    def device(self) -> str:
        """Where to train and encode: "auto", "cpu" or "cuda"."""
        return str(self.models.get("device", "auto"))

    def input_paths(self) -> list[Path]:
        """``[inputs] paths``, resolved against the folder of the configuration file."""
        base = self.path.parent if self.path else Path.cwd()
        return [(base / p).resolve() for p in self.inputs.get("paths", [])]


def load_build_config(path: Path) -> BuildConfig:
    """Read a build configuration; an unreadable file or an unknown table is one clear error."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such configuration file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(raw) - _TABLES
    if unknown:
        raise InputError(f"{path}: unknown table or key {sorted(unknown)[0]!r}; expected {sorted(_TABLES)}")
    cfg = BuildConfig(
        path=Path(path),
        seed=int(raw.get("seed", 0)),
        inputs=dict(raw.get("inputs", {})),
        features=dict(raw.get("features", {})),
        models=dict(raw.get("models", {})),
        analyse=dict(raw.get("analyse", {})),
        compute=dict(raw.get("compute", {})),
        output=dict(raw.get("output", {})),
        raw=raw,
    )
    cfg.train  # validate the [models] table now, not halfway through a build
    return cfg


def load_train_config(path: Path | None) -> TrainConfig | None:
    """The ``[models]`` training configuration of a build file, or None for the defaults."""
    return None if path is None else load_build_config(path).train
