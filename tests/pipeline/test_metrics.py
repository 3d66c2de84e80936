"""Where a run's seconds went: Beam's execution-time counters, summed per step over workers."""
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName

from changesweep.pipeline import metrics


class _Result:
  """A finished pipeline as `step_seconds` sees it: monitoring metrics, one counter per worker."""

  def __init__(self, counters):
    self._counters = counters

  def monitoring_metrics(self):
    return self

  def query(self):
    return {"counters": self._counters}


def _msecs(step, msecs, name=metrics.EXECUTION_TIME, namespace="beam"):
  return MetricResult(MetricKey(step, MetricName(namespace, name)), msecs, msecs)


def test_step_seconds_sums_workers_drops_small_steps_and_sorts_largest_first():
  result = _Result([
      _msecs("Score/ReadChips", 300), _msecs("Score/ReadChips", 250),  # two workers
      _msecs("Score/FinishPairs", 900),
      _msecs("Progress/Tick", 20),  # under the floor
      _msecs("Score/ReadChips", 5000, name="other_counter"),  # not execution time
      _msecs("Score/ReadChips", 5000, namespace="changesweep.scoring"),
  ])
  assert metrics.step_seconds(result) == {"Score/FinishPairs": 0.9, "Score/ReadChips": 0.55}
  assert list(metrics.step_seconds(result, min_seconds=0)) == [
      "Score/FinishPairs", "Score/ReadChips", "Progress/Tick"]


def test_a_runner_without_monitoring_metrics_gives_no_steps():
  assert metrics.step_seconds(object()) == {}
