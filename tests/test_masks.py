"""Masks end to end: a `--mask_band` given as its own file per capture (one file per band, by
layout or manifest) and `--mask_layout` sidecar masks flag pixels and whole captures."""
from __future__ import annotations

import os

import numpy as np
import pytest

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL
from tests.rasters import scene, write_raster

NAMES = ("B02", "B03", "B04", "B08")
DATES = ("20200101", "20200201", "20200301")
CLEAR, CLOUD = 4, 9  # Sentinel-2 SCL classes: vegetation, cloud (high probability)
SIZE = 40


def sweep(out, *args):
  return sweep_main.run(["--output", str(out), "--model", CVA_MODEL, "--run_id", "masks",
                         "--mask_values", "3,8,9,10", "--no_maps", *args])


def scl(date: str, location: str) -> np.ndarray:
  """All cloud at 'cloudy' on the second date; the left half cloud at 'half' then."""
  flags = np.full((1, SIZE, SIZE), CLEAR, np.uint8)
  if date == DATES[1]:
    if location == "cloudy":
      flags[:] = CLOUD
    elif location == "half":
      flags[:, :, :SIZE // 2] = CLOUD
  return flags


@pytest.fixture(scope="module")
def band_archive(tmp_path_factory):
  """Per-band files with an SCL file beside them; also listed by a manifest."""
  root = tmp_path_factory.mktemp("perband") / "archive"
  rows = ["location,captured_at,uri,band"]
  for seed, location in enumerate(("cloudy", "half")):
    for date in DATES:
      data = scene(seed, SIZE, SIZE)
      for name, plane in [*zip(NAMES, data[:, None]), ("SCL", scl(date, location))]:
        path = write_raster(str(root / location / f"{date}_{name}.tif"), plane)
        rows.append(f"{location},{date},{os.path.relpath(path, root)},{name}")
  (root / "manifest.csv").write_text("\n".join(rows) + "\n")
  return root


@pytest.mark.parametrize("listing", ["layout", "manifest"])
def test_a_mask_band_file_masks_its_capture_with_one_file_per_band(band_archive, tmp_path,
                                                                   listing):
  args = (["--input", str(band_archive), "--layout", "{location}/{date:%Y%m%d}_{band}.tif"]
          if listing == "layout" else ["--manifest", str(band_archive / "manifest.csv")])
  summary = sweep(tmp_path / "out", *args, "--mask_band", "SCL")
  assert summary["accounting"]["ok"], summary["accounting"]
  pairs = {(r["location"], r["before_captured_at"][:10], r["after_captured_at"][:10]): r
           for r in read_jsonl_rows(str(tmp_path / "out"), "pairs")}
  # the all-cloud capture is unusable: not paired, the series pairs around it
  assert set(pairs) == {("cloudy", "2020-01-01", "2020-03-01"),
                        ("half", "2020-01-01", "2020-02-01"),
                        ("half", "2020-02-01", "2020-03-01")}
  dead = read_jsonl_rows(str(tmp_path / "out"), "dead_letter")
  assert [(d["stage"], d["reason"].split(":")[0]) for d in dead] == [("usability", "unusable")]
  assert "cloudy/20200201_SCL.tif" in dead[0]["uri"]
  # half the capture is cloud: those pixels are never valid, so never change
  for key in [("half", "2020-01-01", "2020-02-01"), ("half", "2020-02-01", "2020-03-01")]:
    assert pairs[key]["valid_fraction"] == pytest.approx(0.5)
  # the SCL file is the capture's mask, not a band the model reads
  assert pairs[("cloudy", "2020-01-01", "2020-03-01")]["valid_fraction"] == 1.0


def test_sidecar_masks_by_mask_layout(tmp_path):
  root = tmp_path / "archive"
  for seed, location in enumerate(("cloudy", "half")):
    for date in DATES:
      write_raster(str(root / location / f"{date}.tif"), scene(seed, SIZE, SIZE),
                   descriptions=NAMES)
      write_raster(str(tmp_path / "archive" / "qa" / location / f"{date}.tif"),
                   scl(date, location))
  summary = sweep(tmp_path / "out", "--input", str(root), "--layout",
                  "{location}/{date:%Y%m%d}.tif", "--mask_layout", "qa/{location}/{date}.tif")
  assert summary["accounting"]["ok"], summary["accounting"]
  pairs = {(r["location"], r["after_captured_at"][:10]): r["valid_fraction"]
           for r in read_jsonl_rows(str(tmp_path / "out"), "pairs")}
  assert pairs == {("cloudy", "2020-03-01"): 1.0, ("half", "2020-02-01"): 0.5,
                   ("half", "2020-03-01"): 0.5}
  dead = read_jsonl_rows(str(tmp_path / "out"), "dead_letter")
  assert [(d["uri"], d["stage"]) for d in dead] == [
      (str(root / "cloudy" / "20200201.tif"), "usability")]


def test_a_missing_sidecar_mask_is_a_dead_letter_naming_the_mask(tmp_path):
  root = tmp_path / "archive"
  for date in DATES[:2]:
    write_raster(str(root / "loc" / f"{date}.tif"), scene(1, SIZE, SIZE), descriptions=NAMES)
  write_raster(str(root / "qa" / "loc" / f"{DATES[0]}.tif"), scl(DATES[0], "loc"))
  sweep(tmp_path / "out", "--input", str(root), "--layout", "{location}/{date:%Y%m%d}.tif",
        "--mask_layout", "qa/{location}/{date}.tif")
  [dead] = read_jsonl_rows(str(tmp_path / "out"), "dead_letter")
  assert dead["stage"] == "metadata"
  assert dead["reason"].startswith(
      f"reading mask of {root}/qa/loc/{DATES[1]}.tif failed: RasterioIOError: ")
