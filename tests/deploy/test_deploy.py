"""deploy/: the worker image pins what setup.py pins, the Flex Template spec renders, the scripts
parse and pass the sweep's own flags."""
import ast
import importlib.util
import json
import os
import re
import shlex
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


def _launch_body(stdout):
  """The JSON launch request that schedule.sh hands to `gcloud scheduler jobs create http`."""
  line = next(l for l in stdout.splitlines() if "scheduler jobs create http" in l)
  args = shlex.split(line[1:])
  return json.loads(args[args.index("--message-body") + 1])


SCHEDULE_FLAGS = ("--project", "my-proj", "--region", "us-central1", "--bucket", "b1",
                  "--service-account", "sa@my-proj.iam.gserviceaccount.com", "--dry-run")


@pytest.mark.parametrize("flag, param", [("--archive", "input"), ("--manifest", "manifest"),
                                         ("--name", "jobName")])
@pytest.mark.parametrize("value", [
    'gs://b/a"); open("x","w"); print("',  # the reported injection
    '" or open("x","w") or "',  # valid Python where a value was pasted in: ran before the fix
    "gs://b/it's \"quoted\" \\ {date} $HOME `id`",  # legitimate quotes, braces, backslashes
])
def test_schedule_script_passes_values_as_data(tmp_path, flag, param, value):
  r = subprocess.run(["bash", os.path.join(DEPLOY, "schedule.sh"), *SCHEDULE_FLAGS, flag, value,
                      *([] if flag == "--archive" else ["--archive", "gs://b1/a"]),
                      "--gpu-type", "nvidia-l4", "--bigquery-table", "my-proj.cs.pairs"],
                     capture_output=True, text=True, timeout=60, cwd=tmp_path)
  assert not (tmp_path / "x").exists()  # no injected code ran
  assert r.returncode == 0, r.stderr
  body = _launch_body(r.stdout)["launchParameter"]
  got = body["jobName"] if param == "jobName" else body["parameters"][param]
  assert got == value  # passed through intact
  assert body["parameters"]["gpu_type"] == "nvidia-l4"
  assert body["parameters"]["bigquery_table"] == "my-proj:cs.pairs"  # the sweep's form
  assert body["environment"]["maxWorkers"] == 20


@pytest.mark.parametrize("flag, value", [
    ("--max-workers", "20); open('x','w'"), ("--gpu-count", "1 or open('x','w')"),
    ("--bigquery-table", 'p" or open("x","w") or "'), ("--bigquery-table", "my-proj:cs")])
def test_schedule_script_refuses_bad_numbers_and_table_ids(tmp_path, flag, value):
  r = subprocess.run(["bash", os.path.join(DEPLOY, "schedule.sh"), *SCHEDULE_FLAGS, "--archive",
                      "gs://b1/a", flag, value], capture_output=True, text=True, timeout=60,
                     cwd=tmp_path)
  assert r.returncode == 2 and flag in r.stderr, r.stderr
  assert not (tmp_path / "x").exists()


LAUNCH_FLAGS = ("--project", "my-proj", "--region", "us-central1", "--bucket", "my-bucket",
                "--archive", "gs://my-bucket/archive", "--tag", "t1", "--setup", "--dry-run")


@pytest.mark.parametrize("table, fq", [("my-proj:cs.pairs", "my-proj.cs.pairs"),
                                       ("my-proj.cs.pairs_2", "my-proj.cs.pairs_2"),
                                       ("example.com:my-proj:cs.pairs",
                                        "example.com:my-proj.cs.pairs")])
def test_launch_script_fills_the_table_into_the_ddl(table, fq):
  r = _script("launch.sh", *LAUNCH_FLAGS, "--bigquery-table", table)
  assert r.returncode == 0, r.stderr
  queries = [l for l in r.stdout.splitlines() if " query " in l]
  assert len(queries) == 2 and all(f"`{fq}" in q.replace("\\", "") for q in queries), queries
  assert not any("PROJECT_ID.DATASET.TABLE" in q for q in queries)


@pytest.mark.parametrize("table", [
    "my-proj:cs.pairs/g; s/.*/DROP TABLE x/",  # sed injection
    "my-proj:cs.pairs`; DROP TABLE x; --",
    "my-proj:cs", "cs.pairs", "my-proj:cs.pairs.extra", "my proj:cs.pairs", "",
])
def test_launch_script_refuses_a_bad_table_id(table):
  r = _script("launch.sh", *LAUNCH_FLAGS, "--bigquery-table", table)
  if table == "":  # an empty value means no BigQuery table
    assert r.returncode == 0, r.stderr
    assert " query " not in r.stdout
    return
  assert r.returncode == 2 and "--bigquery-table" in r.stderr, (r.stdout, r.stderr)
  assert "DROP TABLE" not in r.stdout


def test_launch_script_refuses_a_parameter_separator_in_values():
  r = _script("launch.sh", *LAUNCH_FLAGS[:6], "--archive", "gs://b/a~model=gs://evil/m",
              "--dry-run")
  assert r.returncode == 2 and "--archive" in r.stderr and "'~'" in r.stderr
  assert "flex-template run" not in r.stdout


def _module_exists(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except ModuleNotFoundError:  # a parent package is missing
    return False


def test_deploy_files_name_installed_modules():
  """Every module that deploy/ names (docs, Dockerfile, entry point) is an installed one:
  the package installs as changesweep.pipeline, changesweep.model, changesweep.transforms."""
  dotted = re.compile(r"(?<![\w./])((?:changesweep\.)?(?:pipeline|model|transforms)"
                      r"(?:\.[A-Za-z_]\w*)+)")
  named = {}
  for folder, _, files in os.walk(DEPLOY):
    for name in files:
      if name.endswith((".md", ".py", ".sh", ".json", ".sql", "Dockerfile")):
        with open(os.path.join(folder, name)) as f:
          for m in dotted.finditer(f.read()):
            named.setdefault(m[1], name)
  assert any(n.startswith("changesweep.pipeline.") for n in named), named
  for name, where in named.items():
    assert name.startswith("changesweep."), f"{where} names {name}, not an installed module"
    parts = name.split(".")
    found = next((".".join(parts[:i]) for i in range(len(parts), 1, -1)
                  if _module_exists(".".join(parts[:i]))), None)
    assert found and found != "changesweep", f"{where} names {name}: no such module"

