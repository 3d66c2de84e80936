"""Nights read only what is new: bytes the listing reads on three incremental nights.

Night 1 sweeps an archive with `--state` (every file is read: header and decimated usability
read). Night 2 runs again with no new capture: every file is known from the state, so no
raster is opened. Night 3 adds one capture: only that file is read. The figures are the
sweep's own counters (`listing/bytes_read`: bytes GDAL read through a counting file object,
`listing/rasters_opened`, `listing/files_known`), from each night's run.json.

    python bench/incremental_night.py           # 12 locations x 2 captures of 1024^2, 2 workers
    python bench/incremental_night.py --smoke   # tiny, in process: proves the script runs
    python bench/incremental_night.py --check   # exit 1 when the README table is stale

Writes `bench/results/incremental_night[.smoke].json` and (full runs) the table between the
`incremental-night` markers of `bench/README.md`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

README = os.path.join(common.ROOT, "bench", "README.md")
START, END = "<!-- incremental-night:start -->", "<!-- incremental-night:end -->"
NEW_DATE = "2022-01-01.tif"


def night(archive: str, output: str, state: str, workers: int, smoke: bool, what: str) -> dict:
  """One incremental sweep; its listing cost, pairs and losses from its run.json."""
  run = common.run_sweep(archive, output, common.CVA_MODEL, workers=workers, maps=False,
                         extra=["--state", state, "--statistics", "model"], in_process=smoke)
  with open(os.path.join(output, "run.json")) as f:
    summary = json.load(f)
  return {"night": what, **summary["listing"], "wall_s": run["wall_s"],
          "pairs_scored": run["pairs_scored"], "chips_lost": run["chips_lost"],
          "accounting_ok": summary["accounting"]["ok"], "command": run["command"]}


def run(smoke: bool = False, locations: int = 12, size: int = 1024, keep: bool = False) -> dict:
  if smoke:
    locations, size = 2, 256
  workers = 1 if smoke else 2
  tmp = common.scratch("incremental")
  archive, state = os.path.join(tmp, "archive"), os.path.join(tmp, "state.jsonl")
  try:
    common.write_archive(archive, locations, size)
    old_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(archive)
                    for f in fs)
    nights = [night(archive, os.path.join(tmp, "night1"), state, workers, smoke,
                    "first (state empty)"),
              night(archive, os.path.join(tmp, "night2"), state, workers, smoke,
                    "second, no new capture")]
    new = common.write_scene(os.path.join(archive, "loc00000", NEW_DATE), size, 0, True)
    new_bytes = os.path.getsize(new)
    nights.append(night(archive, os.path.join(tmp, "night3"), state, workers, smoke,
                        "third, one new capture"))
    state_bytes = os.path.getsize(state)
  finally:
    if not keep:
      common.remove(tmp)
  first, idle, one = nights
  return {
      "benchmark": "incremental_night", "smoke": smoke, "model": "model/shipped/cva-s2",
      "workers": workers,
      "archive": {"locations": locations, "captures": 2 * locations, "scene_px": size,
                  "bytes_on_disk": old_bytes, "new_capture_bytes": new_bytes,
                  "synthetic": "4-band uint16 GeoTIFF, tiled 256, uncompressed"},
      "nights": nights, "state_file_bytes": state_bytes,
      "pairs_scored": sum(n["pairs_scored"] for n in nights),
      "chips_lost": sum(n["chips_lost"] for n in nights),
      "target": "night 2 opens no raster and reads 0 bytes; night 3 reads only the new file",
      "target_met": (idle["rasters_opened"] == 0 and idle["bytes_read"] == 0
                     and one["files_read"] == 1 and one["bytes_read"] <= 2 * new_bytes
                     and all(n["accounting_ok"] for n in nights)),
  }


def table(result: dict) -> str:
  a = result["archive"]
  lines = [f"`python bench/incremental_night.py`: {a['locations']} locations x 2 captures of "
           f"{a['scene_px']}² ({a['bytes_on_disk'] / 2 ** 20:.0f} MiB on disk), CVA, "
           f"{result['workers']} workers, `--state`; night 3 adds one capture "
           f"({a['new_capture_bytes'] / 2 ** 20:.1f} MiB). Counters from each night's "
           f"run.json; the state file is {result['state_file_bytes'] / 1024:.1f} KiB. Wall "
           f"times are noisy (load average {result.get('machine', {}).get('load_avg_1m')} on "
           f"{result.get('machine', {}).get('cores')} cores when it ran): compare bytes.", "",
           "| night | files listed | known from the state | read | rasters opened | "
           "bytes read | pairs scored | chips lost | wall s |", "|---|---|---|---|---|---|---|---|---|"]
  for n in result["nights"]:
    lines.append(f"| {n['night']} | {n['files_matched']} | {n['files_known']} | "
                 f"{n['files_read']} | {n['rasters_opened']} | {n['bytes_read']:,} | "
                 f"{n['pairs_scored']} | {n['chips_lost']} | {n['wall_s']} |")
  return "\n".join(lines)


def readme_with(result: dict, readme: str) -> str:
  return common.with_section(readme, START, END, table(result), "Nights read only what is new")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--check", action="store_true")
  parser.add_argument("--locations", type=int, default=12)
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--keep", action="store_true", help="keep the synthetic archive")
  args = parser.parse_args(argv)
  with open(README) as f:
    readme = f.read()
  if args.check:
    with open(os.path.join(common.RESULTS_DIR, "incremental_night.json")) as f:
      return 0 if readme_with(json.load(f), readme) == readme else 1
  result = run(args.smoke, args.locations, args.size, args.keep)
  result["machine"] = common.machine()
  print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
  print("wrote", common.save("incremental_night", result, args.smoke))
  if not args.smoke:
    with open(README, "w") as f:
      f.write(readme_with(result, readme))
    print(table(result))
  return 0 if result["target_met"] else 1


if __name__ == "__main__":
  sys.exit(main())
