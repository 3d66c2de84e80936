"""One helper, one scheme: counters in namespace `changesweep.<stage>`, names with units."""
from __future__ import annotations

import contextlib
import time

from apache_beam.metrics import Metrics

NAMESPACE = "changesweep"


def inc_counter(stage: str, name: str, value: int = 1) -> None:
  Metrics.counter(f"{NAMESPACE}.{stage}", name).inc(value)


@contextlib.contextmanager
def timer_msec(stage: str, name: str):
  """Adds the block's wall time in milliseconds to a distribution."""
  start = time.perf_counter()
  try:
    yield
  finally:
    Metrics.distribution(f"{NAMESPACE}.{stage}", name).update(
        int((time.perf_counter() - start) * 1000))


def counters_of(result) -> dict[str, int]:
  """`{"stage/name": total}` of every changesweep counter of a finished pipeline."""
  from apache_beam.metrics.metric import MetricsFilter

  out = {}
  for c in result.metrics().query(MetricsFilter())["counters"]:
    ns = c.key.metric.namespace
    if ns.startswith(NAMESPACE):
      key = f"{ns[len(NAMESPACE) + 1:]}/{c.key.metric.name}"
      out[key] = out.get(key, 0) + (c.committed if c.committed is not None else c.attempted)
  return dict(sorted(out.items()))


EXECUTION_TIME = "metric:ptransform_execution_time:total_msecs:v1"


def step_seconds(result, min_seconds: float = 0.05) -> dict[str, float]:
  """Seconds each step of the graph spent on its elements, summed over workers, largest first.

  These are Beam's own execution-time metrics (a sampler in every worker attributes its time
  to the step running, every 200 ms); the local runner reports them, a runner that does not
  gives `{}`. Steps under `min_seconds` are left out; below a few tenths of a second a figure
  says more about where the sampler's ticks fell than about the step.
  """
  try:
    counters = result.monitoring_metrics().query()["counters"]
  except (AttributeError, NotImplementedError, KeyError):
    return {}
  totals: dict[str, float] = {}
  for c in counters:
    if c.key.metric.namespace == "beam" and c.key.metric.name == EXECUTION_TIME and c.key.step:
      msecs = c.committed if c.committed is not None else c.attempted
      totals[c.key.step] = totals.get(c.key.step, 0.0) + (msecs or 0) / 1000.0
  return {step: round(s, 2) for step, s in sorted(totals.items(), key=lambda kv: -kv[1])
          if s >= min_seconds}
