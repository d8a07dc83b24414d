-- Tables of latentcat/catalog/space_search.py, (re)created empty before write_space_search
-- fills them from the space table (also in a catalogue written before they existed, when
-- sources are added to it).

-- The search space laid out for SQL scans (latentcat/catalog/space_search.py): one row per
-- source and part set it can be searched on, the set's parts packed into one array (zeros
-- after them), ordered by part set and IVF list so that a search reads only its own rows.
CREATE OR REPLACE TABLE space_search (
    part_set   UTINYINT NOT NULL,   -- the parts compared, a bit each: xp 1, dmdt 2, fold 4, colour 8
    list_id    INTEGER NOT NULL,    -- the source's IVF list within the part set (space_lists)
    source_id  BIGINT NOT NULL,
    v          FLOAT[16] NOT NULL   -- the set's parts in order, then zeros
);

-- The IVF lists of each part set: centroids of a k-means on its packed vectors, each list's
-- radius (similar_to_many skips the lists that cannot hold a neighbour), and the number of lists
-- to probe for recall@10 >= 0.95 against the exact search (similar_to_approx).
CREATE OR REPLACE TABLE space_lists (
    part_set   UTINYINT NOT NULL,
    list_id    INTEGER NOT NULL,
    centroid   FLOAT[16] NOT NULL,
    radius     FLOAT NOT NULL,      -- the largest distance from the centroid to one of the list's sources
    nprobe     INTEGER NOT NULL,
    PRIMARY KEY (part_set, list_id)
);
