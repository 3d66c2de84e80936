"""The code's structure: imports run one way, with no cycle, and modules stay small.

Imports are read with `ast` from every module of pipeline/, model/ and transforms/, at every
depth (inside functions too), so a lazy import cannot hide a cycle.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipeline", "model", "transforms")
NAMESPACE = "changesweep"
MAX_LINES = 450


def modules() -> dict[str, str]:
  """`changesweep.pipeline.sweep` -> its file, for every product module."""
  out = {}
  for top in PACKAGES:
    for folder, _, names in os.walk(os.path.join(ROOT, top)):
      for name in names:
        if name.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
          if rel[-1] == "__init__":
            rel = rel[:-1]
          out[".".join([NAMESPACE, *rel])] = os.path.join(folder, name)
  return out


def imports_of(path: str, name: str, known: set[str]) -> set[str]:
  """Product modules that `name` imports anywhere in its file."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
  found = set()
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      targets = [base] + [f"{base}.{a.name}" for a in node.names]
    for t in targets:
      while t and t not in known:
        t = t.rpartition(".")[0]
      if t and t != name:
        found.add(t)
  return found


def import_graph() -> dict[str, set[str]]:
  mods = modules()
  return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_checker_finds_a_cycle_and_a_lazy_import(tmp_path):
  pkg = tmp_path / "pipeline"
  pkg.mkdir()
  (pkg / "a.py").write_text("from changesweep.pipeline import b\n")
  (pkg / "b.py").write_text("def f():\n  from changesweep.pipeline.a import x\n")
  known = {"changesweep.pipeline.a", "changesweep.pipeline.b"}
  graph = {n: imports_of(str(pkg / f"{n.rsplit('.', 1)[1]}.py"), n, known) for n in known}
  assert find_cycle(graph) in (["changesweep.pipeline.a", "changesweep.pipeline.b",
                                "changesweep.pipeline.a"],
                               ["changesweep.pipeline.b", "changesweep.pipeline.a",
                                "changesweep.pipeline.b"])


def test_no_import_cycle():
  assert find_cycle(import_graph()) is None


def test_model_and_transforms_never_import_the_pipeline():
  bad = {(m, i) for m, deps in import_graph().items()
         if m.startswith((f"{NAMESPACE}.model", f"{NAMESPACE}.transforms"))
         for i in deps if i.startswith(f"{NAMESPACE}.pipeline")}
  assert not bad


@pytest.mark.parametrize("name,path", sorted(modules().items()))
def test_no_product_module_over_450_lines(name, path):
  with open(path) as f:
    assert sum(1 for _ in f) <= MAX_LINES, name
