"""Active discovery (latentcat.analysis.discover, Catalog.discover, `latentcat discover`): answers
move the ranking the documented way, nothing is shown twice, a session resumes from its answers
file, and the catalogue is only read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from latentcat.analysis.discover import Discovery, PRIOR, REACH, read_answers
from latentcat.cli import app
from latentcat.errors import LatentcatError
from latentcat.query import open as open_catalog


@pytest.fixture(scope="module")
def survey():
    """Search-space-like vectors of 3,000 sources: a crowd (unit Gaussian, 11 values), 60 lone
    oddities scattered far out in random directions (the isolation forest's favourites), and a
    rare class of 40 in one group beside the crowd (its members as scattered as the crowd's). Returns (ids, x, anomaly, odd rows,
    rare rows), the anomaly a plain isolation forest's score."""
    from latentcat.analysis.outliers import forest_for

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 11))
    odd, rare = np.arange(60), np.arange(60, 100)
    direction = rng.standard_normal((60, 11))
    x[odd] = 7.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True) + 0.3 * rng.standard_normal((60, 11))
    x[rare] = 3.5 * np.eye(11)[0] + 3.5 * np.eye(11)[1] + rng.standard_normal((40, 11))
    ids = np.sort(rng.choice(2**50, 3000, replace=False)).astype(np.int64)
    anomaly = -forest_for(x, 0).score_samples(x)
    return ids, x, anomaly, odd, rare


def _oracle(session: Discovery, good: set[int], n: int) -> list[int]:
    shown = []
    for _ in range(n):
        sid = session.next()
        session.label(sid, sid in good)
        shown.append(sid)
    return shown


def test_before_any_answer_the_ranking_is_the_forests(survey):
    ids, x, anomaly, odd, rare = survey
    session = Discovery(ids, x, anomaly)
    ranked, score = session.ranking()
    want = ids[np.lexsort((ids, -anomaly))]
    assert ranked.tolist() == want.tolist()
    assert session.next() == want[0] and session.next() == want[0]  # the same until answered
    # the oddities come first: a plain forest shows at most one of the rare class in its top 40
    assert np.isin(ranked[:40], ids[odd]).sum() >= 30 and np.isin(ranked[:40], ids[rare]).sum() <= 1


def test_answers_lift_the_interesting_class_and_bury_the_rest(survey):
    ids, x, anomaly, odd, rare = survey
    good = set(ids[rare].tolist())
    plain = Discovery(ids, x, anomaly).ranking()[0][:40]
    session = Discovery(ids, x, anomaly)
    shown = _oracle(session, good, 40)
    assert len(set(shown)) == 40  # never one shown twice
    found = np.isin(shown, ids[rare]).sum()
    assert np.isin(plain, ids[rare]).sum() <= 1 and found >= 25
    # three known examples alone bring most of the rest of their class to the top (the plain
    # forest: at most one)
    session = Discovery(ids, x, anomaly)
    for sid in ids[rare[:3]]:
        session.label(sid, True)
    top = session.ranking()[0][:37]
    assert np.isin(top, ids[rare[3:]]).mean() >= 0.7
    # "not interesting" on ten oddities: the unanswered oddities do not move up
    session = Discovery(ids, x, anomaly)
    before = session.ranking()[0]
    for sid in before[np.isin(before, ids[odd])][:10]:
        session.label(sid, False)
    after = session.ranking()[0]
    rest = np.setdiff1d(ids[odd], list(session.answers))
    rank = lambda order: np.flatnonzero(np.isin(order[~np.isin(order, list(session.answers))], rest))  # noqa: E731
    assert np.median(rank(after)) >= np.median(rank(before))


def test_the_score_follows_the_documented_rule(survey):
    ids, x, anomaly, odd, rare = survey
    session = Discovery(ids, x, anomaly)
    answers = {int(ids[rare[0]]): True, int(ids[odd[0]]): False, int(ids[500]): False}
    for sid, a in answers.items():
        session.label(sid, a)
    quantile = np.array([(anomaly <= a).mean() for a in anomaly])
    yes = np.zeros(len(ids))
    total = np.zeros(len(ids))
    for sid, a in answers.items():
        d = np.sqrt(((x - x[np.searchsorted(ids, sid)]) ** 2).sum(axis=1))
        h = np.sort(d)[REACH]
        w = np.exp(-0.5 * (d / h) ** 2)
        total += w
        yes += w * a
    want = quantile + 2 * ((yes + 0.5 * PRIOR) / (total + PRIOR) - 0.5)
    np.testing.assert_allclose(session.score(), want, atol=1e-5)
    # a changed answer replaces the first: as if given so from the start
    session.label(int(ids[500]), True)
    again = Discovery(ids, x, anomaly, answers={**answers, int(ids[500]): True})
    np.testing.assert_allclose(session.score(), again.score(), atol=1e-9)


def test_a_session_resumes_from_its_answers_file(survey, tmp_path):
    ids, x, anomaly, odd, rare = survey
    good = set(ids[rare].tolist())
    whole = Discovery(ids, x, anomaly)
    shown = _oracle(whole, good, 30)
    first = Discovery(ids, x, anomaly)
    _oracle(first, good, 15)
    first.skip(first.next())
    first.save(tmp_path / "answers.csv")
    resumed = Discovery(ids, x, anomaly, answers=read_answers(tmp_path / "answers.csv"))
    assert resumed.answers == first.answers and resumed.counts["skipped"] == 1
    np.testing.assert_allclose(resumed.score(), first.score())
    assert resumed.next() not in first.answers
    # without the skip, the resumed session goes on as one long session would
    resumed.answers.pop(next(s for s, a in first.answers.items() if a is None))
    assert _oracle(resumed, good, 15) == shown[15:]


def test_fresh_sessions_share_the_vectors_and_keep_their_own_answers(survey):
    ids, x, anomaly, odd, rare = survey
    first = Discovery(ids, x, anomaly)
    _oracle(first, set(ids[rare].tolist()), 10)
    other = first.fresh()
    assert other.x is first.x and other.quantile is first.quantile and other.answers == {}
    np.testing.assert_array_equal(other.score(), Discovery(ids, x, anomaly).score())  # no answer of the first
    other.label(int(ids[odd[0]]), False)
    assert int(ids[odd[0]]) not in first.answers and len(first.answers) == 10


@pytest.mark.parametrize(("text", "message"), [
    ("id,answer\n1,true\n", "first line must be the header source_id,interesting"),
    ("source_id,interesting\n12,true\nabc,false\n", "line 3: source_id 'abc' is not an integer"),
    ("source_id,interesting\n12,maybe\n", "line 2: interesting must be true, false or empty"),
    ("source_id,interesting\n12,true\n12,false\n", "line 3: source_id 12 is answered twice"),
    ("source_id,interesting\n12,true,3\n", "line 2: expected source_id,interesting, got 3 fields"),
])
def test_a_bad_answers_file_is_refused_by_line(tmp_path, text, message):
    path = tmp_path / "answers.csv"
    path.write_text(text)
    with pytest.raises(LatentcatError, match=message) as err:
        read_answers(path)
    assert str(path) in str(err.value)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_catalogue_sessions_and_the_cli_only_read_the_catalogue(query_catalog, tmp_path):
    before = _digest(query_catalog)
    with open_catalog(query_catalog) as cat:
        session = cat.discover(seed=1)
        # the parts that cover the most values, as like() chooses: every source with them is ranked
        parts = session.parts.removeprefix("space:").split("+")
        space = cat.sql("SELECT source_id, parts FROM space").to_pylist()
        assert len(parts) >= 2 and session.n_ranked == sum(set(parts) <= set(r["parts"].split("+")) for r in space)
        shown = []
        for _ in range(12):
            sid = session.next()
            shown.append(sid)
            session.label(sid, len(shown) % 3 == 0)
        assert len(set(shown)) == 12
        path = session.save(tmp_path / "answers.csv")
        resumed = cat.discover(seed=1, labels=path)
        assert resumed.answers == session.answers and resumed.next() not in session.answers
        # a where filter narrows the sources shown
        bright = cat.discover(where="phot_g_mean_mag < 15")
        rows = cat.sql("SELECT source_id, phot_g_mean_mag FROM sources").to_pydict()
        g = dict(zip(rows["source_id"], rows["phot_g_mean_mag"]))
        assert bright.n_ranked < session.n_ranked and all(g[int(s)] < 15 for s in bright.ids)
        # an answers file naming a source of another catalogue is refused
        (tmp_path / "other.csv").write_text("source_id,interesting\n7,true\n")
        with pytest.raises(LatentcatError, match="source_id 7 is not in the catalogue"):
            cat.discover(labels=tmp_path / "other.csv")
    assert before == _digest(query_catalog)

    # the CLI: an oracle run, then a person resuming it, then quitting
    ids = session.ids
    oracle = tmp_path / "oracle.csv"
    oracle.write_text("source_id,interesting\n" + "".join(f"{s},{'true' if i % 4 == 0 else 'false'}\n"
                                                          for i, s in enumerate(ids[:200])))
    runner = CliRunner()
    labels = tmp_path / "mine.csv"
    got = runner.invoke(app, ["discover", "--catalog", str(query_catalog), "--labels", str(labels),
                              "--oracle", str(oracle), "--top", "8"])
    assert got.exit_code == 0, got.output
    first = read_answers(labels)
    assert len(first) == 8 and got.output.count("] ") >= 8
    got = runner.invoke(app, ["discover", "--catalog", str(query_catalog), "--labels", str(labels), "--top", "5"],
                        input="y\nmaybe\nn\ns\nq\n")
    assert got.exit_code == 0, got.output
    assert "answer y (interesting)" in got.output  # "maybe" asked again
    after = read_answers(labels)
    assert list(after)[:8] == list(first) and len(after) == 11
    assert list(after.values())[8:] == [True, False, None]
    # answers inside the catalogue folder are refused
    got = runner.invoke(app, ["discover", "--catalog", str(query_catalog), "--labels",
                              str(query_catalog / "answers.csv"), "--oracle", str(oracle)])
    assert got.exit_code == 2 and "inside the catalogue folder" in got.output
    assert before == _digest(query_catalog)


def test_the_demo_shows_a_session_beside_the_forest(tiny_build):
    from latentcat.demo import example_queries

    with open_catalog(tiny_build.catalogue) as cat:
        examples = {what: (how, table) for what, how, table in example_queries(cat)}
        labels = set(cat.sql("SELECT DISTINCT best_class_name FROM labels").column("best_class_name").to_pylist())
    (what,) = [w for w in examples if w.startswith("active discovery")]
    how, table = examples[what]
    assert how.startswith("latentcat discover")
    assert sum(table.column("discover, first shown").to_pylist()) == 30
    assert sum(table.column("isolation forest, top").to_pylist()) == 30
    assert set(table.column("class").to_pylist()) <= labels | {"no class"}
