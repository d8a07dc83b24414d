"""VAE of dm-dt maps: residual MLP with a sigmoid output, Gaussian likelihood per cell."""

from __future__ import annotations

import torch

from latentcat.errors import InputError
from latentcat.models.config import ModelConfig
from latentcat.models.layers import COLOUR_CENTER, COLOUR_SCALE, VAE, ResidualMLP, gaussian_nll

#: How the mean G magnitude (`latentcat.models.data.dmdt_context`) becomes a coordinate of the
#: code: (g_mean - CONTEXT_CENTER) / CONTEXT_SCALE, so G = 17 sits at 0 and G = 13 and 21 at
#: -2 and +2, the spread of a learned latent.
CONTEXT_CENTER = 17.0
CONTEXT_SCALE = 2.0
#: Measured coordinates of the code for each ``context`` setting.
N_FIXED = {"none": 0, "coordinates": 1, "coordinates+colour": 2}


class DmdtVAE(VAE):
    """dm-dt map VAE (Huijse et al. 2025, sect. dm-dt).

    The input is the 10 x 20 map p(|dm| | dt) flattened dt-major (200 cells in [0, 1]);
    the decoder ends in a sigmoid so the reconstruction stays in [0, 1]. The likelihood is
    Gaussian with the per-cell uncertainties, plus ``sigma_floor`` in quadrature.

    ``context = "none"`` is the paper's model: the map holds magnitude differences only, so
    the source's brightness is lost. With ``context = "coordinates"`` the first coordinate of
    the code is the mean G magnitude (standardised: ``CONTEXT_CENTER``, ``CONTEXT_SCALE``);
    the encoder sees it beside the map and infers the other ``latent_dim - 1``, the decoder
    draws the map from all of them (a faint source's map is broadened by its noise), and
    the KL term applies to the inferred ones. ``context = "coordinates+colour"`` adds a
    second, the colour slope d(BP - RP)/dG of the variability
    (`latentcat.models.data.colour_coordinate`, standardised by ``COLOUR_CENTER`` and
    ``COLOUR_SCALE``), and infers ``latent_dim - 2``.

    Parameters
    ----------
    config : ModelConfig
        Uses ``in_dim``, ``width``, ``blocks``, ``latent_dim``, ``beta``, ``sigma_floor`` and
        ``context``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.beta = config.beta
        self.latent_dim = config.latent_dim
        self.sigma_floor = config.sigma_floor
        self.n_fixed = N_FIXED[config.context]
        self.register_buffer("context_center", torch.tensor((CONTEXT_CENTER, COLOUR_CENTER)[: self.n_fixed]), persistent=False)
        self.register_buffer("context_scale", torch.tensor((CONTEXT_SCALE, COLOUR_SCALE)[: self.n_fixed]), persistent=False)
        n_free = config.latent_dim - self.n_fixed
        self.encoder = ResidualMLP(config.in_dim + self.n_fixed, 2 * n_free, config.width, config.blocks)
        self.decoder = ResidualMLP(config.latent_dim, config.in_dim, config.width, config.blocks)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance from ``batch['x']`` (batch, 200) and, with context
        coordinates, ``batch['context']`` (batch, 1)."""
        if not self.n_fixed:
            mu, logvar = self.encoder(batch["x"]).chunk(2, dim=-1)
            return mu, logvar
        if "context" not in batch:
            raise InputError("the dm-dt model takes the mean G magnitude as a coordinate, but the features lack g_mean")
        if batch["context"].shape[1] < self.n_fixed:
            raise InputError("the dm-dt model takes the colour slope as a coordinate, but the features lack "
                             "colour_slope and colour_slope_err (written by an older latentcat: run the features again)")
        context = (batch["context"][:, : self.n_fixed] - self.context_center) / self.context_scale
        mu, logvar = self.encoder(torch.cat([batch["x"], context], dim=-1)).chunk(2, dim=-1)
        return self.with_fixed(context, mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed map (batch, 200), each cell in (0, 1)."""
        return torch.sigmoid(self.decoder(z))

    def nll(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-source NLL of ``batch['x']`` given ``z``, summed over cells, and the cell count."""
        x, err = batch["x"], batch["err"]
        var = err.square() + self.sigma_floor**2
        n = torch.full((x.shape[0],), x.shape[1], dtype=x.dtype, device=x.device)
        return gaussian_nll(x, self.decode(z), var), n
