"""No import cycle among the project's modules (worldsim, agents, envs), and no import that goes up
a floor (``FLOORS``, the picture of docs/architecture.md).

The graph holds every ``import`` of a module, at the top of the file and inside functions alike
(a function-level import only hides a cycle, it does not remove it); ``import pkg`` counts as an
import of ``pkg/__init__.py``, ``from pkg import mod`` as one of ``pkg/mod.py``. Run it alone with
``python -m pytest -q tests/test_imports.py``; it prints each cycle and each upward import it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worldsim", "agents", "envs")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (itself, or the nearest package above it)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file; TYPE_CHECKING blocks too)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_resolve(a.name, modules) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package holding this module
                    package = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else _resolve(base, modules))
        targets.discard(None)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _edges_within(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    members = set(comp)
    return [f"{a} -> {b}" for a in comp for b in sorted(graph[a] & members)]


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "worldsim.bundle" in graph["worldsim.simulator"]
    assert "worldsim.simulator" in graph["worldsim"]  # the lazy `worldsim.load_simulator`
    assert "worldsim.data.atomic" in graph["worldsim.data"]  # `from .atomic import ...` in the package


def _report(graph: dict[str, set[str]], cycles: list[list[str]]) -> str:
    return "\n".join(f"cycle {c}:\n  " + "\n  ".join(_edges_within(graph, c)) for c in cycles)


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, _report(graph, cycles)


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


#: The floors of docs/architecture.md ("Floors: the dependency direction"), bottom to top. A module
#: imports modules of its own floor and of the floors below, never of a floor above. A name ending
#: in ``.*`` places a package and every module in it; the longest name that matches wins.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("worldsim.data.*", "worldsim.video", "worldsim.metrics", "worldsim.binding",
                "worldsim.presets", "worldsim.context_file", "worldsim.version")),
    ("nn", ("worldsim.nn.*",)),
    ("models", ("worldsim.autoencoder", "worldsim.latent_action", "worldsim.dynamics", "worldsim.heads",
                "worldsim.readout", "worldsim.action_adapter", "worldsim.actions", "worldsim.networks",
                "worldsim.weights")),
    ("process", ("worldsim.flow", "worldsim.evaluation", "worldsim.heads_on_rollouts")),
    ("world", ("worldsim", "worldsim.simulator", "worldsim.start_context", "worldsim.bundle",
               "worldsim.world_options", "worldsim.config", "worldsim.testing")),
    ("front", ("worldsim.env", "worldsim.viewer", "worldsim.rollout", "envs.*")),
    ("agents", ("agents.*",)),
    ("training", ("worldsim.training.*",)),  # at the side: reaches down to TRAINING_REACHES
    ("commands", ("worldsim.cli", "worldsim.quickstart", "worldsim.data.summary", "envs.commands",
                  "agents.commands")),
)
TRAINING_REACHES = "world"
FLOOR_NAMES = [name for name, _ in FLOORS]


def floor_of(module: str) -> str | None:
    """The floor ``FLOORS`` places ``module`` on (``None``: nowhere)."""
    best, found = -1, None
    for floor, names in FLOORS:
        for name in names:
            base = name.removesuffix(".*")
            hit = module == base or (name.endswith(".*") and module.startswith(base + "."))
            if hit and len(base) > best:
                best, found = len(base), floor
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module of a higher floor (and each of ``training/`` above
    ``TRAINING_REACHES``), as ``a (floor) -> b (floor)``."""
    out = []
    for a in sorted(graph):
        fa = floor_of(a)
        if fa is None:  # test_every_module_has_a_floor_and_every_floor_name_a_module says so
            continue
        top = TRAINING_REACHES if fa == "training" else fa
        for b in sorted(graph[a]):
            fb = floor_of(b)
            if fb is not None and fb != fa and FLOOR_NAMES.index(fb) > FLOOR_NAMES.index(top):
                out.append(f"{a} ({fa}) -> {b} ({fb})")
    return out


def test_every_module_has_a_floor_and_every_floor_name_a_module():
    modules = module_files()
    assert [m for m in modules if floor_of(m) is None] == []
    for _, names in FLOORS:
        for name in names:
            base = name.removesuffix(".*")
            assert any(m == base or m.startswith(base + ".") for m in modules), name


def test_no_module_imports_a_higher_floor():
    ups = upward_imports(import_graph())
    assert not ups, "\n".join(ups)


def test_an_upward_import_is_found():
    graph = {"worldsim.nn.adaln": {"worldsim.simulator"}, "worldsim.training.stages": {"agents.rank"},
             "worldsim.simulator": {"worldsim.flow"}, "worldsim.quickstart": {"worldsim.training.train"}}
    assert upward_imports(graph) == ["worldsim.nn.adaln (nn) -> worldsim.simulator (world)",
                                     "worldsim.training.stages (training) -> agents.rank (agents)"]
