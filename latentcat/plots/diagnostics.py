"""Classifier and training diagnostics: confusion matrix and loss curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from latentcat.errors import InputError
from latentcat.plots.figure import figure_of, finish, new_figure, plain_text


@plain_text
def plot_confusion(matrix, classes: Sequence[str], out: str | Path | None = None, normalise: bool = True,
                   title: str | None = None, ax: Axes | None = None) -> Figure | Axes:
    """A confusion matrix with its numbers written in the cells.

    Parameters
    ----------
    matrix : array_like (k, k)
        Counts; rows are the true classes, columns the predicted ones.
    classes : sequence of str
        The k class names, in the matrix's order.
    out : path, optional
        Where to write the PNG.
    normalise : bool
        Show each row as fractions of its true class (the diagonal is then the recall);
        a class with no sources shows "-" in its row. Otherwise the counts are shown.
    title : str, optional
    ax : matplotlib.axes.Axes, optional
        Draw into these axes (with the colour bar beside them) instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure, or ``ax`` when given
        The cells are the AxesImage with gid ``"confusion"``.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    if counts.shape != (k, k):
        raise InputError(f"plot_confusion: matrix has shape {counts.shape}, expected ({k}, {k}) for {k} classes")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise InputError("plot_confusion: matrix has negative or non-finite counts")
    totals = counts.sum(axis=1, keepdims=True)
    if normalise:
        shown = np.where(totals > 0, counts / np.maximum(totals, 1), np.nan).astype(np.float32)
        norm = colors.Normalize(0, 1)
    else:
        shown = counts.astype(np.float32)
        norm = colors.Normalize(0, max(1.0, float(counts.max())))
    given = ax is not None
    if given:
        fig = figure_of(ax, out, "plot_confusion")
    else:
        side = int(np.clip(180 + 42 * k, 420, 1300))
        fig = new_figure(side + 120, side)
        ax = fig.add_subplot()
    cmap = "Blues"
    image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    image.set_gid("confusion")
    fontsize = 9 if k <= 12 else 7
    for i in range(k):  # k <= a few dozen classes: a loop over cells is fine here
        for j in range(k):
            value = shown[i, j]
            if np.isnan(value):
                text, dark = "-", False
            else:
                text = f"{value:.2f}" if normalise else f"{int(round(value)):d}"
                dark = norm(value) > 0.55
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")
    labels = [str(c) for c in classes]
    ax.set_xticks(np.arange(k), labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(np.arange(k), [f"{c} ({int(t)})" for c, t in zip(labels, totals[:, 0])], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (sources)")
    ax.set_title(title or ("confusion matrix (fraction of each true class)" if normalise else "confusion matrix (sources)"),
                 fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("fraction of true class" if normalise else "sources")
    return ax if given else finish(fig, out)


def _loss_columns(source) -> tuple[dict[str, np.ndarray], str]:
    """Loss history as float arrays by column name, and a name for messages."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            table = pacsv.read_csv(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise InputError(f"{path}: cannot read loss history: {str(err).splitlines()[0]}") from err
        name = str(path)
    elif isinstance(source, pa.Table):
        table, name = source, "loss table"
    elif isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        table, name = pa.Table.from_pylist(list(source)), "loss records"
    else:
        raise InputError(f"plot_loss_curves: expected a CSV path, a pyarrow Table or records, got {type(source).__name__}")
    out = {}
    for column in ("epoch", "train_loss", "val_loss"):
        if column not in table.column_names:
            raise InputError(f"{name}: no column {column!r} (has {', '.join(table.column_names)})")
        try:
            out[column] = table.column(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InputError(f"{name}: column {column!r} is not numeric") from err
    if out["epoch"].size == 0:
        raise InputError(f"{name}: the loss history is empty")
    return out, name


@plain_text
def plot_loss_curves(csv_path_or_table, out: str | Path | None = None, title: str | None = None,
                     ax: Axes | None = None) -> Figure | Axes:
    """Training and validation loss per epoch, with the best validation epoch marked.

    Parameters
    ----------
    csv_path_or_table : path, pyarrow.Table or sequence of mappings
        A trainer's ``losses.csv`` (columns ``epoch``, ``train_loss``, ``val_loss``) or the
        same columns as a table or records. Epoch 0 (the untrained model) has no training
        loss; missing values are left as gaps.
    out : path, optional
        Where to write the PNG.
    title : str, optional
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure, or ``ax`` when given
        The curves are the Line2D artists with gids ``"train"`` and ``"validation"``.
    """
    cols, name = _loss_columns(csv_path_or_table)
    epoch, train, val = cols["epoch"], cols["train_loss"], cols["val_loss"]
    given = ax is not None
    if given:
        fig = figure_of(ax, out, "plot_loss_curves")
    else:
        fig = new_figure(640, 420)
        ax = fig.add_subplot()
    ax.plot(epoch, train, marker="o", ms=3, label="train", gid="train")
    ax.plot(epoch, val, marker="o", ms=3, label="validation", gid="validation")
    if np.isfinite(val).any():
        best = int(np.nanargmin(val))
        ax.axvline(epoch[best], color="0.6", ls=":", label=f"best validation (epoch {epoch[best]:g})")
    finite = np.concatenate([train[np.isfinite(train)], val[np.isfinite(val)]])
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")  # positive losses falling by orders of magnitude
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per source")
    if title is None:  # a trainer writes MODELS_DIR/<modality>/losses.csv: name the modality
        is_file = isinstance(csv_path_or_table, (str, Path))
        title = f"loss curves: {Path(name).parent.name}" if is_file and Path(name).parent.name else "loss curves"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax if given else finish(fig, out)
