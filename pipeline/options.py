"""Typed sweep options: a PipelineOptions subclass, so every Beam and Dataflow flag passes through."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(REPO_ROOT, "model", "shipped", "cva-s2")


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
        "--statistics", default="archive", choices=("archive", "model"),
        help="normalise with per-band statistics computed over this archive (default) or with "
             "the statistics the model was trained with")
    parser.add_argument("--chip_overlap", type=int, default=16,
                        help="pixels shared by neighbouring chips (default 16)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="largest inference batch, in chips (default 8)")
    parser.add_argument("--model_copies", type=int, default=None,
                        help="model copies per worker (1 per GPU on GPU workers)")
    parser.add_argument("--num_shards", type=int, default=1,
                        help="shards per output table; 0 lets the runner choose (default 1)")
    parser.add_argument("--max_regions", type=int, default=20,
                        help="change regions kept per pair, largest first (default 20)")
    parser.add_argument("--min_region_pixels", type=int, default=4,
                        help="smallest change region reported, in pixels (default 4)")
    parser.add_argument("--no_maps", action="store_true",
                        help="do not write per-pair change-map GeoTIFFs")
    parser.add_argument("--run_id", default=None,
                        help="id written into every row (default: sweep-<UTC time>)")
