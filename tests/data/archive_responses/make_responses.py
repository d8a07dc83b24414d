"""Rebuild the saved Gaia archive responses in this folder from the real DR3 fixture files.

    python tests/data/archive_responses/make_responses.py FIXTURE_DIR

FIXTURE_DIR holds the files listed in tests/data/archive_responses/README.md. Every value in
the output comes from those files; only the packaging (zip members, VOTable wrappers) is
rebuilt here, in the layouts the archive serves.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import votable
from astropy.table import Table

HERE = Path(__file__).resolve().parent
XP_SOURCE = 5937083312263887616
ZIP_DATE = (2024, 5, 28, 17, 13, 0)  # fixed, so the zips rebuild byte for byte


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(zipfile.ZipInfo(name, ZIP_DATE), data, zipfile.ZIP_DEFLATED)


def xp_continuous(fixtures: Path) -> None:
    """The XP_CONTINUOUS member of astroquery's real DataLink bundle, bytes unchanged."""
    name = f"XP_CONTINUOUS-Gaia DR3 {XP_SOURCE}.xml"
    with zipfile.ZipFile(fixtures / f"gaia_dr3_source_id_{XP_SOURCE}_dl_products_vot.zip") as z:
        data = z.read(name)
    _write_zip(HERE / "datalink_XP_CONTINUOUS.zip", {name: data})


def epoch_photometry(fixtures: Path) -> None:
    """The 8-source DataLink VOTable split into one member per source (INDIVIDUAL layout)."""
    text = (fixtures / "epoch_photometry_datalink_8_sources.vot.xml").read_text()
    head, rest = text.split("<TABLEDATA>\n", 1)
    body, tail = rest.split("    </TABLEDATA>", 1)
    rows = re.findall(r"\s*<TR>.*?</TR>\n", body, flags=re.S)
    assert "".join(rows) == body, "unexpected TABLEDATA layout"
    first_td = [re.search(r"<TD>(\d+)</TD>", row).group(1) for row in rows]
    members = {}
    for sid in dict.fromkeys(first_td):  # file order, each source once
        mine = "".join(r for r, s in zip(rows, first_td) if s == sid)
        members[f"EPOCH_PHOTOMETRY-Gaia DR3 {sid}.xml"] = (
            head + "<TABLEDATA>\n" + mine + "    </TABLEDATA>" + tail).encode()
    _write_zip(HERE / "datalink_EPOCH_PHOTOMETRY.zip", members)


def tap_results(fixtures: Path) -> None:
    """gaia_source and vari_classifier_result job results for the same 8 sources."""
    labels = Table.read(fixtures / "epoch_photometry_8_sources_labels.csv", format="ascii.csv")
    source = Table()
    source["source_id"] = np.asarray(labels["source_id"], dtype=np.int64)
    source["ra"] = np.asarray(labels["ra"], dtype=np.float64)
    source["dec"] = np.asarray(labels["dec"], dtype=np.float64)
    for band in ("g", "bp", "rp"):
        name = f"phot_{band}_mean_mag"
        source[name] = np.asarray(labels[name], dtype=np.float32)
    classes = Table()
    classes["source_id"] = source["source_id"]
    classes["best_class_name"] = np.asarray(labels["best_class_name"], dtype=str)
    for name, table in (("gaia_source", source), ("vari_classifier_result", classes)):
        vot = votable.from_table(table)
        vot.resources[0].type = "results"
        vot.to_xml(str(HERE / f"tap_{name}.vot"))


if __name__ == "__main__":
    fixture_dir = Path(sys.argv[1])
    xp_continuous(fixture_dir)
    epoch_photometry(fixture_dir)
    tap_results(fixture_dir)
