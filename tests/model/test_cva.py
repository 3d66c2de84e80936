"""export-cva reads a pair manifest as well as --pair arguments."""
import pytest

from changesweep.model import cva


def test_manifest_pairs_resolves_rows_and_rejects_per_band_files(tmp_path):
  for name in ("1.tif", "2.tif", "B02.tif", "B03.tif"):
    (tmp_path / name).write_bytes(b"")
  good = tmp_path / "pairs.csv"
  good.write_text(f"pair_id,before,after\na,1.tif,2.tif\nb,{tmp_path}/2.tif,1.tif\n")
  assert cva.manifest_pairs(str(good), str(tmp_path)) == [
      (f"{tmp_path}/1.tif", f"{tmp_path}/2.tif"), (f"{tmp_path}/2.tif", f"{tmp_path}/1.tif")]
  bad = tmp_path / "bands.csv"
  bad.write_text("pair_id,before,after\na,B02.tif;B03.tif,B02.tif;B03.tif\n")
  with pytest.raises(ValueError, match="several files per capture"):
    cva.manifest_pairs(str(bad))


def test_main_needs_pairs_or_a_manifest(capsys):
  with pytest.raises(SystemExit):
    cva.main(["--bands", "red", "--out", "/nonexistent/x"])
  assert "--pair" in capsys.readouterr().err
