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
    ``scheduler`` ("processes" or "dask": one task per input file for ingest, per shard for
    features and embed, docs/dask.md), ``address`` (a running Dask scheduler; "" starts a
    LocalCluster of ``[features] workers`` workers).
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


KEYS: dict[str, dict[str, type]] = {
    "inputs": {"paths": list, "simulate_n": int, "keep_variability_rejected": bool},
    "features": {"shard_size": int, "workers": int, "min_epochs": int},
    "analyse": {"labels": str, "classifier": str, "outliers": bool, "map": bool},
    "compute": {"scheduler": str, "address": str},
    "output": {"catalog": str},
}
"""The keys of each table (``[models]`` is checked by `latentcat.models.config.TrainConfig`)."""

CHOICES = {
    ("models", "device"): ("auto", "cpu", "cuda"),
    ("analyse", "classifier"): ("logreg", "rf", "hgb", ""),
    ("compute", "scheduler"): ("processes", "dask"),
}


def _check_table(path: Path, name: str, table: Any) -> dict:
    """One table of the file: a mapping of known keys with values of the right type."""
    if not isinstance(table, dict):
        raise InputError(f"{path}: [{name}] must be a table")
    for key, value in table.items():
        if key not in KEYS[name]:
            raise InputError(f"{path}: unknown key {name}.{key}; expected one of {', '.join(KEYS[name])}")
        want = KEYS[name][key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if not ok:
            raise InputError(f"{path}: {name}.{key} must be {want.__name__}, got {value!r}")
    if name == "inputs" and not all(isinstance(p, str) for p in table.get("paths", [])):
        raise InputError(f"{path}: inputs.paths must be a list of file or folder names")
    return dict(table)


def load_build_config(path: Path) -> BuildConfig:
    """Read and check a build configuration: a bad file, table, key or value is one clear error."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such configuration file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(raw) - _TABLES
    if unknown:
        raise InputError(f"{path}: unknown table or key {sorted(unknown)[0]!r}; expected {sorted(_TABLES)}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"{path}: seed must be an integer, got {seed!r}")
    tables = {name: _check_table(path, name, raw.get(name, {})) for name in KEYS}
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise InputError(f"{path}: [models] must be a table")
    for (table, key), allowed in CHOICES.items():
        value = (models if table == "models" else tables[table]).get(key)
        if value is not None and value not in allowed:
            raise InputError(f"{path}: {table}.{key} = {value!r}; choose one of {', '.join(map(repr, allowed))}")
    cfg = BuildConfig(path=path, seed=seed, models=dict(models), raw=raw, **tables)
    cfg.train  # check the [models] table now, not halfway through a build
    return cfg
