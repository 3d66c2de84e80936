"""Typed sweep options: a PipelineOptions subclass, so every Beam and Dataflow flag passes through."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO_ROOT, "model", "shipped")
# Without --model, each pair gets the first of DEFAULT_FIXED_MODELS that reads every band both
# captures have (3-band red/green/blue: the RGB model scores them better, see README "Models"),
# then, where both captures have at least MULTISPECTRAL_MIN_OPTICAL_BANDS identified optical
# bands, DEFAULT_MULTISPECTRAL_MODEL, else DEFAULT_MODEL (indices, SAR, unnamed single bands,
# small optical sets). On the train cities' validation split the ensemble of v2 and the
# fixed-band Sentinel-2 specialist (`model/ensemble.py`) scores 4 and 13 Sentinel-2 bands best
# (0.519 / 0.519 F1; v2 alone 0.487 / 0.488, v3 0.465 / 0.461), and v3 an unnamed NDVI band
# (0.236 against v2's 0.126): model/README.md. Captures without the specialist's B02, B03,
# B04 and B08 get v2 alone inside the ensemble.
DEFAULT_MODEL = os.path.join(SHIPPED, "changesweep-anyband-s2-v3")
DEFAULT_FIXED_MODELS = (os.path.join(SHIPPED, "changesweep-siamdiff-oscd-rgb-v1"),)
DEFAULT_MULTISPECTRAL_MODEL = os.path.join(SHIPPED, "changesweep-ensemble-s2-v1")
MULTISPECTRAL_MIN_OPTICAL_BANDS = 4


def _flag(text) -> bool:
  """A boolean flag that also takes a value (Flex Template parameters pass `--force=true`)."""
  if isinstance(text, bool):
    return text
  if str(text).lower() in ("1", "true", "yes", "y", "on"):
    return True
  if str(text).lower() in ("0", "false", "no", "n", "off", ""):
    return False
  raise ValueError(f"not a boolean: {text!r}")


class SweepOptions(PipelineOptions):
  """Options of `changesweep sweep`."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        "--input", default=None,
        help="archive root, local folder or gs://bucket/prefix (e.g. data/sample_archive)")
    parser.add_argument(
        "--manifest", default=None,
        help="instead of --input + --layout: CSV/JSONL with columns location,captured_at,uri[,band]"
             " (relative uris are relative to the manifest)")
    parser.add_argument(
        "--layout", default="{location}/{date}.tif",
        help="path template under --input; fields {location}, {date} or {date:%%Y%%m%%d}, "
             "optional {band} for one file per band (e.g. '{location}/{date:%%Y%%m%%d}_{band}.tif')")
    parser.add_argument("--output", default=None,
                        help="output folder, local or gs:// (rows, maps, schemas, dead letters)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="model directory (metadata.json, transform_fn/, saved_model/)")
    parser.add_argument(
        "--bands", default=None,
        help="comma-separated bands to feed the model instead of the model's own list: names "
             "(band descriptions, aliases like red/nir) or 1-based indexes, e.g. B04,B03,B02")
    parser.add_argument(
        "--statistics", default="archive", choices=("archive", "model", "capture"),
        help="normalise with per-band statistics of this archive (default; for an any-band "
             "model pooled from the usability pass, so chips are read once), with the "
             "statistics the model was trained with, or (any-band models) each capture's own")
    parser.add_argument(
        "--statistics_chips", type=int, default=4,
        help="fixed-band models with archive statistics: chips per pair, evenly spread, that "
             "tf.Transform computes them from (default 4; 0 reads every chip a second time)")
    parser.add_argument(
        "--check_types", action="store_true",
        help="check Beam's type hints while the graph is built (off by default: the graph "
             "is fixed and the tests check it, and the check costs about a second a run)")
    parser.add_argument("--chip_overlap", type=int, default=16,
                        help="pixels shared by neighbouring chips (default 16)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="largest inference batch, in chips (default 8)")
    parser.add_argument("--model_copies", type=int, default=None,
                        help="model copies per worker (1 per GPU on GPU workers)")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="shards per output table; 0 lets the runner choose (default: 1 "
                             "locally, 0 on Dataflow)")
    parser.add_argument("--max_regions", type=int, default=20,
                        help="change regions kept per pair, largest first (default 20)")
    parser.add_argument("--grid", default="earlier",
                        help="grid of a pair whose captures sit on different grids: earlier "
                             "(default), later, or a fixed CRS and resolution for every night, "
                             "e.g. EPSG:32633,10")
    parser.add_argument("--min_overlap", type=float, default=0.2,
                        help="least share of the pair's grid both captures must cover (0.2)")
    parser.add_argument("--resampling", default="bilinear",
                        help="resampling of a capture warped onto the pair's grid (bilinear; "
                             "masks are always nearest)")
    parser.add_argument(
        "--coregister", nargs="?", const=True, default=False, type=_flag,
        help="correct each pair's measured misregistration of 1.5 to 8 pixels (the later "
             "capture is read shifted back) before scoring; past 8 px the pair is flagged, not "
             "corrected. The shift is measured and reported (shift_px) either way")
    parser.add_argument("--max_polygons", type=int, default=1000,
                        help="change polygons (regions table) kept per pair, largest first "
                             "(default 1000)")
    parser.add_argument("--min_region_pixels", type=int, default=4,
                        help="smallest change region reported, in pixels (default 4)")
    parser.add_argument("--no_maps", action="store_true",
                        help="do not write per-pair change-map GeoTIFFs")
    parser.add_argument("--no_report", action="store_true",
                        help="do not write the HTML report (OUT/report/index.html) at the end; "
                             "write it later with: changesweep report OUT")
    # Long series: masks, usability and each location's history (README: "Time series").
    parser.add_argument(
        "--mask_layout", default=None,
        help="path template of sidecar mask files under --input, filled with each capture's "
             "own fields, e.g. 'qa/{location}/{date}.tif'; flagged pixels never count as change")
    parser.add_argument("--mask_band", default=None,
                        help="a band of each capture that flags bad pixels (cloud/QA band), "
                             "by name or 1-based index, e.g. QA")
    parser.add_argument(
        "--mask_values", default="",
        help="comma-separated values of the mask band/file that mean 'bad' (e.g. 3,8,9,10 for "
             "Sentinel-2 SCL clouds and shadows); default: any non-zero value")
    parser.add_argument(
        "--min_usable_fraction", type=float, default=0.1,
        help="a capture with a smaller share of valid pixels is reported unusable and skipped "
             "for pairing (default 0.1)")
    parser.add_argument(
        "--history", default=None,
        help="a previous sweep's output folder (or history-*.jsonl files): each location's "
             "history to score tonight's pairs against; tonight's history is written to "
             "OUT/history/")
    parser.add_argument("--run_id", default=None,
                        help="id written into every row (default: sweep-<UTC time>)")
    # Scale-out: BigQuery, incremental nightly sweeps, GPU workers (deploy/README.md).
    parser.add_argument(
        "--bigquery_table", default=None,
        help="also load pair rows into BigQuery PROJECT:DATASET.TABLE (file loads, partitioned "
             "by capture_date, clustered by location; read it through the TABLE_latest view)")
    parser.add_argument(
        "--state", default=None,
        help="incremental sweep: JSONL file (local or gs://) of the last scored capture per "
             "location; only pairs with a newer later capture are scored, then it is updated")
    parser.add_argument("--since", default=None,
                        help="score only pairs whose later capture is on or after this date "
                             "(YYYY-MM-DD)")
    parser.add_argument("--force", nargs="?", const=True, default=False, type=_flag,
                        help="re-score pairs the --state says are done (still updates it)")
    parser.add_argument("--max_batch_bytes", type=int, default=None,
                        help="cap inference batches by chip bytes too (e.g. 268435456)")
    parser.add_argument(
        "--gpu_type", default=None,
        help="run inference on GPU workers of this Dataflow type (nvidia-tesla-t4, nvidia-l4)")
    parser.add_argument("--gpu_count", type=int, default=1, help="GPUs per GPU worker")
    parser.add_argument("--gpu_machine_type", default=None,
                        help="machine type of the GPU pool with --gpu_mode hints (e.g. "
                             "g2-standard-8 for nvidia-l4)")
    parser.add_argument(
        "--gpu_mode", default="hints", choices=("hints", "job"),
        help="hints: only the inference step gets the GPU (right fitting, default); job: every "
             "worker gets it (worker_accelerator service option)")
