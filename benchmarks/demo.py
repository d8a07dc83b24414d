"""`latentcat demo` timed stage by stage, for this source tree and, to compare, another one.

Runs the README's main job (simulate 20,000 sources, build their catalogue, print the example
queries) in a fresh process per tree, one after the other, and prints each stage's seconds as
the build recorded them, the whole command's wall time and peak RSS, the classifier's
cross-validated macro F1 against the same classifier on the classic light-curve numbers, and how
telling a "find sources like this" query is: for up to 150 sources brighter than G = 17 of each
simulated class, the share of their 8 nearest neighbours (search space) of the same class.

    python3 benchmarks/demo.py                                  # this tree
    git worktree add /tmp/before <commit>
    python3 benchmarks/demo.py --tree /tmp/before --tree .      # before and after, one run each

A tree is run with its own folder as the working directory, so `import latentcat` finds that
tree's package first (an installed latentcat is only the fallback).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("ingest", "features", "train", "embed", "catalog", "analyse")
#: Simulated classes whose neighbours are checked, with the fine classes each holds.
PURITY_CLASSES = {"RR Lyrae": ("RRAB", "RRC"), "Cepheids": ("DCEP", "T2CEP"), "EA": ("EA",), "EW": ("EW",),
                  "Mira": ("MIRA",), "SR": ("SR",), "delta Scuti": ("DSCT",)}
_PURITY = """
import json, sys
import pyarrow.parquet as pq
import latentcat
path, groups = sys.argv[1], json.loads(sys.argv[2])
truth = pq.read_table(path + "/truth.parquet", columns=["source_id", "class", "mean_g"]).to_pandas().set_index("source_id")
cat = latentcat.open(path)
ids = cat.sql("SELECT source_id FROM embeddings WHERE z IS NOT NULL").to_pandas()["source_id"].to_numpy()
t = truth.loc[ids]
out = {}
for name, members in groups.items():
    q = t[t["class"].isin(members) & (t["mean_g"] < 17)].index.to_numpy()[:150]
    if len(q):
        nb = cat.similar(list(q), k=8, with_meta=False).to_pandas()["source_id"].to_numpy()
        out[name] = float(truth.loc[nb, "class"].isin(members).mean())
print(json.dumps(out))
"""


def run_demo(tree: Path, out: Path, n: int) -> dict:
    """Run ``latentcat demo`` from ``tree``; its stage seconds, wall time, peak RSS and F1."""
    code = "from latentcat.cli import app; app()"
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, "demo", "--out", str(out), "--n", str(n)],
                                cwd=tree, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        wall = time.perf_counter() - t
        log.seek(0)
        lines = log.read().strip().splitlines()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{tree}: demo failed: {lines[-1] if lines else status}")
    rss = usage.ru_maxrss / 1024
    info = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, latentcat; print(json.dumps(latentcat.open(%r).info()['build_info']))" % str(out)],
        cwd=tree, capture_output=True, text=True, check=True).stdout)
    classifier = info.get("analyse", {}).get("classifier", {})
    purity = json.loads(subprocess.run([sys.executable, "-c", _PURITY, str(out), json.dumps(PURITY_CLASSES)],
                                       cwd=tree, capture_output=True, text=True, check=True).stdout)
    # the build prints "[k/6] <stage>: done in <seconds> s" for each stage (the catalogue's
    # build_info is written before its last two stages end)
    done = [re.match(r"\[\d/\d\] (\w+): done in ([\d.]+) s", line.strip()) for line in lines]
    return {"stages": {m.group(1): float(m.group(2)) for m in done if m and m.group(1) in STAGES},
            "wall": wall, "rss": rss, "f1": classifier.get("macro_f1"),
            "classic": (classifier.get("classic_numbers") or {}).get("baseline_macro_f1"), "purity": purity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", help="a latentcat source tree (repeat; default: this one)")
    parser.add_argument("--n", type=int, default=20_000, help="simulated sources (the demo's 20,000)")
    args = parser.parse_args()
    trees = args.tree or [Path(__file__).resolve().parents[1]]
    results = {}
    with tempfile.TemporaryDirectory(prefix="latentcat-demo-bench-") as tmp:
        for i, tree in enumerate(trees):
            results[str(tree)] = run_demo(tree.resolve(), Path(tmp) / f"demo{i}", args.n)
    print(f"latentcat demo, {args.n:,} simulated sources, one run per tree, one after the other\n")
    print(f"{'stage (s)':<22}" + "".join(f"{Path(t).name[:16]:>18}" for t in results))
    for s in STAGES:
        print(f"{s:<22}" + "".join(f"{r['stages'].get(s, float('nan')):>18.1f}" for r in results.values()))
    print(f"{'six stages':<22}" + "".join(f"{sum(r['stages'].values()):>18.1f}" for r in results.values()))
    print(f"{'whole command':<22}" + "".join(f"{r['wall']:>18.1f}" for r in results.values()))
    print(f"{'peak RSS (MiB)':<22}" + "".join(f"{r['rss']:>18.0f}" for r in results.values()))
    print(f"{'macro F1 / classic':<22}" + "".join(f"{r['f1']:>11.3f} / {r['classic']:.3f}" for r in results.values()))
    print("\nshare of the 8 nearest neighbours of the same simulated class (up to 150 sources at G < 17 each)")
    for name in PURITY_CLASSES:
        print(f"{name:<22}" + "".join(f"{r['purity'].get(name, float('nan')):>18.3f}" for r in results.values()))


if __name__ == "__main__":
    main()
