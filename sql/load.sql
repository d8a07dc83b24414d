-- Statements latentcat.catalog.store runs to fill catalog.duckdb from the Parquet shards
-- of docs/schemas.md. Each block starts with "-- name: <key>"; parameters are bound
-- ($paths is a list of Parquet files), never pasted in.

-- name: columns_of
-- Column names and DuckDB types of a set of Parquet files.
SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet($paths));

-- name: first_bad_id
-- The first null or repeated source_id in a set of shards, as (file, row, source_id, problem).
WITH r AS (
    SELECT source_id, filename AS file, file_row_number AS row
    FROM read_parquet($paths, filename = true, file_row_number = true)
), repeated AS (
    SELECT source_id FROM r WHERE source_id IS NOT NULL
    GROUP BY source_id HAVING count(*) > 1
)
SELECT file, row, source_id, 'source_id is null' AS problem FROM r WHERE source_id IS NULL
UNION ALL
SELECT file, row, source_id, 'source_id appears more than once' AS problem
FROM r SEMI JOIN repeated USING (source_id)
ORDER BY file, row
LIMIT 1;

-- name: first_bad_label
SELECT filename AS file, file_row_number AS row, source_id, 'best_class_name is null' AS problem
FROM read_parquet($paths, filename = true, file_row_number = true)
WHERE best_class_name IS NULL
ORDER BY file, row
LIMIT 1;

-- name: first_bad_embedding
-- The first embedding row that breaks the contract: flags that disagree with the blocks,
-- or a block that is not 5 finite numbers.
SELECT file, row, source_id, problem FROM (
    SELECT filename AS file, file_row_number AS row, source_id,
        CASE
            WHEN has_xp IS NULL OR has_dmdt IS NULL OR has_fold IS NULL
                THEN 'has_xp/has_dmdt/has_fold is null'
            WHEN has_xp <> (z_xp IS NOT NULL) THEN 'has_xp disagrees with z_xp'
            WHEN has_dmdt <> (z_dmdt IS NOT NULL) THEN 'has_dmdt disagrees with z_dmdt'
            WHEN has_fold <> (z_fold IS NOT NULL) THEN 'has_fold disagrees with z_fold'
            WHEN (z_logvar_xp IS NULL) <> (z_xp IS NULL) THEN 'z_logvar_xp and z_xp differ in being null'
            WHEN (z_logvar_dmdt IS NULL) <> (z_dmdt IS NULL) THEN 'z_logvar_dmdt and z_dmdt differ in being null'
            WHEN (z_logvar_fold IS NULL) <> (z_fold IS NULL) THEN 'z_logvar_fold and z_fold differ in being null'
            WHEN len(z_xp) <> 5 OR list_count(z_xp) <> 5
                OR list_bool_or(list_transform(z_xp, lambda x: NOT isfinite(x)))
                THEN 'z_xp is not 5 finite numbers'
            WHEN len(z_dmdt) <> 5 OR list_count(z_dmdt) <> 5
                OR list_bool_or(list_transform(z_dmdt, lambda x: NOT isfinite(x)))
                THEN 'z_dmdt is not 5 finite numbers'
            WHEN len(z_fold) <> 5 OR list_count(z_fold) <> 5
                OR list_bool_or(list_transform(z_fold, lambda x: NOT isfinite(x)))
                THEN 'z_fold is not 5 finite numbers'
            WHEN len(z_logvar_xp) <> 5 THEN 'z_logvar_xp does not hold 5 numbers'
            WHEN len(z_logvar_dmdt) <> 5 THEN 'z_logvar_dmdt does not hold 5 numbers'
            WHEN len(z_logvar_fold) <> 5 THEN 'z_logvar_fold does not hold 5 numbers'
        END AS problem
    FROM read_parquet($paths, filename = true, file_row_number = true)
)
WHERE problem IS NOT NULL
ORDER BY file, row
LIMIT 1;

-- name: first_unknown_source
-- The first embedded source that has no row in the sources table.
SELECT source_id FROM embeddings ANTI JOIN sources USING (source_id)
ORDER BY source_id
LIMIT 1;

-- name: load_sources
-- Every table is stored in source_id order: its zone maps then let a lookup of a few
-- sources (the neighbours of a query) skip nearly all of the table.
INSERT INTO sources BY NAME SELECT * FROM read_parquet($paths) ORDER BY source_id;

-- name: load_labels
INSERT INTO labels BY NAME
SELECT source_id, best_class_name, best_class_score FROM read_parquet($paths)
ORDER BY source_id;

-- name: load_features
INSERT INTO features BY NAME
SELECT source_id, n_obs, n_clipped, g_mean, g_median, g_std, g_amplitude, g_skew,
       time_span, period, period_fap, period_power, period_coherence, period_reliable, colour_slope,
       colour_slope_err, xp_scale, lc_reason, xp_reason
FROM read_parquet($paths)
ORDER BY source_id;

-- name: load_embeddings
-- z is the joint code z_xp || z_dmdt || z_fold, NULL unless all three blocks are present.
INSERT INTO embeddings BY NAME
SELECT source_id,
       CASE WHEN z_xp IS NOT NULL AND z_dmdt IS NOT NULL AND z_fold IS NOT NULL
            THEN list_concat(z_xp, z_dmdt, z_fold)::FLOAT[15] END AS z,
       z_xp::FLOAT[5] AS z_xp, z_dmdt::FLOAT[5] AS z_dmdt, z_fold::FLOAT[5] AS z_fold,
       z_logvar_xp::FLOAT[5] AS z_logvar_xp, z_logvar_dmdt::FLOAT[5] AS z_logvar_dmdt,
       z_logvar_fold::FLOAT[5] AS z_logvar_fold,
       has_xp, has_dmdt, has_fold, recon_loss_xp, recon_loss_dmdt, recon_loss_fold
FROM read_parquet($paths)
ORDER BY source_id;

-- name: codes_for_index
-- The latent blocks of every source, in source_id order, for building the FAISS indexes.
SELECT source_id, z_xp, z_dmdt, z_fold FROM embeddings ORDER BY source_id;

-- name: colour_for_space
-- The BP - RP colour of every embedded source (NULL where gaia_source gives none), in the
-- source_id order of codes_for_index.
SELECT e.source_id, s.bp_rp FROM embeddings AS e LEFT JOIN sources AS s USING (source_id)
ORDER BY e.source_id;

-- name: load_space
-- _space_rows: source_id, s_xp, s_dmdt, s_fold, s_colour (lists, NULL where missing), parts.
INSERT INTO space BY NAME
SELECT source_id, s_xp::FLOAT[5] AS s_xp, s_dmdt::FLOAT[5] AS s_dmdt, s_fold::FLOAT[5] AS s_fold,
       s_colour::FLOAT[1] AS s_colour, parts
FROM _space_rows
ORDER BY source_id;

-- name: load_space_rule
INSERT INTO space_rule BY NAME SELECT part, dim, center, scale, weight FROM _space_rule;

-- name: put_build_info
INSERT OR REPLACE INTO build_info VALUES ($key, $value::JSON);
