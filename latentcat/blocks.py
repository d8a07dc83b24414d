"""Names of the latent blocks and of block sets, shared by every stage.

A source has up to three 5-D latent blocks: ``xp`` (BP/RP spectrum), ``dmdt`` (the dm-dt map)
and ``fold`` (the folded G light curve). A *block set* is a non-empty combination of them,
always in that order and named by joining with ``+`` (``"dmdt+fold"``); ``"all"`` names the
three. The search space (`latentcat.analysis.space`) is named ``"space"``.
"""

from __future__ import annotations

import itertools

BLOCKS = ("xp", "dmdt", "fold")
"""The latent blocks, in the order they are concatenated."""

BLOCK_DIM = 5
"""Latent dimensions per block."""

BLOCK_SETS: tuple[tuple[str, ...], ...] = tuple(
    combo for r in (3, 1, 2) for combo in itertools.combinations(BLOCKS, r)
)
"""Every block set that gets an index: the joint set, each block alone, each pair."""

SPACE = "space"
"""Name of the search space in modalities, index keys and file names."""


def block_set_name(blocks: tuple[str, ...]) -> str:
    """Name of a block set as users see it, e.g. ``"dmdt+fold"``."""
    return "+".join(blocks)


def parse_block_set(name: str, blocks: tuple[str, ...] = BLOCKS) -> tuple[str, ...]:
    """Blocks named by ``"all"``, ``"xp"``, ``"dmdt+fold"``, ... in canonical order.

    ``blocks`` is the canonical list (the latent blocks, or the search space's parts).

    Raises
    ------
    ValueError
        If a name is not a block or a block repeats.
    """
    if name == "all":
        return tuple(blocks)
    parts = name.split("+")
    if not parts or any(p not in blocks for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(
            f"unknown modality {name!r}: use 'all', {', '.join(repr(b) for b in blocks)} or a '+'-joined set"
        )
    return tuple(b for b in blocks if b in parts)
