-- GENERATED from pipeline/schemas.py PAIRS by `python -m changesweep.pipeline.bigquery deploy/bigquery`.
-- deploy/launch.sh --setup replaces PROJECT_ID.DATASET.TABLE and runs it with `bq query`.
-- Append-only: every run adds its rows; read the table through the _latest view.
CREATE TABLE IF NOT EXISTS `PROJECT_ID.DATASET.TABLE` (
  pair_id STRING NOT NULL OPTIONS(description="deterministic id of the two captures"),
  location STRING NOT NULL OPTIONS(description="location id"),
  capture_date DATE NOT NULL OPTIONS(description="date of the later capture (partition column)"),
  before_captured_at TIMESTAMP NOT NULL OPTIONS(description="time of the earlier capture (UTC)"),
  after_captured_at TIMESTAMP NOT NULL OPTIONS(description="time of the later capture (UTC)"),
  before_uri STRING NOT NULL OPTIONS(description="earlier capture's file(s), ';'-joined"),
  after_uri STRING NOT NULL OPTIONS(description="later capture's file(s), ';'-joined"),
  height INT64 NOT NULL OPTIONS(description="scene rows"),
  width INT64 NOT NULL OPTIONS(description="scene columns"),
  crs STRING OPTIONS(description="CRS of the captures (EPSG code or WKT), null if none"),
  valid_fraction FLOAT64 NOT NULL OPTIONS(description="fraction of pixels usable in both captures"),
  changed_fraction FLOAT64 OPTIONS(description="changed pixels / usable pixels"),
  changed_pixels INT64 NOT NULL OPTIONS(description="pixels at or above the model threshold"),
  mean_change_prob FLOAT64 OPTIONS(description="mean change probability over usable pixels"),
  max_change_prob FLOAT64 OPTIONS(description="highest change probability"),
  change_score FLOAT64 OPTIONS(description="scene-level change score: mean probability of the 1% most changed usable pixels"),
  threshold FLOAT64 NOT NULL OPTIONS(description="probability threshold of the model"),
  num_chips INT64 NOT NULL OPTIONS(description="chips scored"),
  regions ARRAY<STRUCT<
    row0 INT64,
    col0 INT64,
    row1 INT64,
    col1 INT64,
    area_pixels INT64,
    max_change_prob FLOAT64,
    min_x FLOAT64,
    min_y FLOAT64,
    max_x FLOAT64,
    max_y FLOAT64
  >> OPTIONS(description="largest changed regions, largest first"),
  geometry GEOGRAPHY OPTIONS(description="union of the pair's change regions, WGS84 WKT (null: no region or no CRS)"),
  change_map_uri STRING OPTIONS(description="GeoTIFF of the change probability"),
  overlap_fraction FLOAT64 NOT NULL OPTIONS(description="share of the scored grid both captures cover (1: one grid)"),
  resampling STRING NOT NULL OPTIONS(description="resampling of the warped capture onto the pair's grid ('none': one grid, no warp)"),
  grid_crs STRING OPTIONS(description="CRS (WKT) of the grid the pair was scored on"),
  shift_px STRUCT<
    dx FLOAT64,
    dy FLOAT64
  > OPTIONS(description="measured misregistration of the later capture against the earlier one, pixels of the scored grid, before any correction (null: not measured)"),
  coregistered BOOL NOT NULL OPTIONS(description="the later capture was read shifted back by shift_px before scoring (--coregister)"),
  shift_flagged BOOL NOT NULL OPTIONS(description="|shift_px| is past the 8 px bound: not corrected, the score is not to be trusted"),
  anomaly_score FLOAT64 OPTIONS(description="how unusual this change is for the location at this time of year (null: short history)"),
  anomaly_method STRING NOT NULL OPTIONS(description="seasonal, robust or none (pipeline/history.py)"),
  history_length INT64 NOT NULL OPTIONS(description="usable captures of the location before this pair"),
  model_id STRING NOT NULL OPTIONS(description="model that scored the pair"),
  model_version STRING NOT NULL OPTIONS(description="its version"),
  run_id STRING NOT NULL OPTIONS(description="the sweep run")
)
PARTITION BY capture_date
CLUSTER BY location
OPTIONS(description="changesweep pair rows; append-only, read through TABLE_latest");
