"""Figures and the HTML report: each panel shows its own source's data, files are what they claim."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from matplotlib import colors

from latentcat.errors import InputError, LatentcatError
from latentcat.features.extract import extract_features
from latentcat.gaia.ingest import ingest
from latentcat.gaia.simulate import simulate_survey
from latentcat.plots import figure_png, plot_confusion, plot_loss_curves, plot_map, plot_similar, read_feature_rows
from latentcat.report import write_report

DATA = Path(__file__).parent / "data" / "gaia_dr3"


@pytest.fixture(scope="module")
def real_features(tmp_path_factory) -> Path:
    """Features of real DR3 sources: 8 G light curves (no XP) and 3 XP spectra (no light curve).

    ``min_epochs=30`` leaves the two 27-epoch sources without light-curve features.
    """
    root = tmp_path_factory.mktemp("real")
    ingest([DATA / "epoch_photometry_datalink_8_sources.vot.xml", DATA / "XP_CONTINUOUS_RAW_with_missing_BP.csv"],
           root / "stage")
    extract_features(root / "stage", root / "features", min_epochs=30)
    return root / "features"


@pytest.fixture(scope="module")
def sim_features(tmp_path_factory) -> Path:
    """Features of 60 simulated sources in 3 shards (some with XP and a light curve)."""
    root = tmp_path_factory.mktemp("sim")
    simulate_survey(60, 11, root / "sim")
    ingest([root / "sim" / "archive"], root / "stage")
    extract_features(root / "stage", root / "features", shard_size=20)
    return root / "features"


def _all_rows(features_dir: Path) -> dict[int, dict]:
    return {r["source_id"]: r for r in ds.dataset(features_dir).to_table().to_pylist()}


def _axes(fig, name: str):
    (ax,) = [a for a in fig.axes if a.get_label() == name]
    return ax


def _by_gid(artists, gid: str):
    return [a for a in artists if a.get_gid() == gid]


# ---------------------------------------------------------------- read_feature_rows


def test_read_feature_rows_keeps_the_requested_order(sim_features):
    rows = _all_rows(sim_features)
    ids = sorted(rows)
    wanted = [ids[45], ids[3], ids[30], ids[3]]  # three shards, one id twice
    table = read_feature_rows(sim_features, wanted)
    assert table.column("source_id").to_pylist() == wanted
    for got, sid in zip(table.to_pylist(), wanted):
        assert got == rows[sid]


def test_read_feature_rows_names_an_unknown_id(sim_features, tmp_path):
    known = next(iter(_all_rows(sim_features)))
    with pytest.raises(LatentcatError, match="source_id 12345 is not"):
        read_feature_rows(sim_features, [known, 12345])
    with pytest.raises(LatentcatError, match="no features"):
        read_feature_rows(tmp_path, [known])


# ---------------------------------------------------------------- plot_similar


def test_plot_similar_shows_each_sources_own_data(sim_features, real_features, tmp_path):
    sim = _all_rows(sim_features)
    real = _all_rows(real_features)
    query = next(r for r in sim.values() if r["xp_reason"] is None and r["lc_reason"] is None)
    no_xp = next(r for r in sim.values() if r["xp_reason"] is not None and r["lc_reason"] is None)
    few = next(r for r in real.values() if r["lc_reason"] == "too_few_epochs")
    xp_only = next(r for r in real.values() if r["lc_reason"] == "no_light_curve" and r["xp_reason"] is None)
    rows = [query, no_xp, few, xp_only]
    meta = {r["source_id"]: {"class": f"CLASS{i}", "g_mag": 15.0 + i, "distance": 0.25 * i} for i, r in enumerate(rows)}

    fig = plot_similar(query, rows[1:], meta, out=tmp_path / "similar.png")

    image = mpimg.imread(tmp_path / "similar.png")
    assert image.shape[:2] == (70 + 165 * len(rows), 1200)
    for i, row in enumerate(rows):
        label = "\n".join(t.get_text() for t in _axes(fig, f"label-{i}").texts)
        assert str(row["source_id"]) in label and f"CLASS{i}" in label and f"G = {15.0 + i:.2f}" in label
        assert f"distance = {0.25 * i:.3g}" in label

        fold_ax, xp_ax, dmdt_ax = (_axes(fig, f"{p}-{i}") for p in ("fold", "xp", "dmdt"))
        if row["lc_reason"] is None:
            (points,) = _by_gid(fold_ax.lines, "fold")
            np.testing.assert_array_equal(points.get_xdata(), np.float32(row["fold_phase"]))
            np.testing.assert_array_equal(points.get_ydata(), np.float32(row["fold_mag"]))
            bars = fold_ax.collections[0].get_segments()  # one vertical segment per point: mag -+ err
            np.testing.assert_allclose([(s[1, 1] - s[0, 1]) / 2 for s in bars], row["fold_err"], rtol=1e-5)
            assert fold_ax.get_ylim()[0] > fold_ax.get_ylim()[1]  # bright (small scaled mag) is up
            assert f"{row['period']:.6g} d" in fold_ax.get_title()
            (dmdt_image,) = _by_gid(dmdt_ax.images, "dmdt")
            np.testing.assert_array_equal(np.asarray(dmdt_image.get_array()),
                                          np.float32(row["dmdt"]).reshape(10, 20))
        else:
            assert not fold_ax.lines and not dmdt_ax.images
            reason = "too few epochs" if row["lc_reason"] == "too_few_epochs" else "no light curve"
            assert [t.get_text() for t in _by_gid(fold_ax.texts, "missing")] == [reason]
            assert [t.get_text() for t in _by_gid(dmdt_ax.texts, "missing")] == [reason]
        if row["xp_reason"] is None:
            (bp,) = _by_gid(xp_ax.lines, "xp_bp")
            (rp,) = _by_gid(xp_ax.lines, "xp_rp")
            np.testing.assert_array_equal(bp.get_ydata(), np.float32(row["xp_flux"][:55]))
            np.testing.assert_array_equal(rp.get_ydata(), np.float32(row["xp_flux"][55:]))
        else:
            assert not xp_ax.lines
            assert [t.get_text() for t in _by_gid(xp_ax.texts, "missing")] == ["no XP"]


def test_plots_compose_in_a_notebook_figure_through_ax(sim_features, tmp_path):
    from matplotlib.figure import Figure

    from latentcat.plots import plot_dmdt, plot_fold, plot_xp

    rows = _all_rows(sim_features)
    row = next(r for r in rows.values() if r["xp_reason"] is None and r["lc_reason"] is None)
    # the caller's own figure, made with LaTeX off (an earlier import of gaiaxpy turns it on for the process)
    with matplotlib.rc_context({"text.usetex": False}):
        fig = Figure(figsize=(16, 8), dpi=100)
        axes = fig.subplots(2, 3)
        assert plot_fold(row, ax=axes[0, 0]) is axes[0, 0]
        (points,) = _by_gid(axes[0, 0].lines, "fold")
        np.testing.assert_allclose(points.get_xdata(), row["fold_phase"], rtol=1e-6)
        assert plot_xp(row, ax=axes[0, 1]) is axes[0, 1] and len(_by_gid(axes[0, 1].lines, "xp_bp")) == 1
        assert plot_dmdt(row, ax=axes[0, 2]) is axes[0, 2]
        (image,) = _by_gid(axes[0, 2].images, "dmdt")
        np.testing.assert_allclose(image.get_array().ravel(), row["dmdt"], rtol=1e-6)
        rng = np.random.default_rng(1)
        drawn = plot_map(rng.normal(size=5000), rng.normal(size=5000), categories=["a", "b"] * 2500, ax=axes[1, 0])
        assert drawn is axes[1, 0]
        assert len(_by_gid(axes[1, 0].images, "map")) == 1 and axes[1, 0].get_legend() is not None
        assert plot_confusion([[5, 1], [2, 7]], ["RR", "EA"], ax=axes[1, 1]) is axes[1, 1]
        assert plot_loss_curves([{"epoch": 0, "train_loss": None, "val_loss": 3.0}, {"epoch": 1, "train_loss": 2.0,
                                                                                      "val_loss": 2.5}], ax=axes[1, 2]) is axes[1, 2]
        assert len(fig.axes) == 6 + 1  # the confusion matrix's colour bar beside its axes; no other figure made
        fig.savefig(tmp_path / "composed.png")
        assert mpimg.imread(tmp_path / "composed.png").shape[:2] == (800, 1600)
    # a panel of its own, and out= with ax= refused (the caller saves its own figure)
    alone = plot_fold(row)
    assert alone.figure is not fig and _by_gid(alone.lines, "fold")
    with pytest.raises(InputError, match="give out= or ax=, not both"):
        plot_map([0.0, 1.0], [0.0, 1.0], ax=axes[1, 0], out=tmp_path / "x.png")


def test_plot_similar_draws_without_latex_when_gaiaxpy_turned_it_on(sim_features, tmp_path):
    row = next(iter(_all_rows(sim_features).values()))
    with matplotlib.rc_context({"text.usetex": True}):  # what importing gaiaxpy's plotter does
        plot_similar(row, [], out=tmp_path / "one.png")
    assert mpimg.imread(tmp_path / "one.png").shape[:2] == (70 + 165, 1200)


# ---------------------------------------------------------------- plot_map


def _png_rgb_at(fig, ax, path: Path, x: float, y: float, half: int = 0) -> np.ndarray:
    """RGB of the saved PNG at data coordinates (x, y); the mean of the non-white pixels
    within ``half`` pixels when ``half`` > 0 (a sparse map leaves empty pixels between sources)."""
    image = mpimg.imread(path)
    px, py = ax.transData.transform((x, y))
    row, col = int(round(image.shape[0] - py)), int(round(px))
    window = image[row - half: row + half + 1, col - half: col + half + 1, :3].reshape(-1, 3)
    inked = window[window.min(axis=1) < 0.99]
    return inked.mean(axis=0) if half and len(inked) else window[window.shape[0] // 2]


def _tint_of(rgb: np.ndarray, colour) -> tuple[float, float]:
    """How strongly ``rgb`` is ``colour`` laid over white (0..1), and how far it is from that line."""
    d = np.asarray(colour) - 1.0
    a = float(np.dot(rgb - 1.0, d) / np.dot(d, d))
    return a, float(np.abs(rgb - 1.0 - a * d).max())


def test_plot_map_colours_200k_points_by_category_and_marks_highlights(tmp_path):
    rng = np.random.default_rng(5)
    centres = {"RRAB": (-6.0, 0.0), "EW": (6.0, 0.0), "MIRA": (0.0, 9.0)}
    names = np.array(list(centres))
    cat = rng.choice(names.size, size=200_000, p=[0.5, 0.3, 0.2])
    xy = np.array(list(centres.values()))[cat] + 0.4 * rng.standard_normal((cat.size, 2))
    ids = np.arange(cat.size, dtype=np.int64) * 7 + 4_000_000_000_000_000
    marked = {int(ids[10]): "first", int(ids[99_999]): "second"}

    fig = plot_map(xy[:, 0], xy[:, 1], categories=names[cat], highlight=marked, ids=ids, out=tmp_path / "map.png",
                   size=(800, 600))

    assert mpimg.imread(tmp_path / "map.png").shape[:2] == (600, 800)
    ax = fig.axes[0]
    legend = {t.get_text().split(" (")[0]: colors.to_rgb(h.get_color())
              for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert set(legend) == set(centres)
    seen = {}
    for name, (cx, cy) in centres.items():
        seen[name] = _png_rgb_at(fig, ax, tmp_path / "map.png", cx, cy)
        strength, off_line = _tint_of(seen[name], legend[name])  # the legend colour, lightened by density
        assert strength > 0.6 and off_line < 0.03, (name, seen[name], legend[name])
    for a in centres:
        for b in centres:
            if a < b:
                assert np.abs(seen[a] - seen[b]).sum() > 0.3
    assert _png_rgb_at(fig, ax, tmp_path / "map.png", 0.0, -4.0).min() > 0.95  # empty sky stays white

    (cross,) = _by_gid(ax.lines, "highlight")
    np.testing.assert_allclose(cross.get_xdata(), xy[[10, 99_999], 0], rtol=1e-6)
    np.testing.assert_allclose(cross.get_ydata(), xy[[10, 99_999], 1], rtol=1e-6)
    texts = _by_gid(ax.texts, "highlight_label")
    assert [t.get_text() for t in texts] == ["first", "second"]
    np.testing.assert_allclose([t.xy for t in texts], xy[[10, 99_999]], rtol=1e-6)


def test_one_category_rule_for_figures_and_the_explorer():
    from latentcat.plots import raster
    from latentcat.serve.mapview import Colouring

    # 24 labelled classes of decreasing size and some sources without a label
    labels = [f"class{k:02d}" for k in range(24) for _ in range(30 - k)] + [None] * 7
    codes, names, counts, colours = raster.categories(labels, len(labels))
    assert names == [f"class{k:02d}" for k in range(raster.MAX_CATEGORIES)] + ["other", "unlabelled"]
    assert counts == [30 - k for k in range(20)] + [sum(30 - k for k in range(20, 24)), 7]
    assert [names[c] for c in codes[:30]] == ["class00"] * 30 and names[codes[-1]] == "unlabelled"
    np.testing.assert_allclose(colours[:20], [colors.to_rgb(c) for c in raster.PALETTE])
    np.testing.assert_allclose(colours[20:], [colors.to_rgb(raster.GREY)] * 2)
    # the figure's legend and the explorer's legend are the same categories in the same colours
    rng = np.random.default_rng(0)
    fig = plot_map(rng.normal(size=len(labels)), rng.normal(size=len(labels)), categories=labels, size=(600, 400))
    legend = fig.axes[0].get_legend()
    shown = [(t.get_text(), colors.to_hex(h.get_color())) for t, h in zip(legend.get_texts(), legend.legend_handles)]
    explorer = Colouring("class", "class", True, codes=codes, names=names, counts=counts, colours=colours).legend()
    assert shown == [(f"{name} ({n:,})", rgb) for name, rgb, n in explorer]
    # a pixel's colour: the count-weighted mean of its sources' colours; its opacity the log count
    rgb, alpha = raster.rasterise(np.array([0, 0, 0, 2]), 3, codes=np.array([0, 0, 1, 1]), colours=colours)
    np.testing.assert_allclose(rgb[0], (2 * colours[0] + colours[1]) / 3, rtol=1e-6)
    np.testing.assert_allclose(alpha, [1.0, 0.0, 0.35 + 0.65 * np.log(2) / np.log(4)], rtol=1e-6)


def test_plot_map_numeric_colour_follows_the_values(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 50_000)
    y = rng.uniform(0, 10, 50_000)
    fig = plot_map(x, y, color=x, color_label="x itself", out=tmp_path / "numeric.png", size=(700, 600))
    ax = fig.axes[0]
    viridis = matplotlib.colormaps["viridis"]
    low = _png_rgb_at(fig, ax, tmp_path / "numeric.png", 0.3, 5.0, half=4)
    high = _png_rgb_at(fig, ax, tmp_path / "numeric.png", 9.7, 5.0, half=4)
    assert np.abs(low - viridis(0.0)[:3]).sum() < np.abs(low - viridis(1.0)[:3]).sum()
    assert np.abs(high - viridis(1.0)[:3]).sum() < np.abs(high - viridis(0.0)[:3]).sum()
    assert fig.axes[1].get_ylabel() == "x itself"


def test_plot_map_refuses_bad_points_and_unknown_highlights():
    with pytest.raises(InputError, match="point 1 has a non-finite"):
        plot_map([0.0, np.nan], [0.0, 1.0])
    with pytest.raises(LatentcatError, match="source_id 99 is not on the map"):
        plot_map([0.0, 1.0], [0.0, 1.0], highlight=[99], ids=[5, 6])


# ---------------------------------------------------------------- diagnostics


def test_plot_confusion_writes_row_fractions_in_the_cells(tmp_path):
    matrix = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    fig = plot_confusion(matrix, ["RRAB", "RRC", "EW"], out=tmp_path / "cm.png")
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    assert mpimg.imread(tmp_path / "cm.png").shape[:2] == (height, width)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts}
    assert cells[(0, 0)] == "0.80" and cells[(0, 1)] == "0.20" and cells[(1, 0)] == "0.25"
    assert cells[(1, 1)] == "0.75" and cells[(2, 2)] == "-"  # EW has no true sources
    counts = plot_confusion(matrix, ["RRAB", "RRC", "EW"], normalise=False)
    assert {t.get_text() for t in counts.axes[0].texts} == {"8", "2", "0", "1", "3"}
    with pytest.raises(InputError, match="expected \\(2, 2\\)"):
        plot_confusion(matrix, ["RRAB", "RRC"])


def test_plot_loss_curves_reads_the_trainers_csv(tmp_path):
    csv = tmp_path / "dmdt" / "losses.csv"
    csv.parent.mkdir()
    csv.write_text("epoch,train_loss,val_loss,seconds,samples_per_s\n0,nan,310.5,,\n1,250.0,240.25,0.4,900\n"
                   "2,180.5,190.0,0.4,910\n3,150.0,195.5,0.4,905\n")
    fig = plot_loss_curves(csv, out=tmp_path / "loss.png")
    ax = fig.axes[0]
    (train,) = _by_gid(ax.lines, "train")
    (val,) = _by_gid(ax.lines, "validation")
    np.testing.assert_array_equal(val.get_ydata(), [310.5, 240.25, 190.0, 195.5])
    np.testing.assert_array_equal(train.get_ydata()[1:], [250.0, 180.5, 150.0])
    assert np.isnan(train.get_ydata()[0])
    assert "epoch 2" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_title() == "loss curves: dmdt"
    assert mpimg.imread(tmp_path / "loss.png").shape[:2] == (420, 640)
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,train_loss\n1,2.0\n")
    with pytest.raises(InputError, match=r"bad\.csv: no column 'val_loss'"):
        plot_loss_curves(bad)


# ---------------------------------------------------------------- report


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v]


def test_write_report_is_one_self_contained_file(sim_features, tmp_path):
    rows = _all_rows(sim_features)
    sids = sorted(rows)[:2]
    map_png = figure_png(plot_map(np.arange(50.0), np.arange(50.0) ** 0.5, categories=["a", "b"] * 25))
    (tmp_path / "cm.png").write_bytes(figure_png(plot_confusion([[3, 1], [0, 4]], ["RRAB", "EW"])))
    thumbs = [figure_png(plot_similar(rows[s], [])) for s in sids]
    classifier = pa.table({"class": ["RRAB", "<b>EW</b>"], "recall": [0.91, 0.5], "sources": [120, 80]})
    outliers = [{"source_id": s, "score": 0.7, "thumbnail": t} for s, t in zip(sids, thumbs)]

    out = write_report(tmp_path / "r" / "report.html", {"sources": 60, "seed": 11}, map_png, classifier,
                       tmp_path / "cm.png", outliers)

    text = out.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert not re.search(r"https?://|url\(", text)
    assert all(u.startswith("data:image/png;base64,") for u in parser.urls)
    embedded = [base64.b64decode(u.split(",", 1)[1]) for u in parser.urls]
    assert embedded == [map_png, (tmp_path / "cm.png").read_bytes(), *thumbs]
    assert "&lt;b&gt;EW&lt;/b&gt;" in text and "<b>EW</b>" not in text
    assert all(str(s) in text for s in sids)  # ids written in full, no thousands separators
    with pytest.raises(InputError, match="not PNG"):
        write_report(tmp_path / "bad.html", {}, b"GIF89a...", classifier)
