"""One training loop for the three VAEs: streamed batches, early stopping, checkpoints.

Each trained model is written to ``MODELS_DIR/<modality>/``:

- ``model.pt``: the best weights (a ``state_dict``, by validation loss)
- ``config.json``: the exact configuration used (modality, seed, val_fraction, model keys)
- ``losses.csv`` and ``losses.png``: train and validation loss per epoch (epoch 0: the
  validation loss of the untrained model)
- ``versions.json``: python, torch, numpy and latentcat versions

The folder is written once, when the model's training ends, so a folder with a ``config.json``
holds a finished model: with ``resume``, a model whose recorded configuration equals the one it
would be trained with now (settings, seed, validation cut and source counts) is kept, and an
interrupted training run starts again at the first model it had not finished.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import csv
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from latentcat.atomic import write_file
from latentcat.provenance import software_versions
from latentcat.errors import InputError, LatentcatError
from latentcat.models.config import MODALITIES, ModelConfig, TrainConfig
from latentcat.models.data import (
    ShardCache, iter_batches, list_shards, load_modality, magnitude_bin, sample_cuts, sample_key, shard_g_mean,
    validation_mask_value,
)
from latentcat.models.dmdt_vae import DmdtVAE
from latentcat.models.fold_vae import FoldVAE
from latentcat.models.layers import VAE
from latentcat.models.xp_vae import XPVAE

MODEL_CLASSES = {"xp": XPVAE, "dmdt": DmdtVAE, "fold": FoldVAE}
WEIGHTS = "model.pt"


def build_model(modality: str, config: ModelConfig) -> VAE:
    """A freshly initialised VAE for ``modality`` ('xp', 'dmdt' or 'fold')."""
    if modality not in MODEL_CLASSES:
        raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return MODEL_CLASSES[modality](config)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu' or 'cuda' as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but torch sees no CUDA device")
    return torch.device(device)


def train(
    features_dir: Path,
    out: Path,
    config: TrainConfig | None = None,
    modalities: Sequence[str] = ("xp", "dmdt", "fold"),
    device: str = "auto",
    resume: bool = False,
) -> dict:
    """Train the VAEs of ``modalities`` on the feature shards of ``features_dir``.

    Parameters
    ----------
    features_dir : Path
        Folder of ``features-NNNNN.parquet`` shards (docs/schemas.md, Features).
    out : Path
        Models folder; each model goes to ``out/<modality>/``.
    config : TrainConfig, optional
        Hyper-parameters and seed; the paper's defaults when None.
    modalities : sequence of str
        Any of 'xp', 'dmdt', 'fold'. A modality no source has is skipped and reported.
    device : {'auto', 'cpu', 'cuda'}
    resume : bool
        Keep a model whose folder in ``out`` records the configuration and source counts it
        would be trained with now (an interrupted run resumes at its first unfinished model);
        False: every model is trained afresh.

    Returns
    -------
    dict
        Per modality: folder, n_train, n_val, epochs, best_epoch, best_val_loss,
        train_samples_per_s (and ``kept: True`` for a model kept by ``resume``); or
        ``{"skipped": reason}``.
    """
    config = config or TrainConfig()
    for m in modalities:
        config.section(m)  # raises on an unknown name
    dev = resolve_device(device)
    shards = list_shards(Path(features_dir))
    out = Path(out)
    summary: dict = {"device": str(dev), "seed": config.seed, "models": {}}
    workers = min(config.workers, len(modalities)) if dev.type == "cpu" else 1
    if workers > 1:
        from latentcat.compute import shard_runner
        from rich.console import Console

        console = Console(stderr=True)
        # the slowest model first; each job trains one model, without a progress bar, on the
        # threads asked for (or its share of the cores: the count changes the floating-point sums)
        job_config = dataclasses.replace(config, progress=False,
                                         threads=config.threads or max(1, torch.get_num_threads() // workers))
        jobs = [(str(Path(features_dir).absolute()), m, job_config, str((out / m).absolute()), str(dev), resume)
                for m in sorted(modalities, key=lambda m: m != "fold")]
        console.print(f"training {', '.join(m for _, m, *_ in jobs)} in {workers} processes")
        with shard_runner("processes", None, workers) as run:
            for m, report in run(_train_job, jobs):
                summary["models"][m] = report
                if "epochs" in report:
                    console.print(f"  {m}: {report['epochs']} epochs (best {report['best_epoch']}), "
                                  f"{report['train_samples_per_s']:.0f} samples/s")
        summary["models"] = {m: summary["models"][m] for m in modalities}
        return summary
    with torch_threads(config.threads):
        for m in modalities:
            summary["models"][m] = train_model(shards, m, config, out / m, dev, resume=resume)
    return summary


def _train_job(features_dir: str, modality: str, config: TrainConfig, out_dir: str, device: str,
               resume: bool) -> tuple[str, dict]:
    """One model of `train` with ``workers`` > 1, in a process of its own: (modality, its summary)."""
    with torch_threads(config.threads):
        return modality, train_model(list_shards(Path(features_dir)), modality, config, Path(out_dir),
                                     resolve_device(device), resume=resume)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (0: unchanged), then restore the setting."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def validation_cut(hashes: np.ndarray, fraction: float) -> float:
    """The validation cut of one modality: a source is validated when its source_id hash
    (`latentcat.models.data.validation_mask_value`) is below it.

    The cut is ``fraction`` unless that leaves the training or the validation split empty while
    the modality has two sources or more (a small build): then the one source nearest the cut
    crosses it, so both splits have a source and the split still depends on the source_ids alone.
    """
    below = hashes < fraction
    if hashes.size < 2 or 0 < below.sum() < hashes.size:
        return float(fraction)
    if not below.any():  # the smallest hash is validated
        return float(np.nextafter(hashes.min(), np.inf))
    return float(hashes.max())  # the largest hash is trained on


def _count(shards: Sequence[Path], modality: str, cfg: TrainConfig) -> tuple[int, int, np.ndarray | None, int, float]:
    """Training and validation source counts, the training sample's cuts (None: every source;
    see `latentcat.models.data.sample_cuts`), the number of sources with the modality and the
    validation cut (`validation_cut`); also checks every shard before training starts."""
    bins, keys, hashes = [], [], []
    for path in shards:
        arrays = load_modality(path, modality, cfg.section(modality).in_dim or None)
        sid = arrays.source_id[arrays.present]
        bins.append(magnitude_bin(shard_g_mean(path, arrays)))
        keys.append(sample_key(sid))
        hashes.append(validation_mask_value(sid))
    bins, keys, hashes = (np.concatenate(x) if x else np.zeros(0) for x in (bins, keys, hashes))
    cuts = sample_cuts(bins.astype(np.int64), keys, cfg.train_sample) if cfg.train_sample > 0 else None
    chosen = keys <= cuts[bins.astype(np.int64)] if cuts is not None else np.ones(keys.size, bool)
    cut = validation_cut(hashes[chosen], cfg.val_fraction)
    vals = hashes < cut
    return int((chosen & ~vals).sum()), int((chosen & vals).sum()), cuts, int(keys.size), cut


def _evaluate(model: VAE, shards: Sequence[Path], modality: str, cfg: TrainConfig, dev: torch.device,
              sample: np.ndarray | None, cut: float, cache: ShardCache | None = None) -> float:
    """Mean validation loss per source, decoding the latent means (no sampling)."""
    mc = cfg.section(modality)
    total, n = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for _, batch in iter_batches(
            shards, modality, 4 * mc.batch_size, split="val", val_fraction=cut, in_dim=mc.in_dim or None,
            device=dev, sample=sample, cache=cache,
        ):
            size = next(iter(batch.values())).shape[0]
            total += float(model.loss(batch, sample=False)) * size
            n += size
    return total / n


def _train_epoch(model: VAE, optimiser, batches, grad_clip: float, what: str, report) -> tuple[float, int]:
    """One pass over the training batches; returns (summed loss, samples). ``report(size,
    total, n)`` is called after each batch (the progress bar)."""
    model.train()
    total, n = 0.0, 0
    for _, batch in batches:
        loss = model.loss(batch)
        if not torch.isfinite(loss):
            raise LatentcatError(f"{what}: training loss became {loss.item()}")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            # chi^2 terms with small errors give huge early gradients; RAdam's first
            # steps are plain momentum SGD, so cap the gradient norm
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimiser.step()
        size = next(iter(batch.values())).shape[0]
        total += loss.item() * size
        n += size
        report(size, total, n)
    return total, n


def _write_model_folder(out_dir: Path, state: dict, record: dict, history: list[dict], best_epoch: int) -> None:
    """A trained model's folder: weights, versions.json, the loss curves and, last, config.json,
    which marks the folder finished (an earlier model's config.json goes first, so a crash part
    way leaves a folder ``resume`` does not keep)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").unlink(missing_ok=True)
    torch.save({k: v.cpu() for k, v in state.items()}, out_dir / WEIGHTS)
    write_file(out_dir / "versions.json", lambda tmp: tmp.write_text(json.dumps(software_versions(), indent=2, sort_keys=True) + "\n"))
    _write_losses(history, best_epoch, record["modality"], out_dir)
    write_file(out_dir / "config.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n"))


def train_model(shards: Sequence[Path], modality: str, cfg: TrainConfig, out_dir: Path, dev: torch.device,
                resume: bool = False) -> dict:
    """Train one VAE with RAdam and early stopping; write its folder. See `train`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    mc = cfg.section(modality)
    n_train, n_val, sample, n_all, cut = _count(shards, modality, cfg)
    if n_all == 0:
        return {"skipped": f"no source has {modality} features"}
    if n_train == 0 or n_val == 0:
        raise InputError(
            f"{shards[0].parent}: only {n_train + n_val} source with {modality} features, too few to train its VAE "
            f"(one source to train on and one to validate are needed)"
        )

    record = {"modality": modality, "seed": cfg.seed, "val_fraction": cfg.val_fraction, "val_cut": cut,
              "model": mc.__dict__.copy(),
              "train_sample": cfg.train_sample, "n_train": n_train, "n_val": n_val, "n_with_modality": n_all}
    if resume and _finished_record(out_dir) == record:
        return _kept_summary(out_dir, record)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, MODALITIES.index(modality)])
    model = build_model(modality, mc).to(dev)
    optimiser = torch.optim.RAdam(model.parameters(), lr=mc.lr, foreach=True)  # one op per step for all tensors: on a CPU the per-tensor loop costs as much as the backward pass
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=1 / 3, patience=max(1, mc.patience // 3))
                 if mc.lr_decay == "plateau" else None)

    history: list[dict] = []
    cache = ShardCache()  # the training and validation rows, read once while they fit in memory
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    # epoch 0 is the untrained model, so the curves show what training gained
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TextColumn("{task.fields[rate]:.0f} samples/s"),
        TimeElapsedColumn(),
    )
    history.append({"epoch": 0, "train_loss": float("nan"), "val_loss": _evaluate(model, shards, modality, cfg, dev, sample, cut, cache),
                    "seconds": 0.0, "samples_per_s": float("nan")})
    with Progress(*columns, console=Console(stderr=True), disable=not cfg.progress) as progress:
        task = progress.add_task(modality, total=n_train, epoch=0, loss=float("nan"), rate=0.0)
        for epoch in range(1, mc.max_epochs + 1):
            progress.reset(task, total=n_train)
            t0 = time.perf_counter()
            batches = iter_batches(shards, modality, mc.batch_size, split="train", val_fraction=cut, rng=rng,
                                   in_dim=mc.in_dim or None, device=dev, sample=sample, cache=cache)
            total, n = _train_epoch(model, optimiser, batches, mc.grad_clip, f"{modality} VAE, epoch {epoch}",
                                    lambda size, total, n: progress.update(
                                        task, advance=size, epoch=epoch, loss=total / n,
                                        rate=n / max(time.perf_counter() - t0, 1e-9)))
            seconds = time.perf_counter() - t0
            val_loss = _evaluate(model, shards, modality, cfg, dev, sample, cut, cache)
            if scheduler is not None:
                scheduler.step(val_loss)
            history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss, "seconds": seconds, "samples_per_s": n / seconds})
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= mc.patience:
                break

    _write_model_folder(out_dir, best_state, record, history, best_epoch)
    return _summary(out_dir, record, history, best_epoch)


def _finished_record(out_dir: Path) -> dict | None:
    """The config.json record of a finished model folder; None when there is none."""
    try:
        return json.loads((out_dir / "config.json").read_text()) if (out_dir / WEIGHTS).exists() else None
    except (OSError, ValueError):
        return None


def _summary(out_dir: Path, record: dict, history: list[dict], best_epoch: int) -> dict:
    """`train_model`'s summary of a model folder from its record and loss history (epoch 0 first)."""
    trained = history[1:]
    seconds = sum(h["seconds"] for h in trained)
    return {"folder": str(out_dir), "n_train": record["n_train"], "n_val": record["n_val"],
            "n_with_modality": record["n_with_modality"], "epochs": len(trained), "best_epoch": best_epoch,
            "best_val_loss": history[best_epoch]["val_loss"],
            "train_samples_per_s": sum(h["seconds"] * h["samples_per_s"] for h in trained) / seconds}


def _kept_summary(out_dir: Path, record: dict) -> dict:
    """The summary of a finished model folder kept by ``resume``, from its losses.csv."""
    with open(out_dir / "losses.csv", newline="") as fh:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    best_epoch = 1 + int(np.argmin([h["val_loss"] for h in history[1:]]))
    return {**_summary(out_dir, record, history, best_epoch), "kept": True}


def _write_losses(history: list[dict], best_epoch: int, modality: str, out_dir: Path) -> None:
    """losses.csv and a losses.png plot of the train and validation curves."""
    import matplotlib
    from matplotlib.figure import Figure  # drawn with Agg, no pyplot state touched

    with open(out_dir / "losses.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    # gaiaxpy's plotter turns on text.usetex for the whole process when imported; the plot
    # must not depend on a LaTeX installation
    with matplotlib.rc_context({"text.usetex": False}):
        epoch = [h["epoch"] for h in history]
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.plot(epoch, [h["train_loss"] for h in history], label="train")
        ax.plot(epoch, [h["val_loss"] for h in history], label="validation")
        ax.axvline(best_epoch, color="0.6", ls=":", label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per source (NLL + beta KL)")
        ax.set_title(f"{modality} VAE")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "losses.png", dpi=100)


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> tuple[VAE, dict]:
    """Rebuild a trained VAE from its folder; returns (model in eval mode, config record)."""
    model_dir = Path(model_dir)
    try:
        record = json.loads((model_dir / "config.json").read_text())
        mc = ModelConfig(**record["model"])
        model = build_model(record["modality"], mc)
        state = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{model_dir}: not a readable latentcat model folder ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return model.to(device).eval(), record
