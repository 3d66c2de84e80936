"""The report's figures as PNG bytes: quicklooks, change-region maps, change score over time.

matplotlib without pyplot (a `Figure` per chart): no global state, no display, safe in a
worker or a test. Archive text that goes into labels passes `mpl_text`.
"""
from __future__ import annotations

import io

import numpy as np

from changesweep.pipeline.report_data import (QUICKLOOK_PX, capture_time, read_change_map,
                                              read_quicklook)


def mpl_text(text) -> str:
  """Archive text made safe for a matplotlib label ('$' would start mathtext)."""
  return str(text).replace("$", r"\$")


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


def _polygon_path(wkt: str):
  """A WKT polygon or multipolygon as a matplotlib path (holes kept), and its bounds."""
  import shapely
  from matplotlib.path import Path

  geom = shapely.from_wkt(wkt)
  parts = list(getattr(geom, "geoms", [geom]))
  rings = [ring for poly in parts for ring in (poly.exterior, *poly.interiors)]
  return Path.make_compound_path(*[Path(np.asarray(r.coords)[:, :2], closed=True)
                                   for r in rings]), geom.bounds


def regions_figure(row: dict, after: np.ndarray | None = None,
                   bounds: tuple | None = None, shapes: list[dict] | None = None) -> bytes | None:
  """The pair's change regions in map units, over the after capture in grey when it could be
  read: their polygons (`shapes`, rows of the regions table) where given, else numbered boxes;
  None when the capture is not georeferenced."""
  from matplotlib.collections import PatchCollection
  from matplotlib.patches import PathPatch, Rectangle

  polys = [r for r in shapes or [] if r.get("geometry_crs")]
  regions = [r for r in row.get("regions") or [] if r.get("min_x") is not None]
  if not (regions or polys) or not row.get("crs"):
    return None
  fig = _figure(3.1, 2.9)
  ax = fig.subplots()
  xs, ys = [], []
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
  # One collection, not a patch per shape: a pair can have a thousand polygons, and adding
  # patches one by one re-computes the axes' limits each time.
  style = dict(facecolor=(0.84, 0.15, 0.16, 0.35), edgecolor="#d62728", linewidths=0.8)
  patches = []
  if polys:
    for r in polys:
      path, (x0, y0, x1, y1) = _polygon_path(r["geometry_crs"])
      patches.append(PathPatch(path))
      xs += [x0, x1]
      ys += [y0, y1]
    title = f"{len(polys)} change polygons"
  else:
    for i, r in enumerate(regions):
      patches.append(Rectangle((r["min_x"], r["min_y"]), r["max_x"] - r["min_x"],
                               r["max_y"] - r["min_y"]))
      if i < 10:
        ax.annotate(str(i + 1), (r["max_x"], r["max_y"]), fontsize=7, ha="left", va="bottom",
                    color="#d62728", fontweight="bold")
      xs += [r["min_x"], r["max_x"]]
      ys += [r["min_y"], r["max_y"]]
    title = f"{len(regions)} largest change regions"
  ax.add_collection(PatchCollection(patches, **style))
  pad = 0.03 * max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
  ax.set_xlim(min(xs) - pad, max(xs) + pad)
  ax.set_ylim(min(ys) - pad, max(ys) + pad)
  ax.set_aspect("equal")
  ax.ticklabel_format(useOffset=False, style="plain")
  ax.tick_params(labelsize=7)
  ax.tick_params(axis="x", labelrotation=30)
  crs = mpl_text(row["crs"] if len(row["crs"]) < 40 else "capture CRS")
  ax.set_xlabel(f"x ({crs})", fontsize=8)
  ax.set_ylabel(f"y ({crs})", fontsize=8)
  ax.set_title(title, fontsize=9)
  return _png(fig, quantize=after is not None)


def series_figure(location: str, rows: list[dict]) -> bytes:
  """Change score over the later capture's date, for one location."""
  import matplotlib.dates as mdates

  pts = sorted((capture_time(r["after_captured_at"]), capture_time(r["before_captured_at"]),
                r["change_score"]) for r in rows if r.get("change_score") is not None)
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
  ax.set_title(mpl_text(location), fontsize=10)
  return _png(fig)
