"""VAE of folded G light curves: GRU encoder with attention pooling over ragged phase sets."""

from __future__ import annotations

import math

import torch
from torch import nn

from latentcat.models.config import ModelConfig
from latentcat.models.layers import VAE, ResidualMLP, gaussian_nll


def phase_encoding(phase: torch.Tensor, harmonics: int) -> torch.Tensor:
    """sin and cos of 2 pi h phase for h = 1..harmonics: (..., points) -> (..., points, 2 * harmonics)."""
    h = torch.arange(1, harmonics + 1, dtype=phase.dtype, device=phase.device)
    angle = 2.0 * math.pi * phase.unsqueeze(-1) * h
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class FoldVAE(VAE):
    """Folded light-curve VAE (Huijse et al. 2025, sect. folded light curves).

    Each point is (mag, sin/cos(2 pi h phase), h = 1..harmonics). The encoder runs stacked
    GRUs over the phase-sorted points of each source (padding comes after the real points,
    so it never reaches their outputs) and pools their outputs with a learned attention
    weight masked to the real points. The decoder maps (z, phase encoding) to the magnitude at that phase. The
    likelihood is Gaussian with the photometric errors plus a learned extra variance.

    Batches hold ``mag``, ``err``, ``phase`` (batch, points), ``mask`` (bool, True on real
    points) and ``length`` (int64 points per source); see `latentcat.models.data`.

    Parameters
    ----------
    config : ModelConfig
        Uses ``width``, ``gru_layers``, ``blocks``, ``harmonics``, ``latent_dim``, ``beta``
        and ``sigma_floor``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.beta = config.beta
        self.latent_dim = config.latent_dim
        self.harmonics = config.harmonics
        self.sigma_floor = config.sigma_floor
        self.gru = nn.GRU(1 + 2 * config.harmonics, config.width, num_layers=config.gru_layers)
        self.attention = nn.Linear(config.width, 1)
        self.head = nn.Linear(config.width, 2 * config.latent_dim)
        # start with narrow posteriors (std 0.1). At the usual start (std 1) the sampled z
        # is mostly noise next to the small differences between the encoder means of
        # different curves, so the decoder first learns one mean curve and ignores z, and
        # the means stay nearly equal for many epochs (posterior collapse). With
        # beta = 1e-4 the trained posteriors are narrow anyway.
        with torch.no_grad():
            self.head.bias[config.latent_dim :].fill_(math.log(0.01))
        self.decoder = ResidualMLP(config.latent_dim + 2 * config.harmonics, 1, config.width, config.blocks)
        # log of the extra variance on the [0, 1] magnitude scale; starts at (0.1)^2
        self.log_extra_var = nn.Parameter(torch.tensor(math.log(0.01)))

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance (batch, latent_dim) of a padded batch of folds."""
        mag, phase, mask = batch["mag"], batch["phase"], batch["mask"]
        # time-major (points, batch, features): the layout the GRU kernels use, so no copies
        points = torch.cat([mag.T.unsqueeze(-1), phase_encoding(phase.T, self.harmonics)], dim=-1)
        # the GRUs run forwards only, so the output at a real point depends on that point
        # and the ones before it, never on the padding after it; the padded outputs get
        # zero attention weight below. (This is exact, and on CPU several times faster
        # than packing the sequences, whose backward pass is slow there.)
        out, _ = self.gru(points)
        score = self.attention(out).squeeze(-1).masked_fill(~mask.T, float("-inf"))
        weight = torch.softmax(score, dim=0)
        pooled = torch.einsum("pb,pbw->bw", weight, out)
        mu, logvar = self.head(pooled).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Model magnitude (batch, points) at each phase for latent codes z (batch, latent_dim)."""
        # the first layer acts on (z, phase encoding); its z part is computed once per source
        # and broadcast over the points instead of copying z to every point
        first, rest = self.decoder.net[0], self.decoder.net[1:]
        w_z, w_phase = first.weight[:, : self.latent_dim], first.weight[:, self.latent_dim :]
        hidden = nn.functional.linear(phase_encoding(phase, self.harmonics), w_phase, first.bias)
        hidden = hidden + nn.functional.linear(z, w_z).unsqueeze(1)
        return rest(hidden).squeeze(-1)

    def nll(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-source NLL summed over real points, and the number of real points."""
        mag, err, mask = batch["mag"], batch["err"], batch["mask"]
        var = err.square() + self.log_extra_var.exp() + self.sigma_floor**2
        nll = gaussian_nll(mag, self.decode(z, batch["phase"]), var, mask)
        return nll, batch["length"].to(mag.dtype)
