"""The figures astronomers judge similarity by.

- :func:`read_feature_rows`: the feature rows of a few sources, in the order asked for;
- :func:`plot_similar`: a query source and its neighbours, one row each: folded G light
  curve, XP spectrum and dm-dt map side by side; :func:`plot_fold`, :func:`plot_xp` and
  :func:`plot_dmdt` draw one of those panels;
- :func:`plot_map`: the 2-D latent map of up to millions of sources, rasterised;
- :func:`plot_confusion` and :func:`plot_loss_curves`: classifier and training diagnostics.

Every plotting function draws with matplotlib's Agg renderer (no pyplot state, safe in
scripts, servers and threads). Given ``ax=`` (all but :func:`plot_similar`, which lays out
its own grid) it draws into those axes and returns them, so figures compose in a notebook
(``fig, axes = plt.subplots(1, 3); plot_fold(row, ax=axes[0])``); otherwise it makes its own
figure, returns the :class:`matplotlib.figure.Figure` and writes a PNG when ``out`` is
given. :func:`figure_png` turns a figure into PNG bytes for the HTML report
(:mod:`latentcat.report`).
"""

from latentcat.plots.diagnostics import plot_confusion, plot_loss_curves
from latentcat.plots.figure import figure_png
from latentcat.plots.latent_map import plot_map
from latentcat.plots.rows import read_feature_rows
from latentcat.plots.similar import plot_dmdt, plot_fold, plot_similar, plot_xp

__all__ = ["read_feature_rows", "plot_similar", "plot_fold", "plot_xp", "plot_dmdt", "plot_map", "plot_confusion",
           "plot_loss_curves", "figure_png"]
