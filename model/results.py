"""The results tables of README.md and model/README.md, generated from evaluation JSONs.

Figures are never typed into the READMEs: every shipped model directory holds an `eval.json`
(`model/shipped/*/eval.json`) and every baseline that is not shipped has one in
`model/results/*.json`. Each file is

    {"model_id": "...",
     "rows": [{"name": "...", "band_set": "...", "command": "...", "table": "oscd",
               "metrics": {"f1": ..., "precision": ..., "recall": ..., "iou": ...,
                           "kappa": ...}}],
     "nuisance": {...}}

(`table` is optional, default "oscd"; `nuisance` is optional). A README section between

    <!-- results:oscd:start -->
    <!-- results:oscd:end -->

is replaced by the table of the rows whose `table` is "oscd" (shipped models first, in
directory order, then the baselines, in file order). `<!-- results:nuisance:... -->` gets the
nuisance checks. `--write` rewrites the sections, `--check` exits 1 when a README differs
from what the JSONs say (the test suite runs the check), `--add` turns the `--json` output of
`changesweep evaluate` into a row.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import sys

METRICS = ("f1", "precision", "recall", "iou", "kappa")
OPTIONAL_METRICS = ("iou", "kappa")
HEADERS = {"f1": "F1", "precision": "P", "recall": "R", "iou": "IoU", "kappa": "kappa"}
DEFAULT_TABLE = "oscd"
READMES = ("README.md", os.path.join("model", "README.md"))
_MARKER = re.compile(r"(<!-- results:([\w-]+):start -->\n)(.*?)(<!-- results:\2:end -->)",
                     re.DOTALL)


class ResultsError(ValueError):
  """An evaluation JSON is malformed, or a README section cannot be generated."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a results table.

  Attributes:
    model_id: the model (or baseline) the figures are for.
    name: what the row shows (model and input).
    band_set: the bands the model read.
    command: the command that reproduces the figures.
    table: the README section the row belongs to.
    metrics: F1, precision, recall, IoU and kappa of the change class.
    source: the JSON file the row comes from (relative to the repository root).
  """
  model_id: str
  name: str
  band_set: str
  command: str
  table: str
  metrics: dict
  source: str


def repo_root() -> str:
  """The repository this module lives in (`model/` is one level below it)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def result_files(root: str) -> list[str]:
  """Shipped models' eval.json (sorted by directory), then `model/results/*.json` (sorted)."""
  shipped = sorted(glob.glob(os.path.join(root, "model", "shipped", "*", "eval.json")))
  baselines = sorted(glob.glob(os.path.join(root, "model", "results", "*.json")))
  return shipped + baselines


def _check_metrics(metrics, where: str) -> dict:
  if not isinstance(metrics, dict):
    raise ResultsError(f"{where}: metrics must be an object")
  out = {}
  for key in METRICS:
    value = metrics.get(key)
    if value is None and key in OPTIONAL_METRICS:  # e.g. a sweep scored by F1/P/R alone
      out[key] = None
      continue
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      raise ResultsError(f"{where}: metrics.{key} is missing or not a number ({value!r})")
    low = -1.0 if key == "kappa" else 0.0
    if not low <= value <= 1.0:
      raise ResultsError(f"{where}: metrics.{key} = {value} is outside {low}..1")
    out[key] = float(value)
  return out


def read_rows(path: str, root: str) -> tuple[list[Row], dict]:
  """Reads one evaluation JSON.

  Returns:
    `(rows, nuisance)`; nuisance is `{}` when the file has none.

  Raises:
    ResultsError: a field is missing or has the wrong type.
  """
  rel = os.path.relpath(path, root)
  with open(path) as f:
    try:
      doc = json.load(f)
    except json.JSONDecodeError as e:
      raise ResultsError(f"{rel}: not valid JSON ({e})") from None
  if not isinstance(doc, dict) or not isinstance(doc.get("model_id"), str):
    raise ResultsError(f"{rel}: expected an object with a string model_id")
  if not isinstance(doc.get("rows"), list) or not doc["rows"]:
    raise ResultsError(f"{rel}: rows must be a non-empty list")
  rows = []
  for i, r in enumerate(doc["rows"]):
    where = f"{rel}: rows[{i}]"
    if not isinstance(r, dict):
      raise ResultsError(f"{where}: expected an object")
    for key in ("name", "band_set", "command"):
      if not isinstance(r.get(key), str) or not r[key].strip():
        raise ResultsError(f"{where}: {key} must be a non-empty string")
    rows.append(Row(doc["model_id"], r["name"], r["band_set"], r["command"],
                    r.get("table", DEFAULT_TABLE), _check_metrics(r.get("metrics"), where),
                    rel))
  nuisance = doc.get("nuisance") or {}
  if not isinstance(nuisance, dict):
    raise ResultsError(f"{rel}: nuisance must be an object")
  return rows, nuisance


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: list[Row]) -> str:
  """The markdown table of `rows` (3 decimals; the command in code spans)."""
  lines = ["| model | bands | " + " | ".join(HEADERS[m] for m in METRICS) + " | reproduce |",
           "|---|---|" + "---|" * len(METRICS) + "---|"]
  for r in rows:
    figures = " | ".join("–" if r.metrics[m] is None else f"{r.metrics[m]:.3f}" for m in METRICS)
    # a row recorded by `evaluate --record` is named by its band set only ("s2_4"): the
    # table then also names the model
    name = f"`{r.model_id}`, {r.name}" if " " not in r.name.strip() else r.name
    lines.append(f"| {_cell(name)} | {_cell(r.band_set)} | {figures} | "
                 f"`{_cell(r.command)}` |")
  return "\n".join(lines) + "\n"


def _nuisance_entries(model_id: str, nuisance: dict) -> list[tuple[str, dict]]:
  """A nuisance object is one check (`flagged_fraction` at top level) or one per band set."""
  if "flagged_fraction" in nuisance:
    return [(model_id, nuisance)]
  return [(f"{model_id}, {name}", v) for name, v in nuisance.items() if isinstance(v, dict)]


def render_nuisance(entries: list[tuple[str, dict]]) -> str:
  """The nuisance-check table: pixels flagged on captures paired with a nuisance copy."""
  lines = ["| model | pixels flagged (worst nuisance) | reproduce |", "|---|---|---|"]
  for name, v in entries:
    frac = v.get("flagged_fraction")
    if isinstance(frac, dict) and frac:  # one fraction per nuisance: report the worst
      frac = v.get("max_flagged_fraction", max(frac.values()))
    if not isinstance(frac, (int, float)) or isinstance(frac, bool):
      raise ResultsError(f"nuisance of {name}: flagged_fraction is not a number ({frac!r})")
    command = v.get("command", "")
    lines.append(f"| {_cell(name)} | {frac:.4%} | " + (f"`{_cell(command)}`" if command else "")
                 + " |")
  return "\n".join(lines) + "\n"


def sections(root: str) -> dict[str, str]:
  """The generated text of every section name, from all evaluation JSONs under `root`."""
  tables: dict[str, list[Row]] = {}
  entries: list[tuple[str, dict]] = []
  for path in result_files(root):
    rows, nuisance = read_rows(path, root)
    for r in rows:
      tables.setdefault(r.table, []).append(r)
    entries += _nuisance_entries(rows[0].model_id, nuisance)
  out = {name: render_table(rows) for name, rows in tables.items()}
  if entries:
    out["nuisance"] = render_nuisance(entries)
  return out


def rewrite(text: str, generated: dict[str, str], where: str = "README") -> str:
  """`text` with every marked section replaced by its generated table.

  Raises:
    ResultsError: a section's name has no rows in any evaluation JSON.
  """
  def replace(m: re.Match) -> str:
    name = m.group(2)
    if name not in generated:
      raise ResultsError(f"{where}: section {name!r} has no rows in any evaluation JSON")
    return m.group(1) + generated[name] + m.group(4)
  return _MARKER.sub(replace, text)


def update(root: str, readmes: tuple[str, ...] = READMES, write: bool = False) -> list[str]:
  """Regenerates the sections of `readmes` (relative to `root`).

  Returns:
    The READMEs whose text differs from the generated one (rewritten when `write`).
  """
  generated = sections(root)
  stale = []
  for rel in readmes:
    path = os.path.join(root, rel)
    with open(path) as f:
      text = f.read()
    new = rewrite(text, generated, rel)
    if new != text:
      stale.append(rel)
      if write:
        with open(path, "w") as f:
          f.write(new)
  return stale


def eval_row(evaluation: dict, name: str, band_set: str, command: str,
             table: str = DEFAULT_TABLE) -> dict:
  """A row from the `--json` output of `changesweep evaluate` (its pooled `overall` figures)."""
  overall = evaluation["overall"]
  return {"name": name, "band_set": band_set, "command": command, "table": table,
          "metrics": {m: overall[m] for m in METRICS},
          "extra": {k: overall[k] for k in ("overall_accuracy", "tp", "fp", "fn", "tn")
                    if k in overall} | {
              "scene_roc_auc": evaluation.get("scene_roc_auc"),
              "threshold": evaluation.get("threshold"),
              "pairs": evaluation.get("pairs"), "manifest": evaluation.get("manifest"),
              "normalization": evaluation.get("normalization"),
              "seconds": evaluation.get("seconds"),
              "per_pair_f1": {k: v["f1"] for k, v in evaluation.get("per_pair", {}).items()}}}


def add_row(out_path: str, model_id: str, row: dict, nuisance: dict | None = None) -> dict:
  """Adds `row` to the evaluation JSON `out_path` (created if absent; a row of the same name
  and table is replaced) and returns the document."""
  doc = {"model_id": model_id, "rows": []}
  if os.path.exists(out_path):
    with open(out_path) as f:
      doc = json.load(f)
    if doc.get("model_id") != model_id:
      raise ResultsError(f"{out_path} is for {doc.get('model_id')!r}, not {model_id!r}")
  doc["rows"] = [r for r in doc["rows"]
                 if (r["name"], r.get("table", DEFAULT_TABLE)) != (row["name"], row["table"])]
  doc["rows"].append(row)
  if nuisance is not None:
    doc["nuisance"] = nuisance
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
  return doc


def main(argv: list[str] | None = None) -> int:
  """Entry point: `--check` (exit 1 if stale), `--write`, or `--add` a row."""
  parser = argparse.ArgumentParser(
      prog="python -m changesweep.model.results",
      description="Generate the results tables of README.md and model/README.md from "
                  "model/shipped/*/eval.json and model/results/*.json.",
      epilog="examples:\n  python -m changesweep.model.results --check\n"
             "  python -m changesweep.model.results --write\n"
             "  python -m changesweep.model.results --add /tmp/e.json --to "
             "model/results/cva-oscd-rgb.json --model_id cva-oscd-rgb --name 'CVA' "
             "--band_set 'red, green, blue' --command 'changesweep evaluate ...'",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument("--check", action="store_true", help="exit 1 if a README is out of date")
  mode.add_argument("--write", action="store_true", help="rewrite the README sections")
  mode.add_argument("--add", metavar="EVALUATE_JSON",
                    help="turn `changesweep evaluate --json` output into a row of --to")
  parser.add_argument("--root", default=repo_root(), help="repository root")
  parser.add_argument("--to", help="(--add) the evaluation JSON to add the row to")
  parser.add_argument("--model_id")
  parser.add_argument("--name")
  parser.add_argument("--band_set")
  parser.add_argument("--command", dest="row_command")
  parser.add_argument("--table", default=DEFAULT_TABLE)
  parser.add_argument("--nuisance_command", default=None,
                      help="(--add) keep the evaluate output's nuisance check, with this command")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if args.add:
    missing = [k for k in ("to", "model_id", "name", "band_set", "row_command")
               if not getattr(args, k)]
    if missing:
      parser.error("--add needs " + ", ".join("--" + k.replace("row_", "") for k in missing))
    with open(args.add) as f:
      evaluation = json.load(f)
    nuisance = None
    if args.nuisance_command and "nuisance" in evaluation:
      nuisance = {"flagged_fraction": evaluation["nuisance"]["flagged_fraction"],
                  "seed": evaluation["nuisance"].get("seed"),
                  "command": args.nuisance_command}
    add_row(args.to, args.model_id,
            eval_row(evaluation, args.name, args.band_set, args.row_command, args.table),
            nuisance)
    return 0
  try:
    stale = update(args.root, write=args.write)
  except (ResultsError, OSError) as e:
    print(f"results: {e}", file=sys.stderr)
    return 2
  if stale and args.check:
    print("results: out of date (run python -m changesweep.model.results --write): "
          + ", ".join(stale), file=sys.stderr)
    return 1
  for rel in stale:
    print(f"results: rewrote {rel}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
