"""deploy/: the worker image pins what setup.py pins, the Flex Template spec renders, the scripts
parse and pass the sweep's own flags."""
import ast
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

DEPLOY = os.path.join(ROOT, "deploy")


def setup_pins() -> dict[str, str]:
  """`{package: version}` of the `==` pins in setup.py's REQUIRED (parsed, not imported)."""
  with open(os.path.join(ROOT, "setup.py")) as f:
    tree = ast.parse(f.read())
  required = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "REQUIRED" for t in node.targets))
  pins = {}
  for item in ast.literal_eval(required):
    m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^,;\s]+)$", item)
    if m:
      pins[m[1].lower()] = m[3]
  python_requires = next(kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                         for kw in node.keywords if kw.arg == "python_requires")
  return pins, python_requires


def parse_dockerfile(path: str) -> dict:
  """ARG defaults, FROM lines, RUN commands, ENV and ENTRYPOINT of a Dockerfile."""
  with open(path) as f:
    text = re.sub(r"\\\n", " ", f.read())  # join continuation lines
  out = {"args": {}, "from": [], "run": [], "env": {}, "copy": [], "entrypoint": None}
  for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    op, _, rest = line.partition(" ")
    op = op.upper()
    if op == "ARG" and "=" in rest:
      k, v = rest.split("=", 1)
      out["args"].setdefault(k.strip(), v.strip())
    elif op == "FROM":
      out["from"].append(rest.strip())
    elif op == "RUN":
      out["run"].append(rest)
    elif op == "COPY":
      out["copy"].append(rest)
    elif op == "ENV":
      for k, v in re.findall(r"(\w+)=(\S+)", rest):
        out["env"][k] = v
    elif op == "ENTRYPOINT":
      out["entrypoint"] = json.loads(rest)
  return out


def expand(text: str, args: dict) -> str:
  return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)


@pytest.fixture(scope="module")
def docker():
  return parse_dockerfile(os.path.join(DEPLOY, "Dockerfile"))


def test_image_versions_agree_with_setup_py(docker):
  pins, python_requires = setup_pins()
  args = docker["args"]
  assert args["BEAM_VERSION"] == pins["apache-beam"]
  assert args["TENSORFLOW_VERSION"] == pins["tensorflow"]
  # the interpreter is one setup.py allows, and the same minor as the launcher base and the
  # Beam SDK image the harness comes from
  lo, hi = re.findall(r"([0-9]+\.[0-9]+)", python_requires)
  as_tuple = lambda v: tuple(int(x) for x in v.split("."))
  assert as_tuple(lo) <= as_tuple(args["PYTHON_VERSION"]) < as_tuple(hi)
  assert f"python{args['PYTHON_VERSION'].replace('.', '')}-template-launcher" in args[
      "LAUNCHER_BASE"]
  froms = [expand(f, args) for f in docker["from"]]
  assert (f"apache/beam_python{args['PYTHON_VERSION']}_sdk:{pins['apache-beam']} AS beam_sdk"
          in froms)
  # The final stage is an NVIDIA CUDA + cuDNN runtime image.
  final = expand(docker["from"][-1], args)
  assert re.match(r"^nvidia/cuda:[0-9.]+-cudnn[0-9]*-runtime-ubuntu[0-9.]+$", final), final


def test_cuda_base_matches_the_tensorflow_build(docker):
  tf = pytest.importorskip("tensorflow")
  info = tf.sysconfig.get_build_info()
  if not info.get("is_cuda_build"):
    pytest.skip("TensorFlow here is not a CUDA build")
  cuda = re.search(r"nvidia/cuda:([0-9]+\.[0-9]+)", docker["args"]["CUDA_BASE"])[1]
  assert info["cuda_version"].startswith(cuda)
  assert str(info["cudnn_version"]).split(".")[0] == "9" and "cudnn-runtime" in docker["args"][
      "CUDA_BASE"]  # the cudnn tags of CUDA >= 12.4 images are cuDNN 9


def test_image_has_beam_harness_launcher_and_pip_check(docker):
  assert docker["entrypoint"] == ["/opt/apache/beam/boot"]
  assert any(c.startswith("--from=beam_sdk /opt/apache/beam /opt/apache/beam")
             for c in docker["copy"])
  assert any("python_template_launcher" in c for c in docker["copy"])
  installs = [r for r in docker["run"] if "pip install" in r]
  assert installs and all("pip check" in r for r in installs)
  assert docker["env"]["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "/app/deploy/flex_main.py"
  assert docker["env"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
  assert os.path.exists(os.path.join(DEPLOY, "flex_main.py"))


def test_flex_template_renders_with_the_image_and_metadata():
  sys.path.insert(0, DEPLOY)
  try:
    import render_template
  finally:
    sys.path.remove(DEPLOY)
  spec = render_template.render("us-docker.pkg.dev/p/r/worker:t1")
  with open(os.path.join(DEPLOY, "metadata.json")) as f:
    metadata = json.load(f)
  assert spec["image"] == spec["defaultEnvironment"]["sdkContainerImage"] == (
      "us-docker.pkg.dev/p/r/worker:t1")
  assert spec["sdkInfo"] == {"language": "PYTHON"} and spec["metadata"] == metadata
  for p in metadata["parameters"]:
    assert set(p) <= {"name", "label", "helpText", "isOptional", "regexes"}
    for rx in p.get("regexes", []):
      re.compile(rx)
  with pytest.raises(ValueError):
    render_template.render("")


def _script(name, *args):
  return subprocess.run(["bash", os.path.join(DEPLOY, name), *args], capture_output=True,
                        text=True, timeout=60)


def test_launch_script_dry_run_passes_sweep_flags():
  r = _script("launch.sh", "--project", "my-proj", "--region", "us-central1", "--bucket",
              "my-bucket", "--archive", "gs://my-bucket/archive", "--gpu-type", "nvidia-l4",
              "--gpu-machine-type", "g2-standard-8", "--bigquery-table", "my-proj:cs.pairs",
              "--machine-type", "n2-standard-8", "--max-workers", "50", "--tag", "t1",
              "--dry-run")
  assert r.returncode == 0, r.stderr
  run = [l for l in r.stdout.splitlines() if "flex-template run" in l][0]
  for want in ("--worker-machine-type n2-standard-8", "--max-workers 50",
               "--template-file-gcs-location gs://my-bucket/templates/changesweep.json",
               "gpu_type=nvidia-l4", "gpu_machine_type=g2-standard-8",
               "bigquery_table=my-proj:cs.pairs", "input=gs://my-bucket/archive",
               "state=gs://my-bucket/state/changesweep.jsonl"):
    assert want in run.replace("\\", ""), want
  assert "docker build -f" in r.stdout and "worker:t1" in r.stdout
  # every parameter the script passes is declared in the template metadata
  with open(os.path.join(DEPLOY, "metadata.json")) as f:
    declared = {p["name"] for p in json.load(f)["parameters"]}
  passed = set(re.findall(r"[~^](\w+)=", run.replace("\\", "")))
  assert passed and passed <= declared, passed - declared


def test_launch_script_refuses_missing_flags():
  r = _script("launch.sh", "--project", "p", "--region", "r", "--dry-run")
  assert r.returncode == 2 and "--bucket is required" in r.stderr


def test_schedule_script_dry_run_posts_a_launch_request():
  r = _script("schedule.sh", "--project", "my-proj", "--region", "us-central1", "--bucket", "b1",
              "--archive", "gs://b1/archive", "--service-account", "sa@my-proj.iam.gserviceaccount.com",
              "--dry-run")
  assert r.returncode == 0, r.stderr
  assert "flexTemplates:launch" in r.stdout and "scheduler jobs create http" in r.stdout
