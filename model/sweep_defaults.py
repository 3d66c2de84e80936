"""`model/results/sweep-defaults.json`: F1 of the default sweep's change maps, measured, not typed.

For each archive layout of the OSCD test cities that `make_anyband.py` writes (a per-band
Sentinel-2 manifest, one 13-band file per capture, GDAL-named 4-band files, unnamed 1-band
NDVI), this runs the real default sweep (`changesweep sweep` without `--model`, so each pair
gets the shipped model that fits its bands), scores the written change maps with
`score_sweep.py` and records F1/P/R (IoU = F1 / (2 - F1)) and which model served how many
pairs (the run's `models_used`). The tools live outside the repository (the shared OSCD copy);
their paths are arguments.

    python -m changesweep.model.sweep_defaults --tools ../shared/tools \
        --oscd_test ../shared/data/oscd/test --work /tmp/sweep-defaults
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from typing import Sequence

# name -> (sweep input arguments relative to the archives folder, band set, row title)
ARCHIVES = {
    "s2_manifest": (("--manifest", "s2_bands_captures.csv"),
                    "B02, B03, B04, B08 files (uint16 DNs)",
                    "default sweep, Sentinel-2 archive of single-band files (manifest with a "
                    "band column)"),
    "s2_13": (("--input", "s2_13"), "B01..B12, B8A (uint16 DNs)",
              "default sweep, one 13-band file per capture"),
    "gdal_s2": (("--input", "gdal_s2"), "\"B4, central wavelength 665 nm\" ... (uint16 DNs)",
                "default sweep, 4 bands described as GDAL's SENTINEL2 driver does"),
    "ndvi": (("--input", "ndvi"), "1 unnamed band (float32 NDVI)",
             "default sweep, 1-band NDVI archive without band names"),
}
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                      "sweep-defaults.json")


def sweep_command(archives: str, name: str, output: str) -> list[str]:
  """The `changesweep sweep` argv (default model) for one archive layout."""
  flag, rel = ARCHIVES[name][0]
  return ["changesweep", "sweep", flag, os.path.join(archives, rel), "--output", output,
          "--no_report"]


def iou(f1: float) -> float:
  """IoU of the change class from its F1 (IoU = F1 / (2 - F1))."""
  return f1 / (2.0 - f1)


def models_used(output: str) -> dict[str, int]:
  """`{model_id: pairs}` from the sweep's run.json (models with 0 pairs left out)."""
  paths = glob.glob(os.path.join(output, "**", "run.json"), recursive=True)
  if not paths:
    return {}
  with open(sorted(paths)[0]) as f:
    run = json.load(f)
  used = run.get("models_used") or run.get("summary", {}).get("models_used") or []
  return {m["model_id"]: int(m["pairs"]) for m in used if m.get("pairs")}


def measure(name: str, archives: str, oscd_test: str, tools: str, work: str) -> dict:
  """Sweeps one archive with the default model and scores its maps; returns the row."""
  output = os.path.join(work, f"sw-{name}")
  subprocess.run(["rm", "-rf", output], check=True)
  argv = sweep_command(archives, name, output)
  exe = os.path.join(os.path.dirname(sys.executable), "changesweep")
  subprocess.run([exe] + argv[1:], check=True)
  score = subprocess.run([sys.executable, os.path.join(tools, "score_sweep.py"), output,
                          oscd_test], check=True, capture_output=True, text=True)
  s = json.loads(score.stdout.strip().splitlines()[-1])
  _, band_set, title = ARCHIVES[name]
  shown = " ".join(argv).replace(archives, "/tmp/anyband").replace(output, "/tmp/sw")
  return {"name": title, "band_set": band_set, "table": "sweep",
          "command": ("python ../shared/tools/make_anyband.py ../shared/data/oscd/test "
                      f"/tmp/anyband && {shown} && python ../shared/tools/score_sweep.py "
                      "/tmp/sw ../shared/data/oscd/test"),
          "pairs": s["pairs"], "models_used": models_used(output),
          "metrics": {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"],
                      "iou": round(iou(s["f1"]), 4), "kappa": None}}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m changesweep.model.sweep_defaults",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--tools", required=True, help="folder of make_anyband.py, score_sweep.py")
  parser.add_argument("--oscd_test", required=True, help="the OSCD test cities (13 bands)")
  parser.add_argument("--work", required=True, help="scratch folder (archives, sweep outputs)")
  parser.add_argument("--only", default=",".join(ARCHIVES),
                      help="comma-separated archive layouts to (re)measure; others are kept")
  parser.add_argument("--out", default=OUTPUT, help="the JSON to write")
  args = parser.parse_args(argv)
  archives = os.path.join(args.work, "archives")
  if not os.path.exists(os.path.join(archives, "s2_bands_captures.csv")):
    subprocess.run([sys.executable, os.path.join(args.tools, "make_anyband.py"),
                    args.oscd_test, archives], check=True)
  old = {}
  if os.path.exists(args.out):
    with open(args.out) as f:
      old = {r["name"]: r for r in json.load(f).get("rows", [])}
  rows = []
  for name in ARCHIVES:
    title = ARCHIVES[name][2]
    if name in args.only.split(","):
      rows.append(measure(name, archives, args.oscd_test, args.tools, args.work))
      print(json.dumps(rows[-1]["metrics"]), rows[-1]["models_used"], name, flush=True)
    elif title in old:
      rows.append(old[title])
  doc = {"model_id": "changesweep default (per-pair choice)", "rows": rows,
         "note": ("pooled F1 of the written change maps against the OSCD test masks, flagged "
                  "p >= the row's threshold (score_sweep.py); IoU = F1/(2-F1); models_used: "
                  "pairs each shipped model served; written by python -m "
                  "changesweep.model.sweep_defaults")}
  with open(args.out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
