"""The built-in demo: simulate a Gaia-like survey, build its catalogue, ask it a few questions."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

import pyarrow as pa

from latentcat.config import BuildConfig, load_build_config


def demo_config(n: int, seed: int) -> BuildConfig:
    """build/demo.toml with the survey size and seed replaced."""
    cfg = load_build_config(Path(str(resources.files("latentcat") / "configs" / "demo.toml")))
    inputs = {**cfg.inputs, "simulate_n": n}
    raw = {**cfg.raw, "seed": seed, "inputs": inputs}
    return replace(cfg, seed=seed, inputs=inputs, raw=raw)


def example_queries(cat) -> list[tuple[str, str, pa.Table]]:
    """A few questions an astronomer asks first, as (what, how to ask it, answer) triples."""
    examples = []
    counts = cat.sql(
        "SELECT best_class_name AS dr3_class, count(*) AS n FROM labels GROUP BY 1 ORDER BY n DESC LIMIT 8"
    )
    examples.append(("the DR3 classes in the catalogue", "latentcat sql \"SELECT best_class_name, count(*) FROM labels GROUP BY 1\"", counts))

    query_row = cat.sql(
        "SELECT e.source_id FROM embeddings e JOIN labels USING (source_id) "
        "WHERE e.has_xp AND e.has_dmdt AND e.has_fold AND best_class_name = 'RR' "
        "ORDER BY best_class_score DESC, source_id LIMIT 1"
    ).to_pylist()
    if query_row:
        sid = query_row[0]["source_id"]
        neighbours = cat.similar(sid, k=8)
        keep = [c for c in ("rank", "source_id", "distance", "best_class_name", "period", "phot_g_mean_mag", "blocks")
                if c in neighbours.column_names]
        examples.append((f"the 8 sources most like the RR Lyrae {sid}", f"latentcat similar {sid} -k 8", neighbours.select(keep)))
        sql_answer = cat.sql(
            "SELECT s.source_id, round(s.distance, 3) AS distance, l.best_class_name "
            "FROM similar_to($sid, 5) s LEFT JOIN labels l USING (source_id) ORDER BY s.distance",
            {"sid": sid},
        )
        examples.append(("the same question in plain SQL (works from the duckdb shell too)",
                         f"SELECT * FROM similar_to({sid}, 5) JOIN labels USING (source_id)", sql_answer))

    no_xp = cat.sql(
        "SELECT source_id FROM embeddings WHERE NOT has_xp AND has_dmdt AND has_fold ORDER BY source_id LIMIT 1"
    ).to_pylist()
    if no_xp:
        sid = no_xp[0]["source_id"]
        answer = cat.similar(sid, k=5)
        keep = [c for c in ("rank", "source_id", "distance", "best_class_name", "blocks") if c in answer.column_names]
        examples.append((f"a faint source without XP ({sid}) is matched on the parts it has (dm-dt, fold, colour)",
                         f"latentcat similar {sid} -k 5", answer.select(keep)))

    classifier = cat.info().get("build_info", {}).get("analyse", {}).get("classifier", {})
    f1, classic = classifier.get("macro_f1"), classifier.get("classic_numbers")
    scored = f" (cross-validated macro F1 {f1:.2f} against the DR3 classes" if f1 is not None else ""
    if scored and classic:
        scored += (f"; on the {classic['n']} with light curves {classic['macro_f1']:.2f}, the same classifier on "
                   f"the classic light-curve numbers alone {classic['baseline_macro_f1']:.2f}")
    scored += ")" if scored else ""
    for table, title, command in (
        ("predictions", f"classifier predictions on the search space (latents and colour){scored}",
         "latentcat sql \"SELECT class, count(*) FROM predictions GROUP BY 1\""),
        ("outlier_scores", "the most unusual sources (isolation forest on the search space)", "latentcat outliers --top 5"),
    ):
        rows = cat.sql(f"SELECT count(*) AS n FROM {table}").to_pylist()[0]["n"]
        if not rows:
            continue
        if table == "predictions":
            answer = cat.sql("SELECT class, count(*) AS n, round(avg(probability), 2) AS mean_probability "
                             "FROM predictions GROUP BY 1 ORDER BY n DESC LIMIT 8")
        else:
            answer = cat.sql("SELECT o.rank, o.source_id, round(o.score, 3) AS score, l.best_class_name "
                             "FROM outlier_scores o LEFT JOIN labels l USING (source_id) "
                             "WHERE o.method = 'isolation_forest:space' ORDER BY o.rank LIMIT 5")
        examples.append((title, command, answer))
        if table == "outlier_scores":
            examples.append(_discovery_example(cat))
    return examples


def _discovery_example(cat, n: int = 30) -> tuple[str, str, pa.Table]:
    """A discovery session answered by someone who has seen enough eclipsing binaries (DR3 class
    ECL: not interesting; any other class: interesting): the classes of the first ``n`` sources it
    shows, beside the isolation forest's top ``n``."""
    labels = cat.sql("SELECT source_id, best_class_name FROM labels").to_pydict()
    classes = dict(zip(labels["source_id"], labels["best_class_name"]))
    session = cat.discover()
    shown = []
    for _ in range(n):
        sid = session.next()
        if sid is None:
            break
        shown.append(classes.get(sid) or "no class")
        session.label(sid, classes.get(sid) != "ECL")
    top = cat.sql("SELECT source_id FROM outlier_scores WHERE method = 'isolation_forest:space' ORDER BY rank "
                  "LIMIT $n", {"n": n}).column("source_id").to_pylist()
    forest = [classes.get(s) or "no class" for s in top]
    names = sorted(set(shown) | set(forest), key=lambda c: (-forest.count(c) - shown.count(c), c))
    answer = pa.table({"class": names, "isolation forest, top": [forest.count(c) for c in names],
                       "discover, first shown": [shown.count(c) for c in names]})
    return (f"active discovery: the first {n} sources shown when eclipsing binaries (ECL) are answered "
            f"\"not interesting\" and the rest \"interesting\", beside the isolation forest's top {n}",
            "latentcat discover --labels my_answers.csv", answer)
