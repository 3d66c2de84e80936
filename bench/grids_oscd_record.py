"""Records sweeps over the issue-17 archive (bench/grids_oscd.py) as one result JSON.

  python bench/grids_oscd_record.py [--score_sweep PATH] OSCD_TEST_DIR RESULT_JSON \
      NAME=SWEEP_OUT[=COMMAND] ...

For each sweep: the pooled scores of ../shared/tools/score_sweep.py (run as it is), and per city
the F1 by the same rule (flagged: probability >= the row's threshold, nodata not flagged), the
measured shift and whether it was corrected or flagged, and the sweep's wall time from its log
when SWEEP_OUT.log holds a "seconds=N" line.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import rasterio

# ../shared/tools/score_sweep.py beside the main checkout.
SCORE_SWEEP = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tools" / "score_sweep.py"


def rows_of(out: pathlib.Path) -> list[dict]:
  return [json.loads(line) for p in sorted((out / "pairs").glob("*.jsonl"))
          for line in p.read_text().splitlines() if line.strip()]


def city_f1(row: dict, test: pathlib.Path) -> float:
  with rasterio.open(row["change_map_uri"]) as m:
    q = m.read(1)
  with rasterio.open(test / row["location"] / "cm.png") as c:
    label = c.read(1) > 127
  flag = (q != 255) & (q.astype(np.float32) / 254 >= row["threshold"])
  tp, fp, fn = (int((flag & label).sum()), int((flag & ~label).sum()),
                int((~flag & label).sum()))
  return round(2 * tp / max(1, 2 * tp + fp + fn), 4)


def record(name: str, out: pathlib.Path, command: str, test: pathlib.Path,
           score_sweep: pathlib.Path = SCORE_SWEEP) -> dict:
  pooled = json.loads(subprocess.run([sys.executable, str(score_sweep), str(out), str(test)],
                                     check=True, capture_output=True, text=True
                                     ).stdout.strip().splitlines()[-1])
  log = out.with_name(out.name + ".log")
  seconds = re.findall(r"seconds=(\d+)", log.read_text()) if log.exists() else []
  cities = {r["location"]: {"f1": city_f1(r, test), "shift_px": r["shift_px"],
                            "coregistered": r["coregistered"],
                            "shift_flagged": r["shift_flagged"], "model_id": r["model_id"],
                            "overlap_fraction": r["overlap_fraction"],
                            "resampling": r["resampling"]}
            for r in sorted(rows_of(out), key=lambda r: r["location"])}
  return {"name": name, "command": command, "pairs_scored": pooled["pairs"],
          "f1": pooled["f1"], "precision": pooled["precision"], "recall": pooled["recall"],
          "sweep_seconds": int(seconds[-1]) if seconds else None, "cities": cities}


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--score_sweep", type=pathlib.Path, default=SCORE_SWEEP)
  parser.add_argument("oscd_test", type=pathlib.Path)
  parser.add_argument("result", type=pathlib.Path)
  parser.add_argument("runs", nargs="+", help="NAME=SWEEP_OUT[=COMMAND]")
  parser.add_argument("--note", default="", help="a sentence kept with the results")
  args = parser.parse_args(argv)
  records = []
  for spec in args.runs:
    name, out, *command = spec.split("=", 2)
    records.append(record(name, pathlib.Path(out), command[0] if command else "",
                          args.oscd_test, args.score_sweep))
  args.result.write_text(json.dumps(
      {"what": "OSCD test cities, later capture reprojected to UTM 10 m, moved by a fraction of "
               "a pixel and cut shorter (bench/grids_oscd.py); default --grid earlier, so maps "
               "sit on the label grid; scored with ../shared/tools/score_sweep.py",
       **({"note": args.note} if args.note else {}), "runs": records}, indent=1) + "\n")
  print(json.dumps({r["name"]: [r["pairs_scored"], r["f1"]] for r in records}))


if __name__ == "__main__":
  main(sys.argv[1:])
