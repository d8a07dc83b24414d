"""Building blocks shared by the three VAEs: residual MLP, reparameterisation, losses."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


class ResidualBlock(nn.Module):
    """x + Linear(GELU(Linear(LayerNorm(x)))): a pre-norm residual MLP block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return x + self.net(x)


class ResidualMLP(nn.Module):
    """Linear(in -> width), ``blocks`` residual blocks, GELU, Linear(width -> out)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, blocks: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, width),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.GELU(),
            nn.Linear(width, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network."""
        return self.net(x)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Draw z = mu + exp(logvar / 2) * eps with eps ~ N(0, I)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per source, summed over latent dimensions."""
    return 0.5 * torch.sum(mu.square() + logvar.exp() - 1.0 - logvar, dim=-1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian negative log-likelihood per source, summed over points (masked points excluded).

    Parameters
    ----------
    x, mean, var : Tensor (batch, points)
        Data, model and total variance (data error squared plus any model term).
    mask : Tensor (batch, points) of bool, optional
        True where a point exists; padding contributes exactly zero.
    """
    nll = 0.5 * ((x - mean).square() / var + torch.log(var) + LOG_2PI)
    if mask is not None:
        nll = torch.where(mask, nll, torch.zeros_like(nll))
    return nll.sum(dim=-1)


#: How the colour slope d(BP - RP)/dG (`latentcat.models.data.colour_coordinate`) becomes a
#: coordinate of the dm-dt or fold code: (slope - COLOUR_CENTER) / COLOUR_SCALE, so 0.3 sits at 0
#: and 0.25, about the gap between an eclipsing binary and a pulsating star, is one unit.
COLOUR_CENTER = 0.3
COLOUR_SCALE = 0.25

#: Log-variance reported for the measured coordinates of a code (`VAE.n_fixed`): they are
#: measured, not inferred.
FIXED_LOGVAR = -20.0


class VAE(nn.Module):
    """Common face of the three VAEs.

    A subclass defines `encode(batch) -> (mu, logvar)`, `nll(batch, z) -> (nll, n_points)`
    (both per source) and its ``beta``. The batch is a dict of tensors made by
    `latentcat.models.data`.
    """

    beta: float = 1.0
    #: Leading coordinates of the code that are measured, not inferred: no KL term on them.
    n_fixed: int = 0

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """Latent mean and log-variance, each (batch, latent_dim)."""
        raise NotImplementedError

    def nll(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """Per-source negative log-likelihood summed over points, and the number of points."""
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor], sample: bool = True) -> torch.Tensor:
        """Mean over the batch of -ELBO_beta = NLL(x | z) + beta * KL(q(z|x) || N(0, I)).

        With ``sample=False`` the latent mean is decoded instead of a draw, as for validation.
        """
        mu, logvar = self.encode(batch)
        z = reparameterise(mu, logvar) if sample else mu
        nll, _ = self.nll(batch, z)
        kl = kl_to_standard_normal(mu[:, self.n_fixed :], logvar[:, self.n_fixed :])
        return torch.mean(nll + self.beta * kl)

    @staticmethod
    def with_fixed(fixed: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The code's mean and log-variance with the measured coordinates ``fixed`` (batch,
        n_fixed) first, reported with log-variance ``FIXED_LOGVAR``, then the inferred ones."""
        return torch.cat([fixed, mu], dim=-1), torch.cat([torch.full_like(fixed, FIXED_LOGVAR), logvar], dim=-1)
