"""Robust per-capture statistics (median, 1.4826 * MAD) from the usability pass: recorded per
file and per derived band, carried by pairing and the incremental state (older records without
them still load), and used by the any-band scorer for models normalised
"archive_optical_robust"."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from changesweep.model import format as model_format
from changesweep.pipeline import anyband as sweep_anyband
from changesweep.pipeline import band_slots, known_files, rasters, usability
from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.elements import Pair, SceneRef
from changesweep.pipeline.listing import CaptureFile
from changesweep.pipeline.pairing import _stats_fields, pair_series
from changesweep.pipeline.sinks import read_jsonl_rows
from changesweep.transforms import normalization as norm
from changesweep.transforms.bands import Derived
from tests.rasters import write_raster

S2 = norm.S2_WAVELENGTHS
SPEC = known_files.fingerprint(usability.MaskSpec())


def skewed_band(seed, h=32, w=32, cloud=0.2):
  """An NDVI-like band: a smooth field around 0.4 and a `cloud` share of pixels at -0.9."""
  rng = np.random.default_rng(seed)
  x = 0.4 + 0.05 * rng.standard_normal((h, w))
  x[: int(cloud * h), :] = -0.9
  return x.astype(np.float32)


def read_entry(path, modified=1.0):
  meta = rasters.read_meta(path)
  return CaptureFile("loc", "2020-01-01T00:00:00", None, path, os.path.getsize(path), meta,
                     stats=usability.file_stats(path, meta.nodata), modified=modified)


def test_file_stats_record_median_and_mad_of_the_valid_pixels(tmp_path):
  data = np.stack([skewed_band(0), 1000.0 + 100.0 * skewed_band(1)])
  data[:, -1, -1] = -9999.0  # nodata: not counted
  path = write_raster(str(tmp_path / "a.tif"), data, nodata=-9999.0)
  stats = usability.file_stats(path, -9999.0)
  valid = data[:, data[0] != -9999.0]
  for k in range(2):
    med = np.median(valid[k])
    assert stats.band_medians[k] == pytest.approx(med, rel=1e-6)
    assert stats.band_mads[k] == pytest.approx(
        1.4826 * np.median(np.abs(valid[k] - med)), rel=1e-5)
    assert abs(stats.band_medians[k] - stats.band_means[k]) > 0.1 * stats.band_stds[k]
  empty = usability.file_stats(write_raster(str(tmp_path / "e.tif"), np.zeros((1, 4, 4)),
                                            nodata=0), 0)
  assert empty.usable_fraction == 0 and np.isnan(empty.band_medians[0])


def test_derived_band_statistics_include_the_robust_pair(tmp_path):
  rng = np.random.default_rng(2)
  red = rng.integers(200, 800, (24, 24)).astype(np.float64)
  nir = rng.integers(1500, 3000, (24, 24)).astype(np.float64)
  nir[:5] = 100.0  # water
  path = write_raster(str(tmp_path / "s.tif"), np.stack([red, nir]).astype(np.uint16),
                      descriptions=("B04", "B08"))
  meta = rasters.read_meta(path)
  stats = usability.file_stats(path, meta.nodata)
  scene = SceneRef("loc", "2020-01-01", (path,), ("B04", "B08"), 24, 24, "uint16", "",
                   (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), None, 0, 1.0, stats.band_means,
                   stats.band_stds, band_medians=stats.band_medians, band_mads=stats.band_mads)
  ndvi = Derived("ndvi", 1, 0)
  mean, std, med, mad = usability.derived_band_stats(scene, ndvi)
  index = (nir - red) / (nir + red)
  assert (mean, std) == pytest.approx((index.mean(), index.std()), rel=1e-5)
  assert usability.derived_stats(scene, ndvi) == (mean, std)
  assert med == pytest.approx(np.median(index), rel=1e-5)
  assert mad == pytest.approx(1.4826 * np.median(np.abs(index - np.median(index))), rel=1e-4)
  with_stats = band_slots.with_derived_stats(scene, (ndvi,))
  assert band_slots.band_stats(with_stats, ndvi) == (mean, std)
  assert band_slots.band_robust_stats(with_stats, ndvi) == (med, mad)
  assert band_slots.band_robust_stats(with_stats, 1) == (stats.band_medians[1],
                                                          stats.band_mads[1])


def _scene(uri, names, means, stds, medians=(), mads=()):
  return SceneRef("loc", "2020-01-01", (uri,), names, 10, 10, "float32", "",
                  (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), None, 0, 1.0, means, stds,
                  band_medians=medians, band_mads=mads)


def test_robust_slots_take_median_mad_for_non_optical_bands_only():
  names = ("B04", "NDVI")
  before = _scene("a.tif", names, (1000.0, 0.2), (100.0, 0.3), (990.0, 0.35), (80.0, 0.05))
  after = _scene("b.tif", names, (1200.0, 0.1), (120.0, 0.4), (1190.0, 0.3), (90.0, 0.06))
  pair = Pair("p", before, after, (0, 1), (0, 1), names, (S2["B04"], norm.CODE_INDEX))
  pooled = {"B04": (1100.0, 150.0)}
  center, scale = sweep_anyband.slot_stats(pair, after, pair.after_bands, pooled, 4, robust=True)
  np.testing.assert_allclose(center[:3], [1100.0, 0.3, 0.0])
  np.testing.assert_allclose(scale[:3], [150.0, 0.06, 1.0])
  center, scale = sweep_anyband.slot_stats(pair, after, pair.after_bands, pooled, 4)
  np.testing.assert_allclose(center[:2], [1100.0, 0.1])  # the mean/std rule is unchanged
  assert sweep_anyband.uses_robust_capture_stats("archive_optical_robust")
  assert not sweep_anyband.uses_robust_capture_stats("archive_optical")
  assert sweep_anyband.pools_optical_only("archive_optical_robust")
  assert not sweep_anyband.pools_optical_only("archive")


def test_a_state_record_without_robust_statistics_is_read_again_or_falls_back(tmp_path):
  path = write_raster(str(tmp_path / "a.tif"), skewed_band(3)[None], descriptions=(None,))
  entry = read_entry(path)
  row = json.loads(json.dumps(known_files.encode(entry, SPEC)))
  assert len(row["stats"]) == 5
  assert entry._replace(**known_files.decode(row)) == entry
  # a record of version 1: no robust statistics and the fingerprint of then
  old = {**row, "stats": row["stats"][:3], "spec": "0123456789ab"}
  assert not known_files.same_file(entry, old, SPEC, None)  # this night reads the file again
  back = known_files.decode(old)["stats"]
  assert back.band_means == entry.stats.band_means and back.band_medians == ()
  # were it used anyway: the capture has no robust statistics and the scorer uses mean/std
  old_entry = entry._replace(stats=back)
  assert _stats_fields([old_entry])["band_medians"] == ()
  assert _stats_fields([entry])["band_medians"] == entry.stats.band_medians
  scene = _scene(path, (None,), back.band_means, back.band_stds)
  assert sweep_anyband.own_stats(scene, 0, robust=True) == (back.band_means[0],
                                                            back.band_stds[0])
  files = [old_entry._replace(captured_at=f"2020-0{m}-01T00:00:00") for m in (1, 2)]
  pair = next(o for o in pair_series("loc", files, (), max_bands=13) if isinstance(o, Pair))
  center, _ = sweep_anyband.slot_stats(pair, pair.after, pair.after_bands, {}, 13, robust=True)
  assert center[0] == pytest.approx(back.band_means[0], rel=1e-6)


# ----------------------------------------------------------------------------- a whole sweep

SIZE = 32


def echo_network(inputs, training=False):
  """A "network" whose change logit is 4 x (after - before) of the first slot's z-scores: its
  map shows exactly how the sweep normalised the two captures."""
  before, after, _ = inputs
  return 4.0 * (after[..., 0] - before[..., 0])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  """The echo network exported twice: normalised "archive_optical_robust" and
  "archive_optical" (only the metadata differs)."""
  root = tmp_path_factory.mktemp("tiny")
  out = {}
  for mode in ("archive_optical_robust", "archive_optical"):
    path = str(root / mode)
    model_format.export_anyband_model_dir(path, echo_network, {
        "model_id": f"tiny-{mode}", "version": "1", "kind": "learned", "bands": ["NDVI"],
        "chip_size": SIZE, "max_bands": 13, "threshold": 0.5, "normalization": mode})
    out[mode] = path
  return out


def test_the_sweep_normalises_an_unnamed_band_with_robust_statistics(tiny_models, tmp_path):
  archive = tmp_path / "ndvi"
  bands = {}
  for date, seed, cloud in (("2020-01-01", 4, 0.1), ("2020-02-01", 5, 0.4)):
    bands[date] = skewed_band(seed, cloud=cloud)
    write_raster(str(archive / "plot" / f"{date}.tif"), bands[date][None])  # no band names
  stats = {d: (norm.capture_stats(b.reshape(-1, 1), [norm.CODE_UNKNOWN]),
               norm.capture_mean_std(b.reshape(-1, 1))) for d, b in bands.items()}
  info = model_format.read_model_info(tiny_models["archive_optical_robust"])
  fn = model_format.load_saved_model(info).signatures["serving_default"]

  def expected_mean(which):  # the whole 32x32 capture is one chip
    before, after = np.zeros((2, 1, SIZE, SIZE, 13), np.float32)
    before[0, ..., 0], after[0, ..., 0] = bands["2020-01-01"], bands["2020-02-01"]
    codes = np.zeros((1, 13), np.float32)
    codes[0, 0] = norm.CODE_UNKNOWN
    feed = {"before": before, "after": after, "valid": np.ones((1, SIZE, SIZE), np.float32),
            "band_code": codes}
    for key, date in (("before", "2020-01-01"), ("after", "2020-02-01")):
      center, scale = np.zeros((1, 13), np.float32), np.ones((1, 13), np.float32)
      center[0, 0], scale[0, 0] = (v[0] for v in stats[date][which])
      feed[f"{key}_center"], feed[f"{key}_scale"] = center, scale
    prob = fn(**{k: tf.constant(v) for k, v in feed.items()})["change_prob"].numpy()
    return float(np.round(prob * 254).mean() / 254)

  robust, mean_std = expected_mean(0), expected_mean(1)
  assert abs(robust - mean_std) > 0.05  # the two rules give different maps here
  got = {}
  for mode, path in tiny_models.items():
    out = str(tmp_path / f"out-{mode}")
    summary = sweep_main.run(["--input", str(archive), "--output", out, "--run_id", "t",
                              "--model", path, "--chip_overlap", "0", "--no_maps",
                              "--no_report"])
    assert summary["counts"]["pairs"] == 1 and summary["accounting"]["ok"]
    (row,) = read_jsonl_rows(out, "pairs")
    got[mode] = row["mean_change_prob"]
  assert got["archive_optical_robust"] == pytest.approx(robust, abs=2e-3)
  assert got["archive_optical"] == pytest.approx(mean_std, abs=2e-3)
