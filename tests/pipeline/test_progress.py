"""Progress: the pure line formatter and the transform's counters and log lines."""
import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline

from changesweep.pipeline.progress import ReportProgress, progress_line


@pytest.mark.parametrize("done,total,elapsed,expected", [
    (1, 16, 0.0, "changesweep: chips done 1/16 (6%)"),
    (16, 16, 1.5, "changesweep: chips done 16/16 (100%), 10.0/s"),
    (3, 0, 1.0, "changesweep: chips done 3, 2.0/s"),
    (3, None, 0.0, "changesweep: chips done 3"),
])
def test_progress_line(done, total, elapsed, expected):
  assert progress_line("chips", done, total, elapsed) == expected


def test_report_progress_counts_done_against_planned(capsys):
  p = test_pipeline.TestPipeline(runner="FnApiRunner")
  planned = p | "Plan" >> beam.Create(range(5))
  done = planned | "Work" >> beam.Filter(lambda x: x < 3)
  _ = done | ReportProgress("items", planned, interval_s=0)
  result = p.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed for c in result.metrics().query(
      MetricsFilter().with_namespace("changesweep.progress"))["counters"]}
  assert counters == {"items_done": 3, "items_planned": 5}
  err = capsys.readouterr().err
  assert "changesweep: planned 5 items" in err
  assert "changesweep: items done 3/5 (60%)" in err


def test_report_progress_validates():
  with pytest.raises(ValueError, match="interval_s"):
    ReportProgress("items", None, interval_s=-1)
  with pytest.raises(ValueError, match="snake_case"):
    ReportProgress("two words", None)
