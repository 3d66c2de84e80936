"""`--dry_run` lists and pairs only: no chip is read and no model loaded, and its counts are a
real run's."""
import shutil

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL, SAMPLE_ARCHIVE


def test_dry_run_reads_no_chip_and_counts_what_a_real_run_does(tmp_path):
  archive = tmp_path / "archive"
  shutil.copytree(SAMPLE_ARCHIVE, archive)
  (archive / "dubai" / "2019-01-01.tif").write_bytes(b"not a raster")  # one dead letter
  common = ["--input", str(archive), "--model", CVA_MODEL, "--run_id", "t", "--no_report"]
  dry = sweep_main.run(["--output", str(tmp_path / "dry"), "--dry_run", *common])
  real = sweep_main.run(["--output", str(tmp_path / "real"), *common])
  assert dry["dry_run"] and not any(k.startswith(("chips/", "scoring/")) for k in dry["metrics"])
  assert real["metrics"]["chips/chips_read"] == dry["counts"]["chips"] == 16
  for k in ("locations", "pairs", "first_captures", "dead_letters", "chips"):
    assert dry["counts"][k] == real["counts"][k], k
  planned = read_jsonl_rows(str(tmp_path / "dry"), "planned_pairs")
  scored = read_jsonl_rows(str(tmp_path / "real"), "pairs")
  assert {r["pair_id"] for r in planned} == {r["pair_id"] for r in scored}
  real_dead = read_jsonl_rows(str(tmp_path / "real"), "dead_letter")
  assert dry["dead_letters_by_stage"] == {real_dead[0]["stage"]: 1} and len(real_dead) == 1
  assert not (tmp_path / "dry" / "maps").exists() and not (tmp_path / "dry" / "pairs").exists()
