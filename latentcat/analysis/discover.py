"""Active discovery: an outlier ranking that learns which sources the astronomer finds interesting.

A plain isolation forest ranks what is rare, whatever it is: on a simulated survey its top 100
are mostly detached eclipsing binaries, and an astronomer who has seen three of them and said
"not interesting" still gets the rest. A discovery session starts from that ranking and lets
every answer move the sources near it in the search space, up (interesting) or down (not).

The rule, after Astronomaly's (Lochner & Bassett 2021, A&C 36, 100481: the anomaly score
scaled by the relevance that nearby answers predict):

- ``a``: each source's isolation-forest score as its quantile among the sources in (0, 1];
- each answer j (1 interesting, 0 not) speaks for its neighbourhood with a Gaussian weight
  ``w_ij = exp(-d_ij^2 / (2 h_j^2))``, where ``h_j`` is the distance from j to its
  `REACH`-th nearest source (so an answer speaks for about its `REACH` nearest sources,
  whatever the density there);
- relevance ``r_i = (sum_j w_ij y_j + PRIOR / 2) / (sum_j w_ij + PRIOR)``: 1/2 far from any
  answer, towards 1 among interesting answers, towards 0 among uninteresting ones;
- score ``a_i + 2 (r_i - 1/2)``: with no answer nearby the plain forest's order, a source
  surrounded by interesting answers above every unanswered outlier, one surrounded by
  uninteresting answers below them.

Each answer adds its weights to two running sums, O(n d) per answer, linear in the catalogue.

coniferest's active anomaly detectors (AADForest after Das et al. 2017, and PineForest) were
tried first and stay as columns of `benchmarks/discover.py`. Their forests learn from answers
through tree leaves, not through distances in the search space, and generalised less: with
Cepheids as the interesting class, on two simulated surveys, they found 51 / 27 (AADForest) and
1 / 1 (PineForest) in the first 100 shown where this rule found 84 / 54; and on a synthetic
catalogue five interesting answers pushed the other members of their class from a median rank
of 16 to 327 under AADForest's default settings (with its prior on the weights, the answers
barely moved the ranking).

`Discovery` works on plain arrays; `latentcat.query.catalog.Catalog.discover` builds it on the
search-space vectors and the catalogue's isolation-forest scores. Answers live in a CSV file
the user owns (``source_id,interesting``: ``true``, ``false``, or empty for a source shown and
skipped), written by `Discovery.save` and read by `read_answers`; the catalogue is never written.
"""

from __future__ import annotations

import csv
from pathlib import Path

import faiss
import numpy as np

from latentcat.atomic import write_file
from latentcat.errors import LatentcatError

REACH = 50
"""An answer speaks for about this many nearest sources (its kernel width is the distance to
the REACH-th nearest)."""

PRIOR = 1.0
"""Weight of the neutral relevance 1/2 that every source starts from (one answer's weight)."""

ANSWER_COLUMNS = ("source_id", "interesting")
"""Columns of an answers file."""

_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


def read_answers(path: Path) -> dict[int, bool | None]:
    """Answers from a CSV file with the columns ``source_id,interesting`` (in that order, with
    that header): ``true``/``false`` (also 1/0, yes/no, y/n), or empty for a source shown and
    skipped. Returns source_id -> answer in file order.

    Raises
    ------
    LatentcatError
        A missing file, another header, a row that is not ``integer,answer``, or a source_id
        given twice: the message names the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LatentcatError(f"{path}: no such answers file") from None
    except UnicodeDecodeError:
        raise LatentcatError(f"{path}: not a UTF-8 text file (a CSV of source_id,interesting)") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(c.strip() for c in rows[0]) != ANSWER_COLUMNS:
        raise LatentcatError(f"{path}: the first line must be the header source_id,interesting")
    answers: dict[int, bool | None] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise LatentcatError(f"{path}, line {line}: expected source_id,interesting, got {len(row)} fields")
        sid, answer = row[0].strip(), row[1].strip().lower()
        try:
            source_id = int(sid)
        except ValueError:
            raise LatentcatError(f"{path}, line {line}: source_id {sid!r} is not an integer") from None
        if answer in _TRUE:
            value: bool | None = True
        elif answer in _FALSE:
            value = False
        elif answer == "":
            value = None
        else:
            raise LatentcatError(f"{path}, line {line}: interesting must be true, false or empty (skipped), got {row[1]!r}")
        if source_id in answers:
            raise LatentcatError(f"{path}, line {line}: source_id {source_id} is answered twice")
        answers[source_id] = value
    return answers


class Discovery:
    """A discovery session: which source to show next, and what the answers taught it.

    Parameters
    ----------
    ids : int64 array (n,)
        source_ids of the sources that can be shown, ascending.
    x : float array (n, d)
        Their vectors (no NaN): distances between them say which sources are alike.
    anomaly : float array (n,)
        Their outlier scores, higher = more unusual (an isolation forest's).
    answers : dict, optional
        source_id -> True / False / None (skipped), e.g. from `read_answers`: a session resumed.
        Answers for sources outside ``ids`` are kept (and saved) but teach nothing.
    parts : str
        What the vectors hold, for people (e.g. ``"space:dmdt+fold+colour"``).
    """

    def __init__(self, ids: np.ndarray, x: np.ndarray, anomaly: np.ndarray,
                 answers: dict[int, bool | None] | None = None, parts: str = ""):
        self.ids = np.asarray(ids, np.int64)
        self.x = np.ascontiguousarray(x, np.float32)
        anomaly = np.asarray(anomaly, np.float64)
        if self.ids.ndim != 1 or self.x.shape[:1] != self.ids.shape or anomaly.shape != self.ids.shape:
            raise ValueError("ids, x and anomaly must have one row per source")
        if self.ids.size < 2:
            raise LatentcatError("discovery needs at least two sources with the chosen parts")
        if not np.isfinite(self.x).all() or not np.isfinite(anomaly).all():
            raise ValueError("x and anomaly must be finite")
        self.parts = parts
        # quantile of the outlier score, ties sharing the higher one: in (0, 1]
        order = np.sort(anomaly)
        self.quantile = np.searchsorted(order, anomaly, side="right") / anomaly.size
        self.answers: dict[int, bool | None] = {}
        self._yes = np.zeros(self.ids.size)  # sum of the weights of interesting answers
        self._all = np.zeros(self.ids.size)  # sum of the weights of every answer
        for sid, answer in (answers or {}).items():
            if answer is None:
                self.skip(sid)
            else:
                self.label(sid, answer)

    def fresh(self) -> Discovery:
        """A new session on the same sources, with no answers: it shares this one's vectors and
        outlier quantiles (read-only) and holds only its own running sums (one explorer, many
        people judging)."""
        new = object.__new__(Discovery)
        new.ids, new.x, new.quantile, new.parts = self.ids, self.x, self.quantile, self.parts
        new.answers = {}
        new._yes = np.zeros(self.ids.size)
        new._all = np.zeros(self.ids.size)
        return new

    @property
    def n_ranked(self) -> int:
        """Sources the session can show (answered ones included)."""
        return int(self.ids.size)

    def _row(self, source_id: int) -> int:
        """Row of ``source_id`` in ``ids``, -1 where absent."""
        at = min(int(np.searchsorted(self.ids, source_id)), self.ids.size - 1)
        return at if self.ids[at] == source_id else -1

    def _weights(self, row: int) -> np.ndarray:
        """Weight of an answer at ``row`` on every source: the Gaussian kernel of the distance,
        its width the distance to the row's `REACH`-th nearest source."""
        q = self.x[row : row + 1]
        d2 = faiss.pairwise_distances(q, self.x)[0].astype(np.float64)  # squared distances
        k = min(REACH, self.ids.size - 1)
        h2 = max(float(np.partition(d2, k)[k]), 1e-12)  # d2[row] = 0 is the 0-th nearest
        return np.exp(-0.5 * d2 / h2)

    def score(self) -> np.ndarray:
        """Every source's current score (higher: shown sooner), in ``ids`` order."""
        relevance = (self._yes + 0.5 * PRIOR) / (self._all + PRIOR)
        return self.quantile + 2.0 * (relevance - 0.5)

    def _unshown(self) -> np.ndarray:
        """True for the rows never shown (neither answered nor skipped)."""
        unshown = np.ones(self.ids.size, bool)
        rows = [r for r in map(self._row, self.answers) if r >= 0]
        unshown[rows] = False
        return unshown

    def ranking(self) -> tuple[np.ndarray, np.ndarray]:
        """The sources never shown, best first: (source_ids, scores), higher score = sooner,
        ties to the lower source_id."""
        score = self.score()
        pos = np.flatnonzero(self._unshown())
        order = np.lexsort((self.ids[pos], -score[pos]))
        return self.ids[pos[order]], score[pos[order]]

    def next(self) -> int | None:
        """The source_id the model most wants answered next: the top of `ranking` (never a
        source answered or skipped). The same id until it is answered or skipped; None when
        every source has been shown."""
        score = np.where(self._unshown(), self.score(), -np.inf)
        best = int(np.argmax(score))  # the first of equal scores: the lowest source_id
        return int(self.ids[best]) if np.isfinite(score[best]) else None

    def label(self, source_id: int, interesting: bool) -> None:
        """Record an answer for any catalogue source (shown or not: known examples teach it
        too); a second answer replaces the first."""
        source_id, interesting = int(source_id), bool(interesting)
        row = self._row(source_id)
        if row >= 0:
            w = self._weights(row)
            previous = self.answers.get(source_id)
            if previous is not None:  # take the first answer back
                self._all -= w
                self._yes -= w * previous
            self._all += w
            self._yes += w * interesting
        self.answers[source_id] = interesting

    def skip(self, source_id: int) -> None:
        """Mark a source shown without an answer: never shown again, teaches nothing."""
        self.answers.setdefault(int(source_id), None)

    @property
    def counts(self) -> dict[str, int]:
        """How many sources were answered interesting, not interesting, or skipped."""
        values = list(self.answers.values())
        return {"interesting": values.count(True), "not_interesting": values.count(False),
                "skipped": values.count(None)}

    def to_csv(self) -> str:
        """The answers as the text of an answers file (``source_id,interesting``), in the order given."""
        lines = [",".join(ANSWER_COLUMNS)]
        lines += [f"{sid},{'' if answer is None else str(answer).lower()}" for sid, answer in self.answers.items()]
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> Path:
        """Write `to_csv` to ``path`` (replaced whole: a reader sees the old file or the new
        one). Returns the path."""
        write_file(Path(path), lambda tmp: Path(tmp).write_text(self.to_csv(), encoding="utf-8"))
        return Path(path)
