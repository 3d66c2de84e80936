"""Shared pieces of the benchmarks: synthetic archives, sweeps in a subprocess, RSS sampling.

Every benchmark script imports this module; none of it is used by the pipeline.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

PYTHON = sys.executable
# BENCH_RESULTS redirects the JSON results (the smoke test writes them to a temp dir).
RESULTS_DIR = os.environ.get("BENCH_RESULTS") or os.path.join(ROOT, "bench", "results")
CVA_MODEL = os.path.join(ROOT, "model", "shipped", "cva-s2")
SHIPPED = os.path.join(ROOT, "model", "shipped")
BANDS = ("B02", "B03", "B04", "B08")
TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def learned_model() -> str | None:
  """The shipped fixed-band learned model directory (kind "learned"), or None when none has
  landed (the benchmarks time the bare model on fixed bands; the any-band model is costed by
  `model_cost`)."""
  if not os.path.isdir(SHIPPED):
    return None
  for name in sorted(os.listdir(SHIPPED)):
    meta = os.path.join(SHIPPED, name, "metadata.json")
    try:
      with open(meta) as f:
        meta_json = json.load(f)
        if meta_json.get("kind") == "learned" and meta_json.get("band_mode") != "any":
          return os.path.join(SHIPPED, name)
    except (OSError, ValueError):
      continue
  return None


def model_for_throughput() -> tuple[str, str]:
  """`(model_dir, note)`: the learned model when it is there, else CVA (and the note says so)."""
  path = learned_model()
  if path:
    return path, "learned model"
  return CVA_MODEL, "learned model not found: fell back to CVA"


# ---------------------------------------------------------------------------------------------
# Synthetic archives


def write_scene(path: str, size: int, seed: int, change: bool = False, compress: str | None = None,
                strip: int = 256) -> str:
  """Writes one 4-band uint16 GeoTIFF (B02, B03, B04, B08), tiled 256, strip by strip.

  The scene is a smooth pattern plus noise; with `change`, some squares are brighter (the
  same pattern for a seed, so a before/after pair differs there and by noise). Memory used
  while writing is one strip of 256 rows, whatever the scene size.
  """
  import rasterio
  from rasterio.transform import Affine
  from rasterio.windows import Window

  os.makedirs(os.path.dirname(path), exist_ok=True)
  profile = dict(driver="GTiff", height=size, width=size, count=4, dtype="uint16",
                 crs="EPSG:32631", transform=Affine(10.0, 0, 500000.0, 0, -10.0, 4800000.0),
                 tiled=size >= 256, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
  if compress:
    profile["compress"] = compress
  xs = np.arange(size, dtype=np.float32)
  rng = np.random.default_rng(seed * 7919 + change)
  squares = np.random.default_rng(seed).integers(0, max(1, size - 64), (max(1, size // 512), 2))
  with rasterio.open(path, "w", **profile) as dst:
    for row0 in range(0, size, strip):
      rows = min(strip, size - row0)
      ys = np.arange(row0, row0 + rows, dtype=np.float32)[:, None]
      data = np.empty((4, rows, size), np.uint16)
      for b in range(4):
        base = 1200 + 400 * np.sin(xs / (40 + 7 * b) + seed) * np.cos(ys / (55 + 5 * b))
        plane = base + rng.normal(0, 30, (rows, size)).astype(np.float32)
        if change:
          for r, c in squares:
            if r < row0 + rows and r + 64 > row0:
              plane[max(0, r - row0):min(rows, r + 64 - row0), c:c + 64] += 1500
        data[b] = plane.clip(1, 60000)
      dst.write(data, window=Window(0, row0, size, rows))
    dst.descriptions = BANDS
  return path


def write_archive(root: str, pairs: int, size: int, compress: str | None = None) -> str:
  """`pairs` locations of two captures each under `root/{location}/{date}.tif`."""
  for i in range(pairs):
    loc = os.path.join(root, f"loc{i:05d}")
    write_scene(os.path.join(loc, "2020-01-01.tif"), size, i, False, compress)
    write_scene(os.path.join(loc, "2021-01-01.tif"), size, i, True, compress)
  return root


def chips_per_pair(size: int, chip: int = 256, overlap: int = 16) -> int:
  from changesweep.transforms import tiling

  return len(tiling.chip_grid(size, size, chip, overlap))


def scratch(prefix: str) -> str:
  return tempfile.mkdtemp(prefix=f"changesweep-bench-{prefix}-", dir=os.environ.get("BENCH_TMP"))


# ---------------------------------------------------------------------------------------------
# Running sweeps and measuring them


class TreeSampler:
  """Samples the RSS of a process and all its descendants every `interval_s` seconds.

  Records, per sample, the sum over the tree; per process, its own peak. `peaks()` gives the
  peak of the tree, of the root process and of the largest other process (a Beam worker).
  """

  def __init__(self, pid: int, interval_s: float = 0.05, kill_over_mb: float | None = None):
    import psutil

    self._root = psutil.Process(pid)
    # On a shared machine a runaway sweep must not take the others down: over this many MB
    # (whole tree) the tree is killed and `killed_over_mb` says so.
    self._kill_over = kill_over_mb * 2 ** 20 if kill_over_mb else None
    self.killed_over_mb = None
    self._interval = interval_s
    self._stop = threading.Event()
    self.tree_peak = 0
    self.per_pid: dict[int, tuple[int, str]] = {}
    self._thread = threading.Thread(target=self._run, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  def _run(self):
    import psutil

    while not self._stop.is_set():
      try:
        procs = [self._root] + self._root.children(recursive=True)
      except psutil.NoSuchProcess:
        return
      total = 0
      for p in procs:
        try:
          rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
          continue
        total += rss
        if rss > self.per_pid.get(p.pid, (0, ""))[0]:
          try:
            name = " ".join(p.cmdline()[1:4])[:80]
          except (psutil.NoSuchProcess, psutil.AccessDenied):
            name = "?"
          self.per_pid[p.pid] = (rss, name)
      self.tree_peak = max(self.tree_peak, total)
      if self._kill_over and total > self._kill_over and self.killed_over_mb is None:
        self.killed_over_mb = mb(self._kill_over)
        for p in reversed(procs):
          try:
            p.kill()
          except psutil.Error:
            pass
      self._stop.wait(self._interval)

  def peaks(self) -> dict:
    root = self.per_pid.get(self._root.pid, (0, ""))[0]
    others = [(rss, name) for pid, (rss, name) in self.per_pid.items() if pid != self._root.pid]
    worker = max(others, default=(0, ""))
    return {"tree_peak_mb": mb(self.tree_peak), "main_peak_mb": mb(root),
            "largest_worker_peak_mb": mb(worker[0]), "processes_seen": len(self.per_pid),
            "killed_over_mb": self.killed_over_mb}


def mb(nbytes: int | float) -> float:
  return round(nbytes / 2 ** 20, 1)


def run_sweep(archive: str, output: str, model: str, workers: int = 2, maps: bool = False,
              extra: list[str] | None = None, sample_rss: bool = False, timeout: int = 3600,
              in_process: bool = False, kill_over_mb: float | None = None,
              env: dict[str, str] | None = None) -> dict:
  """Runs `python -m changesweep.pipeline sweep` in a subprocess; returns wall time, counts and RSS peaks.

  `env` adds variables to the sweep's environment.

  With `in_process` (smoke runs: no interpreter and TensorFlow start-up per sweep), the sweep
  runs in this process through `pipeline.main.run`, and RSS is that of this process.

  Raises:
    RuntimeError: the sweep failed (its stderr tail is in the message).
  """
  cmd = [PYTHON, "-m", "changesweep.pipeline", "sweep", "--input", archive, "--output", output,
         "--model", model, "--no_report", "--run_id", "bench"]
  if not maps:
    cmd.append("--no_maps")
  if workers > 1:
    cmd += ["--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing"]
  cmd += extra or []
  if in_process:
    return _run_sweep_in_process(cmd[4:], output)
  start, cpu_start = time.perf_counter(), children_cpu_s()
  proc = subprocess.Popen(cmd, cwd=ROOT, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  if sample_rss:
    with TreeSampler(proc.pid, kill_over_mb=kill_over_mb) as sampler:
      out, err = proc.communicate(timeout=timeout)
    if sampler.killed_over_mb:
      return {"wall_s": round(time.perf_counter() - start, 2), "counts": None,
              "command": " ".join(cmd[1:]), "rss": sampler.peaks()}
  else:
    sampler = None
    out, err = proc.communicate(timeout=timeout)
  wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu_start
  if proc.returncode != 0:
    raise RuntimeError(f"sweep failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
  with open(os.path.join(output, "run.json")) as f:
    summary = json.load(f)
  result = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "counts": summary["counts"],
            **losses(summary),
            "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c
                                for c in cmd[1:])}
  if summary.get("step_seconds"):  # the busiest steps (Beam's execution-time metrics)
    result["step_seconds"] = dict(list(summary["step_seconds"].items())[:12])
  if sampler:
    result["rss"] = sampler.peaks()
  return result


def children_cpu_s() -> float:
  """User + system CPU seconds of this process's finished children and theirs.

  A sweep's worker processes are waited for by the sweep, so the difference around one sweep
  is the CPU time of its whole process tree (interpreter, runner and workers): a figure that,
  unlike wall time, does not move when another job shares the cores.
  """
  import resource
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def losses(summary: dict) -> dict:
  """Pairs scored and chips lost (planned but in no scored pair) of a clean bench archive."""
  m = summary.get("metrics", {})
  return {"pairs_scored": summary["counts"]["pairs"],
          "pairs_planned": m.get("progress/pairs_planned"),
          "chips_lost": m.get("progress/chips_planned", 0) - summary["counts"]["chips"]}


def _run_sweep_in_process(argv: list[str], output: str) -> dict:
  from changesweep.pipeline import main as sweep_main

  argv = [a for a in argv if a != "--no_report"]  # report writing is main()'s, not run()'s
  start = time.perf_counter()
  with TreeSampler(os.getpid()) as sampler:
    summary = sweep_main.run(argv)
  return {"wall_s": round(time.perf_counter() - start, 2), "counts": summary["counts"],
          **losses(summary), "command": "in process: pipeline.main.run(" + " ".join(argv) + ")",
          "rss": sampler.peaks()}


def machine() -> dict:
  """The machine and software the figures were taken on, and whether it was shared."""
  import psutil

  cpu = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  versions = {}
  for mod in ("tensorflow", "apache_beam", "tensorflow_transform", "rasterio", "numpy"):
    try:
      versions[mod] = __import__(mod).__version__
    except Exception:  # a missing module is reported, not fatal
      versions[mod] = None
  return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
          "gpu": "none", "python": platform.python_version(), "os": platform.platform(),
          "versions": versions, "load_avg_1m": round(os.getloadavg()[0], 2),
          "other_busy_processes": busy_processes()}


def busy_processes(threshold: float = 20.0) -> list[str]:
  """Processes outside this benchmark using more than `threshold`% CPU (a shared machine)."""
  import psutil

  mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
  procs = list(psutil.process_iter(["pid", "cmdline"]))
  for p in procs:
    try:
      p.cpu_percent(None)
    except psutil.Error:
      pass
  time.sleep(1.0)
  busy = []
  for p in procs:
    try:
      if p.pid not in mine and p.cpu_percent(None) > threshold:
        busy.append(scrub_command(p.info["cmdline"] or [])[:120])
    except psutil.Error:
      pass
  return busy


def scrub_command(argv: list[str]) -> str:
  """A command line without this machine's folders (absolute paths reduced to their last part)."""
  return " ".join(os.path.basename(a.rstrip("/")) if os.path.isabs(a) else a for a in argv)


def with_section(text: str, start: str, end: str, body: str, heading: str | None = None) -> str:
  """`text` with `body` between the `start` and `end` markers (a README's generated table).

  Without the markers the section is appended under `## heading`, or, with no heading,
  ValueError is raised.
  """
  if start not in text or end not in text:
    if heading is None:
      raise ValueError(f"no {start} ... {end} markers")
    text = text.rstrip() + f"\n\n## {heading}\n\n{start}\n{end}\n"
  head, rest = text.split(start, 1)
  _, tail = rest.split(end, 1)
  return f"{head}{start}\n{body}\n{end}{tail}"


def save(name: str, result: dict, smoke: bool) -> str:
  """Writes `bench/results/<name>[.smoke].json` and returns its path."""
  os.makedirs(RESULTS_DIR, exist_ok=True)
  path = os.path.join(RESULTS_DIR, f"{name}{'.smoke' if smoke else ''}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  return path


def remove(path: str) -> None:
  shutil.rmtree(path, ignore_errors=True)


def median_item(items: list[dict], key: str) -> dict:
  """A copy of the item with the median `key` (the lower one for an even count)."""
  ordered = sorted(items, key=lambda item: item[key])
  return dict(ordered[(len(ordered) - 1) // 2])


def median_run(runs: list[dict]) -> dict:
  """The run with the median wall time of repeated sweeps of one archive, with every run's
  wall and CPU times beside it (`walls_s`, `cpus_s`): one sweep on this machine moves by
  10-20% between repeats, more than the figures' margins."""
  median = median_item(runs, "wall_s")
  median["walls_s"] = [r["wall_s"] for r in runs]
  if all("cpu_s" in r for r in runs):
    median["cpus_s"] = [r["cpu_s"] for r in runs]
  return median
