"""Training configuration of the three VAEs, loadable from a TOML table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from latentcat.blocks import BLOCKS
from latentcat.errors import InputError

MODALITIES = BLOCKS
"""The three VAEs, one per latent block."""


@dataclass
class ModelConfig:
    """Hyper-parameters of one VAE and of its training run.

    Keys (TOML table ``[models.<modality>]`` or ``[<modality>]``):

    beta : float
        Weight of the KL term (xp 1e-3, dmdt 1e-5, fold 1e-4).
    width : int
        Hidden width of the residual MLP (xp 64, dmdt 128) or of the GRUs and the
        decoder (fold 128).
    blocks : int
        Residual blocks in the encoder and in the decoder MLP (xp 3, dmdt 2, fold 2
        decoder layers).
    latent_dim : int
        Latent dimensions (5).
    in_dim : int
        Input length of the fixed-size vector models (xp 110, dmdt 200; 0 for fold).
    harmonics : int
        fold only: phase harmonics h = 1..harmonics in the point encoding (12).
    encoder : str
        fold only: "gru" (the default: the paper's stacked GRUs) or "conv" (dilated 1-D
        convolutions over the phase-sorted points: 1.5-1.9x the GRU's training rate on a CPU,
        folds reconstructed about 0.02 nats per point worse; the demo uses it). Both pool the
        points with a learned attention weight (`latentcat.models.fold_vae`). A model folder
        written before this key existed is a GRU.
    gru_layers : int
        fold only, ``encoder = "gru"``: stacked GRU layers in the encoder (2).
    conv_layers : int
        fold only, ``encoder = "conv"``: convolution layers in the encoder (3; kernel 3,
        dilations 1, 2, 4, ..., each after the first with a residual connection).
    context : str
        dmdt and fold: "coordinates" (default) gives back as coordinates of the code what the
        input's normalisation took away: for fold the first two are the log10 fold period and
        log10 amplitude (`latentcat.models.fold_vae`), for dmdt the first is the mean G
        magnitude (`latentcat.models.dmdt_vae`); the other coordinates are inferred.
        "coordinates+colour" adds one more, the colour slope d(BP - RP)/dG of the source's
        variability from its BP and RP epochs (`latentcat.features.colour`), which tells
        pulsating stars (bluer when brighter) from eclipsing binaries (nearly grey): dmdt's
        second coordinate, fold's third. "none" is the paper's models, whose five
        coordinates all describe the normalised input.
    encode_errors : bool
        fold only: the encoder also sees each point's error (false, as in the paper).
    sigma_floor : float
        Constant added in quadrature to the given errors, on the scale of the input
        (xp 1e-2 of the 99.5th-percentile flux: the sampled XP errors leave out the
        percent-level calibration systematics and the correlations between samples, and
        with 1e-3 the brightest samples dominate the fit; dmdt 1e-3; fold 0, it learns
        its own).
    lr : float
        RAdam learning rate (1e-3).
    lr_decay : str
        "none" (the paper's constant rate; xp, dmdt) or "plateau" (fold): the rate is
        divided by 3 after ``max(1, patience // 3)`` epochs without a better validation loss.
    grad_clip : float
        Largest gradient norm per step; larger gradients are scaled down (5.0; 0 turns
        clipping off).
    batch_size : int
        Sources per training batch (64).
    max_epochs : int
        Upper bound on passes over the training split.
    patience : int
        Stop after this many epochs without a better validation loss (xp 20, dmdt and
        fold 10). The XP validation loss creeps down slowly and noisily, and the XP
        latents keep gaining stellar-parameter information meanwhile: on real Gaia XP
        spectra of APOGEE stars 20 instead of 10 raised the Teff R^2 of the latents from
        0.910 to 0.914 (benchmarks/quality.py).
    """

    beta: float = 1e-3
    width: int = 64
    blocks: int = 3
    latent_dim: int = 5
    in_dim: int = 110
    harmonics: int = 12
    encoder: str = "gru"  # a record without the key was written by the GRU model
    gru_layers: int = 2
    conv_layers: int = 3
    context: str = "none"
    encode_errors: bool = False
    sigma_floor: float = 1e-3
    lr: float = 1e-3
    lr_decay: str = "none"
    grad_clip: float = 5.0
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10


def _default_xp() -> ModelConfig:
    return ModelConfig(beta=1e-3, width=64, blocks=3, in_dim=110, sigma_floor=1e-2, patience=20)


def _default_dmdt() -> ModelConfig:
    return ModelConfig(beta=1e-5, width=128, blocks=2, in_dim=200, sigma_floor=1e-3, context="coordinates")


def _default_fold() -> ModelConfig:
    return ModelConfig(beta=1e-4, width=128, blocks=2, in_dim=0, harmonics=12, encoder="gru", sigma_floor=0.0,
                       context="coordinates", lr_decay="plateau")


@dataclass
class TrainConfig:
    """The whole training configuration: shared keys plus one section per modality.

    Shared keys (top level of the TOML table ``[models]``):

    seed : int
        Seed of weight initialisation, shuffling and sampling; the same features and
        seed give the same weights (0).
    val_fraction : float
        Fraction of sources held out for validation, chosen by a hash of source_id so
        the split does not depend on shard layout or order (0.1). When the hash leaves a
        modality's training or validation split empty (a build of a few sources), the one
        source nearest the cut crosses it (`latentcat.models.trainer.validation_cut`).
    progress : bool
        Show a rich progress bar while training (true).
    threads : int
        torch CPU threads while training; 0 keeps torch's setting (one per core, or
        ``OMP_NUM_THREADS``). On a machine shared with other jobs use 1: the GRU's many
        small matrix products slow down several-fold when threads wait for busy cores.
    workers : int
        VAEs trained at once on the CPU, each in a process of its own with ``threads`` torch
        threads (1, one after the other; with ``threads`` 0 each process gets the cores
        divided among them). With one thread per model, 2 on a 2-core machine trains the fold
        VAE while the XP and dm-dt VAEs share the other core. With ``threads`` set, the weights
        do not depend on it. Ignored on a GPU.
    train_sample : int
        0 (default): train each model on every source that has its modality. N > 0: on a
        sample of at most N of them (training and validation together), drawn reproducibly
        (the smallest values of a hash of source_id) and stratified by G magnitude (1-mag bins
        of ``g_mean``, in proportion to their sizes), so that a 4-million-source build trains
        in hours on CPUs; every source is still encoded.

    Sections ``xp``, ``dmdt`` and ``fold`` hold the `ModelConfig` keys of each VAE; a
    key left out keeps the paper's default for that modality.
    """

    seed: int = 0
    val_fraction: float = 0.1
    progress: bool = True
    threads: int = 0
    workers: int = 1
    train_sample: int = 0
    xp: ModelConfig = field(default_factory=_default_xp)
    dmdt: ModelConfig = field(default_factory=_default_dmdt)
    fold: ModelConfig = field(default_factory=_default_fold)

    def section(self, modality: str) -> ModelConfig:
        """Return the `ModelConfig` of ``modality`` ('xp', 'dmdt' or 'fold')."""
        if modality not in MODALITIES:
            raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
        return getattr(self, modality)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any] | None, source: str = "config") -> "TrainConfig":
        """Build a configuration from a TOML-style dict, e.g. ``tomllib.load(f)["models"]``.

        Unknown keys raise `InputError` naming ``source`` and the key, so a typo never
        passes unnoticed.
        """
        table = dict(table or {})
        cfg = cls()
        shared = {f.name for f in dataclasses.fields(cls)} - set(MODALITIES)
        model_keys = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
        for key, value in table.items():
            if key in MODALITIES:
                if not isinstance(value, Mapping):
                    raise InputError(f"{source}: [{key}] must be a table of model settings")
                encoder = value.get("encoder", cfg.fold.encoder) if key == "fold" else None
                for layers, needs in (("gru_layers", "gru"), ("conv_layers", "conv")):
                    if layers in value and encoder != needs:  # a setting that would do nothing: said, not ignored
                        raise InputError(f"{source}: fold.{layers} is set but fold.encoder is {encoder!r} "
                                         f"(the default is \"gru\"): set encoder = \"{needs}\" or drop {layers}")
                section = getattr(cfg, key)
                for mkey, mvalue in value.items():
                    if mkey not in model_keys:
                        raise InputError(f"{source}: unknown key {key}.{mkey}")
                    setattr(section, mkey, _coerce(getattr(section, mkey), mvalue, f"{source}: {key}.{mkey}"))
            elif key in shared:
                setattr(cfg, key, _coerce(getattr(cfg, key), value, f"{source}: {key}"))
            else:
                raise InputError(f"{source}: unknown key {key}")
        for m in MODALITIES:
            section = getattr(cfg, m)
            allowed = ("none", "coordinates", "coordinates+colour") if m in ("dmdt", "fold") else ("none",)
            if section.context not in allowed:
                raise InputError(f"{source}: {m}.context must be one of {', '.join(allowed)}; got {section.context!r}")
            if section.encoder not in ("conv", "gru"):
                raise InputError(f"{source}: {m}.encoder must be conv or gru; got {section.encoder!r}")
            if section.lr_decay not in ("none", "plateau"):
                raise InputError(f"{source}: {m}.lr_decay must be none or plateau; got {section.lr_decay!r}")
        if cfg.train_sample < 0:
            raise InputError(f"{source}: train_sample must be 0 (every source) or more, got {cfg.train_sample}")
        if cfg.workers < 1:
            raise InputError(f"{source}: workers must be 1 or more, got {cfg.workers}")
        if cfg.threads < 0:
            raise InputError(f"{source}: threads must be 0 (torch's default) or more, got {cfg.threads}")
        if not 0.0 < cfg.val_fraction < 1.0:
            raise InputError(f"{source}: val_fraction must be between 0 and 1, got {cfg.val_fraction}")
        return cfg


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to the type of ``default`` or raise a one-line `InputError`."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number, got {value!r}")
        return float(value)
    return value
