-- Statements latentcat.catalog.add runs while it assembles the grown catalogue. Each block
-- starts with "-- name: <key>"; parameters are bound, never pasted in. New rows arrive as a
-- registered Arrow table _new_rows, ids to remove as _gone.

-- name: derived_keys
-- The models and methods whose rows the derived tables hold, with their row counts
-- (the map is one table: its key is '').
SELECT 'predictions' AS table_name, model_id AS key, count(*) AS n FROM predictions GROUP BY model_id
UNION ALL
SELECT 'outlier_scores', method, count(*) FROM outlier_scores GROUP BY method
UNION ALL
SELECT 'map', '', count(*) FROM map HAVING count(*) > 0
ORDER BY table_name, key;

-- name: delete_rows
-- Remove the rows of replaced sources. {table} is one of the catalogue's fixed table names
-- (latentcat.catalog.add._SOURCE_TABLES), never user input.
DELETE FROM {table} WHERE source_id IN (SELECT source_id FROM _gone);

-- name: count_with_blocks
-- Sources that have every block of a block set ($xp, $dmdt, $fold: whether it includes it).
SELECT count(*) FROM embeddings
WHERE (NOT $xp OR has_xp) AND (NOT $dmdt OR has_dmdt) AND (NOT $fold OR has_fold);

-- name: count_with_parts
-- Sources that have every part of a search-space part set ($xp, $dmdt, $fold, $colour).
SELECT count(*) FROM space
WHERE (NOT $xp OR s_xp IS NOT NULL) AND (NOT $dmdt OR s_dmdt IS NOT NULL)
  AND (NOT $fold OR s_fold IS NOT NULL) AND (NOT $colour OR s_colour IS NOT NULL);

-- name: prediction_sample
-- A few stored predictions of a model with the codes (latent and search-space) they were
-- made from: a stored classifier must reproduce them before it predicts the added sources.
SELECT p.source_id, p.class, p.probability, e.z_xp, e.z_dmdt, e.z_fold,
       s.s_xp, s.s_dmdt, s.s_fold, s.s_colour
FROM predictions AS p JOIN embeddings AS e USING (source_id) JOIN space AS s USING (source_id)
WHERE p.model_id = $key
ORDER BY p.source_id
LIMIT $n;

-- name: outlier_sample
SELECT o.source_id, o.score, e.z_xp, e.z_dmdt, e.z_fold, s.s_xp, s.s_dmdt, s.s_fold, s.s_colour,
       e.recon_loss_xp, e.recon_loss_dmdt, e.recon_loss_fold
FROM outlier_scores AS o JOIN embeddings AS e USING (source_id) JOIN space AS s USING (source_id)
WHERE o.method = $key
ORDER BY o.source_id
LIMIT $n;

-- name: map_sample
SELECT m.source_id, m.x, m.y, m.blocks, e.z_xp, e.z_dmdt, e.z_fold, s.s_xp, s.s_dmdt, s.s_fold, s.s_colour
FROM map AS m JOIN embeddings AS e USING (source_id) JOIN space AS s USING (source_id)
ORDER BY m.source_id
LIMIT $n;

-- name: colour_of
-- The BP - RP colour of the sources in _new_rows (NULL where gaia_source gives none), in their order.
SELECT n.source_id, s.bp_rp FROM _new_rows AS n LEFT JOIN sources AS s USING (source_id)
ORDER BY n.source_id;
