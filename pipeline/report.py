"""`changesweep report OUT`: a static HTML page of a finished sweep, for people to look at change.

The page (`OUT/report/index.html`) needs no network: its PNGs sit beside it in `OUT/report/img/`
and its only script (table sorting) is inline. It holds the run summary, a sortable table of the
pairs by change score, before / after / change-overlay quicklooks and a map of the change
regions for the top pairs, a change-score time series per location, and the dead letters.
Every archive-provided string is HTML-escaped. All pairs, sorted, are also in
`OUT/report/pairs.csv`, which the page links when it shows only part of a large run.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import html
import io
import json
import os
import sys
from typing import Callable, Iterable
from urllib.parse import quote

import numpy as np
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import sinks
from changesweep.pipeline.rasters import open_raster
from changesweep.pipeline.elements import PROB_SCALE

REPORT_DIR = "report"
IMG_DIR = "img"
QUICKLOOK_PX = 512
RGB_BANDS = ("B04", "B03", "B02")
DEFAULT_ATTRIBUTION = "Contains modified Copernicus Sentinel data"
DEFAULT_MAX_ROWS = 500
CSV_FIELDS = ("rank", "pair_id", "location", "before_captured_at", "after_captured_at",
              "change_score", "changed_fraction", "changed_pixels", "mean_change_prob",
              "max_change_prob", "valid_fraction", "num_regions", "crs", "before_uri",
              "after_uri", "change_map_uri")


# --------------------------------------------------------------------------------------------
# Rows


def rank_pairs(pairs: Iterable[dict]) -> list[dict]:
  """Pairs by change score, highest first (no score last); ties by location, then date."""
  return sorted(pairs, key=lambda r: (r.get("change_score") is None,
                                      -(r.get("change_score") or 0.0), r.get("location") or "",
                                      r.get("after_captured_at") or ""))


def _fmt(value, digits: int = 3) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _pct(value) -> str:
  return "–" if value is None else f"{100 * value:.1f}%"


def _e(value) -> str:
  return html.escape("" if value is None else str(value), quote=True)


def _mpl_text(text) -> str:
  """Archive text made safe for a matplotlib label ('$' would start mathtext)."""
  return str(text).replace("$", r"\$")


def _href(uri: str | None, base: str) -> str | None:
  """A link to an output file: relative to the report folder when it is local."""
  if not uri:
    return None
  if "://" in uri:
    return uri.replace("gs://", "https://storage.cloud.google.com/", 1)
  rel = os.path.relpath(os.path.abspath(uri), os.path.abspath(base))
  return quote(rel.replace(os.sep, "/"))


# --------------------------------------------------------------------------------------------
# Rasters -> small arrays


def _out_shape(height: int, width: int, max_px: int) -> tuple[int, int]:
  scale = min(1.0, max_px / max(height, width))
  return max(1, round(height * scale)), max(1, round(width * scale))


def _pick_rgb(descriptions: list[str | None], names: tuple[str, ...] = RGB_BANDS) -> list[int]:
  """1-based indexes of the true-colour bands by description, else the first three (or one)."""
  wanted = [n.lower() for n in names]
  found = {(d or "").strip().lower(): i + 1 for i, d in enumerate(descriptions)}
  if all(w in found for w in wanted):
    return [found[w] for w in wanted]
  return list(range(1, min(3, len(descriptions)) + 1))


def stretch(bands: np.ndarray, valid: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
  """(c, h, w) -> (h, w, 4) RGBA floats: each band stretched between its 2nd and 98th
  percentile over the valid pixels; invalid pixels are transparent."""
  c, h, w = bands.shape
  rgba = np.zeros((h, w, 4), np.float32)
  for i in range(c):
    band = bands[i].astype(np.float64)
    vals = band[valid]
    if vals.size:
      lo, hi = np.percentile(vals, [low, high])
      rgba[..., i] = np.clip((band - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
  if c < 3:  # grey
    rgba[..., 1] = rgba[..., 2] = rgba[..., 0]
  rgba[..., 3] = valid
  return rgba


def read_quicklook(uri: str, shape: tuple[int, int] | None = None,
                   max_px: int = QUICKLOOK_PX) -> tuple[np.ndarray, tuple]:
  """A capture's true-colour quicklook, read downsampled so memory stays small.

  Args:
    uri: the capture: one multi-band file, or ';'-joined single-band files (one per band).
    shape: (rows, cols) to read at; default: the scene shrunk to at most `max_px` a side.
    max_px: longest side of the default shape.

  Returns:
    (RGBA float image (h, w, 4), (left, bottom, right, top) bounds or None if not georeferenced)
  """
  from rasterio.enums import Resampling

  files = uri.split(";")
  arrays, masks, bounds = [], [], None
  if len(files) == 1:
    with open_raster(files[0]) as src:
      idx = _pick_rgb(list(src.descriptions))
      shape = shape or _out_shape(src.height, src.width, max_px)
      data = src.read(idx, out_shape=(len(idx), *shape), masked=True,
                      resampling=Resampling.average)
      arrays, masks = [data.filled(0)], [np.ma.getmaskarray(data).any(axis=0)]
      bounds = tuple(src.bounds) if src.crs else None
  else:
    descs = []
    for f in files:
      with open_raster(f) as src:
        descs.append(src.descriptions[0] or os.path.splitext(os.path.basename(f))[0]
                     .rsplit("_", 1)[-1])
    for i in _pick_rgb(descs):
      with open_raster(files[i - 1]) as src:
        shape = shape or _out_shape(src.height, src.width, max_px)
        data = src.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
        arrays.append(data.filled(0)[None])
        masks.append(np.ma.getmaskarray(data))
        bounds = tuple(src.bounds) if src.crs else None
  bands = np.concatenate(arrays).astype(np.float32)
  valid = ~np.any(np.stack(masks), axis=0) & np.all(np.isfinite(bands), axis=0)
  return stretch(bands, valid), bounds


def read_change_map(uri: str, shape: tuple[int, int]) -> np.ndarray:
  """The change map read at `shape`: probabilities in [0, 1], NaN where nodata."""
  from rasterio.enums import Resampling

  with open_raster(uri) as src:
    data = src.read(1, out_shape=shape, masked=True, resampling=Resampling.nearest)
  return np.ma.filled(data.astype(np.float32) / PROB_SCALE, np.nan)


# --------------------------------------------------------------------------------------------
# Figures (matplotlib, no pyplot: no global state, no display)


def _figure(w: float, h: float):
  from matplotlib.figure import Figure

  return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _png(fig, quantize: bool = False) -> bytes:
  """PNG bytes of a figure; `quantize` makes photos 3-4x smaller (256-colour palette)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  if not quantize:
    return buf.getvalue()
  from PIL import Image

  img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
  out = io.BytesIO()
  img.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
  return out.getvalue()


def quicklook_figure(row: dict, max_px: int = QUICKLOOK_PX
                     ) -> tuple[bytes, np.ndarray, tuple | None]:
  """Before / after / change-overlay panels of one pair, with a change-probability colour bar.

  Returns:
    (PNG bytes, the after quicklook (h, w, 4), its bounds in map units or None)
  """
  import matplotlib as mpl

  after, bounds = read_quicklook(row["after_uri"], max_px=max_px)
  shape = after.shape[:2]
  before, _ = read_quicklook(row["before_uri"], shape=shape)
  prob = read_change_map(row["change_map_uri"], shape) if row.get("change_map_uri") else None
  aspect = shape[1] / shape[0]
  fig = _figure(min(8.0, 3 * 2.3 * aspect + 1.0), 2.8)
  axes = fig.subplots(1, 3)
  for ax, img, title in ((axes[0], before, f"before {row['before_captured_at'][:10]}"),
                         (axes[1], after, f"after {row['after_captured_at'][:10]}")):
    ax.imshow(img, interpolation="nearest")
    ax.set_title(title, fontsize=10)
  grey = after[..., :3].mean(axis=2)
  axes[2].imshow(np.dstack([grey, grey, grey, after[..., 3]]), interpolation="nearest")
  cmap = mpl.colormaps["inferno"]
  norm = mpl.colors.Normalize(0, 1)
  if prob is not None:
    overlay = cmap(norm(np.nan_to_num(prob)))
    overlay[..., 3] = np.where(np.isnan(prob), 0.0, 0.15 + 0.75 * np.nan_to_num(prob))
    axes[2].imshow(overlay, interpolation="nearest")
    axes[2].set_title("change, over the after capture", fontsize=10)
  else:
    axes[2].set_title("no change map written", fontsize=10)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[2], fraction=0.046,
               pad=0.02, label="change probability")
  return _png(fig, quantize=True), after, bounds


def regions_figure(row: dict, after: np.ndarray | None = None,
                   bounds: tuple | None = None) -> bytes | None:
  """The pair's change regions as numbered boxes in map units, over the after capture in grey
  when it could be read; None when the capture is not georeferenced."""
  from matplotlib.patches import Rectangle

  regions = [r for r in row.get("regions") or [] if r.get("min_x") is not None]
  if not regions or not row.get("crs"):
    return None
  fig = _figure(3.1, 2.9)
  ax = fig.subplots()
  xs = [r["min_x"] for r in regions] + [r["max_x"] for r in regions]
  ys = [r["min_y"] for r in regions] + [r["max_y"] for r in regions]
  if bounds:
    left, bottom, right, top = bounds
    if after is not None:
      grey = after[..., :3].mean(axis=2)
      ax.imshow(np.dstack([grey, grey, grey, 0.7 * after[..., 3]]),
                extent=(left, right, bottom, top), interpolation="nearest")
    ax.add_patch(Rectangle((left, bottom), right - left, top - bottom, fill=False,
                           edgecolor="#888", lw=1))
    xs += [left, right]
    ys += [bottom, top]
  for i, r in enumerate(regions):
    ax.add_patch(Rectangle((r["min_x"], r["min_y"]), r["max_x"] - r["min_x"],
                           r["max_y"] - r["min_y"], facecolor=(0.84, 0.15, 0.16, 0.25),
                           edgecolor="#d62728", lw=1.2))
    if i < 10:
      ax.annotate(str(i + 1), (r["max_x"], r["max_y"]), fontsize=7, ha="left", va="bottom",
                  color="#d62728", fontweight="bold")
  pad = 0.03 * max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
  ax.set_xlim(min(xs) - pad, max(xs) + pad)
  ax.set_ylim(min(ys) - pad, max(ys) + pad)
  ax.set_aspect("equal")
  ax.ticklabel_format(useOffset=False, style="plain")
  ax.tick_params(labelsize=7)
  ax.tick_params(axis="x", labelrotation=30)
  crs = _mpl_text(row["crs"] if len(row["crs"]) < 40 else "capture CRS")
  ax.set_xlabel(f"x ({crs})", fontsize=8)
  ax.set_ylabel(f"y ({crs})", fontsize=8)
  ax.set_title(f"{len(regions)} largest change regions", fontsize=9)
  return _png(fig, quantize=after is not None)


def series_figure(location: str, rows: list[dict]) -> bytes:
  """Change score over the later capture's date, for one location."""
  import matplotlib.dates as mdates

  def when(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)

  pts = sorted((when(r["after_captured_at"]), when(r["before_captured_at"]), r["change_score"])
               for r in rows if r.get("change_score") is not None)
  fig = _figure(4.6, 2.6)
  ax = fig.subplots()
  if pts:
    for after, before, score in pts:  # the period each pair spans
      ax.plot([before, after], [score, score], "-", color="#b5361c", alpha=0.35, lw=2)
    ax.plot([p[0] for p in pts], [p[2] for p in pts], "-o", color="#b5361c", ms=5,
            label="change score at the later capture")
  ax.set_ylim(0, 1.02)
  ax.set_ylabel("change score", fontsize=8)
  ax.set_xlabel("date of the later capture (band: the period the pair spans)", fontsize=8)
  ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
  ax.tick_params(labelsize=7)
  ax.grid(alpha=0.3)
  ax.set_title(_mpl_text(location), fontsize=10)
  return _png(fig)


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
  background:#fafafa}
header,main,footer{max-width:1200px;margin:0 auto;padding:0 20px}
header{padding-top:18px}h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;
  border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.muted{color:#666}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:22px}.card.bad b{color:#b5361c}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #e2e2e2;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#aaa}td.num{text-align:right;
  font-variant-numeric:tabular-nums}.bar{display:inline-block;height:8px;background:#b5361c;
  vertical-align:middle;margin-right:6px}dl.kv{display:grid;grid-template-columns:max-content 1fr;
  gap:2px 14px;margin:0}dl.kv dt{color:#666}dl.kv dd{margin:0;word-break:break-all}
.pair{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}
.pair .figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.pair img,.series img{max-width:100%;height:auto}.series{display:flex;flex-wrap:wrap;gap:10px}
.series figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px}
.note{background:#fff8e1;border:1px solid #f0d98c;padding:6px 10px;border-radius:4px}
footer{margin-top:30px;padding-bottom:30px;font-size:12px;color:#666}
code{font-size:12px;word-break:break-all}
"""

_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("data-dir") !== "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", asc ? "asc" : "desc");
      var body = table.tBodies[0];
      var key = function (row) {
        var cell = row.cells[col];
        return cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a).trim(), y = key(b).trim(), nx = Number(x), ny = Number(y);
        var c = (x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var body = document.body;
  body.setAttribute("data-images", String(imgs.length));
  body.setAttribute("data-broken-images", String(broken.length));
  body.setAttribute("data-table-rows",
                    String(document.querySelectorAll("#pairs-table tbody tr").length));
  body.setAttribute("data-status", broken.length ? "broken-images" : "ok");
});
"""


def _img(src: str | None, alt: str, width: int | None = None) -> str:
  if not src:
    return ""
  w = f' width="{width}"' if width else ""
  return f'<img src="{_e(src)}" alt="{_e(alt)}" loading="eager"{w}>'


def _td(content, sort_value=None, num: bool = False) -> str:
  """A table cell of ready HTML; `sort_value` (escaped here) is what the table sorts on."""
  cls = ' class="num"' if num or sort_value is not None and not isinstance(sort_value, str) else ""
  v = f' data-v="{_e(sort_value)}"' if sort_value is not None else ""
  return f"<td{cls}{v}>{content}</td>"


def _kv(items: list[tuple[str, str]]) -> str:
  return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def render_html(summary: dict, ranked: list[dict], dead: list[dict],
                figures: dict[str, dict] | None = None, series: list[tuple[str, str]] = (),
                *, top_n: int = 20, max_rows: int = DEFAULT_MAX_ROWS,
                attribution: str = DEFAULT_ATTRIBUTION, base: str = ".",
                notes: Iterable[str] = ()) -> str:
  """The report page. Pure: every input is data, every archive-provided string is escaped.

  Args:
    summary: the sweep's run.json.
    ranked: pair rows, highest change score first (`rank_pairs`).
    dead: dead-letter rows.
    figures: by pair_id, {"quicklook": src, "regions": src, "error": text} for the top pairs.
    series: (location, src) of the per-location time-series charts.
    top_n: pairs shown with quicklooks.
    max_rows: rows of the pairs table; the rest is in pairs.csv.
    attribution: imagery credit printed in the footer.
    base: the report folder, for relative links to outputs.
    notes: sentences shown under the summary (images that could not be drawn, ...).
  """
  figures = figures or {}
  counts = summary.get("counts", {})
  model = summary.get("model", {})
  title = f"changesweep report: {summary.get('run_id', '')}"
  out = [
      "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
      '<meta name="viewport" content="width=device-width, initial-scale=1">',
      f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
      f"<header><h1>{_e(title)}</h1>",
      f'<div class="muted">archive <code>{_e(summary.get("archive"))}</code> &middot; output '
      f'<code>{_e(summary.get("output"))}</code></div></header><main>',
      '<section id="summary"><h2>Run summary</h2><div class="cards">']
  for key, label in (("locations", "locations"), ("pairs", "pairs scored"),
                     ("chips", "chips"), ("first_captures", "first captures"),
                     ("dead_letters", "dead letters")):
    bad = " bad" if key == "dead_letters" and counts.get(key) else ""
    out.append(f'<div class="card{bad}"><b>{_e(counts.get(key, "–"))}</b>{_e(label)}</div>')
  out.append("</div>")
  metrics = summary.get("metrics") or {}
  out.append(_kv([
      ("model", f"{_e(model.get('id'))} v{_e(model.get('version'))} "
                f"<span class=muted>({_e(model.get('path'))})</span>"),
      ("bands", _e(", ".join(model.get("bands") or []))),
      ("statistics", _e(summary.get("statistics"))),
      ("run id", _e(summary.get("run_id"))),
      ("rows", f'<a href="{_href(os.path.join(summary.get("output") or "..", "pairs"), base)}'
               f'/">pairs/</a> (Parquet + JSONL), all pairs sorted: '
               f'<a href="pairs.csv">pairs.csv</a>'),
  ]))
  if metrics:
    out.append("<details><summary>Beam metrics</summary><table><tbody>" + "".join(
        f'<tr><td>{_e(k)}</td><td class="num">{_e(v)}</td></tr>' for k, v in metrics.items())
        + "</tbody></table></details>")
  out += [f'<p class="note">{_e(n)}</p>' for n in notes]
  out.append("</section>")

  # Table of pairs.
  shown = ranked[:max_rows]
  out.append('<section id="pairs"><h2>Pairs by change score</h2>')
  if len(ranked) > len(shown):
    out.append(f'<p class="note">Showing the top {len(shown)} of {len(ranked)} pairs; all of '
               f'them, in this order, are in <a href="pairs.csv">pairs.csv</a>.</p>')
  out.append('<p class="muted">Click a column to sort. Change score: mean change probability '
             'of the 1% most changed valid pixels.</p>')
  headers = ("#", "location", "before", "after", "change score", "changed", "changed px",
             "valid", "regions", "change map", "pair id")
  out.append('<table id="pairs-table" class="sortable"><thead><tr>'
             + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead><tbody>")
  for rank, r in enumerate(shown, 1):
    score = r.get("change_score")
    pid = _e(r.get("pair_id"))
    anchor = (f'<a href="#pair-{pid}">{_e(r.get("location"))}</a>'
              if r.get("pair_id") in figures else _e(r.get("location")))
    map_href = _href(r.get("change_map_uri"), base)
    map_link = f'<a href="{_e(map_href)}">GeoTIFF</a>' if map_href else "–"
    bar = f'<span class="bar" style="width:{int(40 * (score or 0))}px"></span>'
    before, after = r.get("before_captured_at") or "", r.get("after_captured_at") or ""
    cells = [_td(rank, num=True), _td(anchor), _td(_e(before[:10]), before),
             _td(_e(after[:10]), after), _td(bar + _fmt(score), -1 if score is None else score),
             _td(_pct(r.get("changed_fraction")), r.get("changed_fraction") or 0),
             _td(_e(r.get("changed_pixels")), num=True),
             _td(_pct(r.get("valid_fraction")), r.get("valid_fraction") or 0),
             _td(len(r.get("regions") or []), num=True), _td(map_link),
             _td(f"<code>{pid}</code>")]
    out.append(f'<tr data-pair-id="{pid}">{"".join(cells)}</tr>')
  out.append("</tbody></table></section>")

  # Top pairs.
  top = ranked[:top_n]
  out.append(f'<section id="top"><h2>Top {len(top)} changes</h2>')
  if not top:
    out.append('<p class="muted">No pair was scored.</p>')
  for rank, r in enumerate(top, 1):
    f = figures.get(r.get("pair_id"), {})
    before, after = r.get("before_captured_at") or "", r.get("after_captured_at") or ""
    out.append(f'<div class="pair" id="pair-{_e(r.get("pair_id"))}">'
               f'<h3>#{rank} {_e(r.get("location"))}: {_e(before[:10])}'
               f' &rarr; {_e(after[:10])}, score '
               f'{_fmt(r.get("change_score"))}, {_pct(r.get("changed_fraction"))} changed</h3>')
    out.append('<div class="figs">')
    out.append(_img(f.get("quicklook"), f"before, after and change of {r.get('location')}"))
    out.append(_img(f.get("regions"), f"change regions of {r.get('location')}"))
    out.append("</div>")
    if f.get("error"):
      out.append(f'<p class="note">{_e(f["error"])}</p>')
    out.append(f'<div class="muted">before <code>{_e(r.get("before_uri"))}</code><br>after '
               f'<code>{_e(r.get("after_uri"))}</code><br>CRS {_e(r.get("crs") or "none")}'
               f', {_e(r.get("width"))}&times;{_e(r.get("height"))} px, '
               f'{len(r.get("regions") or [])} regions</div></div>')
  out.append("</section>")

  # Time series.
  out.append('<section id="series"><h2>Change score over time</h2>')
  if series:
    out.append('<p class="muted">Per location of the top pairs: the change score of each pair '
               'at the date of its later capture.</p><div class="series">')
    out += [f"<figure>{_img(src, f'change score over time at {loc}')}</figure>"
            for loc, src in series]
    out.append("</div>")
  else:
    out.append('<p class="muted">No scored pairs.</p>')
  out.append("</section>")

  # Dead letters.
  out.append(f'<section id="dead"><h2>Dead letters ({len(dead)})</h2>')
  if dead:
    out.append('<table id="dead-table" class="sortable"><thead><tr><th>stage</th>'
               "<th>location</th><th>reason</th><th>uri</th></tr></thead><tbody>")
    for d in dead[:max_rows]:
      out.append(f"<tr><td>{_e(d.get('stage'))}</td><td>{_e(d.get('location'))}</td>"
                 f"<td>{_e(d.get('reason'))}</td><td><code>{_e(d.get('uri'))}</code></td></tr>")
    out.append("</tbody></table>")
    if len(dead) > max_rows:
      out.append(f'<p class="note">Showing {max_rows} of {len(dead)}; all are in '
                 f'<code>dead_letter/</code>.</p>')
  else:
    out.append('<p class="muted">Every input was used.</p>')
  out.append("</section></main>")
  out.append(f"<footer>Generated by changesweep on "
             f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. "
             f"Imagery: {_e(attribution)}.</footer>")
  out.append(f"<script>{_JS}</script></body></html>")
  return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# The report


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def _read_summary(output: str) -> dict:
  path = FileSystems.join(output, "run.json")
  if not FileSystems.exists(path):
    raise FileNotFoundError(f"{path} not found: OUT must be the --output folder of a finished "
                            "sweep (run.json is written when the sweep ends)")
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode())


def pairs_csv(ranked: list[dict]) -> bytes:
  buf = io.StringIO()
  w = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
  w.writeheader()
  for rank, r in enumerate(ranked, 1):
    w.writerow({**r, "rank": rank, "num_regions": len(r.get("regions") or [])})
  return buf.getvalue().encode()


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
  summary = _read_summary(output)
  ranked = rank_pairs(sinks.read_jsonl_rows(output, "pairs"))
  dead = sinks.read_jsonl_rows(output, "dead_letter")
  report = FileSystems.join(output, REPORT_DIR)
  base = report if "://" not in report else "."
  figures: dict[str, dict] = {}
  notes = []
  for rank, r in enumerate(ranked[:top_n], 1):
    fig: dict = {}
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
      png = regions_figure(r, after, bounds)
      if png:
        _write(FileSystems.join(report, IMG_DIR, f"{stem}-regions.png"), png)
        fig["regions"] = f"{IMG_DIR}/{stem}-regions.png"
    except Exception as e:
      log(f"pair {r['pair_id']}: region map not drawn: {e}")
    figures[r["pair_id"]] = fig
  if any("error" in f for f in figures.values()):
    notes.append("Some quicklooks could not be drawn (see each pair). Capture uris are read "
                 "as written in the rows: run the report from the folder the sweep ran in.")
  by_location: dict[str, list[dict]] = {}
  for r in ranked:
    by_location.setdefault(r["location"], []).append(r)
  series = []
  for i, loc in enumerate(dict.fromkeys(r["location"] for r in ranked[:top_n])):
    name = f"series-{i:03d}.png"
    _write(FileSystems.join(report, IMG_DIR, name), series_figure(loc, by_location[loc]))
    series.append((loc, f"{IMG_DIR}/{name}"))
  _write(FileSystems.join(report, "pairs.csv"), pairs_csv(ranked))
  page = render_html(summary, ranked, dead, figures, series, top_n=top_n, max_rows=max_rows,
                     attribution=attribution, base=base, notes=notes)
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
