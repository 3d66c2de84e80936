"""Dead letters by reason, and the verdict that fails a run where one cause took everything."""
from __future__ import annotations

import pytest

from changesweep.pipeline import failures


@pytest.mark.parametrize("a,b", [
    ("pair with /data/a/2020-01-01.tif: reading chip 3 failed: RasterioIOError: x (2 chip(s) "
     "failed)", "pair with /mnt/b/2021-05-06.tif: reading chip 12 failed: RasterioIOError: x "
     "(1 chip(s) failed)"),
    ("pair with gs://b/a.tif;gs://b/c.tif: inference failed: 'AttributeError' object",
     "pair with gs://other/x/y.tif;gs://other/x/z.tif: inference failed: 'AttributeError' "
     "object"),
    ("unusable: 3.2% of pixels are valid (nodata, cloud or masked), below the 10% needed",
     "unusable: 0.0% of pixels are valid (nodata, cloud or masked), below the 30% needed"),
    ("same location and capture time as /a/x.tif (2020-02-01T00:00:00); kept that one",
     "same location and capture time as /b/y.tif (2019-12-31T10:11:12); kept that one"),
])
def test_reasons_that_differ_only_in_files_times_and_numbers_are_one(a, b):
  assert failures.normalize_reason(a) == failures.normalize_reason(b)
  assert "/" not in failures.normalize_reason(a).replace("(s)", "")


def test_distinct_causes_stay_distinct_and_band_names_survive():
  a = failures.normalize_reason("the capture lacks band 'B08'")
  assert a != failures.normalize_reason("the capture lacks band 'B04'")
  assert "B08" in a


def rows(n, reason, stage="scoring"):
  return [{"uri": f"/a/{i}.tif", "stage": stage, "reason": reason.format(i=i)} for i in range(n)]


def test_by_reason_counts_groups_most_frequent_first():
  groups = failures.by_reason(rows(400, "pair with /a/{i}.tif: inference failed: boom")
                              + rows(2, "not a readable raster ({i})", "metadata"))
  assert [(g["count"], g["stage"]) for g in groups] == [(400, "scoring"), (2, "metadata")]
  assert failures.format_reason(groups[0]) == (
      "400 captures: pair with <path>: inference failed: boom (scoring)")
  assert groups[0]["example"] == "pair with /a/0.tif: inference failed: boom"


@pytest.mark.parametrize("scored,dead,other,fails", [
    (0, 4, 0, True),       # every pair failed the same way
    (1, 9, 0, True),       # 90%
    (2, 9, 0, False),      # 82%: mostly, not nearly all
    (0, 5, 5, False),      # two causes
    (10, 0, 0, False),     # nothing failed
    (0, 0, 0, False),      # nothing at all (first captures only)
])
def test_a_run_fails_when_one_reason_takes_nearly_everything(scored, dead, other, fails):
  groups = failures.by_reason(rows(dead, "pair with /a/{i}.tif: inference failed: boom")
                              + rows(other, "unusable: {i}% valid", "usability"))
  verdict = failures.run_failure(scored, groups)
  assert (verdict is not None) == fails
  if fails:
    assert "\n" not in verdict and "inference failed: boom" in verdict


def test_beams_inference_errors_read_as_error_and_message():
  raw = ("pair with /a/x.tif: inference failed: (<class 'RuntimeError'>, \"RuntimeError('OOM "
         "when allocating tensor')\", ['Traceback (most recent call last):\\n', ' File \"/x.py\""
         ", line 3, in f\\n  r (1 chip(s) failed)")
  assert failures.tidy_reason(raw) == (
      "pair with /a/x.tif: inference failed: RuntimeError: OOM when allocating tensor "
      "(1 chip(s) failed)")
