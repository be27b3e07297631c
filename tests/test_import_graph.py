"""The layers of ../shared/DESIGN.md hold: imports only point down, with no cycles.

Every module of the first-party packages is parsed (module- and function-level imports).
A function-level import is allowed only for the heavy optional extras listed below.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("fusionrs_jax", "data_prep", "configs")

# (module prefix, layer); the longest matching prefix wins. A module may import its own
# layer or lower ones.
LAYERS = (
  ("configs", 1),
  ("fusionrs_jax.core", 1),
  ("fusionrs_jax.data", 2),
  ("fusionrs_jax.models", 2),
  ("fusionrs_jax.losses", 2),
  ("data_prep", 3),
  ("fusionrs_jax.evaluators", 4),
  ("fusionrs_jax.trainers", 5),
  ("fusionrs_jax.export", 6),
  ("fusionrs_jax.cli", 6),
  ("fusionrs_jax.pipeline", 6),
  ("fusionrs_jax.main", 6),
  ("fusionrs_jax", 6),
)

# Optional extras that may be imported inside a function, so that the CPU install (and
# modules that only sometimes need them) do not pay for them.
LAZY_EXTRAS = {
  "torch": "export extra: PyTorch",
  "transformers": "export extra: Hugging Face models",
  "safetensors": "export extra: weight files",
  "apache_beam": "beam extra",
  "tensorflow": "tf extra",
  "pycocoevalcap": "coco extra",
  "tensorboardX": "only the process that writes summaries",
  "matplotlib": "figures (dev)",
  "tensorflow_datasets": "the full tfds import takes seconds; only the tfds export needs it",
  "gcsfs": "gs:// paths only (core/fs.py; dev extra, the launchers install it)",
}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for pkg in PACKAGES:
    for path in (ROOT / pkg).rglob("*.py"):
      name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
      out[name.removesuffix(".__init__")] = path
  return out


def _layer(module: str) -> int:
  best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
  return dict(LAYERS)[best]


def _imports(name: str, path: pathlib.Path):
  """Yields (imported module, line, inside a function) for every import in the file."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  is_pkg = path.name == "__init__.py"
  in_function = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for inner in ast.walk(node):
        in_function.add(id(inner))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno, id(node) in in_function
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        pkg = name if is_pkg else name.rpartition(".")[0]
        for _ in range(node.level - 1):
          pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
      # Importing a submodule first imports its package (the __init__ counts as an edge).
      yield base, node.lineno, id(node) in in_function
      for alias in node.names:
        yield f"{base}.{alias.name}", node.lineno, id(node) in in_function


def _resolve(target: str, modules) -> str | None:
  while target and target not in modules:
    target = target.rpartition(".")[0]
  return target or None


def _graph():
  modules = _modules()
  edges, problems = {m: set() for m in modules}, []
  for name, path in modules.items():
    for target, line, lazy in _imports(name, path):
      top = target.split(".")[0]
      where = f"{path.relative_to(ROOT)}:{line}"
      if top in PACKAGES:
        dep = _resolve(target, modules)
        if dep is None or dep == name:
          continue
        edges[name].add(dep)
        if lazy:
          problems.append(f"{where}: function-level import of {dep}")
        if _layer(dep) > _layer(name):
          problems.append(
            f"{where}: {name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
          )
      elif lazy and top not in LAZY_EXTRAS and top not in ("__future__",):
        problems.append(f"{where}: function-level import of {target} (not a listed extra)")
  return edges, problems


def _cycles(edges):
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in edges:
    if v not in index:
      visit(v)
  return out


def test_no_import_cycles():
  edges, _ = _graph()
  assert _cycles(edges) == []


def test_imports_point_down_and_only_extras_are_lazy():
  _, problems = _graph()
  assert problems == [], "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
  """The rules above can fail: an evaluator importing a trainer is reported."""
  (tmp_path / "fusionrs_jax" / "evaluators").mkdir(parents=True)
  (tmp_path / "fusionrs_jax" / "trainers").mkdir(parents=True)
  (tmp_path / "fusionrs_jax" / "evaluators" / "bad.py").write_text(
    "def f():\n  from fusionrs_jax.trainers import loop\n"
  )
  (tmp_path / "fusionrs_jax" / "trainers" / "loop.py").write_text(
    "from fusionrs_jax.evaluators import bad\n"
  )
  monkeypatch.setitem(globals(), "ROOT", tmp_path)
  edges, problems = _graph()
  assert _cycles(edges) == [["fusionrs_jax.evaluators.bad", "fusionrs_jax.trainers.loop"]]
  assert any("layer 4) imports fusionrs_jax.trainers.loop (layer 5)" in p for p in problems)
  assert any("function-level import" in p for p in problems)


@pytest.mark.parametrize(
  "module,layer",
  [
    ("fusionrs_jax.core.records", 1),
    ("fusionrs_jax.trainers.siglip", 5),
    ("data_prep.ingest.writer", 3),
  ],
)
def test_layers_are_assigned_by_longest_prefix(module, layer):
  assert _layer(module) == layer
