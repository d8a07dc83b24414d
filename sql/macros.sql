-- Views and table macros stored inside catalog.duckdb, so that they work from the plain
-- duckdb command line with nothing else installed:
--
--   $ duckdb -readonly catalog.duckdb
--   D SELECT * FROM similar_to(5853498713190525696, 10) JOIN sources USING (source_id);
--
-- All searches are exact: Euclidean distance (list_distance, array_distance), the k nearest
-- sources, the query source itself excluded, ties broken by source_id. similar_to searches
-- the search space (the space table: latent blocks and colour, standardised by the rule in
-- space_rule); the other macros search the latent codes themselves. latentcat's Python API
-- answers the same questions through FAISS indexes.

-- Everything known about each catalogue source except its latent codes: which blocks it
-- has, its gaia_source columns, its label and its light-curve summary.
CREATE OR REPLACE VIEW source_meta AS
SELECT e.source_id, e.has_xp, e.has_dmdt, e.has_fold,
       s.* EXCLUDE (source_id),
       l.* EXCLUDE (source_id),
       f.* EXCLUDE (source_id)
FROM embeddings AS e
LEFT JOIN sources AS s USING (source_id)
LEFT JOIN labels AS l USING (source_id)
LEFT JOIN features AS f USING (source_id);

-- Nearest sources in the search space, on the parts the query source has: a source without
-- XP is compared on dm-dt, fold and colour, and so on; only sources that have all of those
-- parts are candidates, and a missing part is never filled in. The parts column says which
-- parts were compared; a source with no part (no latent code) has no neighbours. The same
-- neighbours as Catalog.similar(source_id).
CREATE OR REPLACE MACRO similar_to(qid, k) AS TABLE
    WITH q AS (SELECT s_xp, s_dmdt, s_fold, s_colour, parts FROM space WHERE source_id = qid)
    SELECT e.source_id,
           list_distance(
               list_concat(list_concat(list_concat(CASE WHEN q.s_xp IS NOT NULL THEN e.s_xp END,
                                                   CASE WHEN q.s_dmdt IS NOT NULL THEN e.s_dmdt END),
                                       CASE WHEN q.s_fold IS NOT NULL THEN e.s_fold END),
                           CASE WHEN q.s_colour IS NOT NULL THEN e.s_colour END),
               list_concat(list_concat(list_concat(q.s_xp, q.s_dmdt), q.s_fold), q.s_colour)) AS distance,
           q.parts AS parts
    FROM space AS e, q
    WHERE e.source_id <> qid
      AND (q.s_xp IS NOT NULL OR q.s_dmdt IS NOT NULL OR q.s_fold IS NOT NULL OR q.s_colour IS NOT NULL)
      AND (q.s_xp IS NULL OR e.s_xp IS NOT NULL)
      AND (q.s_dmdt IS NULL OR e.s_dmdt IS NOT NULL)
      AND (q.s_fold IS NULL OR e.s_fold IS NOT NULL)
      AND (q.s_colour IS NULL OR e.s_colour IS NOT NULL)
    ORDER BY distance, e.source_id
    LIMIT k;

-- similar_to for many sources at once: the k nearest of each source_id in the list qids, as
-- (query_id, rank, source_id, distance, parts) rows, each query on the parts it has, among the
-- sources that have them too (as similar_to), in one pass over the space table; ids not in the
-- catalogue give no rows. A table of ids goes in as a list, and the result joins like any table:
--
--   SELECT n.query_id, n.rank, n.source_id, n.distance, s.phot_g_mean_mag
--   FROM similar_to_many((SELECT list(source_id) FROM labels WHERE best_class_name = 'RR'), 5) AS n
--   JOIN sources AS s USING (source_id)
--   ORDER BY n.query_id, n.rank;
--
-- (`FROM ids, LATERAL similar_to(ids.source_id, k)` gives the same rows, but DuckDB plans the
-- correlated macro as a join per pair of sources: seconds for three ids among 2,000 sources.)
-- The distance sums the squared distances of the parts the query has (a part it lacks gives
-- NULL, counted as 0): the neighbours of similar_to, with distances equal to 1e-6 (float32);
-- min_by keeps the k smallest (distance, source_id) per query without sorting every pair.
CREATE OR REPLACE MACRO similar_to_many(qids, k) AS TABLE
    WITH q AS (
        SELECT source_id AS query_id, s_xp, s_dmdt, s_fold, s_colour, parts
        FROM space
        WHERE source_id IN (SELECT unnest(qids)) AND parts <> ''
    ),
    pairs AS (
        SELECT q.query_id, q.parts, e.source_id,
               sqrt(coalesce(pow(array_distance(e.s_xp, q.s_xp), 2), 0)
                    + coalesce(pow(array_distance(e.s_dmdt, q.s_dmdt), 2), 0)
                    + coalesce(pow(array_distance(e.s_fold, q.s_fold), 2), 0)
                    + coalesce(pow(array_distance(e.s_colour, q.s_colour), 2), 0))::FLOAT AS distance
        FROM q JOIN space AS e
          ON e.source_id <> q.query_id
         AND (q.s_xp IS NULL OR e.s_xp IS NOT NULL)
         AND (q.s_dmdt IS NULL OR e.s_dmdt IS NOT NULL)
         AND (q.s_fold IS NULL OR e.s_fold IS NOT NULL)
         AND (q.s_colour IS NULL OR e.s_colour IS NOT NULL)
    ),
    top AS (
        SELECT query_id, parts,
               min_by({'source_id': source_id, 'distance': distance},
                      {'distance': distance, 'source_id': source_id}, k) AS nb
        FROM pairs
        GROUP BY query_id, parts
    )
    SELECT query_id, unnest(generate_series(1, len(nb))) AS rank,
           unnest(nb, recursive := true), parts
    FROM top;

-- Nearest sources on the joint 15-D latent code (XP, dm-dt and fold blocks). Returns nothing
-- for a query source that lacks a block: use similar_to_available for those.
CREATE OR REPLACE MACRO similar_to_latents(qid, k) AS TABLE
    SELECT e.source_id, array_distance(e.z, q.z) AS distance
    FROM embeddings AS e, (SELECT z FROM embeddings WHERE source_id = qid) AS q
    WHERE e.source_id <> qid AND e.z IS NOT NULL AND q.z IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;

-- Nearest sources on one block: the XP spectrum, the dm-dt map or the folded light curve.
CREATE OR REPLACE MACRO similar_to_xp(qid, k) AS TABLE
    SELECT e.source_id, array_distance(e.z_xp, q.z_xp) AS distance
    FROM embeddings AS e, (SELECT z_xp FROM embeddings WHERE source_id = qid) AS q
    WHERE e.source_id <> qid AND e.z_xp IS NOT NULL AND q.z_xp IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;

CREATE OR REPLACE MACRO similar_to_dmdt(qid, k) AS TABLE
    SELECT e.source_id, array_distance(e.z_dmdt, q.z_dmdt) AS distance
    FROM embeddings AS e, (SELECT z_dmdt FROM embeddings WHERE source_id = qid) AS q
    WHERE e.source_id <> qid AND e.z_dmdt IS NOT NULL AND q.z_dmdt IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;

CREATE OR REPLACE MACRO similar_to_fold(qid, k) AS TABLE
    SELECT e.source_id, array_distance(e.z_fold, q.z_fold) AS distance
    FROM embeddings AS e, (SELECT z_fold FROM embeddings WHERE source_id = qid) AS q
    WHERE e.source_id <> qid AND e.z_fold IS NOT NULL AND q.z_fold IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;

-- Nearest sources on the blocks the query source has. A source without XP is compared on
-- dm-dt + fold, and so on: the present blocks are concatenated (list_concat skips a NULL
-- block), only sources that have all of those blocks are candidates, and a missing block
-- is never filled in. The blocks column says which blocks were compared.
CREATE OR REPLACE MACRO similar_to_available(qid, k) AS TABLE
    WITH q AS (SELECT z_xp, z_dmdt, z_fold FROM embeddings WHERE source_id = qid)
    SELECT e.source_id,
           list_distance(
               list_concat(list_concat(CASE WHEN q.z_xp IS NOT NULL THEN e.z_xp END,
                                       CASE WHEN q.z_dmdt IS NOT NULL THEN e.z_dmdt END),
                           CASE WHEN q.z_fold IS NOT NULL THEN e.z_fold END),
               list_concat(list_concat(q.z_xp, q.z_dmdt), q.z_fold)) AS distance,
           concat_ws('+', CASE WHEN q.z_xp IS NOT NULL THEN 'xp' END,
                          CASE WHEN q.z_dmdt IS NOT NULL THEN 'dmdt' END,
                          CASE WHEN q.z_fold IS NOT NULL THEN 'fold' END) AS blocks
    FROM embeddings AS e, q
    WHERE e.source_id <> qid
      AND (q.z_xp IS NOT NULL OR q.z_dmdt IS NOT NULL OR q.z_fold IS NOT NULL)
      AND (q.z_xp IS NULL OR e.z_xp IS NOT NULL)
      AND (q.z_dmdt IS NULL OR e.z_dmdt IS NOT NULL)
      AND (q.z_fold IS NULL OR e.z_fold IS NOT NULL)
    ORDER BY distance, e.source_id
    LIMIT k;

-- Nearest sources to a 15-D vector (z_xp || z_dmdt || z_fold), e.g. a hand-made code.
CREATE OR REPLACE MACRO similar_to_vector(v, k) AS TABLE
    SELECT e.source_id, array_distance(e.z, v::FLOAT[15]) AS distance
    FROM embeddings AS e
    WHERE e.z IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;
