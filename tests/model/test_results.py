"""The README results tables are generated from the committed evaluation JSONs."""
import json
import os
import shutil

import pytest

from changesweep.model import results

ROOT = results.repo_root()


def _doc(model_id, f1, name="m on x", table=None):
  row = {"name": name, "band_set": "red, green, blue", "command": "changesweep evaluate | x",
         "metrics": {"f1": f1, "precision": 0.5, "recall": 0.25, "iou": 0.2, "kappa": -0.1}}
  if table:
    row["table"] = table
  return {"model_id": model_id, "rows": [row]}


def _repo(tmp_path, docs):
  """A tiny repository: one shipped model's eval.json, baselines, and two READMEs."""
  root = tmp_path / "repo"
  (root / "model" / "shipped" / "m1").mkdir(parents=True)
  (root / "model" / "results").mkdir()
  (root / "model" / "shipped" / "m1" / "eval.json").write_text(json.dumps(docs[0]))
  for i, d in enumerate(docs[1:]):
    (root / "model" / "results" / f"b{i}.json").write_text(json.dumps(d))
  text = ("# t\n\nbefore\n<!-- results:oscd:start -->\nold table\n<!-- results:oscd:end -->\n"
          "after\n")
  (root / "README.md").write_text(text)
  (root / "model" / "README.md").write_text(text.replace("before", "other"))
  return str(root)


def test_repository_readmes_match_the_committed_evaluation_jsons():
  stale = results.update(ROOT)
  assert stale == [], f"run python -m changesweep.model.results --write ({stale})"


def test_every_shipped_model_has_an_evaluation_json():
  shipped = os.path.join(ROOT, "model", "shipped")
  missing = [d for d in sorted(os.listdir(shipped))
             if os.path.isdir(os.path.join(shipped, d))
             and not os.path.exists(os.path.join(shipped, d, "eval.json"))]
  assert missing == []


def test_the_readmes_have_the_oscd_section():
  for rel in results.READMES:
    with open(os.path.join(ROOT, rel)) as f:
      assert "<!-- results:oscd:start -->" in f.read(), rel


def test_write_renders_rows_in_order_and_check_passes_after(tmp_path):
  root = _repo(tmp_path, [_doc("m1", 0.61), _doc("b0", 0.3, "baseline")])
  assert results.main(["--check", "--root", root]) == 1
  assert results.main(["--write", "--root", root]) == 0
  text = open(os.path.join(root, "README.md")).read()
  assert "old table" not in text and text.startswith("# t\n\nbefore\n") and "after\n" in text
  lines = [l for l in text.splitlines() if l.startswith("| ")]
  assert lines[0].startswith("| model | bands | F1 | P | R | IoU | kappa | reproduce |")
  assert lines[1].startswith("| m on x | red, green, blue | 0.610 | 0.500 | 0.250 | 0.200 | "
                             "-0.100 | `changesweep evaluate \\| x` |")
  # a row named by its band set alone ("s2_4", as `evaluate --record` names them) also
  # names its model, so rows of several models stay apart
  assert lines[2].startswith("| `b0`, baseline |")
  assert results.main(["--check", "--root", root]) == 0


def test_check_fails_on_a_tampered_readme_copy(tmp_path):
  root = str(tmp_path / "copy")
  os.makedirs(os.path.join(root, "model"))
  shutil.copytree(os.path.join(ROOT, "model", "shipped"), os.path.join(root, "model", "shipped"),
                  ignore=shutil.ignore_patterns("saved_model", "transform_fn", "*.keras"))
  if os.path.isdir(os.path.join(ROOT, "model", "results")):
    shutil.copytree(os.path.join(ROOT, "model", "results"), os.path.join(root, "model", "results"))
  for rel in results.READMES:
    shutil.copy(os.path.join(ROOT, rel), os.path.join(root, rel))
  assert results.main(["--check", "--root", root]) == 0
  path = os.path.join(root, "README.md")
  text = open(path).read()
  start = text.index("<!-- results:oscd:start -->")
  f1 = text.index("| 0.", start)  # the first figure of the first row
  tampered = text[:f1] + "| 0.999" + text[f1 + len("| 0.xxx"):]
  assert tampered != text
  open(path, "w").write(tampered)
  assert results.update(root) == ["README.md"]
  assert results.main(["--check", "--root", root]) == 1


def test_a_section_without_rows_and_bad_metrics_are_errors(tmp_path):
  root = _repo(tmp_path, [_doc("m1", 0.61, table="other")])
  with pytest.raises(results.ResultsError, match="section 'oscd' has no rows"):
    results.update(root)
  assert results.main(["--check", "--root", root]) == 2
  root2 = _repo(tmp_path / "b", [_doc("m1", 1.5)])
  with pytest.raises(results.ResultsError, match="metrics.f1 = 1.5"):
    results.update(root2)


def test_add_turns_evaluate_output_into_a_row_and_replaces_it(tmp_path):
  evaluation = {"overall": {"f1": 0.4, "precision": 0.3, "recall": 0.6, "iou": 0.25,
                            "kappa": 0.35, "overall_accuracy": 0.9, "tp": 1, "fp": 2, "fn": 1,
                            "tn": 9},
                "per_pair": {"a": {"f1": 0.4}}, "threshold": 0.5, "scene_roc_auc": 0.8,
                "pairs": 1, "manifest": "m.csv", "normalization": "model", "seconds": 1.0,
                "nuisance": {"flagged_fraction": 0.001, "seed": 0}}
  src = tmp_path / "e.json"
  src.write_text(json.dumps(evaluation))
  out = str(tmp_path / "r" / "x.json")
  args = ["--add", str(src), "--to", out, "--model_id", "x", "--name", "x on y",
          "--band_set", "B04", "--command", "cmd", "--nuisance_command", "cmd --nuisance"]
  assert results.main(args) == 0
  evaluation["overall"]["f1"] = 0.45
  src.write_text(json.dumps(evaluation))
  assert results.main(args) == 0
  doc = json.load(open(out))
  assert len(doc["rows"]) == 1 and doc["rows"][0]["metrics"]["f1"] == 0.45
  assert doc["rows"][0]["extra"]["scene_roc_auc"] == 0.8
  assert doc["nuisance"] == {"flagged_fraction": 0.001, "seed": 0, "command": "cmd --nuisance"}
  rows, nuisance = results.read_rows(out, str(tmp_path))
  assert rows[0].command == "cmd" and nuisance["flagged_fraction"] == 0.001
