"""`latentcat demo` timed stage by stage, for this source tree and, to compare, another one.

Runs the README's main job (simulate 20,000 sources, build their catalogue, print the example
queries) in a fresh process per tree, one after the other, and prints each stage's seconds as
the build recorded them, the whole command's wall time and peak RSS, and the classifier's
cross-validated macro F1 against the same classifier on the classic light-curve numbers.

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
    # the build prints "[k/6] <stage>: done in <seconds> s" for each stage (the catalogue's
    # build_info is written before its last two stages end)
    done = [re.match(r"\[\d/\d\] (\w+): done in ([\d.]+) s", line.strip()) for line in lines]
    return {"stages": {m.group(1): float(m.group(2)) for m in done if m and m.group(1) in STAGES},
            "wall": wall, "rss": rss, "f1": classifier.get("macro_f1"),
            "classic": (classifier.get("classic_numbers") or {}).get("baseline_macro_f1")}


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


if __name__ == "__main__":
    main()
