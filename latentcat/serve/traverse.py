"""Latent traversal: a source's three latent blocks on sliders, decoded by the trained VAEs.

The page starts at a source's codes (or the catalogue's medians) and shows one slider per
latent number, over the 1st to 99th percentile of that number in the catalogue; "Decode"
draws the XP spectrum, dm-dt map and fold the catalogue's own decoders give for the chosen
codes (`latentcat.plots.plot_similar`, beside the source's stored features), so one sees
what each number does. The codes travel in the URL (``xp=..,..&dmdt=..&fold=..``).

With the models' ``context = "coordinates"`` some numbers are not inferred but fixed: the
fold's first two are the log10 fold period and the scaled log amplitude, the dm-dt map's
first the scaled mean G magnitude; their sliders say so and show the physical value.

The weights are read with ``torch.load(weights_only=True)`` (no pickled code) by
`latentcat.models.trainer.load_model`, once, on the first traversal.
"""

from __future__ import annotations

import numpy as np

from latentcat.blocks import BLOCK_DIM, BLOCKS
from latentcat.errors import LatentcatError
from latentcat.layout import MODELS_DIR
from latentcat.serve.state import PageError, parse_source_id

N_PHASE = 200
"""Phases at which the fold decoder is drawn."""


def _models(explorer) -> dict:
    """The catalogue's trained VAEs (those present), loaded once: block -> (model, record)."""
    with explorer.decoder_lock:
        if explorer.decoders is None:
            from latentcat.models.trainer import load_model

            found = {}
            for block in BLOCKS:
                folder = explorer.cat.path / MODELS_DIR / block
                if (folder / "config.json").is_file():
                    found[block] = load_model(folder, "cpu")
            explorer.decoders = found
        return explorer.decoders


def _ranges(explorer) -> dict[str, np.ndarray]:
    """Per block, a (3, 5) array: the 1st percentile, median and 99th percentile of each number."""
    if explorer.latent_ranges is not None:
        return explorer.latent_ranges
    out = {}
    for block in BLOCKS:
        exprs = ", ".join(f"quantile_cont(z_{block}[{d + 1}], [0.01, 0.5, 0.99]) AS q{d}" for d in range(BLOCK_DIM))
        row = explorer.cat.sql(f"SELECT {exprs} FROM embeddings WHERE has_{block}").to_pylist()[0]
        if row["q0"] is None:
            continue
        q = np.array([row[f"q{d}"] for d in range(BLOCK_DIM)], np.float64).T
        q[2] = np.maximum(q[2], q[0] + 1e-3)
        out[block] = q
    explorer.latent_ranges = out
    return out


def _labels(block: str, record: dict) -> list[tuple[str, callable]]:
    """(name, value -> physical text or None) for each number of a block."""
    plain = [(f"z_{block}[{d + 1}]", None) for d in range(BLOCK_DIM)]
    context = record.get("model", {}).get("context")
    if context not in ("coordinates", "coordinates+colour"):
        return plain
    if block == "fold":
        from latentcat.models import fold_vae

        centre, scale = fold_vae.CONTEXT_CENTER, fold_vae.CONTEXT_SCALE
        plain[0] = ("log10 fold period (fixed)", lambda v: f"fold period {10 ** (v * scale[0] + centre[0]):.4g} d")
        plain[1] = ("log amplitude, scaled (fixed)", lambda v: f"amplitude {10 ** (v * scale[1] + centre[1]):.3g} mag")
        if context == "coordinates+colour":
            plain[2] = ("colour slope, scaled (fixed)", lambda v: f"d(BP-RP)/dG = {v * scale[2] + centre[2]:.2f}")
    if block == "dmdt":
        from latentcat.models import dmdt_vae

        centre, scale = dmdt_vae.CONTEXT_CENTER, dmdt_vae.CONTEXT_SCALE
        plain[0] = ("mean G, scaled (fixed)", lambda v: f"G = {v * scale + centre:.2f}")
        if context == "coordinates+colour":
            c, s = dmdt_vae.COLOUR_CENTER, dmdt_vae.COLOUR_SCALE
            plain[1] = ("colour slope, scaled (fixed)", lambda v: f"d(BP-RP)/dG = {v * s + c:.2f}")
    return plain


def _codes(explorer, params, ranges) -> tuple[dict[str, np.ndarray], int | None, list[str]]:
    """The codes to decode: from the URL, else the source's, else the medians; and notes."""
    sid = parse_source_id(params["source_id"]) if params.get("source_id", "").strip() else None
    notes = []
    start = {b: q[1].copy() for b, q in ranges.items()}
    if sid is not None:
        try:
            own = explorer.cat.codes(sid)
        except LatentcatError:
            raise PageError(f"source_id {sid} is not in this catalogue", 404) from None
        for b in ranges:
            if own[b] is not None:
                start[b] = own[b].astype(np.float64)
            else:
                notes.append(f"source_id {sid} has no {b} code: its sliders start at the catalogue's medians")
    for b in ranges:
        if b in params and params[b].strip():
            try:
                values = np.array([float(v) for v in params[b].split(",")], np.float64)
            except ValueError:
                raise PageError(f"{b} codes {params[b][:60]!r}: give {BLOCK_DIM} numbers separated by commas") from None
            if values.size != BLOCK_DIM or not np.all(np.isfinite(values)) or np.abs(values).max() > 100:
                raise PageError(f"{b} codes {params[b][:60]!r}: give {BLOCK_DIM} finite numbers between -100 and 100")
            start[b] = values
        else:
            slider = [params.get(f"{b}{d}", "") for d in range(BLOCK_DIM)]
            if any(s.strip() for s in slider):
                try:
                    start[b] = np.array([float(s) for s in slider], np.float64)
                except ValueError:
                    raise PageError(f"{b} sliders: every value must be a number") from None
                if not np.all(np.isfinite(start[b])) or np.abs(start[b]).max() > 100:
                    raise PageError(f"{b} sliders: values must be finite, between -100 and 100")
    return start, sid, notes


def _decoded_row(explorer, codes: dict[str, np.ndarray]) -> dict:
    """A feature row (docs/schemas.md) drawn by the decoders from the codes."""
    import torch

    models = _models(explorer)
    row = {"source_id": 0, "lc_reason": None, "xp_reason": None}
    with torch.no_grad():
        if "xp" in models and "xp" in codes:
            z = torch.tensor(codes["xp"], dtype=torch.float32)[None]
            row["xp_flux"] = models["xp"][0].decode(z)[0].numpy()
            row["xp_scale"] = None
        else:
            row["xp_reason"] = "no XP model"
        if "dmdt" in models and "dmdt" in codes:
            z = torch.tensor(codes["dmdt"], dtype=torch.float32)[None]
            row["dmdt"] = models["dmdt"][0].decode(z)[0].numpy()
        else:
            row["lc_reason"] = "no dm-dt model"
        if "fold" in models and "fold" in codes:
            z = torch.tensor(codes["fold"], dtype=torch.float32)[None]
            phase = torch.linspace(0, 1, N_PHASE + 1)[:-1][None]
            row["fold_phase"] = phase[0].numpy()
            row["fold_mag"] = models["fold"][0].decode(z, phase)[0].numpy()
            labels = _labels("fold", models["fold"][1])
            row["period"] = (10 ** float(codes["fold"][0]) / 2) if labels[0][1] is not None else None
        else:
            row["lc_reason"] = "no fold model"
    return row


def latent_png(explorer, params):
    """The decoded spectrum, dm-dt map and fold of the codes in the URL, as a PNG response."""
    from latentcat.plots import figure_png, plot_similar

    ranges = _ranges(explorer)
    codes, _, _ = _codes(explorer, params, ranges)
    row = _decoded_row(explorer, codes)
    key = ("latent", tuple((b, tuple(np.round(v, 6))) for b, v in sorted(codes.items())))

    def draw() -> bytes:
        with explorer.draw_lock:
            return figure_png(plot_similar([row], [], meta={0: {"class": "decoded", "g_mag": None}}))

    return explorer._image(key, draw)


def latent_page(explorer, params):
    """Sliders over each block's numbers, the decoded features, and the source's own for comparison."""
    ranges = _ranges(explorer)
    if not ranges:
        raise PageError("this catalogue has no latent codes to traverse", 404)
    try:
        models = _models(explorer)
    except LatentcatError as err:
        raise PageError(f"the trained models cannot be read: {err}") from None
    if not models:
        raise PageError("this catalogue has no trained models (models/) to decode with", 404)
    codes, sid, notes = _codes(explorer, params, ranges)
    blocks = []
    for block, q in ranges.items():
        if block not in models:
            continue
        labels = _labels(block, models[block][1])
        sliders = []
        for d in range(BLOCK_DIM):
            lo, hi = min(q[0, d], codes[block][d]), max(q[2, d], codes[block][d])
            step = float(f"{max((hi - lo) / 100, 1e-4):.1g}")
            name, physical = labels[d]
            value = codes[block][d]
            sliders.append({"name": name, "field": f"{block}{d}", "lo": f"{lo:.4g}", "hi": f"{hi:.4g}",
                            "step": f"{step:g}", "value": f"{value:.4g}",
                            "shown": f" ({physical(value)})" if physical else ""})
        blocks.append((block, sliders))
    url_codes = {b: ",".join(f"{v:.5g}" for v in codes[b]) for b in codes if b in models}
    return explorer.render("latent.html", "latent traversal", notes=notes, source_id=sid, blocks=blocks,
                           codes=url_codes)
