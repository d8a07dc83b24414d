"""VAE of folded G light curves: a convolutional (or the paper's GRU) encoder with attention
pooling over ragged phase-sorted points."""

from __future__ import annotations

import math

import torch
from torch import nn

from latentcat.errors import InputError
from latentcat.models.config import ModelConfig
from latentcat.models.layers import COLOUR_CENTER, COLOUR_SCALE, VAE, ResidualMLP, gaussian_nll


def phase_encoding(phase: torch.Tensor, harmonics: int) -> torch.Tensor:
    """sin and cos of 2 pi h phase for h = 1..harmonics: (..., points) -> (..., points, 2 * harmonics)."""
    h = torch.arange(1, harmonics + 1, dtype=phase.dtype, device=phase.device)
    angle = 2.0 * math.pi * phase.unsqueeze(-1) * h
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


CONV_KERNEL = 3
"""Points each convolution of the "conv" encoder sees (odd: centred on the point); layer ``i``
spaces them ``2**i`` points apart (dilation), so three layers see 15 neighbouring points."""


class ConvEncoder(nn.Module):
    """Dilated 1-D convolutions over the phase-sorted points of a batch of folds (batch,
    points, channels) with padding after the real points: a first convolution to ``width``
    channels, then ``layers - 1`` residual ones, ReLU after each (GELU's backward pass costs as much
    as the convolution's on a CPU), layer ``i`` with dilation
    ``2**i``. The padding is zeroed before every convolution, so a real point's output depends
    only on real points (zeros beyond the ends of its fold, as at the ends of a sequence without
    padding). One batched operation per layer, where a GRU steps through the points one at a time:
    at width 32 about 5 times, at the paper's width 128 about 2.7 times faster (one thread,
    forward and backward; benchmarks/models_speed.py)."""

    def __init__(self, n_point: int, width: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(n_point if i == 0 else width, width, CONV_KERNEL, padding=2**i, dilation=2**i)
            for i in range(max(1, layers))
        )

    def forward(self, points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, points, channels), mask (batch, points) -> (batch, points, width)."""
        keep = mask.unsqueeze(1).to(points.dtype)
        h = nn.functional.relu(self.convs[0](points.transpose(1, 2) * keep))
        for conv in self.convs[1:]:
            h = h + nn.functional.relu(conv(h * keep))
        return h.transpose(1, 2)


#: How the fold's context (`latentcat.models.data.fold_context`: log10 fold period, log10
#: amplitude, colour slope) is made a coordinate of the code: (value - CONTEXT_CENTER) /
#: CONTEXT_SCALE, so a 1 d fold period of a 0.16 mag amplitude and a colour slope of 0.3 sit at
#: 0; 1 dex of period, 0.5 dex of amplitude and 0.25 of colour slope (about the gap between an
#: eclipsing binary and a pulsating star) are one unit, the spread of a learned latent.
CONTEXT_CENTER = (0.0, -0.8, COLOUR_CENTER)
CONTEXT_SCALE = (1.0, 0.5, COLOUR_SCALE)

#: Measured coordinates of the code for each ``context`` setting.
N_FIXED = {"none": 0, "coordinates": 2, "coordinates+colour": 3}


class FoldVAE(VAE):
    """Folded light-curve VAE (Huijse et al. 2025, sect. folded light curves).

    ``context = "none"`` is the paper's model: the code holds the folded shape only, and the
    period and amplitude taken away by folding and min-max scaling are lost. With
    ``context = "coordinates"`` the first two coordinates of the code are the fold period and
    the amplitude themselves (standardised: ``CONTEXT_CENTER``, ``CONTEXT_SCALE``); the encoder
    sees them beside the pooled points and infers the other ``latent_dim - 2`` coordinates,
    the decoder draws the shape from all of them, and the KL term applies to the inferred ones.
    ``context = "coordinates+colour"`` adds a third, the colour slope d(BP - RP)/dG
    (`latentcat.models.data.fold_context`), and infers ``latent_dim - 3``.

    Each point is (mag, sin/cos(2 pi h phase), h = 1..harmonics), and with ``encode_errors``
    also the point's error. The encoder runs over the phase-sorted points of each source
    (padding comes after the real points and never reaches their outputs) and pools their
    outputs with a learned attention weight masked to the real points: ``encoder = "conv"``
    (the default) is `ConvEncoder`, ``"gru"`` the paper's stacked GRUs. The decoder maps
    (z, phase encoding) to the magnitude at that phase. The likelihood is Gaussian with the
    photometric errors plus a learned extra variance.

    Batches hold ``mag``, ``err``, ``phase`` (batch, points), ``mask`` (bool, True on real
    points) and ``length`` (int64 points per source); see `latentcat.models.data`.

    Parameters
    ----------
    config : ModelConfig
        Uses ``width``, ``encoder``, ``gru_layers`` or ``conv_layers``, ``blocks``,
        ``harmonics``, ``latent_dim``, ``beta``, ``sigma_floor``, ``context`` and ``encode_errors``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.beta = config.beta
        self.latent_dim = config.latent_dim
        self.harmonics = config.harmonics
        self.sigma_floor = config.sigma_floor
        self.encode_errors = config.encode_errors
        self.n_fixed = N_FIXED[config.context]
        self.register_buffer("context_center", torch.tensor(CONTEXT_CENTER[: self.n_fixed]), persistent=False)
        self.register_buffer("context_scale", torch.tensor(CONTEXT_SCALE[: self.n_fixed]), persistent=False)
        n_point = 1 + int(config.encode_errors) + 2 * config.harmonics
        self.encoder = config.encoder
        if config.encoder == "gru":
            self.gru = nn.GRU(n_point, config.width, num_layers=config.gru_layers)
        else:
            self.conv = ConvEncoder(n_point, config.width, config.conv_layers)
        self.attention = nn.Linear(config.width, 1)
        n_free = config.latent_dim - self.n_fixed
        self.head = nn.Linear(config.width + self.n_fixed, 2 * n_free)
        # start with narrow posteriors (std 0.1). At the usual start (std 1) the sampled z
        # is mostly noise next to the small differences between the encoder means of
        # different curves, so the decoder first learns one mean curve and ignores z, and
        # the means stay nearly equal for many epochs (posterior collapse). With
        # beta = 1e-4 the trained posteriors are narrow anyway.
        with torch.no_grad():
            self.head.bias[n_free:].fill_(math.log(0.01))
        self.decoder = ResidualMLP(config.latent_dim + 2 * config.harmonics, 1, config.width, config.blocks)
        # log of the extra variance on the [0, 1] magnitude scale; starts at (0.1)^2
        self.log_extra_var = nn.Parameter(torch.tensor(math.log(0.01)))

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance (batch, latent_dim) of a padded batch of folds."""
        mag, phase, mask = batch["mag"], batch["phase"], batch["mask"]
        if self.encoder == "gru":
            # time-major (points, batch, features): the layout the GRU kernels use, so no copies
            channels = [mag.T.unsqueeze(-1)] + ([batch["err"].T.unsqueeze(-1)] if self.encode_errors else [])
            points = torch.cat([*channels, phase_encoding(phase.T, self.harmonics)], dim=-1)
            # the GRUs run forwards only, so the output at a real point depends on that point
            # and the ones before it, never on the padding after it; the padded outputs get
            # zero attention weight below. (This is exact, and on CPU several times faster
            # than packing the sequences, whose backward pass is slow there.)
            out, _ = self.gru(points)
            out = out.transpose(0, 1)  # (batch, points, width)
        else:
            channels = [mag.unsqueeze(-1)] + ([batch["err"].unsqueeze(-1)] if self.encode_errors else [])
            out = self.conv(torch.cat([*channels, phase_encoding(phase, self.harmonics)], dim=-1), mask)
        score = self.attention(out).squeeze(-1).masked_fill(~mask, float("-inf"))
        weight = torch.softmax(score, dim=1)
        pooled = torch.einsum("bp,bpw->bw", weight, out)
        if not self.n_fixed:
            mu, logvar = self.head(pooled).chunk(2, dim=-1)
            return mu, logvar
        if "context" not in batch:
            raise InputError("the fold model takes the fold period and amplitude as coordinates, but the features "
                             "lack period, period_reliable, time_span or g_amplitude")
        if batch["context"].shape[1] < self.n_fixed:
            raise InputError("the fold model takes the colour slope as a coordinate, but the features lack "
                             "colour_slope and colour_slope_err (written by an older latentcat: run the features again)")
        context = (batch["context"][:, : self.n_fixed] - self.context_center) / self.context_scale
        mu, logvar = self.head(torch.cat([pooled, context], dim=-1)).chunk(2, dim=-1)
        return self.with_fixed(context, mu, logvar)

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
