"""The installed wheel, used from outside the repository: every shipped model, both statistics
modes, and no top-level `pipeline`/`model`/`transforms` package in site-packages."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLE_ARCHIVE

MODELS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "model", "shipped", "*"))
                if os.path.isfile(os.path.join(p, "metadata.json")))


def run(cmd, cwd, env=None):
  done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                        env={**os.environ, **(env or {})})
  assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
  return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """A fresh venv that sees this interpreter's packages, with the wheel installed in it."""
  tmp = tmp_path_factory.mktemp("wheel")
  run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
       str(tmp / "dist"), ROOT], cwd=tmp)
  [wheel] = glob.glob(str(tmp / "dist" / "*.whl"))
  venv = tmp / "venv"
  run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp)
  python = str(venv / "bin" / "python")
  site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
             cwd=tmp).strip()
  # --system-site-packages sees the base interpreter's packages; when this interpreter is a
  # venv itself (make install), its packages come through a path entry. Plain entries, not
  # site dirs: that venv's own .pth files (an editable install's finder) are not run.
  with open(os.path.join(site, "zz_test_env.pth"), "w") as f:
    f.write("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
  run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp)
  # the wheel, not the editable install the test's own environment may have
  where = json.loads(run([python, "-c", (
      "import json, os, changesweep, changesweep.model as m; print(json.dumps("
      "{'path': list(changesweep.__path__), 'model': os.path.dirname(m.__file__)}))")], cwd=tmp))
  return {"tmp": tmp, "python": python, "bin": str(venv / "bin"), "site": site, **where}


def test_the_wheel_not_the_repository_is_imported(installed):
  assert installed["path"] == [os.path.join(installed["site"], "changesweep")]
  assert installed["model"].startswith(installed["site"])
  assert not installed["model"].startswith(ROOT)


def test_no_top_level_package_collides_with_other_projects(installed):
  for name in ("pipeline", "model", "transforms"):
    assert not os.path.exists(os.path.join(installed["site"], name)), name
    probe = run([installed["python"], "-c", (
        f"import importlib.util as u; s = u.find_spec({name!r}); "
        f"print(s.origin if s and s.origin else (list(s.submodule_search_locations) if s else ''))")],
        cwd=installed["tmp"]).strip()
    assert "changesweep" not in probe and ROOT not in probe, (name, probe)


@pytest.mark.parametrize("statistics", ["model", "archive"])
@pytest.mark.parametrize("model", MODELS)
def test_installed_command_sweeps_with_each_shipped_model(installed, model, statistics):
  model_dir = os.path.join(installed["model"], "shipped", model)
  assert os.path.isfile(os.path.join(model_dir, "metadata.json"))
  out = installed["tmp"] / f"out-{model}-{statistics}"
  stdout = run([os.path.join(installed["bin"], "changesweep"), "sweep", "--input",
                SAMPLE_ARCHIVE, "--output", str(out), "--statistics", statistics, "--model",
                model_dir, "--no_report", "--no_maps"], cwd=installed["tmp"])
  with open(out / "run.json") as f:
    summary = json.load(f)
  assert summary["counts"]["pairs"] == 4 and summary["counts"]["dead_letters"] == 0, stdout
  assert summary["model"]["path"].startswith(installed["site"])
