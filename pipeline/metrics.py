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
