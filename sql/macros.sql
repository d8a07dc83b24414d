-- Views and table macros stored inside catalog.duckdb, so that they work from the plain
-- duckdb command line with nothing else installed:
--
--   $ duckdb -readonly catalog.duckdb
--   D SELECT * FROM similar_to(5853498713190525696, 10) JOIN sources USING (source_id);
--
-- Searches return the k nearest sources by Euclidean distance (array_distance), the query
-- source itself excluded, ties broken by source_id; all are exact but the _approx ones, which
-- compare the query with the sources of a few IVF lists (space_lists). similar_to* search the
-- search space (latent blocks and colour standardised by the rule in space_rule, laid out in
-- space_search); the other macros search the latent codes themselves. latentcat's Python API
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

-- Each source's search-space parts as a search compares them: part_set (a bit per part it
-- has: xp 1, dmdt 2, fold 4, colour 8) and v, those parts packed in order with zeros after
-- them, as the rows of space_search hold them (latentcat/catalog/space_search.py).
CREATE OR REPLACE VIEW space_query AS
SELECT source_id, parts,
       (CASE WHEN s_xp IS NULL THEN 0 ELSE 1 END + CASE WHEN s_dmdt IS NULL THEN 0 ELSE 2 END
        + CASE WHEN s_fold IS NULL THEN 0 ELSE 4 END + CASE WHEN s_colour IS NULL THEN 0 ELSE 8 END)::UTINYINT AS part_set,
       list_resize(list_concat(list_concat(list_concat(s_xp::FLOAT[], s_dmdt::FLOAT[]), s_fold::FLOAT[]),
                               s_colour::FLOAT[]), 16, 0)::FLOAT[16] AS v
FROM space;

-- Nearest sources in the search space, on the parts the query source has: a source without
-- XP is compared on dm-dt, fold and colour, and so on; only sources that have all of those
-- parts are candidates, and a missing part is never filled in. The parts column says which
-- parts were compared; a source with no part (no latent code) has no neighbours. The same
-- neighbours as Catalog.similar(source_id). Exact, over the rows of the query's part set in
-- space_search, in two passes: the sources of its nearest lists (the part set's stored
-- nprobe) give an upper bound d_k on its k-th distance; then only the lists that can hold a
-- source that near are compared (a list whose centroid is farther than d_k + its radius holds
-- none: triangle inequality), one array_distance per source.
CREATE OR REPLACE MACRO similar_to(qid, k) AS TABLE
    WITH q AS (SELECT part_set, v, parts FROM space_query WHERE source_id = qid),
    lists AS (
        SELECT l.part_set, l.list_id, l.radius, l.nprobe, array_distance(l.centroid, q.v) AS to_centroid,
               row_number() OVER (ORDER BY array_distance(l.centroid, q.v), l.list_id) AS nearness
        FROM space_lists AS l JOIN q ON l.part_set = q.part_set
    ),
    first AS (
        SELECT array_distance(e.v, q.v) AS distance
        FROM lists JOIN space_search AS e ON e.part_set = lists.part_set AND e.list_id = lists.list_id, q
        WHERE lists.nearness <= lists.nprobe AND e.source_id <> qid
    ),
    bound AS (SELECT CASE WHEN count(*) >= k THEN list_max(min(distance, k)) END AS d_k FROM first),
    kept AS (
        SELECT lists.part_set, lists.list_id FROM lists, bound
        WHERE bound.d_k IS NULL OR lists.to_centroid - lists.radius <= bound.d_k * (1 + 1e-5) + 1e-6
    )
    SELECT e.source_id, array_distance(e.v, q.v) AS distance, q.parts AS parts
    FROM space_search AS e JOIN kept ON e.part_set = kept.part_set AND e.list_id = kept.list_id, q
    WHERE e.source_id <> qid
    ORDER BY distance, e.source_id
    LIMIT k;

-- similar_to for many sources at once: the k nearest of each source_id in the list qids, as
-- (query_id, rank, source_id, distance, parts) rows, each query on the parts it has, among the
-- sources that have them too (as similar_to); ids not in the catalogue give no rows. A table of
-- ids goes in as a list, and the result joins like any table:
--
--   SELECT n.query_id, n.rank, n.source_id, n.distance, s.phot_g_mean_mag
--   FROM similar_to_many((SELECT list(source_id) FROM labels WHERE best_class_name = 'RR'), 5) AS n
--   JOIN sources AS s USING (source_id)
--   ORDER BY n.query_id, n.rank;
--
-- (`FROM ids, LATERAL similar_to(ids.source_id, k)` gives the same rows, but DuckDB plans the
-- correlated macro as a join per pair of sources.) Exact, in two passes over space_search: the
-- sources of each query's nearest lists (its part set's stored nprobe) give an upper bound on
-- its k-th distance, d_k; then only the lists that can hold a source that near are compared
-- (a list whose centroid is farther than d_k + its radius holds none: triangle inequality).
-- min_by and min keep the k + 5 nearest ids and distances per query without sorting every pair,
-- and those are ranked by (distance, source_id) as similar_to ranks them, which gives its answer
-- unless more than five sources tie exactly at the k-th distance.
CREATE OR REPLACE MACRO similar_to_many(qids, k) AS TABLE
    WITH q AS (
        SELECT source_id AS query_id, part_set, v, parts
        FROM space_query
        WHERE source_id IN (SELECT unnest(qids)) AND part_set > 0
    ),
    lists AS (
        SELECT q.query_id, l.part_set, l.list_id, l.radius, l.nprobe,
               array_distance(l.centroid, q.v) AS to_centroid,
               row_number() OVER (PARTITION BY q.query_id ORDER BY array_distance(l.centroid, q.v), l.list_id) AS nearness
        FROM space_lists AS l JOIN q ON l.part_set = q.part_set
    ),
    first AS (
        SELECT q.query_id, array_distance(e.v, q.v) AS distance
        FROM lists
        JOIN space_search AS e ON e.part_set = lists.part_set AND e.list_id = lists.list_id
        JOIN q ON q.query_id = lists.query_id
        WHERE lists.nearness <= lists.nprobe AND e.source_id <> q.query_id
    ),
    bound AS (  -- the k-th distance of the first pass; NULL (no bound) with fewer than k found
        SELECT query_id, CASE WHEN count(*) >= k THEN list_max(min(distance, k)) END AS d_k
        FROM first GROUP BY query_id
    ),
    pairs AS (
        SELECT q.query_id, e.source_id, array_distance(e.v, q.v) AS distance
        FROM lists
        LEFT JOIN bound ON bound.query_id = lists.query_id
        JOIN space_search AS e ON e.part_set = lists.part_set AND e.list_id = lists.list_id
        JOIN q ON q.query_id = lists.query_id
        WHERE e.source_id <> q.query_id
          AND (bound.d_k IS NULL OR lists.to_centroid - lists.radius <= bound.d_k * (1 + 1e-5) + 1e-6)
    ),
    top AS (
        SELECT query_id, min_by(source_id, distance, k + 5) AS ids, min(distance, k + 5) AS distances
        FROM pairs GROUP BY query_id
    ),
    nearest AS (SELECT query_id, unnest(ids) AS source_id, unnest(distances) AS distance FROM top)
    SELECT n.query_id, row_number() OVER (PARTITION BY n.query_id ORDER BY n.distance, n.source_id) AS rank,
           n.source_id, n.distance, q.parts
    FROM nearest AS n JOIN q USING (query_id)
    QUALIFY rank <= k;

-- similar_to_approx for many sources at once (rows as similar_to_many): each query compared
-- with the sources of its nprobe nearest lists (NULL: its part set's stored nprobe).
CREATE OR REPLACE MACRO similar_to_many_approx(qids, k, nprobe) AS TABLE
    WITH q AS (
        SELECT source_id AS query_id, part_set, v, parts
        FROM space_query
        WHERE source_id IN (SELECT unnest(qids)) AND part_set > 0
    ),
    probe AS (
        SELECT q.query_id, l.part_set, l.list_id
        FROM space_lists AS l JOIN q ON l.part_set = q.part_set
        QUALIFY row_number() OVER (PARTITION BY q.query_id ORDER BY array_distance(l.centroid, q.v), l.list_id)
                <= coalesce(nprobe, l.nprobe)
    ),
    pairs AS (
        SELECT q.query_id, e.source_id, array_distance(e.v, q.v) AS distance
        FROM probe
        JOIN space_search AS e ON e.part_set = probe.part_set AND e.list_id = probe.list_id
        JOIN q ON q.query_id = probe.query_id
        WHERE e.source_id <> q.query_id
    ),
    top AS (
        SELECT query_id, min_by(source_id, distance, k + 5) AS ids, min(distance, k + 5) AS distances
        FROM pairs GROUP BY query_id
    ),
    nearest AS (SELECT query_id, unnest(ids) AS source_id, unnest(distances) AS distance FROM top)
    SELECT n.query_id, row_number() OVER (PARTITION BY n.query_id ORDER BY n.distance, n.source_id) AS rank,
           n.source_id, n.distance, q.parts
    FROM nearest AS n JOIN q USING (query_id)
    QUALIFY rank <= k;

-- similar_to through the IVF lists of space_lists: only the sources of the query's nprobe
-- nearest lists are compared (NULL: the part set's stored nprobe, which finds >= 95 % of the
-- exact ten nearest, build_info.sql_lists): DuckDB reads only the row groups of space_search
-- that hold those lists. The answer may miss a true neighbour, as the Python API's IVF indexes
-- may; similar_to never does. similar_to_many_approx for one source.
CREATE OR REPLACE MACRO similar_to_approx(qid, k, nprobe) AS TABLE
    SELECT source_id, distance, parts FROM similar_to_many_approx([qid], k, nprobe) ORDER BY rank;

-- Nearest sources on the joint 15-D latent code (XP, dm-dt and fold blocks). Returns nothing
-- for a query source that lacks a block: use similar_to_available for those.
CREATE OR REPLACE MACRO similar_to_latents(qid, k) AS TABLE
    SELECT e.source_id, array_distance(e.z, q.z) AS distance
    FROM embeddings AS e, (SELECT z FROM embeddings WHERE source_id = qid) AS q
    WHERE e.source_id <> qid AND e.z IS NOT NULL AND q.z IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;

-- Nearest sources on one block (block: 'xp', 'dmdt' or 'fold'): the XP spectrum, the dm-dt
-- map or the folded light curve; similar_to_xp, similar_to_dmdt and similar_to_fold name it.
CREATE OR REPLACE MACRO similar_to_block(qid, k, block) AS TABLE
    WITH e AS (SELECT source_id, CASE block WHEN 'xp' THEN z_xp WHEN 'dmdt' THEN z_dmdt WHEN 'fold' THEN z_fold
                                 END AS z
               FROM embeddings)
    SELECT e.source_id, array_distance(e.z, q.z) AS distance
    FROM e, (SELECT z FROM e WHERE source_id = qid) AS q
    WHERE e.source_id <> qid AND e.z IS NOT NULL AND q.z IS NOT NULL
    ORDER BY distance, e.source_id
    LIMIT k;

CREATE OR REPLACE MACRO similar_to_xp(qid, k) AS TABLE SELECT * FROM similar_to_block(qid, k, 'xp');
CREATE OR REPLACE MACRO similar_to_dmdt(qid, k) AS TABLE SELECT * FROM similar_to_block(qid, k, 'dmdt');
CREATE OR REPLACE MACRO similar_to_fold(qid, k) AS TABLE SELECT * FROM similar_to_block(qid, k, 'fold');

-- Nearest sources on the blocks the query source has. A source without XP is compared on
-- dm-dt + fold, and so on: the distance sums the squared distances of the blocks the query has
-- (one array_distance per block), only sources that have all of those blocks are candidates,
-- and a missing block is never filled in. The blocks column says which blocks were compared.
CREATE OR REPLACE MACRO similar_to_available(qid, k) AS TABLE
    WITH q AS (SELECT z_xp, z_dmdt, z_fold FROM embeddings WHERE source_id = qid)
    SELECT e.source_id,
           sqrt(coalesce(pow(array_distance(e.z_xp, q.z_xp), 2), 0)
                + coalesce(pow(array_distance(e.z_dmdt, q.z_dmdt), 2), 0)
                + coalesce(pow(array_distance(e.z_fold, q.z_fold), 2), 0))::FLOAT AS distance,
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
