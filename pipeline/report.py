"""`changesweep report OUT`: a static HTML page of a finished sweep, for people to look at change.

The page (`OUT/report/index.html`) needs no network: its PNGs sit beside it in `OUT/report/img/`
and its only script (table sorting) is inline. It holds the run summary, a sortable table of the
pairs by change score, before / after / change-overlay quicklooks and a map of the change
regions for the top pairs, a change-score time series per location, and the dead letters.
Every archive-provided string is HTML-escaped. All pairs, sorted, are also in
`OUT/report/pairs.csv`, which the page links when it shows only part of a large run.

This module writes the files; `report_data` reads the run, `report_figures` draws the PNGs and
`report_page` writes the HTML and the CSV.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import geoio, sinks, stac
from changesweep.pipeline.report_data import load_run
from changesweep.pipeline.report_figures import quicklook_figure, regions_figure, series_figure
from changesweep.pipeline.report_page import (DEFAULT_ATTRIBUTION, DEFAULT_MAX_ROWS, pairs_csv,
                                              render_html)

REPORT_DIR = "report"
IMG_DIR = "img"
UNREADABLE_NOTE = ("Some quicklooks could not be drawn (see each pair). Capture uris are read "
                   "as written in the rows: run the report from the folder the sweep ran in.")


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def _draw_pair(rank: int, r: dict, report: str, log: Callable[[str], None],
               shapes: list[dict] | None = None) -> dict:
  """Writes one top pair's quicklook and region map; returns their `src`s, or why not."""
  output = report.rsplit("/", 1)[0]
  fig: dict = {"links": [("change map (COG)", r.get("change_map_uri")),
                         ("regions (GeoJSON)", geoio.pair_geojson_path(output, r["pair_id"])),
                         ("STAC item", stac.item_href(output, r["pair_id"]))]}
  stem = f"{rank:03d}-{r['pair_id']}"
  after = bounds = None
  try:
    png, after, bounds = quicklook_figure(r)
    _write(FileSystems.join(report, IMG_DIR, f"{stem}-quicklook.png"), png)
    fig["quicklook"] = f"{IMG_DIR}/{stem}-quicklook.png"
  except Exception as e:  # a capture moved or unreadable from here: say so, draw the rest
    fig["error"] = f"quicklook not drawn: {type(e).__name__}: {e}"
    log(f"pair {r['pair_id']} ({r['location']!r}): {fig['error']}")
  try:
    png = regions_figure(r, after, bounds, shapes)
    if png:
      _write(FileSystems.join(report, IMG_DIR, f"{stem}-regions.png"), png)
      fig["regions"] = f"{IMG_DIR}/{stem}-regions.png"
  except Exception as e:
    log(f"pair {r['pair_id']}: region map not drawn: {e}")
  return fig


def _draw_series(ranked: list[dict], top_n: int, report: str) -> list[tuple[str, str]]:
  """Writes a time series per location of the top pairs; returns (location, src) of each."""
  by_location: dict[str, list[dict]] = {}
  for r in ranked:
    by_location.setdefault(r["location"], []).append(r)
  series = []
  for i, loc in enumerate(dict.fromkeys(r["location"] for r in ranked[:top_n])):
    name = f"series-{i:03d}.png"
    _write(FileSystems.join(report, IMG_DIR, name), series_figure(loc, by_location[loc]))
    series.append((loc, f"{IMG_DIR}/{name}"))
  return series


def write_report(output: str, top_n: int = 20, *, max_rows: int = DEFAULT_MAX_ROWS,
                 attribution: str = DEFAULT_ATTRIBUTION,
                 log: Callable[[str], None] | None = None) -> str:
  """Writes `OUT/report/index.html` (with `img/*.png` and `pairs.csv`) for a finished sweep.

  Args:
    output: the sweep's --output folder (local or gs://).
    top_n: pairs shown with quicklooks and region maps; their locations get time series.
    max_rows: rows in the pairs table (all pairs are in pairs.csv).
    attribution: imagery credit for the footer.
    log: called with a line per figure that could not be drawn (default: stderr).

  Returns:
    The path of index.html.

  Raises:
    FileNotFoundError: OUT holds no finished sweep.
    ValueError: top_n or max_rows below 0 / 1.
  """
  if top_n < 0:
    raise ValueError(f"top_n must be >= 0, got {top_n}")
  if max_rows < 1:
    raise ValueError(f"max_rows must be >= 1, got {max_rows}")
  log = log or (lambda s: print(f"changesweep report: {s}", file=sys.stderr))
  output = output.rstrip("/")
  run = load_run(output)
  report = FileSystems.join(output, REPORT_DIR)
  base = report if "://" not in report else "."
  top = {r["pair_id"] for r in run.ranked[:top_n]}
  shapes: dict[str, list[dict]] = {}
  for region in sinks.read_jsonl_rows(output, "regions"):
    if region["pair_id"] in top:
      shapes.setdefault(region["pair_id"], []).append(region)
  figures = {r["pair_id"]: _draw_pair(rank, r, report, log, shapes.get(r["pair_id"]))
             for rank, r in enumerate(run.ranked[:top_n], 1)}
  notes = [UNREADABLE_NOTE] if any("error" in f for f in figures.values()) else []
  series = _draw_series(run.ranked, top_n, report)
  _write(FileSystems.join(report, "pairs.csv"), pairs_csv(run.ranked))
  page = render_html(run.summary, run.ranked, run.dead, figures, series, top_n=top_n,
                     max_rows=max_rows, attribution=attribution, base=base, notes=notes)
  index = FileSystems.join(report, "index.html")
  _write(index, page.encode())
  return index


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="changesweep report",
      description="Write a static HTML report of a finished sweep to OUT/report/index.html: "
                  "run summary, sortable table of pairs by change score, before/after/change "
                  "quicklooks and change-region maps of the top pairs, change score over time "
                  "per location, dead letters. Open it in any browser; it needs no network. "
                  "A local `changesweep sweep` writes it at the end unless --no_report.",
      epilog="example: changesweep report out/demo --top 10, then open "
             "out/demo/report/index.html")
  parser.add_argument("output", metavar="OUT",
                      help="the --output folder of a finished sweep (holds run.json, pairs/)")
  parser.add_argument("--top", type=int, default=20, metavar="N",
                      help="pairs shown with quicklooks and region maps (default 20)")
  parser.add_argument("--max_rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                      help=f"rows of the pairs table; all pairs are in report/pairs.csv "
                           f"(default {DEFAULT_MAX_ROWS})")
  parser.add_argument("--attribution", default=DEFAULT_ATTRIBUTION, metavar="TEXT",
                      help=f"imagery credit in the footer (default: '{DEFAULT_ATTRIBUTION}')")
  args = parser.parse_args(argv)
  if args.top < 0:
    parser.error(f"--top must be 0 or more, got {args.top}")
  if args.max_rows < 1:
    parser.error(f"--max_rows must be 1 or more, got {args.max_rows}")
  try:
    path = write_report(args.output, args.top, max_rows=args.max_rows,
                        attribution=args.attribution)
  except FileNotFoundError as e:
    print(f"changesweep report: error: OUT: {e}", file=sys.stderr)
    return 2
  print(f"report: {path}")
  return 0
