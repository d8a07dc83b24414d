-- Statements that add results to an existing catalogue (latentcat.catalog.store writers and
-- latentcat add).
-- The new rows arrive as a registered Arrow table _new_rows; parameters are bound.

-- name: delete_predictions
DELETE FROM predictions WHERE model_id = $key;

-- name: insert_predictions
INSERT INTO predictions
SELECT source_id, class, probability, $key FROM _new_rows;

-- name: delete_outlier_scores
DELETE FROM outlier_scores WHERE method = $key;

-- name: insert_outlier_scores
-- The ranks are set by rank_outlier_scores once the rows are in.
INSERT INTO outlier_scores SELECT source_id, score, 0, $key FROM _new_rows;

-- name: rank_outlier_scores
-- Rank every row of one method: 1 is the most unusual source (highest score); ties in
-- source_id order. Run after every insert, so sources added later share the ranking.
UPDATE outlier_scores AS o SET rank = r.rank
FROM (
    SELECT source_id,
           row_number() OVER (ORDER BY score DESC, source_id) AS rank
    FROM outlier_scores WHERE method = $key
) AS r
WHERE o.method = $key AND o.source_id = r.source_id;

-- name: delete_map
-- The map is one table for the whole catalogue: a new map replaces it.
DELETE FROM map;

-- name: insert_map
INSERT INTO map SELECT source_id, x, y, blocks FROM _new_rows;
