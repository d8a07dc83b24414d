-- Statements that add results to an existing catalogue (latentcat.catalog.store writers).
-- The new rows arrive as a registered Arrow table _new_rows; parameters are bound.

-- name: delete_predictions
DELETE FROM predictions WHERE model_id = $key;

-- name: insert_predictions
INSERT INTO predictions
SELECT source_id, class, probability, $key FROM _new_rows;

-- name: delete_outlier_scores
DELETE FROM outlier_scores WHERE method = $key;

-- name: insert_outlier_scores
-- rank 1 is the most unusual source (highest score); ties share the order of source_id.
INSERT INTO outlier_scores
SELECT source_id, score, row_number() OVER (ORDER BY score DESC, source_id), $key
FROM _new_rows;

-- name: delete_map
-- The map is one table for the whole catalogue: a new map replaces it.
DELETE FROM map;

-- name: insert_map
INSERT INTO map SELECT source_id, x, y, blocks FROM _new_rows;
