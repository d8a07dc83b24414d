"""The figures astronomers judge similarity by.

- :func:`read_feature_rows`: the feature rows of a few sources, in the order asked for;
- :func:`plot_similar`: a query source and its neighbours, one row each: folded G light
  curve, XP spectrum and dm-dt map side by side;
- :func:`plot_map`: the 2-D latent map of up to millions of sources, rasterised;
- :func:`plot_confusion` and :func:`plot_loss_curves`: classifier and training diagnostics.

Every plotting function draws with matplotlib's Agg renderer (no pyplot state, safe in
scripts, servers and threads), returns the :class:`matplotlib.figure.Figure` and writes a
PNG when ``out`` is given. :func:`figure_png` turns a figure into PNG bytes for the HTML
report (:mod:`latentcat.report`).
"""

from latentcat.plots.diagnostics import plot_confusion, plot_loss_curves
from latentcat.plots.figure import figure_png
from latentcat.plots.latent_map import plot_map
from latentcat.plots.rows import read_feature_rows
from latentcat.plots.similar import plot_similar

__all__ = ["read_feature_rows", "plot_similar", "plot_map", "plot_confusion", "plot_loss_curves", "figure_png"]
