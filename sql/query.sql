-- Statements the read-only Catalog (latentcat.query.catalog) runs. Each block starts with
-- "-- name: <key>"; values are bound as $parameters, except source_ids, which latentcat writes in
-- as integer literals where noted (DuckDB prunes row groups by zone maps only for constants).

-- name: codes_of
-- The source_id is an integer literal filled in by latentcat, not a $parameter: DuckDB skips
-- row groups by their source_id zone maps only for constants (2.5x faster at 4M sources).
SELECT z_xp, z_dmdt, z_fold FROM embeddings WHERE source_id = {source_id};

-- name: space_of
-- A source's search-space parts (latentcat/analysis/space.py); the source_id is a literal as in codes_of.
SELECT s_xp, s_dmdt, s_fold, s_colour FROM space WHERE source_id = {source_id};

-- name: source_meta_all
-- The source_meta view in source_id order, read once per Catalog: neighbour lists take their
-- metadata from it by row (a sorted source_id array and np.searchsorted), not by a query each.
SELECT * FROM source_meta ORDER BY source_id;

-- name: space_all
-- Every source's search-space parts in source_id order, read once per Catalog: the query
-- vectors of source_ids, and the vectors Catalog.like ranks.
SELECT source_id, s_xp, s_dmdt, s_fold, s_colour FROM space ORDER BY source_id;

-- name: codes_all
-- Every source's latent blocks in source_id order, read once per Catalog (modality "all" and
-- the single blocks).
SELECT source_id, z_xp, z_dmdt, z_fold FROM embeddings ORDER BY source_id;

-- name: outlier_scores_of
-- One outlier method's scores in source_id order (a discovery session's starting ranking).
SELECT source_id, score FROM outlier_scores WHERE method = $method ORDER BY source_id;

-- name: build_info
SELECT key, value::VARCHAR AS value FROM build_info ORDER BY key;

-- name: table_counts
SELECT
    (SELECT count(*) FROM sources) AS sources,
    (SELECT count(*) FROM labels) AS labels,
    (SELECT count(*) FROM features) AS features,
    (SELECT count(*) FROM embeddings) AS embeddings,
    (SELECT count(*) FROM embeddings WHERE z IS NOT NULL) AS embeddings_all_blocks,
    (SELECT count(*) FROM embeddings WHERE has_xp) AS embeddings_with_xp,
    (SELECT count(*) FROM embeddings WHERE has_dmdt) AS embeddings_with_dmdt,
    (SELECT count(*) FROM embeddings WHERE has_fold) AS embeddings_with_fold,
    (SELECT count(*) FROM predictions) AS predictions,
    (SELECT count(*) FROM outlier_scores) AS outlier_scores,
    (SELECT count(*) FROM map) AS map;

-- name: analysis_codes
-- The latent blocks and reconstruction losses of every source, in source_id order, for the
-- classifiers, the outlier scores and the map.
SELECT source_id, z_xp, z_dmdt, z_fold, recon_loss_xp, recon_loss_dmdt, recon_loss_fold
FROM embeddings
ORDER BY source_id;

-- name: analysis_space
-- The search-space parts and reconstruction losses of every source, in source_id order, for
-- the default classifier, outlier ranking and map.
SELECT s.source_id, s.s_xp, s.s_dmdt, s.s_fold, s.s_colour,
       e.recon_loss_xp, e.recon_loss_dmdt, e.recon_loss_fold
FROM space AS s JOIN embeddings AS e USING (source_id)
ORDER BY s.source_id;

-- name: classic_numbers
-- The classic light-curve numbers (latentcat.analysis.classify.CLASSIC) of every embedded source,
-- in source_id order, NULL without light-curve features: what a classifier is compared with.
SELECT e.source_id, f.g_std, f.g_amplitude, f.g_skew, f.period,
       CASE WHEN f.period > 0 THEN log10(f.period) END AS log10_period,
       f.period_power, f.g_mean, f.n_obs
FROM embeddings AS e LEFT JOIN features AS f USING (source_id)
ORDER BY e.source_id;

-- name: space_rule
SELECT part, dim, center, scale, weight FROM space_rule ORDER BY part, dim;

-- name: table_columns
-- The catalogue's tables and views and their columns: a labels argument 'table.column'
-- must name one of these.
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = 'main' AND table_catalog = current_database();

-- name: labels_of
-- The class of every embedded source (NULL where it has none) from a user-chosen column.
-- {table} and {column} are identifiers the caller has checked against table_columns and
-- quoted; nothing else is pasted in.
SELECT e.source_id, CAST(t.{column} AS VARCHAR) AS label
FROM embeddings AS e
LEFT JOIN {table} AS t USING (source_id)
ORDER BY e.source_id;

-- name: map
SELECT source_id, x, y, blocks FROM map ORDER BY source_id;

-- name: map_with_meta
SELECT m.source_id, m.x, m.y, s.* EXCLUDE (source_id)
FROM map AS m
LEFT JOIN source_meta AS s USING (source_id)
ORDER BY m.source_id;
