-- latentcat catalogue: the tables of catalog.duckdb.
--
-- One row per Gaia DR3 source_id in every table except predictions and outlier_scores
-- (one row per source and model / method). Loaded by latentcat.catalog.store before the
-- staging, feature and embedding shards are inserted; docs/schemas.md describes the inputs.

-- Gaia DR3 gaia_source metadata. The columns below are the usual ones, with the archive's
-- names and types; any other gaia_source column present in the staging table is added by
-- the loader with its Parquet type. Columns the inputs lack stay NULL.
CREATE TABLE sources (
    source_id         BIGINT PRIMARY KEY,
    ra                DOUBLE,
    dec               DOUBLE,
    l                 DOUBLE,
    b                 DOUBLE,
    parallax          DOUBLE,
    parallax_error    FLOAT,
    pmra              DOUBLE,
    pmdec             DOUBLE,
    ruwe              FLOAT,
    phot_g_mean_mag   FLOAT,
    phot_bp_mean_mag  FLOAT,
    phot_rp_mean_mag  FLOAT,
    bp_rp             FLOAT
);

-- DR3 vari_classifier_result (or a user's class table).
CREATE TABLE labels (
    source_id         BIGINT PRIMARY KEY,
    best_class_name   VARCHAR NOT NULL,
    best_class_score  FLOAT
);

-- Per-source summary of the feature shards: the scalar columns only (the dm-dt maps,
-- folded curves and sampled spectra stay in the shards).
CREATE TABLE features (
    source_id     BIGINT PRIMARY KEY,
    n_obs         INTEGER,
    n_clipped     INTEGER,
    g_mean        FLOAT,
    g_median      FLOAT,
    g_std         FLOAT,
    g_amplitude   FLOAT,   -- 95th - 5th percentile of cleaned G (mag)
    g_skew        FLOAT,
    time_span     FLOAT,   -- d
    period        DOUBLE,  -- d, best period of the search (not doubled)
    period_fap    DOUBLE,
    period_power  FLOAT,
    period_coherence FLOAT,  -- how well the period holds across the curve (features/period.py)
    period_reliable BOOLEAN, -- the period passes its tests (docs/schemas.md): the fold is at 2 x period, else in time order
    colour_slope  FLOAT,   -- d(BP - RP)/dG over the transits with G, BP and RP (features/colour.py)
    colour_slope_err FLOAT,
    xp_scale      FLOAT,   -- 99.5th percentile of BP+RP flux (e-/s)
    lc_reason     VARCHAR, -- NULL when the light-curve features exist, else why not
    xp_reason     VARCHAR  -- NULL when the XP features exist, else why not
);

-- The VAE codes. z is the joint 15-D code z_xp || z_dmdt || z_fold and is NULL when any
-- block is missing; a missing block is NULL, never zero-filled.
CREATE TABLE embeddings (
    source_id        BIGINT PRIMARY KEY,
    z                FLOAT[15],
    z_xp             FLOAT[5],
    z_dmdt           FLOAT[5],
    z_fold           FLOAT[5],
    z_logvar_xp      FLOAT[5],
    z_logvar_dmdt    FLOAT[5],
    z_logvar_fold    FLOAT[5],
    has_xp           BOOLEAN NOT NULL,
    has_dmdt         BOOLEAN NOT NULL,
    has_fold         BOOLEAN NOT NULL,
    recon_loss_xp    FLOAT,
    recon_loss_dmdt  FLOAT,
    recon_loss_fold  FLOAT,
    CHECK (has_xp = (z_xp IS NOT NULL)),
    CHECK (has_dmdt = (z_dmdt IS NOT NULL)),
    CHECK (has_fold = (z_fold IS NOT NULL)),
    CHECK ((z IS NOT NULL) = (has_xp AND has_dmdt AND has_fold))
);

-- The search space (latentcat/analysis/space.py): per source, the standardised and weighted
-- parts it has (NULL where it lacks one), and the rule that made them. FAISS, the similar_to
-- macro, `latentcat add` and the default classifier, outlier ranking and map all use these.
CREATE TABLE space (
    source_id  BIGINT PRIMARY KEY,
    s_xp       FLOAT[5],
    s_dmdt     FLOAT[5],
    s_fold     FLOAT[5],
    s_colour   FLOAT[1],
    parts      VARCHAR NOT NULL  -- the parts present, e.g. 'dmdt+fold+colour'
);

-- s = weight * (value - center) / scale, per part and value (dim): z_xp, z_dmdt, z_fold, bp_rp.
CREATE TABLE space_rule (
    part    VARCHAR NOT NULL,
    dim     INTEGER NOT NULL,
    center  DOUBLE NOT NULL,
    scale   DOUBLE NOT NULL,
    weight  DOUBLE NOT NULL,
    PRIMARY KEY (part, dim)
);

-- Classifier output: the predicted class and its probability, per model.
CREATE TABLE predictions (
    source_id    BIGINT NOT NULL,
    class        VARCHAR NOT NULL,
    probability  FLOAT,
    model_id     VARCHAR NOT NULL,
    PRIMARY KEY (source_id, model_id)
);

-- Outlier scores (higher = more unusual) and their rank (1 = most unusual), per method.
CREATE TABLE outlier_scores (
    source_id  BIGINT NOT NULL,
    score      FLOAT NOT NULL,
    rank       BIGINT NOT NULL,
    method     VARCHAR NOT NULL,
    PRIMARY KEY (source_id, method)
);

-- The 2-D map of the catalogue. blocks: the parts that placed the source, by the map network
-- (all its parts) or, for a source lacking some (no XP), among its nearest mapped neighbours.
CREATE TABLE map (
    source_id  BIGINT PRIMARY KEY,
    x          FLOAT NOT NULL,
    y          FLOAT NOT NULL,
    blocks     VARCHAR
);

-- How the catalogue was made: versions, config, seeds, input checksums, row counts,
-- index types and their measured recall. One JSON value per key.
CREATE TABLE build_info (
    key    VARCHAR PRIMARY KEY,
    value  JSON
);
