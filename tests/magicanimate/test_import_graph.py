"""The package's import graph: no import cycle, and ComfyUI only behind ``magicanimate.comfy_adapter``.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a package module, at module
level or inside a function (a function-level import that closes a loop is still a cycle, only a deferred one). Each
module is also imported on its own, with no other package module loaded before it, in a subprocess: the pure modules
before ComfyUI is importable at all, the adapter's after the session's ComfyUI tree is bootstrapped as in conftest.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "magicanimate"
ADAPTER = f"{PACKAGE}.comfy_adapter"
#: Top-level modules of a ComfyUI tree (its ``comfy`` packages and the modules next to ``main.py``).
COMFY_MODULES = frozenset({"comfy", "comfy_api", "comfy_execution", "comfy_extras", "comfy_config", "comfyui_version",
                           "execution", "folder_paths", "latent_preview", "node_helpers", "nodes", "server"})


def package_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``__init__.py`` named as its package)."""
    modules = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules ``name`` imports, top-level names of the other modules it imports), at any depth of the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [(target, [alias.name for alias in node.names])]
        else:
            continue
        for target, names in targets:
            if target.split(".")[0] != PACKAGE:
                external.add(target.split(".")[0])
                continue
            candidates = [target] + [f"{target}.{n}" for n in names]
            internal |= {c for c in candidates if c in modules}
    internal.discard(name)
    return internal, external


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = package_modules()
    internal, external = {}, {}
    for name, path in modules.items():
        internal[name], external[name] = imports_of(name, path, modules)
    return internal, external


def test_the_import_graph_has_no_cycle():
    graph, _ = _graph()
    assert len(graph) > 20 and f"{ADAPTER}.temporal" in graph[f"{ADAPTER}.loaders"]  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_function_level_import_that_closes_a_loop(tmp_path):
    (tmp_path / "a.py").write_text("from .b import f\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("def f():\n    from .a import g\n", encoding="utf-8")
    modules = {f"{PACKAGE}.a": tmp_path / "a.py", f"{PACKAGE}.b": tmp_path / "b.py"}
    graph = {name: imports_of(name, path, modules)[0] for name, path in modules.items()}
    assert find_cycle(graph) == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.a"]


def test_only_the_adapter_imports_comfyui():
    graph, external = _graph()
    for name in graph:
        if name == ADAPTER or name.startswith(ADAPTER + "."):
            continue
        assert not external[name] & COMFY_MODULES, f"{name} imports ComfyUI: {sorted(external[name] & COMFY_MODULES)}"
        assert not any(m == ADAPTER or m.startswith(ADAPTER + ".") for m in graph[name]), f"{name} imports the adapter"


# Run with the repository as working directory, which ``python -c`` puts first on sys.path.
_ISOLATED_IMPORTS = """
import importlib, json, sys
from pathlib import Path

comfy_dir, pure, adapter, comfy_modules = sys.argv[1:5]
failures = []

def fresh(name):
    for key in [k for k in sys.modules if k == "magicanimate" or k.startswith("magicanimate.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception as e:
        failures.append(f"{name}: {type(e).__name__}: {e}")

comfy = set(json.loads(comfy_modules))
for name in json.loads(pure):
    fresh(name)
    loaded = sorted(k for k in sys.modules if k.split(".")[0] in comfy)
    if loaded:
        failures.append(f"{name} loaded ComfyUI modules {loaded[:5]}")
from devtools.comfy_env import bootstrap_inprocess
bootstrap_inprocess(Path(comfy_dir))  # ComfyUI's tree first on sys.path, the repository right after it
for name in json.loads(adapter):
    fresh(name)
print(json.dumps(failures))
"""


def test_every_module_imports_on_its_own(comfy_dir):
    names = sorted(package_modules())
    adapter = [n for n in names if n == ADAPTER or n.startswith(ADAPTER + ".")]
    pure = [n for n in names if n not in adapter]
    done = subprocess.run(
        [sys.executable, "-c", _ISOLATED_IMPORTS, str(comfy_dir), json.dumps(pure), json.dumps(adapter),
         json.dumps(sorted(COMFY_MODULES))],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
