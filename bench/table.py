"""The figures table of bench/README.md, written from bench/results/*.json (never typed).

    python bench/table.py            # rewrite the table between its markers
    python bench/table.py --check    # exit 1 when the README's table is not the results'

`run_all.py` calls it after a full run. Each row names the result file and field it comes
from; a section that has not been measured yet shows "not measured".
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import common  # noqa: E402
RESULTS = os.path.join(ROOT, "bench", "results")
README = os.path.join(ROOT, "bench", "README.md")
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
STEPS_START, STEPS_END = "<!-- steps:start -->", "<!-- steps:end -->"
TOP_STEPS = 10


def load(name: str) -> dict | None:
  path = os.path.join(RESULTS, f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _fmt(value, spec: str = "") -> str:
  return "not measured" if value is None else format(value, spec)


def rows() -> list[tuple[str, str, str, str, str]]:
  """`(figure, measured, must, goal, source)` per row of the streaming issue's table."""
  o, io, m, s, st, fr, fl, rm = (load(n) for n in (
      "overhead", "io_bound", "memory", "scaling", "startup", "flush_race", "floor",
      "running_modes"))
  out = []
  if o:
    out.append(("sweep / bare model throughput, learned model, 12 pairs of 1024^2, 2 workers, "
                "at the margin", _fmt(o.get("ratio_marginal"), ".2f"), "0.85", "0.95",
                "overhead.json `ratio_marginal`"))
    out.append(("the same over the whole run (start-up included)",
                _fmt(o.get("ratio_whole_run"), ".2f"), "0.60", "0.80",
                "overhead.json `ratio_whole_run`"))
  if io:
    out.append(("CVA sweep / plain rasterio+numpy script, 24 pairs of 1024^2, at the margin "
                "(whole run)", f"{_fmt(io.get('ratio_marginal'), '.2f')}x "
                f"({_fmt(io.get('ratio_whole_run'), '.2f')}x)", "2.0x (4x)", "1.3x (2x)",
                "io_bound.json `ratio_marginal`, `ratio_whole_run`"))
  if m:
    big = max(r["scene_px"] for r in m["rows"])
    at_big = [r for r in m["rows"] if r["scene_px"] == big]
    worker = max(r["largest_worker_peak_mb"] for r in at_big)
    main = max(r["main_peak_mb"] for r in at_big)
    growth = max(v["growth"] for v in m["verdicts"].values() if v.get("growth") is not None)
    recorded = all(r.get("chips_lost") is not None for r in at_big)
    lost = sum(1 for r in at_big if r.get("chips_lost") or r.get("pairs_scored") != 1)
    out.append((f"peak RSS of the largest worker, one {big}^2 pair (maps on and off)",
                f"{worker:,.0f} MB", "1,500 MB", "1,000 MB",
                "memory.json rows `largest_worker_peak_mb`"))
    out.append((f"growth of that peak from {m['rows'][0]['scene_px']}^2 to {big}^2",
                f"{growth:+.0%}", "< 25%", "< 10%", "memory.json verdicts `growth`"))
    out.append((f"runner (main) process peak at {big}^2", f"{main:,.0f} MB", "1,500 MB", "",
                "memory.json rows `main_peak_mb`"))
    out.append((f"{big}^2 runs that lost chips with 2 workers",
                f"{lost} of {len(at_big)}" if recorded else "not recorded", "0 of 3",
                "0", "memory.json rows `chips_lost`, `pairs_scored`"))
  if fr:
    runs = fr["runs"]
    sent = fr["sources"] * fr["elements_per_source"]

    def losing(name: str) -> str:
      each = ", ".join(f"{r['lost']:,}" for r in runs[name])
      return (f"{fr['runs_losing'][name]} of {len(runs[name])} runs lost elements "
              f"({each} of {sent:,})")

    out.append(("the loss's cause, reproduced without the sweep: a 2-worker Flatten of "
                f"{sent:,} payloads of {fr['payload_bytes']:,} bytes, Beam's timed data-plane "
                "flush vs the sweep's `untimed_data_plane`",
                f"{losing('beam_default')}; guarded: {losing('untimed_data_plane')}; the "
                f"class alone, 1 ms timer: {fr['class_level']['lost_fraction']:.0%} of "
                f"{fr['class_level']['written_bytes'] / 1e6:.0f} MB lost",
                "0 lost, guarded", "", "flush_race.json `runs_losing`, `elements_lost`"))
  if s:
    compared = s.get("compared", list(s["slope_s_per_pair"]))
    slopes = [v for k, v in s["slope_s_per_pair"].items()
              if k in compared and k not in s.get("unresolved", [])]
    out.append(("time per pair, 10 -> 100 vs 100 -> 1000 pairs (CVA, 256^2 scenes)",
                f"{s['spread']:.1%} apart ({', '.join(f'{v * 1000:.1f}' for v in slopes)} "
                f"ms/pair)" + (f"; CPU time {s['cpu_spread']:.1%} apart ("
                               + ", ".join(f"{s['cpu_slope_s_per_pair'][k] * 1000:.0f}"
                                           for k in compared) + " ms/pair)"
                               if s.get("cpu_spread") is not None else ""),
                "10%", "5%", "scaling.json `spread`" + (", `cpu_spread`"
                                                         if s.get("cpu_spread") is not None
                                                         else "")))
  if st:
    out.append(("start-up of a local sweep (1 pair, default model, report included; "
                f"`import tensorflow` alone: {st['import_tensorflow_s']} s)",
                f"{st['headline_s']:.1f} s", "8 s", "5 s", "startup.json `headline_s`"))
  if fl:
    md = fl["median_s"]
    out.append(("the floor under that start-up: fresh processes, `import tensorflow` / the "
                "imports of a scoring sweep / those and one RunInference step scoring one chip "
                "with the default model / the 1-pair sweep without and with its report",
                f"{md['import_tensorflow']} / {md['imports']} / {md['one_step_pipeline']} / "
                f"{md['sweep']} / {md['sweep_report']} s", "", "",
                "floor.json `median_s`"))
  if rm:
    def modes(name: str) -> str:
      a = rm["archives"][name]
      return ", ".join(f"{m} {a[m]['wall_s']} s" for m in ("in_memory", "multi_threading",
                                                            "multi_processing"))
    out.append(("local running modes, 1 pair and 12 pairs of 1024^2 (learned model, maps on), "
                "median wall time",
                f"1 pair: {modes('small')}; 12 pairs: {modes('big')}; "
                f"{rm['pairs_scored']} of {rm['pairs_planned']} pairs scored, "
                f"{rm['chips_lost']} chips lost", "", "",
                "running_modes.json `archives`, `pairs_scored`, `chips_lost`"))
  return out


def table() -> str:
  lines = ["| figure | measured | must | goal | from |", "|---|---|---|---|---|"]
  lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows()]
  return "\n".join(lines)


def _step_name(step: str) -> str:
  """A step's name without its model branch (`Score[model]/`) or Beam's repeated ParDo."""
  name = step.split("]/", 1)[1] if step.startswith("Score[") else step
  parts = name.split("/")
  return "/".join(p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1])


def steps_table() -> str:
  """Seconds per step of the N-pair sweeps of benchmarks 1 and 2 (run.json `step_seconds`)."""
  sources = []
  o, io = load("overhead"), load("io_bound")
  if o and (o.get("sweep", {}).get("runs", {}).get("big") or {}).get("step_seconds"):
    big = o["sweep"]["runs"]["big"]
    sources.append(("overhead.json, learned model", big, big["counts"]["chips"]))
  if io and ((io.get("runs", {}).get("big") or {}).get("sweep") or {}).get("step_seconds"):
    big = io["runs"]["big"]["sweep"]
    sources.append(("io_bound.json, CVA", big, big["counts"]["chips"]))
  if not sources:
    return "not measured (run `python bench/run_all.py`)"
  lines = []
  for title, run, chips in sources:
    cpu = f", {run['cpu_s']} s of CPU in all" if run.get("cpu_s") is not None else ""
    lines += [f"**{title}**: {chips} chips, {run['wall_s']} s wall{cpu}; the busiest "
              f"{min(TOP_STEPS, len(run['step_seconds']))} steps, summed over both workers:",
              "", "| step | s | ms per chip |", "|---|---|---|"]
    for step, sec in list(run["step_seconds"].items())[:TOP_STEPS]:
      lines.append(f"| `{_step_name(step)}` | {sec:.2f} | {1000 * sec / chips:.1f} |")
    lines.append("")
  return "\n".join(lines).rstrip()


def rewrite(text: str) -> str:
  try:
    text = common.with_section(text, STEPS_START, STEPS_END, steps_table())
    return common.with_section(text, START, END, table())
  except ValueError as e:
    raise SystemExit(f"{README}: {e}") from None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true")
  args = parser.parse_args(argv)
  with open(README) as f:
    text = f.read()
  new = rewrite(text)
  if args.check:
    if new != text:
      print("bench/README.md's figures table is stale: run python bench/table.py",
            file=sys.stderr)
      return 1
    return 0
  with open(README, "w") as f:
    f.write(new)
  print(f"wrote the figures table of {README}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
